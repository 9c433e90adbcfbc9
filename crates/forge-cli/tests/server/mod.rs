//! Harness for end-to-end tests: the real `forge-overlay serve` as a child process, and a small HTTP
//! client that checks statuses and the standard error body.
#![allow(dead_code)] // Each test binary uses its own part of the harness.

use reqwest::Method;
use reqwest::blocking::{Client, RequestBuilder, Response, multipart};
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The admin token servers get through `FORGE_ADMIN_TOKEN` unless told otherwise.
pub const ADMIN_TOKEN: &str = "fgo_end-to-end-admin-token";

/// How long a server may take to print its address, or to stop.
const PATIENCE: Duration = Duration::from_secs(60);

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/wasm").join(name)
}

pub fn fixture_text(name: &str) -> String {
    std::fs::read_to_string(fixture(name)).unwrap()
}

pub fn fixture_bytes(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).unwrap()
}

/// `echo.toml` renamed and re-versioned, so one binary can be registered many times.
pub fn echo_manifest(name: &str, version: &str) -> String {
    fixture_text("echo.toml")
        .replace("name = \"echo\"", &format!("name = \"{name}\""))
        .replace("version = \"0.1.0\"", &format!("version = \"{version}\""))
}

/// A module whose `spin` entry point loops until its deadline: an invocation that stays in flight
/// for `max_execution_ms`.
pub const SPIN_WAT: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "forge_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "spin") (param i32 i32) (result i64) (loop $forever (br $forever)) (i64.const 0)))"#;

pub fn spin_manifest(max_execution_ms: u32) -> Value {
    json!({"name": "spin", "version": "1.0.0", "entry_points": ["spin"],
           "max_execution_ms": max_execution_ms, "max_fuel": 1_000_000_000_000_000u64})
}

/// How to start a server.
pub struct Launch {
    data_dir: PathBuf,
    working_dir: Option<PathBuf>,
    env: Vec<(String, String)>,
    args: Vec<String>,
    admin_token: bool,
}

impl Launch {
    /// `serve --bind 127.0.0.1:0 --data-dir DIR` with [`ADMIN_TOKEN`] and none of the caller's
    /// `FORGE_*` variables.
    pub fn new(data_dir: &Path) -> Self {
        Launch {
            data_dir: data_dir.to_owned(),
            working_dir: None,
            env: Vec::new(),
            args: Vec::new(),
            admin_token: true,
        }
    }

    /// Runs the server in `dir`, against which a relative data directory is resolved.
    pub fn in_dir(mut self, dir: &Path) -> Self {
        self.working_dir = Some(dir.to_owned());
        self
    }

    pub fn env(mut self, name: &str, value: impl Into<String>) -> Self {
        self.env.push((name.to_owned(), value.into()));
        self
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn without_admin_token(mut self) -> Self {
        self.admin_token = false;
        self
    }

    pub fn start(self) -> ServerProcess {
        let data_dir = match &self.working_dir {
            Some(dir) => dir.join(&self.data_dir),
            None => self.data_dir.clone(),
        };
        std::fs::create_dir_all(&data_dir).unwrap();
        let log_path = data_dir.with_extension("log");
        let log = OpenOptions::new().create(true).append(true).open(&log_path).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_forge-overlay"));
        command.args(["serve", "--bind", "127.0.0.1:0", "--data-dir"]).arg(&self.data_dir).args(&self.args);
        if let Some(dir) = &self.working_dir {
            command.current_dir(dir);
        }
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("FORGE_") {
                command.env_remove(name);
            }
        }
        if self.admin_token {
            command.env("FORGE_ADMIN_TOKEN", ADMIN_TOKEN);
        }
        command.envs(self.env).env("FORGE_LOG", "info");
        let mut child =
            command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::from(log)).spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let read = BufReader::new(stdout).read_line(&mut line);
            sender.send(read.map(|_| line)).ok();
        });
        let line = receiver.recv_timeout(PATIENCE).ok().and_then(Result::ok).unwrap_or_default();
        let Some(url) = line.trim().strip_prefix("listening on ").map(str::to_owned) else {
            child.kill().ok();
            child.wait().ok();
            panic!("server did not start: stdout {line:?}\n{}", std::fs::read_to_string(&log_path).unwrap());
        };
        assert!(url.starts_with("http://127.0.0.1:"), "{url}");
        ServerProcess { child, url, log: log_path }
    }
}

/// A running `forge-overlay serve`. Killed when dropped; its log is printed if a test failed.
pub struct ServerProcess {
    child: Child,
    pub url: String,
    log: PathBuf,
}

impl ServerProcess {
    pub fn api(&self, token: &str) -> Api {
        Api::new(&self.url, Some(token))
    }

    pub fn admin(&self) -> Api {
        self.api(ADMIN_TOKEN)
    }

    pub fn anonymous(&self) -> Api {
        Api::new(&self.url, None)
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Panics unless the process is still running and answers `/health`.
    pub fn assert_serving(&mut self) {
        assert!(self.child.try_wait().unwrap().is_none(), "the server exited");
        let health = self.anonymous().get("/health");
        assert_eq!((health.status, health.body["status"].as_str()), (200, Some("ok")));
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(mut self) -> ExitStatus {
        signal(self.pid(), nix::sys::signal::Signal::SIGTERM);
        self.wait()
    }

    /// SIGKILL, then waits for the process to be gone.
    pub fn kill(mut self) {
        signal(self.pid(), nix::sys::signal::Signal::SIGKILL);
        self.wait();
    }

    fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the server did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn signal(pid: i32, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal).unwrap();
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.child.kill().ok();
            self.child.wait().ok();
        }
        if std::thread::panicking() {
            eprintln!("--- server log ({}) ---\n{}", self.log.display(), self.log());
        }
    }
}

