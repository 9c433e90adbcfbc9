//! End-to-end tests of what a request may cost the server before any handler runs, through the real
//! `forge-overlay serve` process and raw sockets where a well-behaved client would not do it: bodies
//! cut off before they are read, slow and idle connections closed, a connection cap, token guessing
//! bounded, and invocations that outlive their client.

mod server;

use forge_model::{ErrorKind, LifecycleAction};
use serde_json::json;
use server::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn data_dir(dir: &tempfile::TempDir) -> std::path::PathBuf {
    dir.path().join("data")
}

/// A raw connection to the server at `url` (`http://HOST:PORT`).
fn connect(url: &str) -> TcpStream {
    let stream = TcpStream::connect(url.trim_start_matches("http://")).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    stream
}

/// Reads one response's head (status line and headers) and as much body as has arrived.
fn read_answer(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buffer[..n]),
            Err(error) => panic!("no answer: {error} (so far {:?})", String::from_utf8_lossy(&answer)),
        }
        let text = String::from_utf8_lossy(&answer);
        if let Some((head, body)) = text.split_once("\r\n\r\n")
            && head.lines().any(|l| l.to_ascii_lowercase().starts_with("content-length:"))
        {
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap())
                })
                .unwrap();
            if body.len() >= length {
                break;
            }
        }
    }
    String::from_utf8(answer).unwrap()
}

/// Starts the server with bodies of at most 1 MiB, and 1 MiB of them in flight.
fn start_with_a_1_mib_body_budget(launch: Launch) -> ServerProcess {
    launch.env("FORGE_MAX_BODY_BYTES", "1048576").env("FORGE_MAX_BODY_BYTES_IN_FLIGHT", "1048576").start()
}

/// A registration that declares a body of 1 MiB and sends one byte of it.
fn declare_the_whole_budget(server: &ServerProcess) -> TcpStream {
    let mut stream = connect(&server.url);
    write!(
        stream,
        "POST /api/v1/overlays HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: 1048576\r\n\r\n{{"
    )
    .unwrap();
    stream
}

/// True once the server has closed `stream` (a read sees the end, or a reset).
fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(stream.read(&mut byte), Ok(0) | Err(_))
}

/// The value of one Prometheus series (0 when absent).
fn metric(server: &ServerProcess, series: &str) -> f64 {
    let text = reqwest::blocking::get(format!("{}/metrics", server.url)).unwrap().text().unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or(0.0)
}

#[test]
fn a_huge_declared_body_without_a_valid_token_is_refused_unread() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Launch::new(&data_dir(&dir)).start();
    for (path, auth) in [
        ("/api/v1/overlays", "".to_owned()),
        ("/api/v1/capsules", "Authorization: Bearer fgo_not-a-token\r\n".to_owned()),
    ] {
        let mut stream = connect(&server.url);
        let started = Instant::now();
        // Headers only: a server that waited for the gigabyte would never answer.
        write!(
            stream,
            "POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            1u64 << 30
        )
        .unwrap();
        let answer = read_answer(&mut stream);
        assert!(answer.starts_with("HTTP/1.1 401"), "{path}: {answer}");
        assert!(answer.to_ascii_lowercase().contains("connection: close"), "{answer}");
        assert!(answer.contains("\"authentication_error\""), "{answer}");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(closed_by_server(&mut stream), "the connection is closed, the body never read");
    }
    // With a valid token, a body over the route's limit is a 413 naming the limit, still unread
    // when it is larger than the server would ever drain.
    let mut stream = connect(&server.url);
    write!(
        stream,
        "POST /api/v1/capsules HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        1u64 << 30
    )
    .unwrap();
    let answer = read_answer(&mut stream);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("\"payload_too_large\"") && answer.contains("\"capsule_body\""), "{answer}");
    server.assert_serving();
}

#[test]
fn slow_headers_and_idle_connections_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Launch::new(&data_dir(&dir)).env("FORGE_HEADER_READ_TIMEOUT_SECS", "1").start();
    let mut slow = connect(&server.url);
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").unwrap();
    let mut idle = connect(&server.url);
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert!(read_answer(&mut idle).starts_with("HTTP/1.1 200"));

    let started = Instant::now();
    assert!(closed_by_server(&mut slow), "headers never finished: closed");
    assert!(closed_by_server(&mut idle), "idle after its answer: closed");
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(5), "closed after {waited:?}");
    server.assert_serving();
}

