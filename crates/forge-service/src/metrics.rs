//! Prometheus metrics of the service, rendered by the HTTP server at `/metrics`.

use forge_model::{ErrorKind, OverlayResult};
use forge_runtime::CallLog;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

/// Every metric the service exports.
pub struct ServiceMetrics {
    registry: Registry,
    invocations: IntCounterVec,
    duration: HistogramVec,
    fuel: IntCounterVec,
    log_lines: IntCounterVec,
    log_dropped_bytes: IntCounterVec,
    quarantines: IntCounterVec,
    refusals: IntCounterVec,
    token_lookups: IntCounterVec,
    pub(crate) http_requests: IntCounterVec,
    pub(crate) in_flight: IntGauge,
}

/// One overlay's series, resolved once so an invocation does no label lookups.
pub(crate) struct OverlaySeries {
    /// Index 0 is success; then one per [`ErrorKind::ALL`].
    outcomes: Vec<prometheus::IntCounter>,
    duration: prometheus::Histogram,
    fuel: prometheus::IntCounter,
    log_lines: prometheus::IntCounter,
    log_dropped_bytes: prometheus::IntCounter,
}

impl OverlaySeries {
    pub(crate) fn observe(&self, result: &OverlayResult, log: &CallLog) {
        if !log.lines.is_empty() {
            self.log_lines.inc_by(log.lines.len() as u64);
        }
        if log.dropped_bytes > 0 {
            self.log_dropped_bytes.inc_by(log.dropped_bytes);
        }
        let index = result
            .error_kind
            .map_or(0, |kind| 1 + ErrorKind::ALL.iter().position(|k| *k == kind).unwrap_or(0));
        self.outcomes[index].inc();
        self.duration.observe(result.execution_time_ms / 1e3);
        self.fuel.inc_by(result.fuel_consumed);
    }
}

impl ServiceMetrics {
    pub(crate) fn new() -> Self {
        let registry = Registry::new_custom(Some("forge".into()), None).expect("valid prefix");
        let invocations = IntCounterVec::new(
            Opts::new(
                "invocations_total",
                "Invocations that ran, by overlay and outcome (error_kind, or `ok`)",
            ),
            &["overlay", "outcome"],
        )
        .expect("valid metric");
        let duration = HistogramVec::new(
            HistogramOpts::new("invocation_duration_seconds", "Wall-clock time of invocations that ran")
                .buckets(vec![
                    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0,
                    30.0,
                ]),
            &["overlay"],
        )
        .expect("valid metric");
        let fuel = IntCounterVec::new(
            Opts::new("fuel_consumed_total", "Fuel consumed by invocations"),
            &["overlay"],
        )
        .expect("valid metric");
        let log_lines = IntCounterVec::new(
            Opts::new(
                "overlay_log_lines_total",
                "Lines overlays logged and kept (log_info, log_error, WASI output)",
            ),
            &["overlay"],
        )
        .expect("valid metric");
        let log_dropped_bytes = IntCounterVec::new(
            Opts::new(
                "overlay_log_dropped_bytes_total",
                "Bytes overlays logged past their call's log budget, dropped",
            ),
            &["overlay"],
        )
        .expect("valid metric");
        let quarantines = IntCounterVec::new(
            Opts::new("quarantines_total", "Overlays quarantined, automatically or by hand"),
            &["overlay", "trigger"],
        )
        .expect("valid metric");
        let refusals = IntCounterVec::new(
            Opts::new(
                "refusals_total",
                "Requests refused for load before their work (invocations, compilations), by reason",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let token_lookups = IntCounterVec::new(
            Opts::new("token_lookups_total", "API tokens looked up in the database, by result"),
            &["result"],
        )
        .expect("valid metric");
        let http_requests = IntCounterVec::new(
            Opts::new(
                "overlay_http_requests_total",
                "Outbound http_request calls sent for overlays, by overlay and outcome (ok, denied, failed, timeout)",
            ),
            &["overlay", "outcome"],
        )
        .expect("valid metric");
        let in_flight =
            IntGauge::new("instances_in_flight", "Invocations running now").expect("valid metric");
        for collector in [
            Box::new(invocations.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(duration.clone()),
            Box::new(fuel.clone()),
            Box::new(log_lines.clone()),
            Box::new(log_dropped_bytes.clone()),
            Box::new(quarantines.clone()),
            Box::new(refusals.clone()),
            Box::new(token_lookups.clone()),
            Box::new(http_requests.clone()),
            Box::new(in_flight.clone()),
        ] {
            registry.register(collector).expect("metric names are unique");
        }
        ServiceMetrics {
            registry,
            invocations,
            duration,
            fuel,
            log_lines,
            log_dropped_bytes,
            quarantines,
            refusals,
            token_lookups,
            http_requests,
            in_flight,
        }
    }

    pub(crate) fn series(&self, overlay: &str) -> OverlaySeries {
        let outcomes = std::iter::once("ok")
            .chain(ErrorKind::ALL.iter().map(|k| k.as_str()))
            .map(|outcome| self.invocations.with_label_values(&[overlay, outcome]))
            .collect();
        OverlaySeries {
            outcomes,
            duration: self.duration.with_label_values(&[overlay]),
            fuel: self.fuel.with_label_values(&[overlay]),
            log_lines: self.log_lines.with_label_values(&[overlay]),
            log_dropped_bytes: self.log_dropped_bytes.with_label_values(&[overlay]),
        }
    }

    pub(crate) fn quarantined(&self, overlay: &str, automatic: bool) {
        self.quarantines.with_label_values(&[overlay, if automatic { "automatic" } else { "manual" }]).inc();
    }

    pub(crate) fn refused(&self, reason: &str) {
        self.refusals.with_label_values(&[reason]).inc();
    }

    pub(crate) fn token_looked_up(&self, found: bool) {
        self.token_lookups.with_label_values(&[if found { "found" } else { "unknown" }]).inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut text = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut text).expect("text encoding cannot fail");
        String::from_utf8(text).expect("the text format is UTF-8")
    }
}

/// The label an overlay's series carry: `name@version`.
pub(crate) fn label(name: &str, version: &str) -> String {
    format!("{name}@{version}")
}
