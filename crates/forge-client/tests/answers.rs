//! How the client reads answers, against a canned HTTP server: data, the standard error body (with
//! `Retry-After`), answers that are not Forge's API, and no answer at all. The typed methods against
//! a real server are exercised end to end by forge-cli's tests.

use forge_client::{Client, Error, StatusCode};
use forge_model::api::{ListQuery, PageQuery};
use forge_model::{ErrorCode, OverlayFilter, OverlayState};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;

/// Serves one canned answer to one request; returns the server's URL and the request's head and
/// body as received.
fn answer_once(status: &str, headers: &[&str], body: &str) -> (String, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let response = format!(
        "HTTP/1.1 {status}\r\n{}content-length: {}\r\nconnection: close\r\n\r\n{body}",
        headers.iter().map(|h| format!("{h}\r\n")).collect::<String>(),
        body.len()
    );
    let (sender, received) = mpsc::channel();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream);
        let mut request = String::new();
        let mut length = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = value.trim().parse().unwrap();
            }
            request.push_str(&line);
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        request.push_str(&String::from_utf8_lossy(&body));
        reader.get_mut().write_all(response.as_bytes()).unwrap();
        sender.send(request).unwrap();
    });
    (url, received)
}

const EMPTY_LIST: &str = r#"{"data": [], "meta": {"total": 0, "page": 2, "per_page": 5, "pages": 0}}"#;

#[test]
fn a_list_is_asked_for_with_its_query_and_token_and_read_as_the_model_type() {
    let (url, request) = answer_once("200 OK", &["content-type: application/json"], EMPTY_LIST);
    let client = Client::new(&url, Some("fgo_token".into())).unwrap();
    let filter = OverlayFilter { state: Some(OverlayState::Active), ..OverlayFilter::default() };
    let query = ListQuery::new(filter, PageQuery { page: Some(2), per_page: Some(5) });
    let list = client.list_overlays(&query).unwrap();
    assert_eq!((list.data.len(), list.meta.page, list.meta.per_page), (0, 2, 5));
    let request = request.recv().unwrap();
    let target = request.split(' ').nth(1).unwrap();
    let (path, query) = target.split_once('?').unwrap();
    let mut pairs: Vec<&str> = query.split('&').collect();
    pairs.sort();
    assert_eq!(
        (path, pairs),
        ("/api/v1/overlays", vec!["page=2", "per_page=5", "state=active"]),
        "{request}"
    );
    assert!(request.to_ascii_lowercase().contains("authorization: bearer fgo_token"), "{request}");
}

#[test]
fn a_refusal_carries_the_standard_body_and_retry_after() {
    let body = r#"{"code": "rate_limit_exceeded", "message": "busy", "details": {"retry_after": 3}}"#;
    let (url, _) = answer_once("429 Too Many Requests", &["retry-after: 2"], body);
    let error = Client::new(&url, None).unwrap().overlay(uuid::Uuid::nil()).unwrap_err();
    let Error::Refused { status, error, retry_after } = error else { panic!("{error:?}") };
    assert_eq!(
        (status, error.code, retry_after),
        (StatusCode::TOO_MANY_REQUESTS, ErrorCode::RateLimitExceeded, Some(2))
    );
    assert_eq!(error.details["retry_after"], 3);

    let body = r#"{"code": "not_found", "message": "no such overlay", "details": {}}"#;
    let (url, _) = answer_once("404 Not Found", &[], body);
    let error = Client::new(&url, None).unwrap().overlay(uuid::Uuid::nil()).unwrap_err();
    assert_eq!(error.refusal().map(|e| e.code), Some(ErrorCode::NotFound));
    assert_eq!(error.to_string(), "no such overlay");
}

#[test]
fn answers_that_are_not_the_api_and_missing_servers_are_told_apart() {
    let (url, _) = answer_once("502 Bad Gateway", &[], "<html>proxy error</html>");
    let error = Client::new(&url, None).unwrap().server_health().unwrap_err();
    assert!(
        matches!(&error, Error::Foreign(m) if m.contains("HTTP 502") && m.contains("proxy error")),
        "{error:?}"
    );
    let (url, _) = answer_once("200 OK", &[], r#"{"status": "ok"}"#);
    let error = Client::new(&url, None).unwrap().server_health().unwrap_err();
    assert!(matches!(error, Error::Foreign(_)), "{error:?}");

    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let error = Client::new(&format!("http://127.0.0.1:{port}"), None).unwrap().server_health().unwrap_err();
    assert!(matches!(error, Error::Unreachable { connect: true, .. }), "{error:?}");
    assert!(
        error.to_string().starts_with(&format!("cannot reach the Forge server at http://127.0.0.1:{port}"))
    );

    assert!(matches!(Client::new("ftp://example", None), Err(Error::Setup(_))));
}
