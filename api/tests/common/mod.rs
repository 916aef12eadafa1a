//! A real service on 127.0.0.1:0 with a temporary data directory, and a small HTTP client.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use cep_api::{RunningServer, ServeConfig};
use serde_json::{json, Value};

pub struct TestServer {
    server: Option<RunningServer>,
    pub base: String,
    pub client: reqwest::Client,
    pub data_dir: PathBuf,
    token: Option<String>,
}

/// The README's login-failure pattern: three consecutive failed logins of a key within 2 s.
pub fn login_failures() -> Value {
    json!({
        "name": "login-failures",
        "within": "2s",
        "after_match": "skip_past_last_event",
        "stages": [{"name": "fail", "where": "type == 'fail'", "times": 3, "consecutive": true}]
    })
}

/// A one-stage pattern matching `type == '<ty>'`.
pub fn single(name: &str, ty: &str) -> Value {
    json!({"name": name, "stages": [{"name": "s", "where": format!("type == '{ty}'")}]})
}

pub fn config(data_dir: &Path) -> ServeConfig {
    ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: data_dir.to_path_buf(),
        ..ServeConfig::default()
    }
}

impl TestServer {
    pub async fn start(data_dir: &Path) -> TestServer {
        TestServer::start_with(config(data_dir)).await
    }

    pub async fn start_with(config: ServeConfig) -> TestServer {
        let data_dir = config.data_dir.clone();
        let token = config.auth_token.clone();
        let server = cep_api::start(config).await.expect("service starts");
        TestServer {
            base: format!("http://{}", server.addr()),
            server: Some(server),
            client: reqwest::Client::new(),
            data_dir,
            token,
        }
    }

    pub async fn stop(mut self) {
        self.server
            .take()
            .unwrap()
            .shutdown()
            .await
            .expect("clean shutdown");
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    fn authed(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => request.bearer_auth(t),
            None => request,
        }
    }

    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.authed(self.client.request(method, self.url(path)))
    }

    /// Sends and returns (status, body as JSON or as a string).
    pub async fn send(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body read");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.send(self.request(reqwest::Method::GET, path)).await
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.send(self.request(reqwest::Method::DELETE, path)).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send(self.request(reqwest::Method::POST, path).json(body))
            .await
    }

    pub async fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send(self.request(reqwest::Method::PUT, path).json(body))
            .await
    }

    pub async fn post_raw(
        &self,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> (u16, Value) {
        let mut request = self.request(reqwest::Method::POST, path).body(body);
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        self.send(request).await
    }

    pub async fn text(&self, path: &str) -> (u16, String) {
        let response = self
            .request(reqwest::Method::GET, path)
            .send()
            .await
            .expect("request sent");
        (response.status().as_u16(), response.text().await.unwrap())
    }

    /// Registers a pattern, asserting 201.
    pub async fn register(&self, pattern: &Value) {
        let (status, body) = self.post("/api/v1/patterns", pattern).await;
        assert_eq!(status, 201, "{body}");
    }

    /// Posts events to a pipeline, asserting 202, and returns the report.
    pub async fn events(&self, pipeline: &str, events: &Value) -> Value {
        let (status, body) = self
            .post(&format!("/api/v1/pipelines/{pipeline}/events"), events)
            .await;
        assert_eq!(status, 202, "{body}");
        body
    }

    /// The recent outputs of a pipeline for a query string.
    pub async fn outputs(&self, pipeline: &str, query: &str) -> Vec<Value> {
        let (status, body) = self
            .get(&format!("/api/v1/pipelines/{pipeline}/matches{query}"))
            .await;
        assert_eq!(status, 200, "{body}");
        body["outputs"].as_array().unwrap().clone()
    }
}

/// Asserts the service's error shape and code, returning the error object.
pub fn assert_error(status: u16, body: &Value, want_status: u16, want_code: &str) -> Value {
    assert_eq!(status, want_status, "{body}");
    let error = &body["error"];
    assert!(error.is_object(), "not the error shape: {body}");
    assert_eq!(error["code"], want_code, "{body}");
    assert!(error["message"].is_string(), "{body}");
    assert!(error.get("details").is_some(), "{body}");
    error.clone()
}
