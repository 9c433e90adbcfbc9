//! Overlay logs: batches appended, read newest first within the retention, trimmed, and gone with
//! their overlay.

use crate::Db;
use crate::fixture::{event, register};
use chrono::{Duration, Utc};
use forge_model::{ErrorKind, LogEntry, LogLevel, LogLine, LogQuery, LogRetention};
use forge_storage::LogBatch;
use uuid::Uuid;

const WIDE: LogRetention = LogRetention { max_entries: 1000, max_bytes: 1 << 20 };

/// One entry per message, a second apart from `start`, oldest first, each of its own invocation.
fn entries(messages: &[&str], start: i64) -> Vec<LogEntry> {
    let t0 = Utc::now() - Duration::hours(1);
    messages
        .iter()
        .zip(start..)
        .map(|(message, second)| {
            let line = LogLine {
                level: LogLevel::Info,
                message: (*message).into(),
                at: t0 + Duration::seconds(second),
            };
            LogEntry::line(Uuid::now_v7(), line)
        })
        .collect()
}

fn query(limit: u32) -> LogQuery {
    LogQuery { limit, ..Default::default() }
}

fn messages(entries: &[LogEntry]) -> Vec<&str> {
    entries.iter().map(|e| e.message.as_str()).collect()
}

pub async fn appended_logs_are_read_newest_first_and_filtered(db: &Db) {
    let id = register(db, "logged", "1.0.0").await.id;
    let mut second = entries(&["c", "d"], 2);
    let failed = second[1].invocation_id;
    second.push(LogEntry::failure(failed, ErrorKind::Trap, "boom".into(), second[1].at));
    let batches = [
        LogBatch { overlay_id: id, entries: entries(&["a", "b"], 0) },
        LogBatch { overlay_id: id, entries: second },
    ];
    db.repo.append_logs(&batches).await.unwrap();

    let (all, total) = db.repo.read_logs(id, WIDE, &query(100)).await.unwrap();
    let newest_first = vec!["boom", "d", "c", "b", "a"];
    assert_eq!(
        (messages(&all), total),
        (newest_first, 5),
        "a failure written at its last line's time follows it"
    );
    assert_eq!(all[0].error_kind, Some(ErrorKind::Trap), "entries come back as written");
    let (two, total) = db.repo.read_logs(id, WIDE, &query(2)).await.unwrap();
    assert_eq!((two.len(), total), (2, 5));
    let errors = LogQuery { level: Some(LogLevel::Error), ..query(100) };
    assert_eq!(messages(&db.repo.read_logs(id, WIDE, &errors).await.unwrap().0), ["boom"]);
    let story = LogQuery { invocation_id: Some(failed), ..query(100) };
    assert_eq!(messages(&db.repo.read_logs(id, WIDE, &story).await.unwrap().0), ["boom", "d"]);
    let since = LogQuery { since: Some(all[3].at), ..query(100) };
    assert_eq!(messages(&db.repo.read_logs(id, WIDE, &since).await.unwrap().0), ["boom", "d", "c"]);
}

pub async fn trims_keep_the_retention_and_reads_never_exceed_it(db: &Db) {
    let id = register(db, "busy", "1.0.0").await.id;
    let retention = LogRetention { max_entries: 10, max_bytes: 1 << 20 };
    for batch in 0..20 {
        let names: Vec<String> = (0..3).map(|i| format!("line {}", batch * 3 + i)).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let batch = LogBatch { overlay_id: id, entries: entries(&names, batch * 3) };
        db.repo.append_logs(&[batch]).await.unwrap();
    }
    let (kept, total) = db.repo.read_logs(id, retention, &query(1000)).await.unwrap();
    assert_eq!(total, 10, "reads stop at the retention, trimmed or not");
    assert_eq!((kept[0].message.as_str(), kept[9].message.as_str()), ("line 59", "line 50"));
    assert_eq!(db.count_rows("overlay_logs").await, 20);

    db.repo.trim_logs(id, retention).await.unwrap();
    assert_eq!(db.count_rows("overlay_logs").await, 4, "the batches holding the newest 10 entries");
    assert_eq!(db.repo.read_logs(id, retention, &query(1000)).await.unwrap().0, kept, "nothing kept lost");

    let by_bytes = LogRetention { max_entries: 1000, max_bytes: 14 };
    let (kept, _) = db.repo.read_logs(id, by_bytes, &query(1000)).await.unwrap();
    assert_eq!(messages(&kept), ["line 59", "line 58"], "7 bytes each: two fit in 14");
    db.repo.trim_logs(id, by_bytes).await.unwrap();
    assert_eq!(db.count_rows("overlay_logs").await, 1);
}

pub async fn logs_of_missing_overlays_are_skipped_and_deleted_with_their_overlay(db: &Db) {
    let id = register(db, "doomed", "1.0.0").await.id;
    let batches = [
        LogBatch { overlay_id: id, entries: entries(&["kept"], 0) },
        LogBatch { overlay_id: Uuid::now_v7(), entries: entries(&["nobody's"], 0) },
    ];
    db.repo.append_logs(&batches).await.unwrap();
    assert_eq!(db.count_rows("overlay_logs").await, 1, "the unknown overlay's batch is skipped");
    assert!(db.repo.delete_overlay(id, event(id, "delete", None, None)).await.unwrap());
    assert_eq!(db.count_rows("overlay_logs").await, 0, "deleted with the overlay");
}
