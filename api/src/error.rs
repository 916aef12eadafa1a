//! The one error type of the service and its JSON shape.
//!
//! Every error response has the body `{"error": {"code", "message", "details"}}`. Internal errors
//! are logged with their cause and answered with a generic message: nothing internal is returned.

use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

/// An error answered to a client.
#[derive(Debug)]
pub struct AppError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// Boxed: a `Value` is large, and this error travels in many `Result`s.
    details: Box<Value>,
    /// The cause of an internal error: logged, never returned.
    internal: Option<anyhow::Error>,
}

impl AppError {
    /// An error with a status, a machine-readable code and a message for people.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> AppError {
        AppError {
            status,
            code,
            message: message.into(),
            details: Box::new(Value::Null),
            internal: None,
        }
    }

    /// Adds details (e.g. the list of validation errors with their locations).
    pub fn with_details(mut self, details: Value) -> AppError {
        self.details = Box::new(details);
        self
    }

    /// The same error about a part of a larger document: the paths of `details.errors` (and of
    /// `details.path`) are prefixed with `prefix` (`pattern.stages[0].where`), and so is the
    /// message.
    pub fn located_under(mut self, prefix: &str) -> AppError {
        let join = |path: &str| {
            if path.is_empty() {
                prefix.to_string()
            } else if path.starts_with('[') {
                format!("{prefix}{path}")
            } else {
                format!("{prefix}.{path}")
            }
        };
        if let Some(errors) = self.details.get_mut("errors").and_then(Value::as_array_mut) {
            for e in errors {
                let path = e["path"].as_str().unwrap_or("").to_string();
                e["path"] = Value::from(join(&path));
            }
        } else if self.details.is_null() {
            *self.details = json!({"errors": [{"path": prefix, "message": self.message}]});
        }
        self.message = format!("{prefix}: {}", self.message);
        self
    }

    /// 400: the request is malformed or invalid.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> AppError {
        AppError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 404: no such resource.
    pub fn not_found(what: &str, name: &str) -> AppError {
        AppError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} '{name}' does not exist"),
        )
    }

    /// 409: the request conflicts with the current state.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> AppError {
        AppError::new(StatusCode::CONFLICT, code, message)
    }

    /// 422: well-formed, but not acceptable.
    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> AppError {
        AppError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    /// 415: a content type the endpoint does not read.
    pub fn unsupported_media_type(message: impl Into<String>) -> AppError {
        AppError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            message,
        )
    }

    /// 413: the body is larger than the configured limit.
    pub fn payload_too_large() -> AppError {
        AppError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the request body is larger than the configured limit",
        )
    }

    /// 401: missing or wrong bearer token.
    pub fn unauthorized() -> AppError {
        AppError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid bearer token is required",
        )
    }

    /// 503: the service is shutting down or not ready.
    pub fn unavailable(message: impl Into<String>) -> AppError {
        AppError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// 500: an internal failure; `cause` is logged, the client sees a generic message.
    pub fn internal(cause: impl Into<anyhow::Error>) -> AppError {
        AppError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal",
            message: "internal error".to_string(),
            details: Box::new(Value::Null),
            internal: Some(cause.into()),
        }
    }

    /// The status code answered.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The machine-readable code answered.
    pub fn code(&self) -> &'static str {
        self.code
    }
}

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.status, self.code, self.message)
    }
}

impl From<anyhow::Error> for AppError {
    fn from(e: anyhow::Error) -> AppError {
        AppError::internal(e)
    }
}

/// The JSON body of an error response.
pub fn error_body(code: &str, message: &str, details: &Value) -> Value {
    json!({"error": {"code": code, "message": message, "details": details}})
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        if let Some(cause) = &self.internal {
            tracing::error!(error = format!("{cause:#}"), "internal error");
        } else if self.status.is_server_error() {
            tracing::warn!(code = self.code, message = %self.message, "request failed");
        } else {
            tracing::debug!(status = %self.status, code = self.code, message = %self.message, "request rejected");
        }
        let body = error_body(self.code, &self.message, &self.details);
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<JsonRejection> for AppError {
    fn from(rejection: JsonRejection) -> AppError {
        match rejection {
            JsonRejection::JsonSyntaxError(e) => {
                AppError::bad_request("malformed_json", e.body_text())
            }
            JsonRejection::JsonDataError(e) => {
                AppError::unprocessable("invalid_body", e.body_text())
            }
            JsonRejection::MissingJsonContentType(_) => {
                AppError::unsupported_media_type("expected Content-Type: application/json")
            }
            JsonRejection::BytesRejection(e) => bytes_rejection(e.status()),
            other => AppError::bad_request("bad_request", other.body_text()),
        }
    }
}

impl From<BytesRejection> for AppError {
    fn from(rejection: BytesRejection) -> AppError {
        bytes_rejection(rejection.status())
    }
}

impl From<PathRejection> for AppError {
    fn from(rejection: PathRejection) -> AppError {
        AppError::bad_request("bad_path", rejection.body_text())
    }
}

impl From<QueryRejection> for AppError {
    fn from(rejection: QueryRejection) -> AppError {
        AppError::bad_request("bad_query", rejection.body_text())
    }
}

fn bytes_rejection(status: StatusCode) -> AppError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        AppError::payload_too_large()
    } else {
        AppError::bad_request("bad_body", "the request body could not be read")
    }
}

/// `axum::Json` whose rejections answer in the service's error shape.
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let axum::Json(value) = axum::Json::<T>::from_request(req, state).await?;
        Ok(ApiJson(value))
    }
}

/// `axum::extract::Path` whose rejections answer in the service's error shape.
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(value) =
            axum::extract::Path::<T>::from_request_parts(parts, state).await?;
        Ok(ApiPath(value))
    }
}

/// `axum::extract::Query` whose rejections answer in the service's error shape.
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Query(value) =
            axum::extract::Query::<T>::from_request_parts(parts, state).await?;
        Ok(ApiQuery(value))
    }
}

/// The body as bytes, with the size limit answered as 413 in the service's error shape.
pub struct ApiBytes(pub axum::body::Bytes);

impl<S> FromRequest<S> for ApiBytes
where
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(req, state).await?;
        Ok(ApiBytes(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_hide_their_cause() {
        let e = AppError::internal(anyhow::anyhow!("disk /secret/path failed"));
        let body = error_body(e.code, &e.message, &e.details);
        assert_eq!(body["error"]["code"], "internal");
        assert!(!body.to_string().contains("secret"));
    }
}
