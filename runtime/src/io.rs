//! JSON-lines sources and sinks: one `serde_json::Value` (or any serde type) per line.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use crate::dataflow::{Dataflow, Sink, Stream};
use crate::error::{Error, Result};
use crate::time::Timestamp;

/// Parses a reader line by line; blank lines are skipped, and a bad line is a
/// [`Error::Codec`] naming its line number.
pub fn read_json_lines<R: BufRead>(reader: R, name: String) -> impl Iterator<Item = Result<Value>> {
    reader
        .lines()
        .enumerate()
        .filter_map(move |(i, line)| match line {
            Err(e) => Some(Err(Error::io(format!("reading {name}"), e))),
            Ok(l) if l.trim().is_empty() => None,
            Ok(l) => Some(
                serde_json::from_str(&l)
                    .map_err(|e| Error::codec(format!("{name} line {}", i + 1), e)),
            ),
        })
}

impl Dataflow {
    /// A bounded source reading JSON lines from `reader`.
    pub fn from_json_lines<R: BufRead + Send + 'static>(&self, reader: R) -> Stream<Value> {
        self.from_fallible_iter(read_json_lines(reader, "input".into()))
    }

    /// A bounded source reading JSON lines from the file at `path`.
    pub fn from_json_lines_file(&self, path: impl AsRef<Path>) -> Result<Stream<Value>> {
        let path = path.as_ref();
        let file =
            File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        Ok(self.from_fallible_iter(read_json_lines(
            BufReader::new(file),
            path.display().to_string(),
        )))
    }

    /// A source reading JSON lines from standard input until it closes.
    pub fn from_stdin(&self) -> Stream<Value> {
        self.from_fallible_iter(read_json_lines(
            BufReader::new(std::io::stdin()),
            "stdin".into(),
        ))
    }
}

/// Writes each record as one line of JSON.
#[derive(Debug)]
pub struct JsonLinesSink<W: Write> {
    writer: W,
}

impl<W: Write> JsonLinesSink<W> {
    /// A sink writing to `writer`.
    pub fn new(writer: W) -> Self {
        JsonLinesSink { writer }
    }

    /// The writer back.
    pub fn into_inner(self) -> W {
        self.writer
    }
}

impl JsonLinesSink<BufWriter<File>> {
    /// A sink creating (truncating) the file at `path`.
    pub fn create(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file =
            File::create(path).map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
        Ok(Self::new(BufWriter::new(file)))
    }
}

impl JsonLinesSink<BufWriter<std::io::Stdout>> {
    /// A sink writing to standard output.
    pub fn stdout() -> Self {
        Self::new(BufWriter::new(std::io::stdout()))
    }
}

impl<T: Serialize, W: Write + Send> Sink<T> for JsonLinesSink<W> {
    fn write(&mut self, _timestamp: Timestamp, value: T) -> Result<()> {
        serde_json::to_writer(&mut self.writer, &value)
            .map_err(|e| Error::codec("json sink", e))?;
        self.writer
            .write_all(b"\n")
            .map_err(|e| Error::io("writing json lines", e))
    }

    fn finish(&mut self) -> Result<()> {
        self.writer
            .flush()
            .map_err(|e| Error::io("flushing json lines", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::WatermarkStrategy;
    use crate::window::TumblingWindows;
    use serde_json::json;

    #[test]
    fn bad_lines_are_codec_errors_with_line_numbers() {
        let input = "{\"a\":1}\n\n{oops\n";
        let items: Vec<_> = read_json_lines(input.as_bytes(), "test".into()).collect();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].as_ref().unwrap(), &json!({"a": 1}));
        let err = items[1].as_ref().unwrap_err();
        assert!(err.to_string().contains("test line 3"), "{err}");
        assert!(!err.is_retryable());
    }

    #[test]
    fn json_file_to_json_file_window_job() {
        let dir = std::env::temp_dir().join(format!("cep-runtime-io-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let input = dir.join("in.jsonl");
        let output = dir.join("out.jsonl");
        std::fs::write(
            &input,
            [
                r#"{"sensor":"s1","ts":1000,"temp":21.5}"#,
                r#"{"sensor":"s2","ts":2000,"temp":19.0}"#,
                r#"{"sensor":"s1","ts":3000,"temp":20.0}"#,
                r#"{"sensor":"s1","ts":16000,"temp":25.0}"#,
            ]
            .join("\n"),
        )
        .unwrap();
        Dataflow::new()
            .with_parallelism(1)
            .from_json_lines_file(&input)
            .unwrap()
            .assign_timestamps_and_watermarks(
                WatermarkStrategy::for_monotonous_timestamps()
                    .with_timestamp_assigner(|v: &Value| v["ts"].as_i64().unwrap_or(0)),
            )
            .key_by(|v: &Value| v["sensor"].as_str().unwrap_or("").to_string())
            .window(TumblingWindows::event_time(15_000).unwrap())
            .reduce(|a, b| {
                if b["temp"].as_f64() < a["temp"].as_f64() {
                    b
                } else {
                    a
                }
            })
            .sink(JsonLinesSink::create(&output).unwrap())
            .unwrap();
        let written = std::fs::read_to_string(&output).unwrap();
        assert_eq!(
            written,
            "{\"sensor\":\"s1\",\"ts\":3000,\"temp\":20.0}\n\
             {\"sensor\":\"s2\",\"ts\":2000,\"temp\":19.0}\n\
             {\"sensor\":\"s1\",\"ts\":16000,\"temp\":25.0}\n"
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn missing_file_is_a_retryable_io_error() {
        let err = Dataflow::new()
            .from_json_lines_file("/nonexistent/cep-runtime.jsonl")
            .err()
            .unwrap();
        assert!(err.is_retryable());
    }
}
