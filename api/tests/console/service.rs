//! A real `cep serve` process on 127.0.0.1, with a fresh data directory.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

/// A running `cep serve`; stopped when dropped.
pub struct Service {
    child: Child,
    pub base: String,
    token: Option<String>,
    client: reqwest::Client,
    _data: tempfile::TempDir,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Fails at once, saying why, when the binary does not serve the console (e.g. one built from
/// another checkout into a shared target directory), instead of failing every step later.
fn assert_serves_the_console(addr: &str) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(
        answer.lines().next().is_some_and(|l| l.contains(" 200"))
            && answer.contains("<title>CEP console</title>"),
        "{} does not serve the console at /: is it built from this checkout?\n{}",
        env!("CARGO_BIN_EXE_cep"),
        answer.lines().next().unwrap_or("")
    );
}

impl Service {
    /// Starts `cep serve --listen 127.0.0.1:0` (with `--auth-token` when given) and waits until
    /// it logs the address it listens on.
    pub fn start(token: Option<&str>) -> Service {
        let data = tempfile::tempdir().unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_cep"));
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
            .arg("--data-dir")
            .arg(data.path())
            .args(["--default-pipeline", "false"])
            .env_remove("CEP_AUTH_TOKEN")
            .env_remove("CEP_CONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(token) = token {
            command.args(["--auth-token", token]);
        }
        let mut child = command.spawn().expect("cep serve starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Reads to the end, so that the service never writes to a closed pipe.
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        loop {
            let line = match rx.recv_timeout(Duration::from_secs(120)) {
                Ok(line) => line,
                Err(e) => {
                    let _ = child.kill();
                    let status = child.wait();
                    panic!("cep serve did not log that it listens ({e}); it ended with {status:?}");
                }
            };
            let Ok(entry) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if entry["fields"]["message"] == "listening" {
                let addr = entry["fields"]["addr"].as_str().unwrap().to_string();
                assert_serves_the_console(&addr);
                return Service {
                    child,
                    base: format!("http://{addr}"),
                    token: token.map(str::to_string),
                    client: reqwest::Client::new(),
                    _data: data,
                };
            }
        }
    }

    /// The URL of a path of the service.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let request = match &self.token {
            Some(t) => request.bearer_auth(t),
            None => request,
        };
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// GET through the API (with the token, if any).
    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.send(self.client.get(self.url(path))).await
    }

    /// POST JSON through the API (with the token, if any).
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send(self.client.post(self.url(path)).json(body)).await
    }
}
