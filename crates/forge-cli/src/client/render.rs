//! Human output: one renderer per record kind; aligned key/value rows for a record, tables for lists.
//! Renderers return text, so the client commands print it as it is and `demo` can indent it.

use chrono::{DateTime, SecondsFormat, Utc};
use comfy_table::{ContentArrangement, Table};
use forge_model::api::{Meta, TokenInfo};
use forge_model::{AuditEvent, Capsule, CapsuleHit, HealthReport, LogEntry, Overlay, OverlayResult, User};
use serde::Serialize;
use std::fmt::{Display, Write};

/// Header underlined, no other lines: reads well in a terminal and stays greppable.
const TABLE_STYLE: &str = "     ──            ";

/// Longest cell text in a table before it is cut.
const CELL_MAX_CHARS: usize = 48;

/// `key  value` rows with the values aligned; further lines of a value are indented to match.
fn fields(rows: &[(&str, String)]) -> String {
    let width = rows.iter().map(|(key, _)| key.len()).max().unwrap_or(0);
    let mut text = String::new();
    for (key, value) in rows {
        let mut lines = value.lines();
        let _ = writeln!(text, "{key:<width$}  {}", lines.next().unwrap_or(""));
        for line in lines {
            let _ = writeln!(text, "{:width$}  {line}", "");
        }
    }
    text
}

/// A table, and "page 1 of 3, 45 overlays in all" below it when the list has paging numbers.
fn table(
    header: &[&str],
    rows: impl IntoIterator<Item = Vec<String>>,
    meta: Option<&Meta>,
    noun: &str,
) -> String {
    let mut table = Table::new();
    table.load_preset(TABLE_STYLE).set_content_arrangement(ContentArrangement::Disabled).set_header(header);
    for row in rows {
        table.add_row(row);
    }
    let mut text = table.trim_fmt();
    text.push('\n');
    if let Some(meta) = meta {
        let _ = writeln!(text, "page {} of {}, {} {noun} in all", meta.page, meta.pages.max(1), meta.total);
    }
    text
}

fn time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub fn or_dash<T: Display>(value: Option<T>) -> String {
    value.map_or_else(|| "-".into(), |v| v.to_string())
}

fn millis(ms: f64) -> String {
    format!("{ms:.2} ms")
}

/// One-line JSON cut to `max` characters, for table cells and summaries.
pub fn compact(value: &impl Serialize, max: usize) -> String {
    let text = serde_json::to_string(value).unwrap_or_default();
    cut(&text, max)
}

/// Text on one line, cut to `max` characters.
pub fn cut(text: &str, max: usize) -> String {
    let one_line = text.replace(['\n', '\r'], " ");
    if one_line.chars().count() <= max {
        one_line
    } else {
        let kept: String = one_line.chars().take(max.saturating_sub(1)).collect();
        format!("{kept}…")
    }
}

pub fn overlay(o: &Overlay) -> String {
    let m = &o.manifest;
    let capabilities: Vec<String> = m.capabilities.iter().map(|c| c.name.to_string()).collect();
    let h = &o.health;
    fields(&[
        ("id", o.id.to_string()),
        ("name", format!("{}@{}", m.name, m.version)),
        ("state", o.state.to_string()),
        ("trust level", o.trust_level.to_string()),
        ("description", or_dash(Some(&m.description).filter(|d| !d.is_empty()))),
        ("author", or_dash(Some(&m.author).filter(|a| !a.is_empty()))),
        ("capabilities", if capabilities.is_empty() { "none".into() } else { capabilities.join(", ") }),
        ("entry points", m.entry_points.join(", ")),
        ("limits", format!("{} MiB memory, {} ms, {} fuel", m.max_memory_mb, m.max_execution_ms, m.max_fuel)),
        (
            "needs approval",
            if o.requires_approval { "yes (privileged capabilities)".into() } else { "no".into() },
        ),
        ("submitted by", o.submitted_by.clone()),
        ("wasm sha256", o.wasm_hash.clone()),
        ("source hash", or_dash(o.source_hash.as_ref())),
        ("created", time(&o.created_at)),
        ("updated", time(&o.updated_at)),
        (
            "invocations",
            format!(
                "{} ({} failed, avg {})",
                h.invocation_count,
                h.failure_count,
                millis(h.avg_execution_ms)
            ),
        ),
        ("last error", or_dash(h.last_error.as_ref())),
    ])
}

pub fn overlays(items: &[Overlay], meta: Option<&Meta>) -> String {
    table(
        &["ID", "NAME", "VERSION", "STATE", "TRUST", "CALLS", "FAILED", "SUBMITTER"],
        items.iter().map(|o| {
            vec![
                o.id.to_string(),
                o.manifest.name.clone(),
                o.manifest.version.clone(),
                o.state.to_string(),
                o.trust_level.to_string(),
                o.health.invocation_count.to_string(),
                o.health.failure_count.to_string(),
                o.submitted_by.clone(),
            ]
        }),
        meta,
        "overlays",
    )
}

pub fn result(r: &OverlayResult) -> String {
    let mut rows = vec![("success", if r.success { "yes".to_owned() } else { "no".to_owned() })];
    if let Some(error) = &r.error {
        rows.push(("error", format!("{}: {error}", or_dash(r.error_kind))));
    }
    rows.push(("time", millis(r.execution_time_ms)));
    rows.push(("fuel", r.fuel_consumed.to_string()));
    if let Some(id) = r.invocation_id {
        rows.push(("invocation", id.to_string()));
    }
    if let Some(result) = &r.result {
        rows.push(("result", serde_json::to_string_pretty(result).unwrap_or_default()));
    }
    let mut text = fields(&rows);
    if let Some(logs) = &r.logs {
        for line in logs {
            let _ = writeln!(text, "{} {:<5} {}", log_time(&line.at), line.level, line.message);
        }
        if let Some(dropped) = r.logs_dropped.filter(|n| *n > 0) {
            let _ = writeln!(text, "({dropped} lines dropped over the call's log budget)");
        }
    }
    text
}

