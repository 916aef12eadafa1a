//! `cep run`: evaluate patterns over a file of JSON-lines events, without a server.

use std::io::{self, IsTerminal};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use cep_patterns::{compile, CompiledPattern, DurationMs, PatternSpec, TimeFormat};
use cep_pipeline::file::{Progress, Summary};
pub use cep_pipeline::pattern_files;
use cep_pipeline::{
    PatternSelection, PipelineSpec, SinkSpec, SourceSpec, StateSpec, TimeMode, TimeSpec,
    WatermarkSpec,
};

use crate::bounds_args::BoundsArgs;
use crate::window_args::WindowArgs;

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
    /// How the time is written: epoch-ms, epoch-s or rfc3339.
    #[arg(long, default_value = "epoch-ms")]
    pub time_format: TimeFormat,
    /// Bounded out-of-orderness, e.g. `300ms` (default 0).
    #[arg(long, default_value = "0")]
    pub out_of_orderness: DurationMs,
    /// Where to write the outputs (`-` for standard output).
    #[arg(long, default_value = "-")]
    pub output: String,
    /// Show progress (lines, position, events/s, outputs) on standard error even when it is not
    /// a terminal.
    #[arg(long)]
    pub progress: bool,
    /// Worker threads that evaluate the keys (each key on one of them), 1 to 64: the lines are
    /// read in batches and each batch's events go to their keys' workers. Outputs of different
    /// keys within a batch come in time order.
    #[arg(long, default_value = "1")]
    pub workers: usize,
    /// A window stage ahead of the patterns.
    #[command(flatten)]
    pub window: WindowArgs,
    /// Bounds on the state kept.
    #[command(flatten)]
    pub bounds: BoundsArgs,
}

/// Reads and compiles one pattern file.
pub fn load_pattern(file: &Path) -> Result<CompiledPattern, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read: {e}"))?;
    let spec = PatternSpec::from_json(&text).map_err(|e| e.to_string())?;
    compile(&spec).map_err(|e| e.to_string())
}

/// Reads and compiles every pattern file of `paths`; the error lists each bad file's problems,
/// one per line, prefixed with the file.
pub fn load_patterns(paths: &[PathBuf]) -> anyhow::Result<Vec<Arc<CompiledPattern>>> {
    let mut patterns = Vec::new();
    let mut problems = Vec::new();
    for f in pattern_files(paths)? {
        match load_pattern(&f) {
            Ok(p) => patterns.push(Arc::new(p)),
            Err(e) => problems.extend(e.lines().map(|l| format!("{}: {l}", f.display()))),
        }
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("\n"));
    }
    if patterns.is_empty() {
        bail!("no pattern files found");
    }
    Ok(patterns)
}

impl RunArgs {
    /// The pipeline spec the flags describe: a file source, a file sink.
    pub fn spec(&self) -> anyhow::Result<PipelineSpec> {
        Ok(PipelineSpec {
            name: "run".into(),
            source: SourceSpec::File {
                path: PathBuf::from(&self.input),
            },
            key_by: self.key_by.clone(),
            time: TimeSpec {
                field: self.time_field.clone(),
                format: self.time_format,
                mode: TimeMode::Event,
            },
            // A replay: event times are whatever the file holds.
            watermark: WatermarkSpec {
                out_of_orderness: self.out_of_orderness,
                idleness: None,
                max_future: None,
            },
            window: self.window.spec()?,
            patterns: PatternSelection::All,
            state: {
                let mut state = StateSpec::default();
                self.bounds.apply(&mut state);
                state
            },
            workers: self.workers,
            sinks: vec![SinkSpec::File {
                path: PathBuf::from(&self.output),
            }],
        })
    }
}

/// Runs `cep run`; returns the process exit code: 0, 1 for bad patterns or flags, 2 when lines
/// were skipped.
pub fn run(args: RunArgs) -> anyhow::Result<i32> {
    let patterns = match load_patterns(&args.patterns) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return Ok(1);
        }
    };
    let spec = match args.spec() {
        Ok(spec) => spec,
        Err(e) => {
            eprintln!("{e}");
            return Ok(1);
        }
    };
    if let Err(errors) = spec.validate() {
        for e in errors {
            eprintln!("{e}");
        }
        return Ok(1);
    }
    if let Some(PatternSelection::Names(names)) = spec.window.as_ref().map(|w| &w.patterns) {
        if let Some(n) = names
            .iter()
            .find(|n| !patterns.iter().any(|p| p.name() == *n))
        {
            eprintln!("--window-pattern {n}: no pattern of that name was loaded");
            return Ok(1);
        }
    }
    // Progress on a terminal, or when asked for (`--progress`).
    let show = args.progress || io::stderr().is_terminal();
    let started = Instant::now();
    let mut report = |s: &Summary, size: Option<u64>, read: u64, done: bool| {
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        let position = match size {
            Some(size) if size > 0 => format!(" ({:.0}%)", read as f64 * 100.0 / size as f64),
            _ => String::new(),
        };
        eprint!(
            "\r{} lines{position}, {:.0} events/s, {} outputs, {} skipped{}",
            s.lines,
            s.events as f64 / secs,
            s.outputs,
            s.skipped,
            if done { "\n" } else { "" }
        );
    };
    let progress = show.then(|| Progress {
        every: Duration::from_millis(500),
        report: &mut report,
    });
    let mut errors = |line: u64, reason: &str| eprintln!("line {line}: {reason}; skipped");
    let summary = cep_pipeline::file::run(&spec, patterns, &mut errors, progress)?;
    if summary.skipped > 0 {
        eprintln!("{} line(s) skipped", summary.skipped);
        return Ok(2);
    }
    Ok(0)
}
