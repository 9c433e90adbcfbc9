//! Harness for end-to-end tests: the real `forge-overlay serve` as a child process, spoken to with
//! the one client, forge-client: its typed methods, and its raw requests for what only a broken
//! client would send (checked for status and the standard error body).
#![allow(dead_code)] // Each test binary uses its own part of the harness.

use forge_client::{Client, Error};
use forge_model::api::{ListQuery, PageQuery};
use forge_model::{
    ErrorCode, ForgeError, HealthReport, LifecycleAction, NewUser, Overlay, OverlayInvocation, Role,
    TrustLevel,
};
use reqwest::blocking::{RequestBuilder, Response};
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use std::fmt::Debug;
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader};
use std::ops::Deref;
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

/// A guest's memory and its bump allocator: `forge_alloc` hands out memory from 1024 on.
pub const BUMP_ALLOCATOR_WAT: &str = r#"(memory (export "memory") 1)
  (global $next (mut i32) (i32.const 1024))
  (func (export "forge_alloc") (param $size i32) (result i32)
    (local $ptr i32)
    (local.set $ptr (global.get $next))
    (global.set $next (i32.add (global.get $next) (local.get $size)))
    (local.get $ptr))"#;

/// A guest whose `process` hands its input to the request / response host call `forge.{host_call}`
/// (`http_request`, `capsule_delete`, ...) and returns the host's answer.
pub fn forwarding_guest(host_call: &str) -> String {
    format!(
        r#"(module
  (import "forge" "{host_call}" (func $host (param i32 i32) (result i64)))
  {BUMP_ALLOCATOR_WAT}
  (func (export "process") (param $ptr i32) (param $len i32) (result i64)
    (call $host (local.get $ptr) (local.get $len))))"#
    )
}

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
        assert_eq!(self.anonymous().server_health().unwrap().status, "ok");
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

impl ServerProcess {
    /// Waits until the server runs `count` invocations (its `forge_instances_in_flight` gauge), so a
    /// busy machine cannot make a test send its next request before the previous one is running.
    pub fn await_in_flight(&self, count: u64) {
        let gauge = format!("forge_instances_in_flight {count}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.anonymous().get("/metrics").body.as_str().unwrap().lines().any(|line| line == gauge) {
            assert!(Instant::now() < deadline, "{count} invocations never ran at once");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
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

/// A client of one server, with or without a token: forge-client's typed methods, and raw requests
/// answered as [`Reply`].
#[derive(Clone)]
pub struct Api {
    client: Client,
}

impl Deref for Api {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

/// A raw answer: status, headers and body (JSON, or the text as a JSON string).
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

    /// Asserts [`Reply::refused`] with a `Retry-After` header of at least 1 s that equals
    /// `details.retry_after`, as every 429 and 503 carries; returns those seconds.
    pub fn refused_with_retry_after(&self, status: u16, code: &str) -> u64 {
        let body = self.refused(status, code);
        let seconds =
            body["details"]["retry_after"].as_u64().unwrap_or_else(|| panic!("no retry_after: {body}"));
        assert!(seconds >= 1, "{body}");
        assert_eq!(self.header("retry-after"), Some(seconds.to_string().as_str()), "{body}");
        seconds
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Asserts that a typed call was refused with `status` and `code`; returns the error body.
pub fn refusal<T: Debug>(result: Result<T, Error>, status: u16, code: ErrorCode) -> ForgeError {
    match result {
        Err(Error::Refused { status: got, error, .. }) => {
            assert_eq!((got.as_u16(), error.code), (status, code), "{error:?}");
            assert!(!error.message.is_empty());
            error
        }
        other => panic!("expected a {status} refusal, got {other:?}"),
    }
}

/// An invocation of `function` with `args` (a JSON object).
pub fn call(function: &str, args: Value) -> OverlayInvocation {
    let Value::Object(args) = args else { panic!("args must be an object: {args}") };
    OverlayInvocation::new(function, args)
}

impl Api {
    pub fn new(base: &str, token: Option<&str>) -> Api {
        Api { client: Client::new(base, token.map(str::to_owned)).unwrap() }
    }

    /// Sends a raw request (from [`Client::request`]) and returns the answer, whatever it is.
    pub fn send(&self, request: RequestBuilder) -> Reply {
        self.try_send(request).unwrap()
    }

    /// Sends, and says so if the server did not answer (it was killed, say).
    pub fn try_send(&self, request: RequestBuilder) -> reqwest::Result<Reply> {
        Reply::from(request.send()?)
    }

    pub fn get(&self, path: &str) -> Reply {
        self.send(self.request(reqwest::Method::GET, path))
    }

    pub fn post(&self, path: &str, body: &Value) -> Reply {
        self.send(self.request(reqwest::Method::POST, path).json(body))
    }

    pub fn post_empty(&self, path: &str) -> Reply {
        self.send(self.request(reqwest::Method::POST, path))
    }

    pub fn put(&self, path: &str, body: &Value) -> Reply {
        self.send(self.request(reqwest::Method::PUT, path).json(body))
    }

    pub fn delete(&self, path: &str) -> Reply {
        self.send(self.request(reqwest::Method::DELETE, path))
    }

    /// Registers `echo.wasm` as `name@version` and activates it (as this client, so an admin).
    pub fn active_echo(&self, name: &str, version: &str) -> Overlay {
        let overlay = self.register(echo_manifest(name, version), fixture_bytes("echo.wasm"), None).unwrap();
        self.transition(overlay.id, LifecycleAction::Activate, None).unwrap()
    }

    /// Overlays that spin until their deadline of `max_execution_ms`, one per name, registered and
    /// activated.
    pub fn active_spinners(&self, names: &[&str], max_execution_ms: u32) -> Vec<uuid::Uuid> {
        let spinner = |name: &&str| {
            let mut manifest = spin_manifest(max_execution_ms);
            manifest["name"] = json!(name);
            let overlay = self.register_json(manifest, SPIN_WAT.as_bytes(), None).unwrap();
            self.transition(overlay.id, LifecycleAction::Activate, None).unwrap().id
        };
        names.iter().map(spinner).collect()
    }

    pub fn health(&self, id: uuid::Uuid) -> HealthReport {
        self.overlay_health(id).unwrap()
    }

    /// Creates a user with `roles` and `trust` (as this client, an admin); returns its token.
    pub fn user_token(&self, name: &str, roles: &[Role], trust: TrustLevel) -> String {
        let user = NewUser { trust_level: trust, ..NewUser::new(name, roles.to_vec()) };
        let created = self.client.create_user(&user).unwrap();
        assert_eq!(created.user.name, name);
        created.token
    }
}

/// Every overlay on the server, through the paged list.
pub fn all_overlays(api: &Api) -> Vec<Overlay> {
    let mut overlays = Vec::new();
    for page in 1.. {
        let query = ListQuery::new(Default::default(), PageQuery { page: Some(page), per_page: Some(100) });
        let list = api.list_overlays(&query).unwrap();
        overlays.extend(list.data);
        if page >= list.meta.pages {
            break;
        }
    }
    overlays
}

/// The file a local object store keeps `key` in.
pub fn blob_path(data_dir: &Path, key: &str) -> PathBuf {
    data_dir.join("blobs").join(key)
}
