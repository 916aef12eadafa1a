//! A file source read once, outputs to a file sink: what `cep run` runs. Each input line is an
//! event; each output is a JSON line. The end of the file is the end of event time: the
//! watermark goes to the end, so every pending match and timeout is emitted.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use cep_patterns::CompiledPattern;

use crate::spec::{PipelineSpec, SinkSpec, SourceSpec};
use crate::window::PipelineEngine;

/// What a run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Lines read.
    pub lines: u64,
    /// Events evaluated.
    pub events: u64,
    /// Lines skipped (not an event, no key or time, ...), each reported to `errors`.
    pub skipped: u64,
    /// Outputs written.
    pub outputs: u64,
}

/// Called with the summary so far, the input's size (if a file), the bytes read, and whether
/// the run is over.
pub type ReportFn<'a> = dyn FnMut(&Summary, Option<u64>, u64, bool) + 'a;

/// Progress, reported about once per `every` while the run goes on, and at the end.
pub struct Progress<'a> {
    /// How often.
    pub every: Duration,
    /// What reports it.
    pub report: &'a mut ReportFn<'a>,
}

/// Runs a pipeline with a file source and a file sink. Lines the engine refuses are reported
/// through `errors` (1-based line number, reason) and skipped.
pub fn run(
    spec: &PipelineSpec,
    patterns: Vec<Arc<CompiledPattern>>,
    errors: &mut dyn FnMut(u64, &str),
    mut progress: Option<Progress<'_>>,
) -> anyhow::Result<Summary> {
    let SourceSpec::File { path: input } = &spec.source else {
        bail!("pipeline {} has no file source", spec.name);
    };
    let Some(out_path) = spec.sinks.iter().find_map(|s| match s {
        SinkSpec::File { path } => Some(path),
        _ => None,
    }) else {
        bail!("pipeline {} has no file sink", spec.name);
    };
    if patterns.is_empty() {
        bail!("no patterns");
    }
    let mut engine = PipelineEngine::new(spec, patterns).map_err(|e| anyhow::anyhow!("{e}"))?;
    let size = (input != Path::new("-"))
        .then(|| std::fs::metadata(input).ok().map(|m| m.len()))
        .flatten();
    let mut reader: Box<dyn BufRead> = if input == Path::new("-") {
        Box::new(BufReader::new(io::stdin().lock()))
    } else {
        Box::new(BufReader::with_capacity(
            1 << 16,
            File::open(input).with_context(|| format!("opening {}", input.display()))?,
        ))
    };
    let mut output: Box<dyn Write> = if out_path == Path::new("-") {
        Box::new(BufWriter::new(io::stdout().lock()))
    } else {
        Box::new(BufWriter::new(
            File::create(out_path).with_context(|| format!("creating {}", out_path.display()))?,
        ))
    };
    let mut summary = Summary::default();
    let mut outs = Vec::new();
    let mut line = String::new();
    let mut read = 0u64;
    let mut last_report = Instant::now();
    loop {
        line.clear();
        let n = reader
            .read_line(&mut line)
            .with_context(|| format!("reading line {}", summary.lines + 1))?;
        if n == 0 {
            break;
        }
        read += n as u64;
        summary.lines += 1;
        let text = line.trim_end_matches(['\n', '\r']);
        if text.trim().is_empty() {
            continue;
        }
        match engine.push_str(text, &mut outs) {
            Ok(()) => summary.events += 1,
            Err(e) => {
                summary.skipped += 1;
                errors(summary.lines, &e.to_string());
            }
        }
        for o in outs.drain(..) {
            serde_json::to_writer(&mut output, &o)?;
            output.write_all(b"\n")?;
            summary.outputs += 1;
        }
        if let Some(p) = &mut progress {
            if summary.lines % 4096 == 0 && last_report.elapsed() >= p.every {
                (p.report)(&summary, size, read, false);
                last_report = Instant::now();
            }
        }
    }
    engine.advance_watermark(i64::MAX, &mut outs);
    for o in outs.drain(..) {
        serde_json::to_writer(&mut output, &o)?;
        output.write_all(b"\n")?;
        summary.outputs += 1;
    }
    output.flush()?;
    if let Some(p) = &mut progress {
        (p.report)(&summary, size, read, true);
    }
    Ok(summary)
}
