//! /api/v1/pipelines: create, list, read, replace, delete, pause and resume pipelines, and look
//! at the state held for a key.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{ApiJson, ApiPath, AppError};
use crate::pipeline::{Pipeline, PipelineSpec};
use crate::state::AppState;

/// A watermark as shown to clients: null before the first event.
pub fn watermark_json(watermark: i64) -> Value {
    if watermark == i64::MIN {
        Value::Null
    } else {
        Value::from(watermark)
    }
}

/// A pipeline as shown to clients: its configuration plus `status`.
pub fn view(pipeline: &Pipeline) -> Value {
    let record = pipeline.record();
    let mut value = serde_json::to_value(&record.spec).unwrap_or_else(|_| json!({}));
    value["status"] = json!({
        "paused": record.paused,
        "watermark": watermark_json(pipeline.watermark()),
        "stats": pipeline.stats(),
        "counters": pipeline.outputs().counters.to_json(),
    });
    if let Some(kafka) = pipeline.kafka_status() {
        value["status"]["kafka"] = kafka;
    }
    value
}

/// Reads a pipeline body; `status` (as in GET answers) is ignored so GET output can be PUT back.
fn spec_from(mut body: Value, path_name: Option<&str>) -> Result<PipelineSpec, AppError> {
    let Value::Object(map) = &mut body else {
        return Err(AppError::unprocessable(
            "invalid_body",
            "a pipeline must be a JSON object",
        ));
    };
    map.remove("status");
    if let Some(path_name) = path_name {
        match map.get("name") {
            None => {
                map.insert("name".into(), Value::from(path_name));
            }
            Some(Value::String(n)) if n == path_name => {}
            Some(other) => {
                return Err(AppError::bad_request(
                    "name_mismatch",
                    format!(
                    "the pipeline's name {other} differs from the name in the path '{path_name}'"
                ),
                ))
            }
        }
    }
    crate::pipeline::parse(body).map_err(|errors| crate::state::invalid_spec(&errors))
}

/// POST /pipelines.
pub async fn create(
    State(state): State<Arc<AppState>>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, AppError> {
    let spec = spec_from(body, None)?;
    let name = spec.name.clone();
    state.create_pipeline(spec, false)?;
    let pipeline = state.pipeline(&name)?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/api/v1/pipelines/{name}"))],
        Json(view(&pipeline)),
    )
        .into_response())
}

/// GET /pipelines.
pub async fn list(State(state): State<Arc<AppState>>) -> Json<Value> {
    let pipelines: Vec<Value> = state.pipelines().iter().map(|p| view(p)).collect();
    Json(json!({ "pipelines": pipelines }))
}

/// GET /pipelines/{name}.
pub async fn get(
    State(state): State<Arc<AppState>>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Value>, AppError> {
    let pipeline = state.pipeline(&name)?;
    Ok(Json(view(&pipeline)))
}

/// PUT /pipelines/{name}: creates or replaces. A replaced pipeline gets a new engine (partial
/// matches are dropped) and keeps its recent outputs, live streams and paused state.
pub async fn put(
    State(state): State<Arc<AppState>>,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, AppError> {
    let spec = spec_from(body, Some(&name))?;
    let created = state.create_pipeline(spec, true)?;
    let pipeline = state.pipeline(&name)?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view(&pipeline))).into_response())
}

