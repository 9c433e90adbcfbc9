//! Who may do what, end to end through real server processes: an admin's control of users and
//! their tokens, error text shown only to those who may read it, the admin token's rotation across
//! restarts, and server processes starting at once on one fresh database.

mod server;

use forge_model::api::{ListQuery, PageQuery};
use forge_model::{ErrorCode, LifecycleAction, Role, TrustLevel};
use serde_json::json;
use server::*;
use std::path::Path;

/// The keys of each listed token: metadata only.
const TOKEN_FIELDS: [&str; 4] = ["bootstrap", "created_at", "id", "revoked_at"];

#[test]
fn admins_list_revoke_disable_and_enable_a_users_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Launch::new(&dir.path().join("data")).start();
    let admin = server.admin();
    let token = admin.user_token("ursula", &[Role::User], TrustLevel::Standard);
    let ursula = server.api(&token);
    let operator = server.api(&admin.user_token("oscar", &[Role::Operator], TrustLevel::Trusted));

    let listed = admin.get("/api/v1/users/ursula/tokens").data(200);
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 1);
    let keys: Vec<&str> = listed[0].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, TOKEN_FIELDS, "never the token or its hash");
    let hash = forge_model::sha256_hex(token.as_bytes());
    assert_eq!(listed[0]["id"], &hash[..12]);
    assert!(!listed[0].to_string().contains(&hash), "{}", listed[0]);
    let path = "/api/v1/users/ursula/tokens";
    ursula.get(path).refused(403, "authorization_error");
    operator.get(path).refused(403, "authorization_error");
    server.anonymous().get(path).refused(401, "authentication_error");
    for action in ["revoke-tokens", "disable", "enable"] {
        operator.post_empty(&format!("/api/v1/users/ursula/{action}")).refused(403, "authorization_error");
        admin.post_empty(&format!("/api/v1/users/nobody/{action}")).refused(404, "not_found");
    }
    admin.get("/api/v1/users/nobody/tokens").refused(404, "not_found");
    admin.post_empty("/api/v1/users/admin/disable").refused(422, "validation_error");

    // Disabling takes effect at once, though the token was just used (and cached).
    assert_eq!(ursula.list_overlays(&ListQuery::default()).unwrap().meta.total, 0);
    assert!(admin.disable_user("ursula").unwrap().disabled);
    refusal(ursula.list_overlays(&ListQuery::default()), 401, ErrorCode::AuthenticationError);
    assert!(!admin.enable_user("ursula").unwrap().disabled);
    assert!(ursula.list_overlays(&ListQuery::default()).is_ok(), "enabled again");

    let second = admin.user_token("ursula-2", &[Role::User], TrustLevel::Standard);
    assert_eq!(admin.revoke_user_tokens("ursula").unwrap().revoked, 1);
    refusal(ursula.list_overlays(&ListQuery::default()), 401, ErrorCode::AuthenticationError);
    assert!(server.api(&second).list_overlays(&ListQuery::default()).is_ok(), "other users keep theirs");
    let tokens = admin.user_tokens("ursula", PageQuery::default()).unwrap().data;
    assert!(tokens[0].revoked_at.is_some() && !tokens[0].bootstrap);
    assert!(
        admin.user_tokens("admin", PageQuery::default()).unwrap().data[0].bootstrap,
        "the FORGE_ADMIN_TOKEN one"
    );
    server.assert_serving();
}

