//! POST /api/v1/try: runs a pattern on sample events and watermark steps without storing
//! anything, and reports the outputs and, after each step, the partial matches alive. What the
//! console's playground shows.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::pipelines::{watermark_json, WatermarkValue};
use super::require_json;
use crate::automaton::times_out_at;
use crate::engine::CompiledPattern;
use crate::error::{ApiBytes, AppError};
use crate::pipeline::TimeSpec;
use crate::state::AppState;
use crate::validate::{check_pattern, pattern_errors};
use cep_patterns::{DurationMs, EngineConfig, JsonEngine, Output};

/// The most steps (events and watermarks) one try may have.
pub const MAX_STEPS: usize = 10_000;

/// The body of POST /try.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TryBody {
    /// A pattern document, or the name of a registered pattern.
    pattern: PatternRef,
    /// As in a pipeline: the key's field path.
    #[serde(default = "default_key_by")]
    key_by: String,
    /// As in a pipeline: where the event time is and how it is written.
    #[serde(default)]
    time: TimeSpec,
    /// As in a pipeline's watermark: how far behind the largest time seen the watermark stays.
    #[serde(default)]
    out_of_orderness: DurationMs,
    /// Events and watermark moves, in order.
    steps: Vec<Step>,
}

fn default_key_by() -> String {
    "key".to_string()
}

#[derive(Deserialize)]
#[serde(untagged)]
enum PatternRef {
    Name(String),
    Document(Value),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
enum Step {
    /// `{"event": {...}}`.
    Event(Value),
    /// `{"watermark": 1000}` or `{"watermark": "end"}`.
    Watermark(WatermarkValue),
}

fn invalid(path: &str, message: impl Into<String>) -> AppError {
    let message = message.into();
    AppError::bad_request("invalid_try", format!("{path}: {message}"))
        .with_details(json!({"errors": [{"path": path, "message": message}]}))
}

fn parse(body: &[u8]) -> Result<TryBody, AppError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            AppError::bad_request("malformed_json", format!("malformed JSON: {inner}"))
                .with_details(json!({"line": inner.line(), "column": inner.column()}))
        } else if inner.to_string().contains("WatermarkValue") {
            invalid(&path, "a watermark is a time in ms or \"end\"")
        } else {
            invalid(&path, inner.to_string())
        }
    })
}

fn pattern_of(state: &AppState, pattern: PatternRef) -> Result<Arc<CompiledPattern>, AppError> {
    match pattern {
        PatternRef::Name(name) => state.compiled_pattern(&name).map_err(|_| {
            invalid(
                "pattern",
                format!("no pattern named '{name}' is registered"),
            )
        }),
        PatternRef::Document(document) => {
            let text = serde_json::to_vec(&document).map_err(AppError::internal)?;
            let valid = check_pattern(&state.config.limits, &text, None)
                .map_err(|e| e.located_under("pattern"))?;
            Ok(valid.compiled)
        }
    }
}

/// POST /try.
pub async fn run(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiBytes(body): ApiBytes,
) -> Result<Json<Value>, AppError> {
    require_json(&headers)?;
    let body = parse(&body)?;
    if body.steps.len() > MAX_STEPS {
        return Err(invalid(
            "steps",
            format!(
                "{} steps; a try may have at most {MAX_STEPS}",
                body.steps.len()
            ),
        ));
    }
    let pattern = pattern_of(&state, body.pattern)?;
    let config = EngineConfig {
        key_by: body.key_by,
        time_field: body.time.field,
        time_format: body.time.format,
        out_of_orderness_ms: body.out_of_orderness.0,
    };
    let engine = JsonEngine::new(config, vec![pattern.clone()]).map_err(|e| {
        AppError::bad_request("invalid_try", format!("invalid engine settings: {e}"))
            .with_details(pattern_errors(&e))
    })?;
    let steps = body.steps;
    tokio::task::spawn_blocking(move || run_steps(engine, &pattern, steps))
        .await
        .map_err(AppError::internal)?
        .map(Json)
}

fn run_steps(
    mut engine: JsonEngine,
    pattern: &CompiledPattern,
    steps: Vec<Step>,
) -> Result<Value, AppError> {
    let mut outputs: Vec<Output> = Vec::new();
    let mut reports = Vec::with_capacity(steps.len());
    // The keys with state: the only ones that can hold partial matches.
    let mut live: BTreeSet<String> = BTreeSet::new();
    for (i, step) in steps.into_iter().enumerate() {
        let before = outputs.len();
        let mut report = match step {
            Step::Event(event) => {
                let path = format!("steps[{i}].event");
                let (key, ts) = engine
                    .key_and_time(&event)
                    .map_err(|e| invalid(&path, e.message))?;
                engine
                    .push(event, &mut outputs)
                    .map_err(|e| invalid(&path, e.message))?;
                live.insert(key.clone());
                json!({"step": i, "kind": "event", "key": key, "timestamp": ts})
            }
            Step::Watermark(w) => {
                engine.advance_watermark(w.millis(), &mut outputs);
                json!({"step": i, "kind": "watermark"})
            }
        };
        live.retain(|k| engine.due_of(k).is_some());
        let mut partial = Vec::new();
        for key in &live {
            for pm in engine.partial_matches(key) {
                partial.push(json!({
                    "key": key,
                    "state": pm.state,
                    "start_timestamp": pm.start_timestamp,
                    "times_out_at": times_out_at(pattern, pm.start_timestamp),
                    "events": pm.events,
                }));
            }
        }
        report["watermark"] = watermark_json(engine.watermark());
        report["outputs"] = json!((before..outputs.len()).collect::<Vec<_>>());
        report["partial_matches"] = Value::Array(partial);
        reports.push(report);
    }
    let outputs = serde_json::to_value(&outputs).map_err(AppError::internal)?;
    Ok(json!({
        "pattern": pattern.name(),
        "outputs": outputs,
        "steps": reports,
        "watermark": watermark_json(engine.watermark()),
    }))
}