/// DELETE /pipelines/{name}.
pub async fn delete(
    State(state): State<Arc<AppState>>,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, AppError> {
    state.delete_pipeline(&name)?;
    Ok(StatusCode::NO_CONTENT)
}

/// POST /pipelines/{name}/pause: ingest answers 409 until resumed.
pub async fn pause(
    State(state): State<Arc<AppState>>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Value>, AppError> {
    let pipeline = state.set_paused(&name, true)?;
    Ok(Json(view(&pipeline)))
}

/// POST /pipelines/{name}/resume.
pub async fn resume(
    State(state): State<Arc<AppState>>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Value>, AppError> {
    let pipeline = state.set_paused(&name, false)?;
    Ok(Json(view(&pipeline)))
}

/// Body of POST /pipelines/{name}/watermark.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatermarkBody {
    /// The new watermark (event time, ms); `"end"` ends the input: every window closes.
    watermark: WatermarkValue,
}

/// A watermark to move to: a time (ms), or `"end"`, the end of the input.
#[derive(Deserialize)]
#[serde(untagged)]
pub enum WatermarkValue {
    /// Event time, ms.
    At(i64),
    /// `"end"`.
    End(EndMarker),
}

impl WatermarkValue {
    /// The watermark it stands for (`i64::MAX` at the end of the input).
    pub fn millis(&self) -> i64 {
        match self {
            WatermarkValue::At(ms) => *ms,
            WatermarkValue::End(EndMarker::End) => i64::MAX,
        }
    }
}

/// `"end"`.
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndMarker {
    /// The end of the input.
    End,
}

/// POST /pipelines/{name}/watermark: moves event time forward by hand (e.g. at the end of a
/// replay), so windows close and timeouts fire without new events.
pub async fn watermark(
    State(state): State<Arc<AppState>>,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<WatermarkBody>,
) -> Result<Json<Value>, AppError> {
    let pipeline = state.pipeline(&name)?;
    if pipeline.is_paused() {
        return Err(paused(&name));
    }
    let target = body.watermark.millis();
    let step = tokio::task::spawn_blocking(move || pipeline.advance_watermark(target))
        .await
        .map_err(|e| AppError::internal(anyhow::anyhow!("watermark task failed: {e}")))?;
    let now = match step {
        None => {
            return Err(AppError::conflict(
                "not_http",
                format!(
                    "pipeline '{name}' reads from Kafka: its watermark comes from its partitions"
                ),
            ))
        }
        Some(Ok(now)) => now,
        Some(Err(e)) => return Err(super::events::ingest_error(&name, e)),
    };
    Ok(Json(
        json!({"pipeline": name, "watermark": watermark_json(now)}),
    ))
}

/// GET /pipelines/{name}/keys/{key}: the partial matches held for a key (with when each times
/// out, for patterns with a window), its events waiting for the watermark, and the watermark.
pub async fn key_state(
    State(state): State<Arc<AppState>>,
    ApiPath((name, key)): ApiPath<(String, String)>,
) -> Result<Json<Value>, AppError> {
    let pipeline = state.pipeline(&name)?;
    let mut view = tokio::task::spawn_blocking({
        let (pipeline, key) = (pipeline.clone(), key.clone());
        move || pipeline.key_view(&key, std::time::Duration::from_secs(5))
    })
    .await
    .map_err(AppError::internal)?
    .ok_or_else(|| {
        AppError::unavailable(format!(
            "pipeline '{name}' did not answer: it is paused, restoring its state or stopped"
        ))
    })?;
    let mut partial_matches = view["partial_matches"].take();
    if let Some(list) = partial_matches.as_array_mut() {
        for pm in list {
            let pattern = pm["pattern"].as_str().unwrap_or("");
            let start = pm["start_timestamp"].as_i64().unwrap_or(0);
            let ends = state
                .compiled_pattern(pattern)
                .ok()
                .and_then(|p| crate::automaton::times_out_at(&p, start));
            pm["times_out_at"] = json!(ends);
        }
    }
    Ok(Json(json!({
        "pipeline": name,
        "key": key,
        "watermark": watermark_json(pipeline.watermark()),
        "partial_matches": partial_matches,
        "waiting_events": view["waiting_events"].take(),
    })))
}

/// The 409 of a paused pipeline.
pub fn paused(name: &str) -> AppError {
    AppError::conflict(
        "paused",
        format!("pipeline '{name}' is paused; POST /api/v1/pipelines/{name}/resume to resume it"),
    )
}