/// A client of one server, with or without a token.
#[derive(Clone)]
pub struct Api {
    client: Client,
    base: String,
    token: Option<String>,
}

/// An answer: status, headers and body (JSON, or the text as a JSON string).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    fn from(response: Response) -> reqwest::Result<Reply> {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text()?;
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok(Reply { status, headers, body })
    }

    /// The `data` of a success with `status`; panics with the body otherwise.
    pub fn data(self, status: u16) -> Value {
        assert_eq!(self.status, status, "{}", self.body);
        let Value::Object(mut body) = self.body else { panic!("not a JSON object: {}", self.body) };
        body.remove("data").unwrap_or_else(|| panic!("no data in {body:?}"))
    }

    /// Asserts a refusal with `status` and exactly the standard body, code `code`; returns the body.
    pub fn refused(&self, status: u16, code: &str) -> &Value {
        assert_eq!(self.status, status, "{}", self.body);
        let body = self.body.as_object().unwrap_or_else(|| panic!("not a JSON object: {}", self.body));
        let keys: Vec<&str> = body.keys().map(String::as_str).collect();
        assert_eq!(keys, ["code", "details", "message"], "{}", self.body);
        assert_eq!(body["code"], code, "{}", self.body);
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{}", self.body);
        assert!(body["details"].is_object(), "{}", self.body);
        assert_eq!(self.header("content-type"), Some("application/json"));
        &self.body
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Api {
    pub fn new(base: &str, token: Option<&str>) -> Api {
        let client = Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
        Api { client, base: base.to_owned(), token: token.map(str::to_owned) }
    }

    /// A request with this client's token.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let request = self.client.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    pub fn send(&self, request: RequestBuilder) -> Reply {
        self.try_send(request).unwrap()
    }

    /// Sends, and says so if the server did not answer (it was killed, say).
    pub fn try_send(&self, request: RequestBuilder) -> reqwest::Result<Reply> {
        Reply::from(request.send()?)
    }

    pub fn get(&self, path: &str) -> Reply {
        self.send(self.request(Method::GET, path))
    }

    pub fn post(&self, path: &str, body: &Value) -> Reply {
        self.send(self.request(Method::POST, path).json(body))
    }

    pub fn post_empty(&self, path: &str) -> Reply {
        self.send(self.request(Method::POST, path))
    }

    pub fn put(&self, path: &str, body: &Value) -> Reply {
        self.send(self.request(Method::PUT, path).json(body))
    }

    pub fn delete(&self, path: &str) -> Reply {
        self.send(self.request(Method::DELETE, path))
    }

    /// Registers a module with its manifest (TOML text) as multipart.
    pub fn register_multipart(&self, manifest_toml: &str, wasm: Vec<u8>) -> Reply {
        let form = multipart::Form::new()
            .text("manifest", manifest_toml.to_owned())
            .part("wasm", multipart::Part::bytes(wasm).file_name("overlay.wasm"));
        self.send(self.request(Method::POST, "/api/v1/overlays").multipart(form))
    }

    /// Registers a module with its manifest (a JSON object, or TOML/JSON text) as JSON.
    pub fn register_json(&self, manifest: Value, wasm: &[u8]) -> Reply {
        use base64::Engine;
        let wasm_base64 = base64::engine::general_purpose::STANDARD.encode(wasm);
        self.post("/api/v1/overlays", &json!({"manifest": manifest, "wasm_base64": wasm_base64}))
    }

    /// Registers `echo.wasm` as `name@version` and activates it (as this client, so an admin).
    pub fn active_echo(&self, name: &str, version: &str) -> Value {
        let overlay =
            self.register_multipart(&echo_manifest(name, version), fixture_bytes("echo.wasm")).data(201);
        self.post_empty(&format!("/api/v1/overlays/{}/activate", overlay["id"].as_str().unwrap())).data(200)
    }

    pub fn invoke(&self, id: &str, function: &str, args: Value) -> Reply {
        self.post(&format!("/api/v1/overlays/{id}/invoke"), &json!({"function": function, "args": args}))
    }

    pub fn health(&self, id: &str) -> Value {
        self.get(&format!("/api/v1/overlays/{id}/health")).data(200)
    }

    /// Creates a user with `roles` and `trust` (as this client, an admin); returns its token.
    pub fn create_user(&self, name: &str, roles: &[&str], trust: &str) -> String {
        let created = self
            .post("/api/v1/users", &json!({"name": name, "roles": roles, "trust_level": trust}))
            .data(201);
        assert_eq!(created["user"]["name"], name);
        created["token"].as_str().unwrap().to_owned()
    }
}

/// Every overlay on the server, through the paged list.
pub fn all_overlays(api: &Api) -> Vec<Value> {
    let mut overlays = Vec::new();
    for page in 1.. {
        let reply = api.get(&format!("/api/v1/overlays?page={page}&per_page=100"));
        assert_eq!(reply.status, 200, "{}", reply.body);
        let pages = reply.body["meta"]["pages"].as_u64().unwrap();
        overlays.extend(reply.body["data"].as_array().unwrap().iter().cloned());
        if page >= pages {
            break;
        }
    }
    overlays
}

/// The file a local object store keeps `key` in.
pub fn blob_path(data_dir: &Path, key: &str) -> PathBuf {
    data_dir.join("blobs").join(key)
}