#[test]
fn connections_past_the_cap_wait_for_one_to_close() {
    let dir = tempfile::tempdir().unwrap();
    let server = Launch::new(&data_dir(&dir)).env("FORGE_MAX_CONNECTIONS", "2").start();
    let holders: Vec<TcpStream> = (0..2).map(|_| connect(&server.url)).collect();
    // Both slots are taken by connections that send nothing; a third client is not served.
    std::thread::sleep(Duration::from_millis(300));
    let mut third = connect(&server.url);
    third.set_read_timeout(Some(Duration::from_millis(1500))).unwrap();
    third.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut byte = [0u8; 1];
    let early = third.read(&mut byte);
    assert!(early.is_err(), "answered past the cap: {early:?}");

    drop(holders);
    third.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let answer = read_answer(&mut third);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[test]
fn unknown_tokens_cost_one_lookup_each_and_guessing_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let server = Launch::new(&data_dir(&dir)).env("FORGE_FAILED_AUTH_PER_MINUTE", "5").start();
    let admin = server.admin();
    assert_eq!(admin.list_overlays(&Default::default()).unwrap().data.len(), 0);
    let unknown = r#"forge_token_lookups_total{result="unknown"}"#;
    let before = metric(&server, unknown);

    let guesser = server.api("fgo_the-same-bad-token");
    for _ in 0..20 {
        guesser.get("/api/v1/overlays").refused(401, "authentication_error");
    }
    assert_eq!(metric(&server, unknown) - before, 1.0, "one bad token retried: one lookup");

    for n in 0..4 {
        server.api(&format!("fgo_guess-{n}")).get("/api/v1/overlays").refused(401, "authentication_error");
    }
    assert_eq!(metric(&server, unknown) - before, 5.0);
    let reply = server.api("fgo_guess-5").get("/api/v1/overlays");
    let refusal = reply.refused(429, "rate_limit_exceeded");
    assert!(refusal["details"]["retry_after"].as_u64().unwrap() >= 1);
    assert!(reply.header("retry-after").is_some());
    assert_eq!(metric(&server, unknown) - before, 5.0, "no lookup once the address is cut off");
    // A token this address used recently still works.
    assert!(admin.list_overlays(&Default::default()).is_ok());
}

#[test]
fn an_invocation_whose_client_left_still_ends_and_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let server = Launch::new(&data_dir(&dir)).start();
    let admin = server.admin();
    let spin = admin.register_json(spin_manifest(800), SPIN_WAT.as_bytes(), None).unwrap().id;
    admin.transition(spin, LifecycleAction::Activate, None).unwrap();

    let mut stream = connect(&server.url);
    let body = json!({"function": "spin", "args": {}}).to_string();
    write!(
        stream,
        "POST /api/v1/overlays/{spin}/invoke HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    drop(stream);

    let deadline = Instant::now() + Duration::from_secs(20);
    let health = loop {
        let health = admin.health(spin);
        if health.invocation_count > 0 || Instant::now() > deadline {
            break health;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!((health.invocation_count, health.failure_count), (1, 1), "{health:?}");
    let timeouts =
        format!(r#"forge_invocations_total{{outcome="{}",overlay="spin@1.0.0"}}"#, ErrorKind::Timeout);
    assert_eq!(metric(&server, &timeouts), 1.0, "it ran to its deadline");
}

#[test]
fn bodies_wait_for_room_in_the_body_budget_then_get_429() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_a_1_mib_body_budget(Launch::new(&data_dir(&dir)));
    let admin = server.admin();
    // A registration that declares the whole budget and sends nothing of its body holds it all.
    let holder = declare_the_whole_budget(&server);
    std::thread::sleep(Duration::from_millis(300));
    let capsule = json!({"content": "waits", "type": "knowledge"});
    let started = Instant::now();
    let refusal = admin.post("/api/v1/capsules", &capsule);
    let waited = started.elapsed();
    let body = refusal.refused(429, "rate_limit_exceeded");
    assert!(body["message"].as_str().unwrap().contains("request bodies"), "{body}");
    assert!(waited >= Duration::from_secs(4), "it waited for room first ({waited:?})");
    // A request without a body needs no room.
    assert!(admin.list_overlays(&Default::default()).is_ok());

    drop(holder);
    std::thread::sleep(Duration::from_millis(300));
    admin.post("/api/v1/capsules", &capsule).data(201);
}

#[test]
fn a_trickled_body_loses_its_room_at_its_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let server =
        start_with_a_1_mib_body_budget(Launch::new(&data_dir(&dir)).env("FORGE_BODY_READ_TIMEOUT_SECS", "1"));
    let admin = server.admin();
    // The whole budget declared, one byte sent: without a deadline this would hold it for ever.
    let mut trickler = declare_the_whole_budget(&server);
    let started = Instant::now();
    let answer = read_answer(&mut trickler);
    assert!(answer.starts_with("HTTP/1.1 422"), "{answer}");
    assert!(answer.contains("did not arrive in time"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    let capsule = json!({"content": "room again", "type": "knowledge"});
    admin.post("/api/v1/capsules", &capsule).data(201);
}
