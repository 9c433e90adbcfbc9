//! Request counters and latency by route, beside the service's own metrics.

use crate::AppState;
use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder};
use std::sync::Arc;
use std::time::Instant;

/// Label of requests no route matched, so that probing random paths cannot grow the series.
const UNMATCHED: &str = "unmatched";

pub struct HttpMetrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
}

impl HttpMetrics {
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("forge".into()), None).expect("valid prefix");
        let requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests answered, by method, route and status"),
            &["method", "route", "status"],
        )
        .expect("valid metric");
        let duration = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "Time to answer HTTP requests, by route")
                .buckets(vec![
                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0,
                ]),
            &["route"],
        )
        .expect("valid metric");
        registry.register(Box::new(requests.clone())).expect("unique metric");
        registry.register(Box::new(duration.clone())).expect("unique metric");
        HttpMetrics { registry, requests, duration }
    }

    /// Appends the text exposition of these metrics.
    pub fn render_into(&self, text: &mut String) {
        let mut bytes = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut bytes).expect("text encoding cannot fail");
        text.push_str(&String::from_utf8_lossy(&bytes));
    }
}

/// Middleware: counts every answered request and times it. Label lookups are the only cost; the
/// route is the pattern (`/api/v1/overlays/{id}/invoke`), never the raw path.
pub async fn track(State(app): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let route = request.extensions().get::<MatchedPath>().cloned();
    let response = next.run(request).await;
    let route = route.as_ref().map_or(UNMATCHED, MatchedPath::as_str);
    app.http.requests.with_label_values(&[method, route, response.status().as_str()]).inc();
    app.http.duration.with_label_values(&[route]).observe(started.elapsed().as_secs_f64());
    response
}

/// The `method` label: the standard methods by name, any other as `other`, so that clients
/// inventing methods cannot grow the metric without bound.
fn method_label(method: &Method) -> &'static str {
    const KNOWN: [&str; 9] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"];
    KNOWN.into_iter().find(|known| *known == method.as_str()).unwrap_or("other")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invented_methods_share_one_label() {
        assert_eq!(method_label(&Method::POST), "POST");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "other");
        assert_eq!(method_label(&Method::from_bytes(b"X-1234567").unwrap()), "other");
    }
}
