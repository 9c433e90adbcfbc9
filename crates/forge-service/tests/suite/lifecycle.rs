//! Registration, reads and the lifecycle, with their refusals and audit trail.

use crate::common::*;
use forge_model::{
    CapabilityName, ErrorCode, LifecycleAction, OverlayFilter, OverlayState, PageRequest, TrustLevel,
};
use forge_service::{Registration, ServiceConfig};

pub async fn registration_starts_pending_at_sandbox_trust(env: &Env) {
    let overlay = env.register_example("echo").await;
    assert_eq!(overlay.state, OverlayState::Pending);
    assert_eq!(overlay.trust_level, TrustLevel::Sandbox);
    assert_eq!(overlay.submitted_by, "ursula");
    assert!(!overlay.requires_approval);
    assert_eq!(overlay.wasm_hash, forge_model::sha256_hex(&fixture("echo.wasm")));
    assert_eq!(
        overlay.wasm_key,
        format!("overlays/echo/{}/{}.wasm", overlay.manifest.version, overlay.wasm_hash)
    );
    let stored = env.blobs.blobs.get_verified(&overlay.wasm_key, &overlay.wasm_hash).await.unwrap();
    assert_eq!(&stored[..], &fixture("echo.wasm")[..]);
    let events = env.service.events(&user(), overlay.id, PageRequest::default()).await.unwrap();
    assert_eq!(events.total, 1);
    let register = &events.items[0];
    assert_eq!((register.action.as_str(), register.actor.as_str()), ("register", "ursula"));
    assert_eq!(register.to_state, Some(OverlayState::Pending));
    assert_eq!(register.details["wasm_hash"], overlay.wasm_hash);
}

pub async fn privileged_capabilities_need_approval(env: &Env) {
    let overlay = env.register_example("capsule-insight").await;
    assert!(overlay.requires_approval, "capsule:write is privileged");
    let events = env.service.events(&admin(), overlay.id, PageRequest::default()).await.unwrap();
    assert_eq!(events.items[0].details["privileged_capabilities"], serde_json::json!(["capsule:write"]));
    // Approval is activation, which only an admin may do.
    let refused =
        env.service.transition(&operator(), overlay.id, LifecycleAction::Activate, None).await.unwrap_err();
    assert_eq!(refused.code, ErrorCode::AuthorizationError);
    env.service.transition(&admin(), overlay.id, LifecycleAction::Activate, None).await.unwrap();
}

