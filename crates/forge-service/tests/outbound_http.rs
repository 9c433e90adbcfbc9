//! `http_request` through the real client ([`OutboundHttp`]) and runtime, against an HTTP server
//! on 127.0.0.1 started by each test. No test sends traffic anywhere but loopback: refused targets
//! (127.0.0.2, names resolving to loopback) are refused before any connection.

use forge_model::{ErrorKind, OverlayInvocation, OverlayManifest, TrustLevel};
use forge_runtime::{CallOutcome, HostServices, InMemoryCapsules, OverlayIdentity, Runtime, RuntimeConfig};
use forge_service::OutboundHttp;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A small HTTP/1.1 server on 127.0.0.1, one request per connection, counting what it served.
struct Upstream {
    port: u16,
    served: Arc<AtomicUsize>,
}

impl Upstream {
    async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let served = Arc::new(AtomicUsize::new(0));
        let counter = served.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream, port));
            }
        });
        Upstream { port, served }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

async fn serve(mut stream: TcpStream, port: u16) {
    let mut request = Vec::new();
    let mut buffer = [0u8; 4096];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buffer[..n]),
        }
    }
    let head = String::from_utf8_lossy(&request).into_owned();
    let mut words = head.split_whitespace();
    let (method, path) = (words.next().unwrap_or_default().to_owned(), words.next().unwrap_or_default());
    let respond = |status: &str, headers: &str, body: &str| {
        format!(
            "HTTP/1.1 {status}\r\nconnection: close\r\ncontent-length: {}\r\n{headers}\r\n{body}",
            body.len()
        )
    };
    let response = match path {
        "/hello" => {
            respond("200 OK", "content-type: application/json\r\nx-upstream: yes\r\n", r#"{"hello":"world"}"#)
        }
        "/method" => respond("200 OK", "", &method),
        "/to-hello" => respond("302 Found", "location: /hello\r\n", ""),
        "/to-other-loopback" => {
            respond("302 Found", &format!("location: http://127.0.0.2:{port}/hello\r\n"), "")
        }
        "/loop" => respond("302 Found", "location: /loop\r\n", ""),
        "/declared-big" => respond("200 OK", "", &"x".repeat(4096)),
        "/streamed-big" => {
            // Chunked, no length declared: the client must count as it reads.
            let chunk = format!("400\r\n{}\r\n", "y".repeat(1024));
            let mut body =
                String::from("HTTP/1.1 200 OK\r\nconnection: close\r\ntransfer-encoding: chunked\r\n\r\n");
            for _ in 0..8 {
                body.push_str(&chunk);
            }
            body + "0\r\n\r\n"
        }
        "/stall" => {
            tokio::time::sleep(std::time::Duration::from_secs(10)).await;
            return;
        }
        _ => respond("404 Not Found", "", "no such path"),
    };
    let _ = stream.write_all(response.as_bytes()).await;
}

/// A guest whose `process` hands its input to `http_request` `times` times and returns the last answer.
fn proxy(times: u32) -> Vec<u8> {
    let text = format!(
        r#"(module
          (import "forge" "http_request" (func $host (param i32 i32) (result i64)))
          (memory (export "memory") 1)
          (global $next (mut i32) (i32.const 1024))
          (func (export "forge_alloc") (param $size i32) (result i32)
            (local $ptr i32)
            (local.set $ptr (global.get $next))
            (global.set $next (i32.add (global.get $next) (local.get $size)))
            (local.get $ptr))
          (func (export "process") (param $ptr i32) (param $len i32) (result i64)
            (local $calls i32) (local $answer i64)
            (loop $again
              (local.set $answer (call $host (local.get $ptr) (local.get $len)))
              (local.set $calls (i32.add (local.get $calls) (i32.const 1)))
              (br_if $again (i32.lt_u (local.get $calls) (i32.const {times}))))
            (local.get $answer)))"#
    );
    wat::parse_str(text).unwrap()
}

