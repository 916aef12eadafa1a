//! POST /api/v1/pipelines/{name}/events: one JSON object, an array of them, or NDJSON.
//!
//! Each record is accepted or rejected on its own: a bad record (malformed line, not an object,
//! missing key or time field, time of the wrong type) is reported with its index and reason, and
//! the others go to the engine.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use serde_json::{json, Value};

use super::pipelines::paused;
use crate::error::{ApiBytes, ApiPath, AppError};
use crate::pipeline::{IngestError, IngestReport};
use crate::state::AppState;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    /// application/json, or no content type: a document, or NDJSON if it reads as several lines.
    Detect,
    /// application/x-ndjson and friends: one document per line.
    Ndjson,
}

fn format_of(headers: &HeaderMap) -> Result<Format, AppError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(Format::Detect);
    };
    let media = value
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match media.as_str() {
        "application/json" | "text/json" => Ok(Format::Detect),
        "application/x-ndjson"
        | "application/ndjson"
        | "application/jsonl"
        | "application/x-jsonlines"
        | "application/jsonlines" => Ok(Format::Ndjson),
        _ => Err(AppError::unsupported_media_type(format!(
            "events must be application/json or application/x-ndjson, not '{media}'"
        ))),
    }
}

type Records = Vec<(usize, Result<Value, String>)>;

fn ndjson(body: &[u8]) -> Records {
    body.split(|b| *b == b'\n')
        .enumerate()
        .filter(|(_, line)| !line.trim_ascii().is_empty())
        .map(|(index, line)| {
            let parsed = serde_json::from_slice::<Value>(line.trim_ascii())
                .map_err(|e| format!("malformed JSON: {e}"));
            (index, parsed)
        })
        .collect()
}

/// Splits a body into records.
fn records(format: Format, body: &[u8]) -> Result<Records, AppError> {
    if body.trim_ascii().is_empty() {
        return Err(AppError::bad_request(
            "empty_body",
            "the body holds no events",
        ));
    }
    if format == Format::Ndjson {
        return Ok(ndjson(body));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Array(items)) => Ok(items.into_iter().map(Ok).enumerate().collect()),
        Ok(one) => Ok(vec![(0, Ok(one))]),
        Err(e) => {
            let lines = body
                .split(|b| *b == b'\n')
                .filter(|l| !l.trim_ascii().is_empty())
                .count();
            if lines > 1 {
                // Several lines that are not one document: read them as NDJSON.
                Ok(ndjson(body))
            } else {
                Err(
                    AppError::bad_request("malformed_json", format!("malformed JSON: {e}"))
                        .with_details(json!({"line": e.line(), "column": e.column()})),
                )
            }
        }
    }
}

/// POST /pipelines/{name}/events: 202 with {accepted, rejected, errors: [{index, reason}]}.
pub async fn ingest(
    State(state): State<Arc<AppState>>,
    ApiPath(name): ApiPath<String>,
    headers: HeaderMap,
    ApiBytes(body): ApiBytes,
) -> Result<(StatusCode, Json<IngestReport>), AppError> {
    if state.is_draining() {
        return Err(AppError::unavailable("the service is shutting down"));
    }
    let format = format_of(&headers)?;
    let pipeline = state.pipeline(&name)?;
    if pipeline.is_paused() {
        return Err(paused(&name));
    }
    // Parsing and matching are CPU work: off the async workers.
    let report = tokio::task::spawn_blocking(move || {
        let records = records(format, &body)?;
        pipeline.ingest(records).map_err(|e| match e {
            IngestError::Paused => paused(pipeline.name()),
            IngestError::NotHttp => AppError::conflict(
                "not_http",
                format!(
                    "pipeline '{}' reads its events from Kafka; produce them to its topics",
                    pipeline.name()
                ),
            ),
        })
    })
    .await
    .map_err(|e| AppError::internal(anyhow::anyhow!("ingest task failed: {e}")))??;
    Ok((StatusCode::ACCEPTED, Json(report)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_bodies() {
        let r = records(Format::Detect, br#"[{"a":1}, 2]"#).unwrap();
        assert_eq!(r.len(), 2);
        let r = records(Format::Detect, b"{\"a\":1}\n{\"a\":\n{\"b\":2}\n").unwrap();
        assert_eq!(r.len(), 3);
        assert!(r[1].1.is_err());
        assert_eq!(r[2].0, 2);
        let r = records(Format::Ndjson, b"\n{\"a\":1}\n\n{\"b\":2}").unwrap();
        assert_eq!(r.iter().map(|x| x.0).collect::<Vec<_>>(), [1, 3]);
        assert!(records(Format::Detect, b"{\"a\":").is_err());
        assert!(records(Format::Detect, b"  ").is_err());
    }
}