pub async fn network_hosts_need_the_operators_allow_list(env: &Env) {
    let asking = |version: &str, hosts: &str| {
        manifest_named(
            "fetcher",
            version,
            &format!(r#"capabilities = [{{ name = "network:http", constraints = {{ hosts = {hosts} }} }}]"#),
        )
    };
    let nothing_allowed =
        env.register_as(&user(), asking("1.0.0", r#"["api.example.com"]"#), fixture("echo.wasm")).await;
    let err = nothing_allowed.unwrap_err();
    assert_eq!((err.code, err.code.http_status()), (ErrorCode::ValidationError, 422));
    assert!(
        err.message.contains("`api.example.com`") && err.message.contains("http_allowed_hosts"),
        "{err:?}"
    );

    let allow_list = vec!["https://*.example.com:*".parse().unwrap()];
    let service = env.sibling(ServiceConfig { http_allowed_hosts: allow_list, ..suite_config() });
    let ursula = user();
    let register = |manifest| {
        service.register(
            &ursula,
            Registration { manifest, wasm: fixture("echo.wasm").into(), source_hash: None },
        )
    };
    let err = register(asking("1.0.0", r#"["api.example.com", "http://10.0.0.0/8:80"]"#)).await.unwrap_err();
    assert_eq!(
        err.details["hosts"],
        serde_json::json!(["http://10.0.0.0/8:80"]),
        "only the one outside is named"
    );
    let overlay =
        register(asking("1.0.0", r#"["api.example.com", "https://*.eu.example.com:8443"]"#)).await.unwrap();
    assert!(overlay.requires_approval, "network:http is privileged");
    let events = service.events(&admin(), overlay.id, PageRequest::default()).await.unwrap();
    assert_eq!(events.items[0].details["privileged_capabilities"], serde_json::json!(["network:http"]));
}

pub async fn duplicate_name_version_is_a_conflict(env: &Env) {
    env.register_example("echo").await;
    let again = env.register_as(&user(), example_manifest("echo"), fixture("text-stats.wasm")).await;
    let err = again.unwrap_err();
    assert_eq!(err.code, ErrorCode::Conflict);
    assert_eq!(err.code.http_status(), 409);
    let all = env.service.list(&user(), &OverlayFilter::default(), PageRequest::default()).await.unwrap();
    assert_eq!(all.total, 1);
}

pub async fn a_name_belongs_to_its_first_registrant_and_admins(env: &Env) {
    let echo = |version: &str| manifest_named("echo", version, "");
    env.register_as(&user(), echo("1.0.0"), fixture("echo.wasm")).await.unwrap();
    let mallory = principal("mallory", forge_model::Role::User, TrustLevel::Standard);
    let err = env.register_as(&mallory, echo("9.9.9"), fixture("echo.wasm")).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::AuthorizationError, "{}", err.message);
    env.register_as(&user(), echo("1.0.1"), fixture("echo.wasm")).await.expect("the owner's next version");
    env.register_as(&admin(), echo("2.0.0"), fixture("echo.wasm")).await.expect("admins may too");
    env.register_as(&mallory, manifest_named("mallorys-own", "1.0.0", ""), fixture("echo.wasm"))
        .await
        .expect("a free name");
}

pub async fn bad_registrations_leave_nothing_behind(env: &Env) {
    let cases: Vec<(forge_model::OverlayManifest, Vec<u8>, &str)> = vec![
        (manifest_named("junk", "1.0.0", ""), b"\0asm garbage".to_vec(), "does not compile"),
        (manifest_named("greedy", "1.0.0", ""), fixture("capsule-insight.wasm"), "needs capability"),
        (
            manifest_named("lost", "1.0.0", "entry_points = [\"nowhere\"]"),
            fixture("echo.wasm"),
            "not exported",
        ),
        (
            // Passes every check but linking, which the first call would do.
            manifest_named("unlinkable", "1.0.0", ""),
            br#"(module (import "wasi_snapshot_preview1" "no_such_function" (func))
                 (memory (export "memory") 1)
                 (func (export "forge_alloc") (param i32) (result i32) (i32.const 0))
                 (func (export "process") (param i32 i32) (result i64) (i64.const 0)))"#
                .to_vec(),
            "cannot be linked",
        ),
    ];
    for (manifest, wasm, expected) in cases {
        let name = manifest.name.clone();
        let err = env.register_as(&user(), manifest, wasm.clone()).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::ValidationError, "{name}");
        assert!(err.message.contains(expected), "{name}: {}", err.message);
        let key = forge_model::Overlay::wasm_key_for(&name, "1.0.0", &forge_model::sha256_hex(&wasm));
        assert!(!env.blobs.blobs.exists(&key).await.unwrap(), "{name}: no binary stored");
    }
    let hex = "not hex".to_owned();
    let manifest = manifest_named("echo", "9.9.9", "entry_points = [\"process\"]");
    let request =
        forge_service::Registration { manifest, wasm: fixture("echo.wasm").into(), source_hash: Some(hex) };
    assert_eq!(env.service.register(&user(), request).await.unwrap_err().code, ErrorCode::ValidationError);
    let all = env.service.list(&admin(), &OverlayFilter::default(), PageRequest::default()).await.unwrap();
    assert_eq!(all.total, 0, "no record was written");
}

pub async fn reads_filters_and_pages(env: &Env) {
    let echo = env.register_example("echo").await;
    let insight = env.register_example("capsule-insight").await;
    let stats = env
        .register_as(&operator(), example_manifest("text-stats"), fixture("text-stats.wasm"))
        .await
        .unwrap();
    let svc = &env.service;
    assert_eq!(svc.get(&user(), echo.id).await.unwrap().id, echo.id);
    let by_name = svc.get_by_name_version(&user(), "text-stats", &stats.manifest.version).await.unwrap();
    assert_eq!(by_name.id, stats.id);
    assert_eq!(svc.get(&user(), uuid::Uuid::now_v7()).await.unwrap_err().code, ErrorCode::NotFound);
    assert_eq!(
        svc.get_by_name_version(&user(), "echo", "9.9.9").await.unwrap_err().code,
        ErrorCode::NotFound
    );

    let page = |n| PageRequest::new(Some(n), Some(2));
    let first = svc.list(&user(), &OverlayFilter::default(), page(1)).await.unwrap();
    let second = svc.list(&user(), &OverlayFilter::default(), page(2)).await.unwrap();
    assert_eq!((first.total, first.pages, first.items.len(), second.items.len()), (3, 2, 2, 1));
    let by_submitter = OverlayFilter { submitter: Some("oscar".into()), ..Default::default() };
    assert_eq!(svc.list(&user(), &by_submitter, page(1)).await.unwrap().items[0].id, stats.id);
    let by_name = OverlayFilter { name: Some("insight".into()), ..Default::default() };
    assert_eq!(svc.list(&user(), &by_name, page(1)).await.unwrap().items[0].id, insight.id);
    let holders =
        svc.holders_of(&user(), CapabilityName::CapsuleWrite, PageRequest::default()).await.unwrap();
    assert_eq!(holders.items.iter().map(|o| o.id).collect::<Vec<_>>(), [insight.id]);

    svc.transition(&admin(), echo.id, LifecycleAction::Activate, None).await.unwrap();
    svc.transition(&operator(), echo.id, LifecycleAction::Quarantine, Some("looks odd".into()))
        .await
        .unwrap();
    let quarantined = svc.list_quarantined(&user(), PageRequest::default()).await.unwrap();
    assert_eq!(quarantined.items.iter().map(|o| o.id).collect::<Vec<_>>(), [echo.id]);
    let pending = OverlayFilter { state: Some(OverlayState::Pending), ..Default::default() };
    assert_eq!(svc.list(&user(), &pending, PageRequest::default()).await.unwrap().total, 2);
}

/// Drives a fresh overlay into `state` along allowed transitions.
async fn overlay_in(env: &Env, state: OverlayState, n: usize) -> uuid::Uuid {
    let manifest = manifest_named(&format!("echo-{n}"), "1.0.0", "entry_points = [\"process\", \"fail\"]");
    let overlay = env.register_as(&user(), manifest, fixture("echo.wasm")).await.unwrap();
    let path: &[LifecycleAction] = match state {
        OverlayState::Pending => &[],
        OverlayState::Active => &[LifecycleAction::Activate],
        OverlayState::Suspended => &[LifecycleAction::Activate, LifecycleAction::Suspend],
        OverlayState::Quarantined => &[LifecycleAction::Activate, LifecycleAction::Quarantine],
        OverlayState::Deprecated => &[LifecycleAction::Deprecate],
    };
    for action in path {
        env.service.transition(&admin(), overlay.id, *action, Some("setting up".into())).await.unwrap();
    }
    overlay.id
}

pub async fn every_transition_follows_the_table(env: &Env) {
    let mut n = 0;
    for &from in OverlayState::ALL {
        for &action in LifecycleAction::ALL {
            n += 1;
            let id = overlay_in(env, from, n).await;
            let result = env.service.transition(&admin(), id, action, Some("table test".into())).await;
            match from.apply(action) {
                Some(to) => {
                    let overlay =
                        result.unwrap_or_else(|e| panic!("{from} --{action}--> refused: {}", e.message));
                    assert_eq!(overlay.state, to);
                    let events =
                        env.service.events(&admin(), id, PageRequest::new(None, Some(100))).await.unwrap();
                    let last = events.items.last().unwrap();
                    assert_eq!(
                        (last.action.as_str(), last.from_state, last.to_state),
                        (action.as_str(), Some(from), Some(to))
                    );
                    assert_eq!(last.reason.as_deref(), Some("table test"));
                    assert_eq!(last.actor, "root");
                }
                None => {
                    let err = result.unwrap_err();
                    assert_eq!(err.code, ErrorCode::ValidationError, "{from} --{action}-->");
                    assert!(err.message.contains(&format!("it is {from}")), "{}", err.message);
                    assert_eq!(env.service.get(&admin(), id).await.unwrap().state, from, "nothing changed");
                }
            }
        }
    }
}

pub async fn roles_are_enforced(env: &Env) {
    let overlay = env.register_example("echo").await;
    let id = overlay.id;
    let svc = &env.service;
    let denied = |r: Result<forge_model::Overlay, forge_model::ForgeError>| {
        assert_eq!(r.unwrap_err().code, ErrorCode::AuthorizationError)
    };
    denied(svc.transition(&user(), id, LifecycleAction::Activate, None).await);
    denied(svc.transition(&operator(), id, LifecycleAction::Activate, None).await);
    svc.transition(&admin(), id, LifecycleAction::Activate, None).await.unwrap();
    denied(svc.transition(&user(), id, LifecycleAction::Suspend, Some("no".into())).await);
    svc.transition(&operator(), id, LifecycleAction::Suspend, Some("noisy".into())).await.unwrap();
    denied(svc.transition(&operator(), id, LifecycleAction::Resume, None).await);
    svc.transition(&admin(), id, LifecycleAction::Resume, None).await.unwrap();
    svc.transition(&operator(), id, LifecycleAction::Quarantine, Some("suspicious".into())).await.unwrap();
    denied(svc.transition(&operator(), id, LifecycleAction::Release, None).await);
    denied(svc.transition(&operator(), id, LifecycleAction::Deprecate, None).await);
    denied(svc.set_trust_level(&operator(), id, TrustLevel::Trusted, None).await);
    assert_eq!(svc.delete(&operator(), id, None).await.unwrap_err().code, ErrorCode::AuthorizationError);
    assert_eq!(svc.get(&admin(), id).await.unwrap().state, OverlayState::Quarantined);
}

pub async fn reasons_are_required_where_the_action_needs_one(env: &Env) {
    let overlay = env.register_example("echo").await;
    let svc = &env.service;
    svc.transition(&admin(), overlay.id, LifecycleAction::Activate, None).await.unwrap();
    for reason in [None, Some("   ".to_owned())] {
        let err =
            svc.transition(&operator(), overlay.id, LifecycleAction::Suspend, reason).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::ValidationError);
        assert!(err.message.contains("reason is required"));
    }
    let err = svc.transition(&operator(), overlay.id, LifecycleAction::Quarantine, None).await.unwrap_err();
    assert!(err.message.contains("reason is required"));
    assert_eq!(svc.get(&admin(), overlay.id).await.unwrap().state, OverlayState::Active);
}

pub async fn release_resets_health(env: &Env) {
    let overlay = env.active_example("echo", TrustLevel::Sandbox).await;
    let svc = &env.service;
    for _ in 0..3 {
        svc.invoke(&user(), overlay.id, invocation("fail", serde_json::json!({"message": "x"})))
            .await
            .unwrap();
    }
    svc.transition(&operator(), overlay.id, LifecycleAction::Quarantine, Some("failing".into()))
        .await
        .unwrap();
    svc.flush_health().await.unwrap();
    assert_eq!(svc.get(&admin(), overlay.id).await.unwrap().health.failure_count, 3);
    let released = svc.transition(&admin(), overlay.id, LifecycleAction::Release, None).await.unwrap();
    assert_eq!(released.state, OverlayState::Active);
    let on_probation = forge_model::OverlayHealth { on_probation: true, ..Default::default() };
    assert_eq!(released.health, on_probation, "emptied, and on probation for its first window");
    let health = svc.health(&user(), overlay.id).await.unwrap();
    assert_eq!((health.invocation_count, health.p50_execution_ms, health.on_probation), (0, None, true));
}

pub async fn trust_level_is_admin_only_and_bounded(env: &Env) {
    let overlay = env.register_example("echo").await;
    let svc = &env.service;
    let updated = svc
        .set_trust_level(&admin(), overlay.id, TrustLevel::Trusted, Some("reviewed".into()))
        .await
        .unwrap();
    assert_eq!(updated.trust_level, TrustLevel::Trusted);
    let modest_admin = principal("modest", forge_model::Role::Admin, TrustLevel::Standard);
    let err = svc.set_trust_level(&modest_admin, overlay.id, TrustLevel::Core, None).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::AuthorizationError);
    // Nor may it demote, retire or delete an overlay trusted more than itself.
    let err = svc.set_trust_level(&modest_admin, overlay.id, TrustLevel::Sandbox, None).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::AuthorizationError, "{}", err.message);
    for action in [LifecycleAction::Quarantine, LifecycleAction::Deprecate] {
        let err = svc.transition(&modest_admin, overlay.id, action, Some("no".into())).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::AuthorizationError, "{action}");
    }
    let err = svc.delete(&modest_admin, overlay.id, None).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::AuthorizationError);
    assert_eq!(svc.get(&admin(), overlay.id).await.unwrap().trust_level, TrustLevel::Trusted, "untouched");
    let events = svc.events(&admin(), overlay.id, PageRequest::default()).await.unwrap();
    let last = events.items.last().unwrap();
    assert_eq!(last.action, forge_model::AuditAction::SetTrustLevel);
    assert_eq!(
        (last.details["from"].as_str(), last.details["to"].as_str()),
        (Some("sandbox"), Some("trusted"))
    );
    assert_eq!(
        svc.set_trust_level(&admin(), uuid::Uuid::now_v7(), TrustLevel::Core, None).await.unwrap_err().code,
        ErrorCode::NotFound
    );
}

