//! What an overlay logged, end to end through a real server process: invocation ids, the call's
//! lines in its result, the kept log per overlay with its filters, visibility and retention, the
//! story of one failed call, the CLI's `overlay logs` (and `--follow`), and the Prometheus counters.

mod server;

use forge_model::api::{INVOCATION_ID_HEADER, LogsQuery};
use forge_model::{ErrorCode, ErrorKind, LifecycleAction, LogLevel, Role, TrustLevel};
use serde_json::{Value, json};
use server::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use uuid::Uuid;

/// `process` logs its input as an info line and answers it; `twice` does so twice; `boom` logs its
/// input as an error line, then traps.
fn logger_wat() -> String {
    format!(
        r#"(module
  (import "forge" "log_info" (func $info (param i32 i32)))
  (import "forge" "log_error" (func $error (param i32 i32)))
  {BUMP_ALLOCATOR_WAT}
  (func (export "process") (param $ptr i32) (param $len i32) (result i64)
    (call $info (local.get $ptr) (local.get $len))
    (i64.or (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32)) (i64.extend_i32_u (local.get $len))))
  (func (export "twice") (param $ptr i32) (param $len i32) (result i64)
    (call $info (local.get $ptr) (local.get $len))
    (call $info (local.get $ptr) (local.get $len))
    (i64.or (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32)) (i64.extend_i32_u (local.get $len))))
  (func (export "boom") (param $ptr i32) (param $len i32) (result i64)
    (call $error (local.get $ptr) (local.get $len))
    unreachable))"#
    )
}

/// Registers the logger as `owner` and has the admin activate it.
fn active_logger(owner: &Api, admin: &Api) -> Uuid {
    let manifest =
        json!({"name": "logger", "version": "1.0.0", "entry_points": ["process", "twice", "boom"]});
    let overlay = owner.register_json(manifest, logger_wat().as_bytes(), None).unwrap();
    admin.transition(overlay.id, LifecycleAction::Activate, None).unwrap().id
}

fn messages(entries: &[forge_model::LogEntry]) -> Vec<&str> {
    entries.iter().map(|e| e.message.as_str()).collect()
}