#[test]
fn error_text_and_reasons_are_shown_to_operations_and_the_submitter_only() {
    let dir = tempfile::tempdir().unwrap();
    let server = Launch::new(&dir.path().join("data")).start();
    let admin = server.admin();
    let owner = server.api(&admin.user_token("owner", &[Role::User], TrustLevel::Standard));
    let stranger = server.api(&admin.user_token("stranger", &[Role::User], TrustLevel::Standard));
    let operator = server.api(&admin.user_token("oscar", &[Role::Operator], TrustLevel::Standard));
    let overlay = owner.register(fixture_text("echo.toml"), fixture_bytes("echo.wasm"), None).unwrap();
    admin.transition(overlay.id, LifecycleAction::Activate, None).unwrap();
    let failed = stranger.invoke(overlay.id, &call("fail", json!({"message": "password=hunter2"}))).unwrap();
    assert!(failed.error.unwrap().contains("hunter2"), "the caller sees its own call's error");
    operator.transition(overlay.id, LifecycleAction::Suspend, Some("hunter2 was leaked".into())).unwrap();

    let id = overlay.id;
    assert_eq!(admin.health(id).failure_count, 1, "the health report writes the batched counts first");
    for (api, sees) in [(&admin, true), (&operator, true), (&owner, true), (&stranger, false)] {
        let shown = api.get(&format!("/api/v1/overlays/{id}")).data(200);
        assert_eq!(shown["health"]["last_error"].is_string(), sees, "{shown}");
        assert!(shown["health"]["last_error"].is_string() || shown["health"]["last_error"].is_null());
        let health = api.get(&format!("/api/v1/overlays/{id}/health")).data(200);
        assert_eq!(health["last_error"].is_string(), sees, "{health}");
        let listed = api.get("/api/v1/overlays").data(200);
        assert_eq!(listed[0]["health"]["last_error"].is_string(), sees, "{listed}");
        let events = api.get(&format!("/api/v1/overlays/{id}/events")).data(200);
        let suspend = events.as_array().unwrap().iter().find(|e| e["action"] == "suspend").unwrap();
        assert_eq!(suspend["reason"].is_string(), sees, "{suspend}");
        assert!(!sees || suspend["reason"] == "hunter2 was leaked");
    }
}

#[test]
fn a_new_admin_token_revokes_the_previous_one_and_a_revoked_one_stays_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let first = Launch::new(&data).start();
    let other_admin = first.admin().user_token("second-admin", &[Role::Admin], TrustLevel::Core);
    assert!(first.terminate().success());

    let rotated = "fgo_the-rotated-admin-token-of-this-test";
    let second = Launch::new(&data).env("FORGE_ADMIN_TOKEN", rotated).start();
    refusal(second.admin().list_overlays(&ListQuery::default()), 401, ErrorCode::AuthenticationError);
    assert!(second.api(rotated).list_overlays(&ListQuery::default()).is_ok());
    assert!(
        second.api(&other_admin).list_overlays(&ListQuery::default()).is_ok(),
        "other admins keep theirs"
    );
    assert!(second.log().contains("the previous one is revoked"), "{}", second.log());
    assert!(second.api(rotated).revoke_token(rotated).unwrap().revoked);
    assert!(second.terminate().success());

    // The revoked token is given again: the server starts and says so; the token stays revoked.
    let third = Launch::new(&data).env("FORGE_ADMIN_TOKEN", rotated).start();
    refusal(third.api(rotated).list_overlays(&ListQuery::default()), 401, ErrorCode::AuthenticationError);
    assert!(third.log().contains("stays revoked"), "{}", third.log());
    assert!(third.api(&other_admin).list_overlays(&ListQuery::default()).is_ok());
    assert!(third.terminate().success());
}

/// Starts `count` servers at once with `launch` and asserts that every one answers `/health`.
fn start_together(count: usize, launch: impl Fn(&Path) -> Launch + Sync, dir: &Path) {
    std::thread::scope(|scope| {
        let starting: Vec<_> = (0..count)
            .map(|n| {
                let launch = &launch;
                scope.spawn(move || launch(&dir.join(format!("server-{n}"))).start())
            })
            .collect();
        for handle in starting {
            let mut server = handle.join().expect("every server starts");
            server.assert_serving();
            assert!(server.admin().list_overlays(&ListQuery::default()).is_ok(), "the admin token works");
        }
    });
}

#[test]
fn four_servers_start_at_once_on_one_fresh_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("shared/forge.db");
    let url = format!("sqlite://{}", database.display());
    start_together(4, |data| Launch::new(data).env("FORGE_DATABASE_URL", &url), dir.path());
    assert!(database.is_file());
}

#[test]
#[ignore = "needs PostgreSQL (FORGE_TEST_POSTGRES_URL)"]
fn four_servers_start_at_once_on_one_fresh_postgres_database() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let database = runtime.block_on(forge_storage::testing::fresh_postgres());
    let dir = tempfile::tempdir().unwrap();
    start_together(4, |data| Launch::new(data).env("FORGE_DATABASE_URL", &database.url), dir.path());
}