pub async fn delete_removes_record_and_binary_but_keeps_the_trail(env: &Env) {
    let overlay = env.active_example("echo", TrustLevel::Sandbox).await;
    let svc = &env.service;
    svc.invoke(&user(), overlay.id, invocation("process", echo_args())).await.unwrap();
    svc.delete(&admin(), overlay.id, Some("retired".into())).await.unwrap();
    assert_eq!(svc.get(&admin(), overlay.id).await.unwrap_err().code, ErrorCode::NotFound);
    assert!(!env.blobs.blobs.exists(&overlay.wasm_key).await.unwrap());
    let err = svc.invoke(&user(), overlay.id, invocation("process", echo_args())).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::NotFound, "a deleted overlay cannot be invoked from the cache");
    let trail = svc.events(&admin(), overlay.id, PageRequest::default()).await.unwrap();
    assert_eq!(trail.items.last().unwrap().action, forge_model::AuditAction::Delete);
    assert_eq!(svc.delete(&admin(), overlay.id, None).await.unwrap_err().code, ErrorCode::NotFound);
    svc.flush_health().await.expect("metrics of a deleted overlay are dropped, not an error");
}

pub async fn a_registration_that_cannot_be_recorded_removes_its_binary(env: &Env) {
    env.db.refuse_overlay_inserts().await;
    let wasm = fixture("echo.wasm");
    let err = env.register_as(&user(), example_manifest("echo"), wasm.clone()).await.unwrap_err();
    assert_ne!(err.code, ErrorCode::Conflict, "{err:?}");
    let manifest = example_manifest("echo");
    let key = forge_model::Overlay::wasm_key_for("echo", &manifest.version, &forge_model::sha256_hex(&wasm));
    assert!(!env.blobs.blobs.exists(&key).await.unwrap(), "the stored binary was removed");
}
