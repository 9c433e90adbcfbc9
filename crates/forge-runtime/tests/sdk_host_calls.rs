//! Every host-function wrapper of the C and AssemblyScript SDKs, through the real runtime: the
//! test guests (sdks/c/tests/host_calls.c, sdks/assemblyscript/tests/host-calls.ts) expose one
//! entry point per wrapper and answer what the wrapper gave them, `{"ok": ...}` or
//! `{"error": {"code", "message"}}`, after parsing it into the SDK's own types.

mod common;
use common::*;
use forge_model::{CapsuleType, ErrorKind, LogLevel, TrustLevel};
use forge_runtime::{
    CallOutcome, GuestErrorCode, HostCallError, HostServices, HttpClient, HttpResponse, InMemoryCapsules,
    OutboundRequest, PreparedOverlay, Runtime,
};
use serde_json::{Value, json};
use std::sync::Arc;

/// The SDKs' test guests in fixtures/wasm (scripts/build-sdk-fixtures.sh).
const GUESTS: [(&str, &str); 2] =
    [("c", "sdk-host-calls-c.wasm"), ("assemblyscript", "sdk-host-calls-as.wasm")];

const MANIFEST: &str = r#"
capabilities = ["capsule:read", "capsule:write",
                { name = "network:http", constraints = { hosts = ["api.example.com"] } }]
entry_points = ["log", "fail", "read", "search", "create", "http"]
# json-as initialises its tables in `_initialize`, which takes over a million units of fuel.
max_fuel = 20000000
"#;

/// Answers every request with its own method, url and body, or refuses paths under `/missing`.
struct Mirror;

#[async_trait::async_trait]
impl HttpClient for Mirror {
    async fn send(&self, request: OutboundRequest) -> Result<HttpResponse, HostCallError> {
        if request.url.path().starts_with("/missing") {
            return Err(HostCallError::refused(
                GuestErrorCode::NotFound,
                format!("nothing at {}", request.url),
            ));
        }
        let headers =
            [("x-method".to_string(), request.method.to_owned())].into_iter().chain(request.headers);
        Ok(HttpResponse {
            status: 201,
            headers: headers.collect(),
            body: format!("{} {}", request.url, request.body.unwrap_or_default()),
        })
    }
}

struct Guest {
    language: &'static str,
    runtime: Runtime,
    prepared: PreparedOverlay,
    store: Arc<InMemoryCapsules>,
}

impl Guest {
    fn call(&self, function: &str, input: Value) -> CallOutcome {
        call(&self.runtime, &self.prepared, function, input)
    }

    /// Calls `function` and returns what its wrapper answered.
    fn answer(&self, function: &str, input: Value) -> Value {
        let outcome = self.call(function, input);
        assert!(outcome.result.success, "{} {function}: {:?}", self.language, outcome.result);
        Value::Object(outcome.result.result.unwrap())
    }
}

/// Each SDK's guest on a runtime with a few capsules and the mirroring HTTP client.
fn guests() -> impl Iterator<Item = Guest> {
    GUESTS.into_iter().map(|(language, file)| {
        let store = capsule_store(&[
            ("wasm sandboxes keep overlays apart", TrustLevel::Sandbox),
            ("core secrets about wasm", TrustLevel::Core),
        ]);
        let runtime = runtime_with(HostServices { capsules: store.clone(), http: Arc::new(Mirror) });
        let prepared = runtime.prepare(&manifest(MANIFEST), &fixture(file)).unwrap();
        Guest { language, runtime, prepared, store }
    })
}

#[test]
fn log_wrappers_write_info_and_error_lines() {
    for guest in guests() {
        let outcome = guest.call("log", json!({"info": "all good", "error": "not so good"}));
        assert!(outcome.result.success, "{}: {:?}", guest.language, outcome.result);
        let lines: Vec<_> = outcome.log.lines.iter().map(|l| (l.level, l.message.as_str())).collect();
        assert_eq!(
            lines,
            [(LogLevel::Info, "all good"), (LogLevel::Error, "not so good")],
            "{}",
            guest.language
        );
    }
}

#[test]
fn fail_ends_the_call_with_the_message() {
    for guest in guests() {
        let failed = guest.call("fail", json!({"message": "on purpose"})).result;
        assert_eq!(failed.error_kind, Some(ErrorKind::OverlayError), "{}", guest.language);
        assert_eq!(failed.error.as_deref(), Some("on purpose"), "{}", guest.language);
    }
}

#[test]
fn capsule_read_answers_the_capsule_or_not_found() {
    for guest in guests() {
        let all = guest.store.all();
        let capsule = guest.answer("read", json!({"id": all[0].id}));
        assert_eq!(capsule["ok"]["id"], all[0].id.to_string(), "{}", guest.language);
        assert_eq!(capsule["ok"]["content"], "wasm sandboxes keep overlays apart", "{}", guest.language);
        assert_eq!(capsule["ok"]["type"], "knowledge", "{}", guest.language);
        assert_eq!(capsule["ok"]["owner"], "alice", "{}", guest.language);
        let hidden = guest.answer("read", json!({"id": all[1].id}));
        assert_eq!(hidden["error"]["code"], "not_found", "{}: trust filter", guest.language);
        assert!(hidden["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{}", guest.language);
    }
}

#[test]
fn capsule_search_answers_visible_hits() {
    for guest in guests() {
        let hits = guest.answer("search", json!({"query": "wasm", "limit": 5}));
        let hits = hits["ok"].as_array().unwrap_or_else(|| panic!("{}: {hits}", guest.language));
        assert_eq!(hits.len(), 1, "{}: the core capsule stays hidden", guest.language);
        assert_eq!(hits[0]["capsule"]["content"], "wasm sandboxes keep overlays apart", "{}", guest.language);
        assert!(hits[0]["score"].as_f64().unwrap() > 0.0, "{}", guest.language);
    }
}

#[test]
fn capsule_create_stores_content_type_and_metadata() {
    for guest in guests() {
        let request = json!({"content": "a new insight", "type": "insight", "metadata": {"sources": [1, 2]}});
        let created = guest.answer("create", request);
        let stored = guest.store.all().into_iter().find(|c| c.content == "a new insight").unwrap();
        assert_eq!(created["ok"]["id"], stored.id.to_string(), "{}", guest.language);
        assert_eq!(stored.capsule_type, CapsuleType::Insight, "{}", guest.language);
        assert_eq!(stored.metadata["sources"], json!([1, 2]), "{}", guest.language);
        let refused = guest.answer("create", json!({"content": "x", "type": "rumour", "metadata": {}}));
        assert_eq!(refused["error"]["code"], "invalid_request", "{}", guest.language);
    }
}

#[test]
fn http_request_sends_method_headers_and_body_and_reads_the_response() {
    for guest in guests() {
        let request = json!({"method": "POST", "url": "https://api.example.com/echo",
                             "headers": {"content-type": "text/plain"}, "body": "ping"});
        let response = guest.answer("http", request);
        assert_eq!(
            response["ok"],
            json!({"status": 201, "body": "https://api.example.com/echo ping",
                   "headers": {"content-type": "text/plain", "x-method": "POST"}}),
            "{}",
            guest.language
        );
        let missing = guest.answer(
            "http",
            json!({"method": "GET", "url": "https://api.example.com/missing", "headers": {}}),
        );
        assert_eq!(missing["error"]["code"], "not_found", "{}", guest.language);
        assert_eq!(
            missing["error"]["message"], "nothing at https://api.example.com/missing",
            "{}",
            guest.language
        );
    }
}
