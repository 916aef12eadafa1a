//! The router: every endpoint, and the layers around them (auth, body limit, error shape,
//! panics, request logs).

mod events;
mod outputs;
mod patterns;
mod pipelines;
mod tryout;

pub use tryout::MAX_STEPS as MAX_TRY_STEPS;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::error::{error_body, AppError};
use crate::state::AppState;

/// The prefix of the API.
pub const PREFIX: &str = "/api/v1";

/// Every route, as (method, path): the OpenAPI document must list each (checked by a test).
#[cfg(test)]
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/api/v1/openapi.json"),
    ("get", "/api/v1/patterns"),
    ("post", "/api/v1/patterns"),
    ("post", "/api/v1/patterns/validate"),
    ("get", "/api/v1/patterns/{name}"),
    ("put", "/api/v1/patterns/{name}"),
    ("delete", "/api/v1/patterns/{name}"),
    ("get", "/api/v1/pipelines"),
    ("post", "/api/v1/pipelines"),
    ("get", "/api/v1/pipelines/{name}"),
    ("put", "/api/v1/pipelines/{name}"),
    ("delete", "/api/v1/pipelines/{name}"),
    ("post", "/api/v1/pipelines/{name}/pause"),
    ("post", "/api/v1/pipelines/{name}/resume"),
    ("post", "/api/v1/pipelines/{name}/watermark"),
    ("post", "/api/v1/pipelines/{name}/events"),
    ("get", "/api/v1/pipelines/{name}/matches"),
    ("get", "/api/v1/pipelines/{name}/matches/stream"),
    ("get", "/api/v1/pipelines/{name}/keys/{key}"),
    ("post", "/api/v1/try"),
];

/// Paths open without the bearer token.
const OPEN: &[&str] = &["/healthz", "/readyz"];

/// The service's router.
pub fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/openapi.json", get(openapi))
        .route("/patterns", get(patterns::list).post(patterns::create))
        .route("/patterns/validate", post(patterns::validate))
        .route(
            "/patterns/{name}",
            get(patterns::get)
                .put(patterns::put)
                .delete(patterns::delete),
        )
        .route("/pipelines", get(pipelines::list).post(pipelines::create))
        .route(
            "/pipelines/{name}",
            get(pipelines::get)
                .put(pipelines::put)
                .delete(pipelines::delete),
        )
        .route("/pipelines/{name}/pause", post(pipelines::pause))
        .route("/pipelines/{name}/resume", post(pipelines::resume))
        .route("/pipelines/{name}/watermark", post(pipelines::watermark))
        .route("/pipelines/{name}/events", post(events::ingest))
        .route("/pipelines/{name}/matches", get(outputs::recent))
        .route("/pipelines/{name}/matches/stream", get(outputs::stream))
        .route("/pipelines/{name}/keys/{key}", get(pipelines::key_state))
        .route("/try", post(tryout::run));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .nest(PREFIX, api)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        // After the auth layer, so that it does not apply: the console's page and assets load
        // without the token, and the console sends the token with each API call it makes.
        .merge(crate::console::routes())
        .layer(DefaultBodyLimit::max(state.config.body_limit))
        .layer(CatchPanicLayer::custom(panicked))
        .layer(middleware::from_fn(json_errors))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(Level::INFO))
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        .with_state(state)
}

/// Answers 415 unless the body is declared JSON (a missing Content-Type is taken as JSON).
pub fn require_json(headers: &HeaderMap) -> Result<(), AppError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let media = value
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if media == "application/json" || media.ends_with("+json") {
        Ok(())
    } else {
        Err(AppError::unsupported_media_type(format!(
            "expected Content-Type: application/json, not '{media}'"
        )))
    }
}

/// Compares without an early exit, so timing does not reveal a prefix of the token.
fn same_token(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = given.len() ^ expected.len();
    for (i, e) in expected.iter().enumerate() {
        diff |= (given.get(i).copied().unwrap_or(0) ^ e) as usize;
    }
    diff == 0
}

async fn auth(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let Some(token) = state.config.auth_token.as_deref() else {
        return next.run(request).await;
    };
    if OPEN.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    match given {
        Some(given) if same_token(given.as_bytes(), token.as_bytes()) => next.run(request).await,
        _ => {
            let mut response = AppError::unauthorized().into_response();
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            response
        }
    }
}

/// Gives error answers that do not come from our handlers (unknown method, body limit checked by
/// a layer, panics) the service's JSON error shape.
async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return response;
    }
    let (code, message) = match status {
        StatusCode::METHOD_NOT_ALLOWED => ("method_not_allowed", "method not allowed on this path"),
        StatusCode::PAYLOAD_TOO_LARGE => (
            "payload_too_large",
            "the request body is larger than the configured limit",
        ),
        StatusCode::NOT_FOUND => ("not_found", "no such resource"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ("unsupported_media_type", "unsupported content type")
        }
        s if s.is_server_error() => ("internal", "internal error"),
        _ => ("bad_request", "bad request"),
    };
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let body = error_body(code, message, &Value::Null).to_string();
    Response::from_parts(parts, Body::from(body))
}

fn panicked(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    tracing::error!(panic = detail, "a request handler panicked");
    AppError::internal(anyhow::anyhow!("handler panicked")).into_response()
}

async fn not_found() -> AppError {
    AppError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(state): State<Arc<AppState>>) -> Result<Json<Value>, AppError> {
    if state.is_draining() {
        return Err(AppError::unavailable("shutting down"));
    }
    if let Some(reason) = state.store_failure() {
        return Err(AppError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            format!("the store refuses writes ({reason}); restart the service to restore its last durable state"),
        ));
    }
    Ok(Json(json!({"status": "ready"})))
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        crate::metrics::render(&state),
    )
        .into_response()
}

async fn openapi() -> Json<Value> {
    Json(crate::openapi::document())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        assert!(same_token(b"abc", b"abc"));
        assert!(!same_token(b"abd", b"abc"));
        assert!(!same_token(b"ab", b"abc"));
        assert!(!same_token(b"abcd", b"abc"));
    }
}