/// Calls the proxy guest (`times` requests of `request`) with `hosts` as its patterns.
async fn call(config: RuntimeConfig, hosts: &[String], times: u32, request: Value) -> CallOutcome {
    let services = HostServices {
        capsules: Arc::new(InMemoryCapsules::default()),
        http: Arc::new(OutboundHttp::new().unwrap()),
    };
    let runtime = Runtime::new(RuntimeConfig { max_instances: 4, ..config }, services).unwrap();
    let manifest = OverlayManifest::from_value(json!({
        "name": "fetcher", "version": "1.0.0", "max_execution_ms": 2000,
        "capabilities": [{"name": "network:http", "constraints": {"hosts": hosts}}],
    }))
    .unwrap();
    let prepared = runtime.prepare(&manifest, &proxy(times)).unwrap();
    let identity = OverlayIdentity { id: None, name: "fetcher".into(), trust_level: TrustLevel::Sandbox };
    let args = request.as_object().unwrap().clone();
    runtime.invoke(&prepared, &identity, &OverlayInvocation::new("process", args)).await.unwrap()
}

fn answer(outcome: CallOutcome) -> Value {
    assert!(outcome.result.success, "{:?}", outcome.result);
    Value::Object(outcome.result.result.unwrap())
}

fn denied_with(answer: &Value, words: &str) {
    assert_eq!(answer["error"]["code"], "network_denied", "{answer}");
    assert!(answer["error"]["message"].as_str().unwrap().contains(words), "{answer}");
}

