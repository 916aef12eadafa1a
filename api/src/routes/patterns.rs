//! /api/v1/patterns: register, list, read, replace, delete and validate patterns.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::require_json;
use crate::automaton::automaton;
use crate::error::{ApiBytes, ApiPath, ApiQuery, AppError};
use crate::state::AppState;
use crate::validate::{check_name, check_pattern};
use cep_patterns::Replace;
use serde::Deserialize;

/// POST /patterns: registers a new pattern; 409 if the name is taken.
pub async fn create(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiBytes(body): ApiBytes,
) -> Result<Response, AppError> {
    require_json(&headers)?;
    let valid = check_pattern(&state.config.limits, &body, None)?;
    let name = valid.compiled.name().to_string();
    let (_, shown) = state.put_pattern(valid, false, Replace::Drain)?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/api/v1/patterns/{name}"))],
        Json(shown),
    )
        .into_response())
}

/// GET /patterns: every pattern.
pub async fn list(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    Json(json!({ "patterns": state.patterns() }))
}

/// GET /patterns/{name}.
pub async fn get(
    State(state): State<Arc<AppState>>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<serde_json::Value>, AppError> {
    Ok(Json(state.pattern(&name)?))
}

/// The query of PUT /patterns/{name}.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutQuery {
    /// `drain` (default) or `restart`.
    mode: Option<String>,
}

/// PUT /patterns/{name}?mode=drain|restart: creates or replaces. A changed pattern gets the next
/// version; pipelines switch to it at once, and the previous version's partial matches drain
/// (run on to their match or timeout; the default) or restart (are dropped).
pub async fn put(
    State(state): State<Arc<AppState>>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(query): ApiQuery<PutQuery>,
    headers: HeaderMap,
    ApiBytes(body): ApiBytes,
) -> Result<Response, AppError> {
    require_json(&headers)?;
    check_name(&name).map_err(|m| AppError::bad_request("invalid_name", m))?;
    let mode: Replace = match query.mode.as_deref() {
        None => Replace::Drain,
        Some(m) => m.parse().map_err(|e: String| {
            AppError::bad_request("bad_query", e).with_details(json!({"parameter": "mode"}))
        })?,
    };
    let valid = check_pattern(&state.config.limits, &body, Some(&name))?;
    let (created, shown) = state.put_pattern(valid, true, mode)?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(shown)).into_response())
}

/// DELETE /patterns/{name}.
pub async fn delete(
    State(state): State<Arc<AppState>>,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, AppError> {
    state.delete_pattern(&name)?;
    Ok(StatusCode::NO_CONTENT)
}

/// POST /patterns/validate: the checks of POST /patterns, without storing; a valid pattern's
/// answer includes its automaton.
pub async fn validate(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiBytes(body): ApiBytes,
) -> Result<Json<serde_json::Value>, AppError> {
    require_json(&headers)?;
    let valid = check_pattern(&state.config.limits, &body, None)?;
    let name = valid.compiled.name().to_string();
    let exists = state.pattern(&name).is_ok();
    Ok(Json(json!({
        "valid": true,
        "name": name,
        "exists": exists,
        "automaton": automaton(&valid.compiled),
    })))
}