#[test]
fn invocations_carry_ids_and_their_logs_are_kept_for_those_who_may_read_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Launch::new(&dir.path().join("data")).start();
    let admin = server.admin();
    let owner = server.api(&admin.user_token("owner", &[Role::User], TrustLevel::Standard));
    let stranger = server.api(&admin.user_token("stranger", &[Role::User], TrustLevel::Standard));
    let operator = server.api(&admin.user_token("oscar", &[Role::Operator], TrustLevel::Standard));
    let id = active_logger(&owner, &admin);
    let path = format!("/api/v1/overlays/{id}/invoke");

    // An id per call, in the result and the header; the call's lines only when asked for.
    let reply = stranger.post(&path, &json!({"function": "process", "args": {"n": 1}}));
    let header = reply.header(INVOCATION_ID_HEADER).unwrap().parse::<Uuid>().unwrap();
    let plain = reply.data(200);
    assert_eq!(plain["invocation_id"], json!(header));
    assert_eq!(header.get_version_num(), 7, "UUIDv7: ids sort by time");
    assert!(plain.get("logs").is_none(), "{plain}");
    stranger
        .post(&path, &json!({"function": "process", "args": {"n": 2}, "include_logs": true}))
        .refused(403, "authorization_error");
    for (api, n) in [(&owner, 3), (&operator, 4), (&admin, 5)] {
        let result = api.invoke(id, &with_logs(call("process", json!({"n": n})))).unwrap();
        let logs = result.logs.unwrap();
        assert_eq!(logs.len(), 1);
        assert_eq!((logs[0].level, logs[0].message.as_str()), (LogLevel::Info, &*format!("{{\"n\":{n}}}")));
        assert_eq!(result.logs_dropped, Some(0));
        assert!(result.invocation_id.unwrap() > header, "later calls, later ids");
    }

    // A failed call's whole story: its line and its failure, under its id.
    let failed = owner.invoke(id, &call("boom", json!({"secret": "hunter2"}))).unwrap();
    assert_eq!(failed.error_kind, Some(ErrorKind::Trap));
    let failed_id = failed.invocation_id.unwrap();
    let story =
        owner.overlay_logs(id, &LogsQuery { invocation_id: Some(failed_id), ..Default::default() }).unwrap();
    assert_eq!(story.meta.total, 2);
    let (failure, line) = (&story.data[0], &story.data[1]);
    assert_eq!(
        (line.level, line.message.as_str(), line.error_kind),
        (LogLevel::Error, "{\"secret\":\"hunter2\"}", None)
    );
    assert_eq!((failure.level, failure.error_kind), (LogLevel::Error, Some(ErrorKind::Trap)));
    assert_eq!(Some(&failure.message), failed.error.as_ref());
    assert!(failure.at >= line.at && story.data.iter().all(|e| e.invocation_id == failed_id));

    // The whole log, newest first; the filters; who may read it.
    let all = admin.overlay_logs(id, &LogsQuery::default()).unwrap();
    let newest_first =
        [&failure.message, "{\"secret\":\"hunter2\"}", "{\"n\":5}", "{\"n\":4}", "{\"n\":3}", "{\"n\":1}"];
    assert_eq!(messages(&all.data), newest_first, "the call refused for include_logs never ran");
    assert_eq!((all.meta.total, all.meta.per_page), (6, 100));
    let errors =
        operator.overlay_logs(id, &LogsQuery { level: Some(LogLevel::Error), ..Default::default() }).unwrap();
    assert_eq!(errors.meta.total, 2, "the error line and the failure");
    let newest_two = owner.overlay_logs(id, &LogsQuery { limit: Some(2), ..Default::default() }).unwrap();
    assert_eq!((newest_two.data.len(), newest_two.meta.total, newest_two.meta.pages), (2, 6, 3));
    let since =
        owner.overlay_logs(id, &LogsQuery { since: Some(all.data[2].at), ..Default::default() }).unwrap();
    assert_eq!(messages(&since.data), messages(&all.data[..2]), "strictly after");
    refusal(stranger.overlay_logs(id, &LogsQuery::default()), 403, ErrorCode::AuthorizationError);
    refusal(admin.overlay_logs(Uuid::now_v7(), &LogsQuery::default()), 404, ErrorCode::NotFound);
    server.anonymous().get(&format!("/api/v1/overlays/{id}/logs")).refused(401, "authentication_error");
    admin.get(&format!("/api/v1/overlays/{id}/logs?level=warn")).refused(422, "validation_error");
    admin.get(&format!("/api/v1/overlays/{id}/logs?since=yesterday")).refused(422, "validation_error");

    // A second line of 40 KB is over the call's 64 KiB log budget: dropped and counted, in the
    // result and in metrics.
    let flood = json!({"s": "x".repeat(40_000)});
    let dropped = admin.invoke(id, &with_logs(call("twice", flood.clone()))).unwrap();
    assert_eq!((dropped.logs.unwrap().len(), dropped.logs_dropped), (1, Some(1)));

    // Log lines and dropped bytes counted per overlay; a deleted overlay's log goes with it.
    let metrics = server.anonymous().get("/metrics").body.as_str().unwrap().to_owned();
    assert!(metrics.contains("forge_overlay_log_lines_total{overlay=\"logger@1.0.0\"} 6"), "{metrics}");
    let dropped_bytes = flood.to_string().len();
    let counter =
        format!("forge_overlay_log_dropped_bytes_total{{overlay=\"logger@1.0.0\"}} {dropped_bytes}");
    assert!(metrics.contains(&counter), "{metrics}");
    admin.delete_overlay(id, None).unwrap();
    refusal(admin.overlay_logs(id, &LogsQuery::default()), 404, ErrorCode::NotFound);
    server.assert_serving();
}

fn with_logs(mut invocation: forge_model::OverlayInvocation) -> forge_model::OverlayInvocation {
    invocation.include_logs = true;
    invocation
}