fn literal(upstream: &Upstream) -> Vec<String> {
    vec![format!("http://127.0.0.1:{}", upstream.port)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_request_gets_the_answer_and_same_origin_redirects_are_followed() {
    let upstream = Upstream::start().await;
    let hosts = literal(&upstream);
    for path in ["/hello", "/to-hello"] {
        let ok = answer(call(RuntimeConfig::default(), &hosts, 1, json!({"url": upstream.url(path)})).await);
        assert_eq!(ok["ok"]["status"], 200, "{ok}");
        assert_eq!(ok["ok"]["body"], r#"{"hello":"world"}"#);
        assert_eq!(ok["ok"]["headers"]["x-upstream"], "yes");
    }
    let post = json!({"method": "post", "url": upstream.url("/method"), "body": "b"});
    assert_eq!(answer(call(RuntimeConfig::default(), &hosts, 1, post).await)["ok"]["body"], "POST");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_outside_the_patterns_end_the_call() {
    let upstream = Upstream::start().await;
    let hosts = literal(&upstream);
    let port = upstream.port;
    for url in [
        format!("https://127.0.0.1:{port}/hello"),
        format!("http://127.0.0.1:{}/hello", port.wrapping_add(1).max(1)),
        format!("http://127.0.0.2:{port}/hello"),
        format!("http://localhost:{port}/hello"),
    ] {
        let outcome = call(RuntimeConfig::default(), &hosts, 1, json!({ "url": url })).await;
        assert_eq!(
            outcome.result.error_kind,
            Some(ErrorKind::CapabilityDenied),
            "{url}: {:?}",
            outcome.result
        );
    }
    assert_eq!(upstream.served.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_resolving_to_loopback_needs_the_address_named_literally() {
    let upstream = Upstream::start().await;
    let by_name = vec![format!("http://localhost:{}", upstream.port)];
    let request = json!({"url": format!("http://localhost:{}/hello", upstream.port)});
    let refused = answer(call(RuntimeConfig::default(), &by_name, 1, request.clone()).await);
    denied_with(&refused, "loopback address that no network:http pattern names literally");
    assert_eq!(upstream.served.load(Ordering::SeqCst), 0);

    let named = [by_name, literal(&upstream)].concat();
    let ok = answer(call(RuntimeConfig::default(), &named, 1, request).await);
    assert_eq!(ok["ok"]["status"], 200, "{ok}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_leave_neither_the_patterns_nor_the_limit() {
    let upstream = Upstream::start().await;
    let hosts = literal(&upstream);
    let away = answer(
        call(RuntimeConfig::default(), &hosts, 1, json!({"url": upstream.url("/to-other-loopback")})).await,
    );
    denied_with(&away, "redirect to `http://127.0.0.2");
    let looping =
        answer(call(RuntimeConfig::default(), &hosts, 1, json!({"url": upstream.url("/loop")})).await);
    denied_with(&looping, "more than 5 redirects");
    let served = upstream.served.load(Ordering::SeqCst);
    assert_eq!(served, 1 + 6, "the refused redirect's first request; the loop's first and its 5 redirects");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_bodies_over_the_cap_are_refused() {
    let upstream = Upstream::start().await;
    let config = || RuntimeConfig { max_http_response_bytes: 2048, ..RuntimeConfig::default() };
    for path in ["/declared-big", "/streamed-big"] {
        let big = answer(call(config(), &literal(&upstream), 1, json!({"url": upstream.url(path)})).await);
        denied_with(&big, "larger than 2048 bytes (max_http_response_bytes)");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_past_the_per_call_cap_are_refused_unsent() {
    let upstream = Upstream::start().await;
    let config = RuntimeConfig { max_http_requests: 2, ..RuntimeConfig::default() };
    let third = answer(call(config, &literal(&upstream), 3, json!({"url": upstream.url("/hello")})).await);
    denied_with(&third, "sent its 2 HTTP requests (max_http_requests)");
    assert_eq!(upstream.served.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_headers_and_methods_are_refused_unsent() {
    let upstream = Upstream::start().await;
    let hosts = literal(&upstream);
    for request in [
        json!({"url": upstream.url("/hello"), "headers": {"Host": "metadata.internal"}}),
        json!({"url": upstream.url("/hello"), "headers": {"transfer-encoding": "chunked"}}),
        json!({"url": upstream.url("/hello"), "headers": {"Proxy-Authorization": "x"}}),
        json!({"url": upstream.url("/hello"), "method": "CONNECT"}),
    ] {
        let refused = answer(call(RuntimeConfig::default(), &hosts, 1, request.clone()).await);
        assert_eq!(refused["error"]["code"], "invalid_request", "{request}: {refused}");
    }
    assert_eq!(upstream.served.load(Ordering::SeqCst), 0);
}

/// examples/fetch-json, as built in fixtures/wasm, against the loopback stand-in for the world.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fetch_json_example_keeps_what_it_fetched_as_a_capsule() {
    let upstream = Upstream::start().await;
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/wasm");
    let manifest =
        OverlayManifest::parse(&std::fs::read_to_string(fixtures.join("fetch-json.toml")).unwrap());
    let wasm = std::fs::read(fixtures.join("fetch-json.wasm")).unwrap();
    let capsules = Arc::new(InMemoryCapsules::default());
    let services = HostServices { capsules: capsules.clone(), http: Arc::new(OutboundHttp::new().unwrap()) };
    let runtime =
        Runtime::new(RuntimeConfig { max_instances: 4, ..RuntimeConfig::default() }, services).unwrap();
    let prepared = runtime.prepare(&manifest.unwrap(), &wasm).unwrap();
    let identity = OverlayIdentity { id: None, name: "fetch-json".into(), trust_level: TrustLevel::Standard };
    let args = json!({"url": upstream.url("/hello")}).as_object().unwrap().clone();
    let outcome =
        runtime.invoke(&prepared, &identity, &OverlayInvocation::new("process", args)).await.unwrap();
    let result = answer(outcome);
    assert_eq!(result["status"], 200, "{result}");
    let kept = capsules.all();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].id.to_string(), result["capsule_id"].as_str().unwrap());
    assert_eq!(kept[0].content, r#"{"hello":"world"}"#);
    assert_eq!(kept[0].metadata["source_url"], upstream.url("/hello"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_server_ends_the_call_at_its_deadline() {
    let upstream = Upstream::start().await;
    let started = std::time::Instant::now();
    let outcome =
        call(RuntimeConfig::default(), &literal(&upstream), 1, json!({"url": upstream.url("/stall")})).await;
    assert_eq!(outcome.result.error_kind, Some(ErrorKind::Timeout), "{:?}", outcome.result);
    let waited = started.elapsed().as_millis();
    assert!((2000..3000).contains(&waited), "waited {waited} ms for a 2 s deadline");
}
