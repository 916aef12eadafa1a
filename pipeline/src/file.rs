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

use crate::shards::Engine;
use crate::spec::{PipelineSpec, SinkSpec, SourceSpec};

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
    let mut engine = Engine::new(spec, patterns, Arc::new(cep_runtime::SystemClock))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
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
    // One output's text, written whole to the buffered output.
    let mut line: Vec<u8> = Vec::with_capacity(256);
    let mut read = 0u64;
    let mut last_report = Instant::now();
    // Lines are taken in batches (for workers, see `Engine::push_batch`): line numbers and texts.
    let batch_lines = if engine.workers() > 1 { 4096 } else { 1 };
    let mut batch: Vec<(u64, String)> = Vec::with_capacity(batch_lines);
    let mut spare: Vec<String> = Vec::new();
    let mut done = false;
    while !done {
        batch.clear();
        while batch.len() < batch_lines {
            let mut line = spare.pop().unwrap_or_default();
            line.clear();
            let n = reader
                .read_line(&mut line)
                .with_context(|| format!("reading line {}", summary.lines + 1))?;
            if n == 0 {
                done = true;
                break;
            }
            read += n as u64;
            summary.lines += 1;
            let len = line.trim_end_matches(['\n', '\r']).len();
            line.truncate(len);
            if line.trim().is_empty() {
                spare.push(line);
                continue;
            }
            batch.push((summary.lines, line));
        }
        // One worker: each line straight to the engine (and its outputs out) as it is read.
        let results = if batch_lines == 1 {
            batch
                .iter()
                .map(|(_, text)| engine.push_str(text, &mut outs))
                .collect()
        } else {
            let texts: Vec<&str> = batch.iter().map(|(_, l)| l.as_str()).collect();
            engine.push_batch(&texts, &mut outs)
        };
        for ((line_no, _), result) in batch.iter().zip(results) {
            match result {
                Ok(()) => summary.events += 1,
                Err(e) => {
                    summary.skipped += 1;
                    errors(*line_no, &e.to_string());
                }
            }
        }
        spare.extend(batch.drain(..).map(|(_, l)| l));
        for o in outs.drain(..) {
            line.clear();
            o.write_json(&mut line);
            line.push(b'\n');
            output.write_all(&line)?;
            summary.outputs += 1;
        }
        if let Some(p) = &mut progress {
            if (batch_lines > 1 || summary.lines % 4096 == 0) && last_report.elapsed() >= p.every {
                (p.report)(&summary, size, read, false);
                last_report = Instant::now();
            }
        }
    }
    engine.advance_watermark(i64::MAX, &mut outs);
    for o in outs.drain(..) {
        line.clear();
        o.write_json(&mut line);
        line.push(b'\n');
        output.write_all(&line)?;
        summary.outputs += 1;
    }
    output.flush()?;
    if let Some(p) = &mut progress {
        (p.report)(&summary, size, read, true);
    }
    Ok(summary)
}
