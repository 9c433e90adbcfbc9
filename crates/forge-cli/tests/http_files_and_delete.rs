//! End to end through a real `forge-overlay serve` process: an overlay reading a file mount with
//! `std::fs` (examples/file-notes) and one deleting capsules with `capsule_delete`.

mod server;

use forge_model::api::{PageQuery, TrustLevelBody};
use forge_model::{AuditAction, CapsuleType, ErrorCode, LifecycleAction, NewCapsule, TrustLevel};
use serde_json::{Value, json};
use server::*;

#[test]
fn an_overlay_reads_a_mount_and_writes_another_through_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let (docs, notes) = (dir.path().join("docs"), dir.path().join("notes"));
    std::fs::create_dir(&docs).unwrap();
    std::fs::create_dir(&notes).unwrap();
    std::fs::write(docs.join("guide.txt"), "served from a mount").unwrap();
    let server = Launch::new(&dir.path().join("data"))
        .arg(format!("--mount=docs={}", docs.display()))
        .arg(format!("--mount=notes={}:rw", notes.display()))
        .start();
    let admin = server.admin();

    let notes_overlay =
        admin.register(fixture_text("file-notes.toml"), fixture_bytes("file-notes.wasm"), None).unwrap();
    assert!(notes_overlay.requires_approval, "file:write needs an admin's approval");
    admin.transition(notes_overlay.id, LifecycleAction::Activate, None).unwrap();
    let read =
        admin.invoke(notes_overlay.id, &call("read_file", json!({"path": "/docs/guide.txt"}))).unwrap();
    assert!(read.success, "{read:?}");
    assert_eq!(read.result.unwrap()["ok"], "served from a mount");
    let escape =
        admin.invoke(notes_overlay.id, &call("read_file", json!({"path": "/docs/../notes"}))).unwrap();
    assert!(escape.result.unwrap()["error"].is_string(), "no way out of the mount");
    let files = json!({"files": [{"path": "/out/summary.txt", "content": "one guide"}]});
    let written = admin.invoke(notes_overlay.id, &call("write_files", files)).unwrap();
    assert!(written.success, "{written:?}");
    assert_eq!(std::fs::read_to_string(notes.join("summary.txt")).unwrap(), "one guide");

    // A manifest naming a mount this server does not define, or writing to a read-only one: 422.
    let toml = fixture_text("file-notes.toml").replace("name = \"file-notes\"", "name = \"file-notes-2\"");
    let unknown = toml.replace("mount = \"notes\"", "mount = \"home\"");
    let error = refusal(
        admin.register(unknown, fixture_bytes("file-notes.wasm"), None),
        422,
        ErrorCode::ValidationError,
    );
    assert!(error.message.contains("mount `home`, which this host does not define"), "{error:?}");
    let read_only = toml.replace("mount = \"notes\"", "mount = \"docs\"");
    let error = refusal(
        admin.register(read_only, fixture_bytes("file-notes.wasm"), None),
        422,
        ErrorCode::ValidationError,
    );
    assert!(error.message.contains("mount `docs`, which is read-only"), "{error:?}");
}

#[test]
fn an_overlay_deletes_only_capsules_its_trust_reaches_and_the_audit_trail_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let server = Launch::new(&dir.path().join("data")).start();
    let admin = server.admin();
    let manifest = "name = \"cleaner\"\nversion = \"1.0.0\"\ncapabilities = [\"capsule:delete\"]\n";
    let cleaner =
        admin.register(manifest.into(), forwarding_guest("capsule_delete").into_bytes(), None).unwrap();
    assert!(cleaner.requires_approval, "capsule:delete needs an admin's approval");
    assert_eq!(cleaner.trust_level, TrustLevel::Sandbox);
    admin.transition(cleaner.id, LifecycleAction::Activate, None).unwrap();
    let capsule = |trust_level| {
        let capsule = NewCapsule { trust_level, ..NewCapsule::new("to be deleted", CapsuleType::Knowledge) };
        admin.create_capsule(&capsule).unwrap()
    };
    let (low, high) = (capsule(TrustLevel::Sandbox), capsule(TrustLevel::Standard));
    let delete = |id: uuid::Uuid| -> Value {
        let result = admin.invoke(cleaner.id, &call("process", json!({"id": id}))).unwrap();
        assert!(result.success, "{result:?}");
        Value::Object(result.result.unwrap())
    };

    let hidden = delete(high.id);
    let missing_id = uuid::Uuid::now_v7();
    let missing = delete(missing_id);
    assert_eq!(hidden["error"]["code"], "not_found");
    assert_eq!(
        hidden["error"]["message"].as_str().unwrap().replace(&high.id.to_string(), "ID"),
        missing["error"]["message"].as_str().unwrap().replace(&missing_id.to_string(), "ID"),
        "a capsule above the overlay's trust looks missing"
    );
    assert_eq!(admin.capsule(high.id).unwrap().id, high.id, "and stays");
    assert_eq!(delete(low.id)["ok"]["deleted"], low.id.to_string());
    refusal(admin.capsule(low.id), 404, ErrorCode::NotFound);

    admin
        .set_trust_level(cleaner.id, &TrustLevelBody { trust_level: TrustLevel::Standard, reason: None })
        .unwrap();
    assert_eq!(delete(high.id)["ok"]["deleted"], high.id.to_string());

    let events = admin.events(cleaner.id, PageQuery::default()).unwrap().data;
    let deletes: Vec<_> = events.iter().filter(|e| e.action == AuditAction::DeleteCapsule).collect();
    assert_eq!(deletes.len(), 2, "each delete, and only those, is recorded: {events:?}");
    assert_eq!(deletes[0].actor, "cleaner");
    assert_eq!(deletes[0].details["capsule_id"], json!(low.id));
    assert_eq!(deletes[1].details["capsule_id"], json!(high.id));
}
