//! `cep run`: evaluate patterns over a file of JSON-lines events, without a server.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context as _};
use cep_patterns::{
    compile, CompiledPattern, DurationMs, EngineConfig, JsonEngine, PatternSpec, TimeFormat,
};

/// Options of `cep run`.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// A pattern file, or a directory of `*.json` pattern files (repeatable).
    #[arg(long = "pattern", required = true)]
    pub patterns: Vec<PathBuf>,
    /// JSON-lines events (`-` for standard input).
    #[arg(long)]
    pub input: String,
    /// Field path of the key, e.g. `user.id`.
    #[arg(long)]
    pub key_by: String,
    /// Field path of the event time.
    #[arg(long)]
    pub time_field: String,
    /// How the time is written.
    #[arg(long, value_enum, default_value = "epoch-ms")]
    pub time_format: TimeFormatArg,
    /// Bounded out-of-orderness, e.g. `300ms` (default 0).
    #[arg(long, default_value = "0")]
    pub out_of_orderness: String,
    /// Where to write the outputs (`-` for standard output).
    #[arg(long, default_value = "-")]
    pub output: String,
}

/// `--time-format`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TimeFormatArg {
    /// Milliseconds since the epoch.
    #[default]
    EpochMs,
    /// Seconds since the epoch.
    EpochS,
    /// RFC 3339 strings.
    Rfc3339,
}

impl From<TimeFormatArg> for TimeFormat {
    fn from(t: TimeFormatArg) -> Self {
        match t {
            TimeFormatArg::EpochMs => TimeFormat::EpochMs,
            TimeFormatArg::EpochS => TimeFormat::EpochS,
            TimeFormatArg::Rfc3339 => TimeFormat::Rfc3339,
        }
    }
}

/// The pattern files named by `paths`: files as given, directories by their `*.json` files.
pub fn pattern_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut in_dir: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("reading directory {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "json"))
                .collect();
            in_dir.sort();
            files.extend(in_dir);
        } else if p.exists() {
            files.push(p.clone());
        } else {
            bail!("no such pattern file or directory: {}", p.display());
        }
    }
    Ok(files)
}

/// Reads and compiles one pattern file.
pub fn load_pattern(file: &Path) -> Result<CompiledPattern, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read: {e}"))?;
    let spec = PatternSpec::from_json(&text).map_err(|e| e.to_string())?;
    compile(&spec).map_err(|e| e.to_string())
}

/// Runs `cep run`; returns the process exit code.
pub fn run(args: RunArgs) -> anyhow::Result<i32> {
    let mut patterns = Vec::new();
    let mut bad = false;
    for f in pattern_files(&args.patterns)? {
        match load_pattern(&f) {
            Ok(p) => patterns.push(Arc::new(p)),
            Err(e) => {
                bad = true;
                for line in e.lines() {
                    eprintln!("{}: {line}", f.display());
                }
            }
        }
    }
    if bad {
        return Ok(1);
    }
    if patterns.is_empty() {
        bail!("no pattern files found");
    }
    let ooo = DurationMs::parse(&args.out_of_orderness)
        .map_err(|e| anyhow::anyhow!("--out-of-orderness: {e}"))?;
    let config = EngineConfig {
        key_by: args.key_by.clone(),
        time_field: args.time_field.clone(),
        time_format: args.time_format.into(),
        out_of_orderness_ms: ooo.0,
    };
    let mut engine = JsonEngine::new(config, patterns).map_err(|e| anyhow::anyhow!("{e}"))?;
    let input: Box<dyn BufRead> = if args.input == "-" {
        Box::new(BufReader::new(io::stdin().lock()))
    } else {
        Box::new(BufReader::new(
            File::open(&args.input).with_context(|| format!("opening {}", args.input))?,
        ))
    };
    let mut output: Box<dyn Write> = if args.output == "-" {
        Box::new(BufWriter::new(io::stdout().lock()))
    } else {
        Box::new(BufWriter::new(
            File::create(&args.output).with_context(|| format!("creating {}", args.output))?,
        ))
    };
    let progress = io::stderr().is_terminal();
    let mut outs = Vec::new();
    let mut skipped = 0u64;
    let mut lines = 0u64;
    for (n, line) in input.lines().enumerate() {
        let line = line.with_context(|| format!("reading line {}", n + 1))?;
        lines += 1;
        if line.trim().is_empty() {
            continue;
        }
        if let Err(e) = engine.push_str(&line, &mut outs) {
            skipped += 1;
            eprintln!("line {}: {e}; skipped", n + 1);
        }
        for o in outs.drain(..) {
            serde_json::to_writer(&mut output, &o)?;
            output.write_all(b"\n")?;
        }
        if progress && lines.is_multiple_of(100_000) {
            eprint!("\r{lines} lines, {skipped} skipped");
        }
    }
    engine.advance_watermark(i64::MAX, &mut outs);
    for o in outs.drain(..) {
        serde_json::to_writer(&mut output, &o)?;
        output.write_all(b"\n")?;
    }
    output.flush()?;
    if progress {
        eprintln!("\r{lines} lines, {skipped} skipped");
    }
    if skipped > 0 {
        eprintln!("{skipped} line(s) skipped");
        return Ok(2);
    }
    Ok(0)
}