/// One log entry per line, `TIME LEVEL INVOCATION MESSAGE`; a failure shows its error kind.
pub fn log_entry(entry: &LogEntry) -> String {
    let kind = entry.error_kind.map(|kind| format!("[{kind}] ")).unwrap_or_default();
    format!("{} {:<5} {} {kind}{}\n", log_time(&entry.at), entry.level, entry.invocation_id, entry.message)
}

/// Log lines of one call often share a second: milliseconds tell them apart.
fn log_time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub fn health(h: &HealthReport) -> String {
    fields(&[
        ("overlay", format!("{}@{} ({})", h.name, h.version, h.overlay_id)),
        ("state", h.state.to_string()),
        ("trust level", h.trust_level.to_string()),
        ("invocations", h.invocation_count.to_string()),
        ("failures", format!("{} ({:.0}%)", h.failure_count, h.failure_rate * 100.0)),
        ("host faults", h.host_failure_count.to_string()),
        ("caller faults", h.caller_failure_count.to_string()),
        (
            "recent calls",
            format!(
                "{} failed of the last {} ({:.0}%){}",
                h.window_failure_count,
                h.window_invocation_count,
                h.window_failure_rate * 100.0,
                if h.on_probation { ", on probation" } else { "" }
            ),
        ),
        (
            "latency",
            format!(
                "avg {}, p50 {}, p95 {}",
                millis(h.avg_execution_ms),
                or_dash(h.p50_execution_ms.map(millis)),
                or_dash(h.p95_execution_ms.map(millis))
            ),
        ),
        ("last invoked", or_dash(h.last_invoked_at.as_ref().map(time))),
        ("last error", or_dash(h.last_error.as_ref())),
    ])
}

pub fn events(items: &[AuditEvent], meta: Option<&Meta>) -> String {
    table(
        &["TIME", "ACTOR", "ACTION", "STATE", "REASON / DETAILS"],
        items.iter().map(|e| {
            let state = match (e.from_state, e.to_state) {
                (None, None) => "-".to_owned(),
                (from, to) => format!("{} -> {}", or_dash(from), or_dash(to)),
            };
            let why = match (&e.reason, e.details.is_empty()) {
                (Some(reason), _) => reason.clone(),
                (None, false) => compact(&e.details, CELL_MAX_CHARS),
                (None, true) => "-".to_owned(),
            };
            vec![time(&e.created_at), e.actor.clone(), e.action.to_string(), state, cut(&why, CELL_MAX_CHARS)]
        }),
        meta,
        "events",
    )
}

pub fn capsule(c: &Capsule) -> String {
    fields(&[
        ("id", c.id.to_string()),
        ("type", c.capsule_type.to_string()),
        ("trust level", c.trust_level.to_string()),
        ("version", c.version.to_string()),
        ("owner", or_dash(c.owner.as_ref())),
        ("by overlay", or_dash(c.created_by_overlay)),
        ("created", time(&c.created_at)),
        ("metadata", if c.metadata.is_empty() { "-".into() } else { compact(&c.metadata, 200) }),
        ("content", c.content.clone()),
    ])
}

pub fn hits(items: &[CapsuleHit]) -> String {
    table(
        &["SCORE", "ID", "TYPE", "TRUST", "CONTENT"],
        items.iter().map(|hit| {
            let c = &hit.capsule;
            vec![
                format!("{:.3}", hit.score),
                c.id.to_string(),
                c.capsule_type.to_string(),
                c.trust_level.to_string(),
                cut(&c.content, CELL_MAX_CHARS),
            ]
        }),
        None,
        "capsules",
    ) + &format!("{} capsules found\n", items.len())
}

/// The new user, and its token set apart: the server shows it this once.
pub fn created_user(user: &User, token: &str) -> String {
    let roles: Vec<&str> = user.roles.iter().map(|r| r.as_str()).collect();
    let user = fields(&[
        ("id", user.id.to_string()),
        ("name", user.name.clone()),
        ("roles", roles.join(", ")),
        ("trust level", user.trust_level.to_string()),
    ]);
    format!(
        "{user}\nAPI token (shown only this once; store it now):\n\n    {token}\n\nUse it with: export FORGE_TOKEN={token}\n"
    )
}

/// A user's tokens: ids and dates only, the server never shows more.
pub fn tokens(items: &[TokenInfo], meta: &Meta) -> String {
    table(
        &["ID", "CREATED", "REVOKED", "BOOTSTRAP"],
        items.iter().map(|t| {
            let revoked = t.revoked_at.as_ref().map_or_else(|| "-".into(), time);
            vec![t.id.clone(), time(&t.created_at), revoked, if t.bootstrap { "yes" } else { "-" }.into()]
        }),
        Some(meta),
        "tokens",
    )
}

/// Whether a user may sign in, after `user disable` or `user enable`.
pub fn user_access(user: &User) -> String {
    let state = if user.disabled { "disabled: none of its tokens works" } else { "enabled" };
    format!("User {} is {state}.\n", user.name)
}
