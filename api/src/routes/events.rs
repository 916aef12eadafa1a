//! POST /api/v1/pipelines/{name}/events: one JSON object, an array of them, or NDJSON.
//!
//! Each record is accepted or rejected on its own: a bad record (malformed line, not an object,
//! missing key or time field, time of the wrong type) is reported with its index and reason, and
//! the others go to the engine.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use serde_json::json;
use serde_json::value::RawValue;

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

type Records<'a> = Vec<(usize, Result<&'a str, String>)>;

fn ndjson(body: &[u8]) -> Records<'_> {
    body.split(|b| *b == b'\n')
        .enumerate()
        .filter(|(_, line)| !line.trim_ascii().is_empty())
        .map(|(index, line)| {
            let text = std::str::from_utf8(line.trim_ascii())
                .map_err(|e| format!("malformed JSON: invalid UTF-8 ({e})"));
            (index, text)
        })
        .collect()
}

/// Splits a body into records (each record's JSON text: the engine reads what it needs of it).
fn records(format: Format, body: &[u8]) -> Result<Records<'_>, AppError> {
    if body.trim_ascii().is_empty() {
        return Err(AppError::bad_request(
            "empty_body",
            "the body holds no events",
        ));
    }
    if format == Format::Ndjson {
        return Ok(ndjson(body));
    }
    let whole = || -> Result<&str, String> {
        std::str::from_utf8(body.trim_ascii()).map_err(|e| format!("invalid UTF-8 ({e})"))
    };
    if body.trim_ascii_start().first() == Some(&b'[') {
        match serde_json::from_slice::<Vec<&RawValue>>(body) {
            Ok(items) => return Ok(items.into_iter().map(|r| Ok(r.get())).enumerate().collect()),
            Err(e) if e.is_data() => {
                // An array whose items are not all JSON: one malformed document.
                return Err(malformed(e));
            }
            Err(_) => {}
        }
    }
    match serde_json::from_slice::<&RawValue>(body) {
        Ok(one) => Ok(vec![(0, Ok(one.get()))]),
        Err(e) => {
            let lines = body
                .split(|b| *b == b'\n')
                .filter(|l| !l.trim_ascii().is_empty())
                .count();
            if lines > 1 {
                // Several lines that are not one document: read them as NDJSON.
                Ok(ndjson(body))
            } else {
                match whole() {
                    Ok(_) => Err(malformed(e)),
                    Err(m) => Err(AppError::bad_request("malformed_json", m)),
                }
            }
        }
    }
}

fn malformed(e: serde_json::Error) -> AppError {
    AppError::bad_request("malformed_json", format!("malformed JSON: {e}"))
        .with_details(json!({"line": e.line(), "column": e.column()}))
}

/// The answer to a failed ingest (also a failed watermark step).
pub fn ingest_error(name: &str, e: IngestError) -> AppError {
    match e {
        IngestError::Paused => paused(name),
        IngestError::NotHttp => AppError::conflict(
            "not_http",
            format!("pipeline '{name}' reads its events from Kafka; produce them to its topics"),
        ),
        IngestError::Store(reason) => AppError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            format!("the events could not be made durable, and none of them count: {reason}"),
        ),
    }
}

/// The longest `Idempotency-Key`.
const MAX_ID: usize = 256;

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, AppError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| {
        AppError::bad_request("invalid_header", "Idempotency-Key must be visible ASCII")
    })?;
    if text.is_empty() || text.len() > MAX_ID {
        return Err(AppError::bad_request(
            "invalid_header",
            format!("Idempotency-Key must have 1 to {MAX_ID} characters"),
        ));
    }
    Ok(Some(text.to_string()))
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
    let id = idempotency_key(&headers)?;
    // Parsing and matching are CPU work, and the store is waited for: off the async workers.
    let report = tokio::task::spawn_blocking(move || {
        let records = records(format, &body)?;
        pipeline
            .ingest(records, id.as_deref())
            .map_err(|e| ingest_error(pipeline.name(), e))
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
        // Lines are split, not parsed: the engine refuses a malformed one with its reason.
        assert_eq!(r[1].1.as_deref(), Ok("{\"a\":"));
        assert_eq!(r[2].0, 2);
        let r = records(Format::Ndjson, b"{\"a\":1}\n\xff\n").unwrap();
        assert!(r[1].1.as_ref().unwrap_err().contains("UTF-8"));
        let r = records(Format::Ndjson, b"\n{\"a\":1}\n\n{\"b\":2}").unwrap();
        assert_eq!(r.iter().map(|x| x.0).collect::<Vec<_>>(), [1, 3]);
        assert!(records(Format::Detect, b"{\"a\":").is_err());
        assert!(records(Format::Detect, b"  ").is_err());
    }
}