#[test]
fn the_kept_log_stays_within_its_retention_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let launch = || {
        Launch::new(&data).arg("--log-retention-entries").arg("30").arg("--log-retention-bytes").arg("3600")
    };
    let server = launch().start();
    let admin = server.admin();
    let id = active_logger(&admin, &admin);
    for n in 0..100 {
        admin.invoke(id, &call("process", json!({"n": n}))).unwrap();
    }
    let kept = admin.overlay_logs(id, &LogsQuery { limit: Some(1000), ..Default::default() }).unwrap();
    assert_eq!(kept.meta.total, 30, "the newest 30 entries");
    assert_eq!(kept.data[0].message, "{\"n\":99}");
    assert_eq!(kept.data[29].message, "{\"n\":70}");

    // Long lines: the byte bound is reached first (3 lines of 1,200 bytes fill its 3,600).
    let long = "x".repeat(1200 - "{\"s\":\"\"}".len());
    for _ in 0..5 {
        admin.invoke(id, &call("process", json!({"s": long}))).unwrap();
    }
    let kept = admin.overlay_logs(id, &LogsQuery::default()).unwrap();
    assert_eq!(kept.meta.total, 3, "{:?}", messages(&kept.data));
    assert!(kept.data.iter().all(|e| e.message.len() == 1200));

    // Written at shutdown, read back by the next process.
    let newest = admin.invoke(id, &call("process", json!({"last": true}))).unwrap().invocation_id;
    server.terminate();
    let server = launch().start();
    let kept = server.admin().overlay_logs(id, &LogsQuery::default()).unwrap();
    assert_eq!(kept.data[0].invocation_id, newest.unwrap());
    assert_eq!(kept.meta.total, 3);
}

#[test]
fn the_cli_shows_one_calls_story_and_follows_new_lines() {
    let dir = tempfile::tempdir().unwrap();
    let server = Launch::new(&dir.path().join("data")).arg("--log=info,forge_service=debug").start();
    let admin = server.admin();
    let id = active_logger(&admin, &admin);
    let failed = admin.invoke(id, &call("boom", json!({"why": "told to"}))).unwrap().invocation_id.unwrap();
    let server_log = server.log();
    let in_span = format!("invocation{{id={failed} overlay=logger@1.0.0}}");
    assert!(
        server_log.lines().any(|line| line.contains(&in_span) && line.contains(r#"{"why":"told to"}"#)),
        "the server's own events of a call carry its id: {server_log}"
    );
    let cli = |args: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_forge-overlay"));
        command.args(["overlay", "--url", &server.url, "--token", ADMIN_TOKEN]).args(args);
        command
    };

    let output = cli(&["logs", &id.to_string(), "--invocation", &failed.to_string()]).output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].contains(" error ") && lines[0].ends_with("{\"why\":\"told to\"}"),
        "oldest first: {text}"
    );
    assert!(lines[1].contains("[trap]") && lines[1].contains(&failed.to_string()), "{text}");

    let output =
        cli(&["invoke", &id.to_string(), "--args", "{\"hi\":1}", "--include-logs"]).output().unwrap();
    assert!(String::from_utf8_lossy(&output.stdout).contains("info  {\"hi\":1}"), "{output:?}");

    let mut follower =
        cli(&["logs", "logger@1.0.0", "--follow", "--json"]).stdout(Stdio::piped()).spawn().unwrap();
    let (sender, printed) = mpsc::channel();
    let stdout = follower.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            let _ = sender.send(serde_json::from_str::<Value>(&line).unwrap());
        }
    });
    let next = || printed.recv_timeout(Duration::from_secs(20)).expect("--follow printed a line");
    assert_eq!(next()["message"], "{\"why\":\"told to\"}", "what was there first, oldest first");
    for _ in 0..2 {
        next();
    }
    for n in 0..3 {
        admin.invoke(id, &call("process", json!({"follow": n}))).unwrap();
        assert_eq!(next()["message"], format!("{{\"follow\":{n}}}"), "each new line, once");
    }
    assert!(printed.recv_timeout(Duration::from_millis(2500)).is_err(), "nothing printed twice");
    follower.kill().unwrap();
    follower.wait().unwrap();
}
