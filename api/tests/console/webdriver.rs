//! Headless Chromium driven through chromedriver's W3C WebDriver HTTP API, with reqwest.
//!
//! Needs Debian's `chromium` and `chromium-driver` packages (`scripts/prereqs.sh --tests`
//! installs them); no browser is downloaded at run time.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

/// The W3C key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long `wait_for` waits before failing the test.
const WAIT: Duration = Duration::from_secs(20);

fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for name in names {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

/// A chromedriver process and one browser session.
pub struct Browser {
    driver: Child,
    client: reqwest::Client,
    session: String,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    /// Ends the session (the browser exits) and stops chromedriver, also when a test fails.
    fn drop(&mut self) {
        let url = self.session.clone();
        // On its own thread and runtime: a test's runtime may be gone, or busy, by now.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let _ = reqwest::Client::new()
                    .delete(url)
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await;
            });
        })
        .join();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Browser {
    /// Starts chromedriver on a free port and a headless Chromium with a fresh profile, its
    /// window 1280x800.
    pub async fn start() -> Browser {
        let chromium = find_program(&["chromium", "chromium-browser"]).expect(
            "chromium is not installed: run scripts/prereqs.sh --tests (Debian packages chromium and chromium-driver)",
        );
        let chromedriver = find_program(&["chromedriver"]).expect(
            "chromedriver is not installed: run scripts/prereqs.sh --tests (Debian package chromium-driver)",
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = client
                .get(format!("{base}/status"))
                .send()
                .await
                .ok()
                .map(|r| r.status().is_success())
                .unwrap_or(false);
            if ready {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let args = vec![
            "--headless".to_string(),
            "--no-sandbox".to_string(),
            "--disable-gpu".to_string(),
            "--disable-quic".to_string(),
            "--no-first-run".to_string(),
            "--disable-background-networking".to_string(),
            "--disable-component-update".to_string(),
            "--disable-sync".to_string(),
            "--disable-dev-shm-usage".to_string(),
            "--window-size=1280,800".to_string(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
            "goog:loggingPrefs": {"browser": "ALL"}
        }}});
        let mut driver = driver;
        let response = client
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .expect("new session");
        let body: Value = response.json().await.unwrap();
        let Some(id) = body["value"]["sessionId"].as_str() else {
            let _ = driver.kill();
            panic!("chromedriver refused the session: {body}");
        };
        let browser = Browser {
            session: format!("{base}/session/{id}"),
            driver,
            client,
            _profile: profile,
        };
        // The viewport itself 1280x800 (the window size includes what the window draws around
        // it), so that screenshots have that size.
        browser
            .post(
                "/goog/cdp/execute",
                json!({"cmd": "Emulation.setDeviceMetricsOverride", "params": {
                    "width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": false
                }}),
            )
            .await;
        browser
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{}", self.session, path);
        let mut request = self.client.request(method, &url);
        // WebDriver wants a JSON body on every POST, `{}` when there is nothing to say.
        request = request.json(&body.unwrap_or_else(|| json!({})));
        let response = request.send().await.expect("webdriver call");
        let status = response.status();
        let body: Value = response.json().await.expect("webdriver answers JSON");
        assert!(status.is_success(), "{path}: {status} {body}");
        body["value"].clone()
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    /// Opens a URL.
    pub async fn goto(&self, url: &str) {
        self.post("/url", json!({"url": url})).await;
    }

    /// Runs a script (its body; `arguments` are `args`) and returns what it returns.
    pub async fn execute(&self, script: &str, args: Value) -> Value {
        self.post("/execute/sync", json!({"script": script, "args": args}))
            .await
    }

    /// Waits until `script` (an expression's body, e.g. `return ...`) returns something truthy,
    /// and returns it; fails the test after 20 s, saying what it waited for.
    pub async fn wait_for(&self, what: &str, script: &str, args: Value) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let v = self.execute(script, args.clone()).await;
            let truthy =
                !matches!(&v, Value::Null | Value::Bool(false)) && v != json!("") && v != json!(0);
            if truthy {
                return v;
            }
            if Instant::now() > deadline {
                let text = self
                    .execute(
                        "return document.getElementById('main').innerText",
                        json!([]),
                    )
                    .await;
                panic!("timed out waiting for {what}; the page shows:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The element that `css` selects (waiting for it to exist).
    pub async fn find(&self, css: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let url = format!("{}/element", self.session);
            let response = self
                .client
                .post(&url)
                .json(&json!({"using": "css selector", "value": css}))
                .send()
                .await
                .unwrap();
            if response.status().is_success() {
                let v: Value = response.json().await.unwrap();
                match v["value"][ELEMENT].as_str() {
                    Some(id) => return id.to_string(),
                    None => panic!("find {css}: {v}"),
                }
            }
            assert!(Instant::now() < deadline, "no element matches {css}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Clicks the element that `css` selects.
    pub async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.post(&format!("/element/{id}/click"), json!({})).await;
    }

    /// Empties a text field and types `text` into it, key by key.
    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.post(&format!("/element/{id}/clear"), json!({})).await;
        self.post(&format!("/element/{id}/value"), json!({"text": text}))
            .await;
    }

    /// Sets a text field's value at once (for long texts) and tells the page it changed.
    pub async fn set_value(&self, css: &str, text: &str) {
        self.find(css).await;
        self.execute(
            "const el = document.querySelector(arguments[0]); el.value = arguments[1]; \
             el.dispatchEvent(new Event('input', {bubbles: true})); \
             el.dispatchEvent(new Event('change', {bubbles: true}));",
            json!([css, text]),
        )
        .await;
    }

    /// The visible text of the element that `css` selects.
    pub async fn text(&self, css: &str) -> String {
        let id = self.find(css).await;
        self.call(reqwest::Method::GET, &format!("/element/{id}/text"), None)
            .await
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// Errors the page reported: uncaught exceptions and rejections (collected by the page
    /// itself), and the browser log's SEVERE entries that are not answers of the API (a 400 to a
    /// bad pattern is the console doing its job).
    pub async fn errors(&self) -> Vec<String> {
        let mut errors: Vec<String> = self
            .execute(
                "return window.consoleErrors || ['no error collector']",
                json!([]),
            )
            .await
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.as_str().unwrap_or("").to_string())
            .collect();
        let log = self.post("/se/log", json!({"type": "browser"})).await;
        for entry in log.as_array().cloned().unwrap_or_default() {
            let message = entry["message"].as_str().unwrap_or("");
            let network = entry["source"] == "network"
                || message
                    .contains("Failed to load resource: the server responded with a status of 4");
            if entry["level"] == "SEVERE" && !network {
                errors.push(message.to_string());
            }
        }
        errors
    }

    /// A PNG of the viewport; written to `dir/name` when `dir` is given. Returns (width, height).
    pub async fn screenshot(&self, dir: Option<&Path>, name: &str) -> (u32, u32) {
        let data = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().unwrap())
            .unwrap();
        assert_eq!(&png[1..4], b"PNG");
        let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
        let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
        if let Some(dir) = dir {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(dir.join(name), &png).unwrap();
        }
        (width, height)
    }
}
