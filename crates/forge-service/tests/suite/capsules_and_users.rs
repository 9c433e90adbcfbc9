//! Capsules as users see them, and users with their tokens.

use crate::common::*;
use forge_model::NewUser;
use forge_model::{CapsuleType, ErrorCode, NewCapsule, PageRequest, Role, TrustLevel};
use forge_storage::BootstrapToken;

fn capsule(content: &str, trust: TrustLevel) -> NewCapsule {
    NewCapsule {
        content: content.into(),
        capsule_type: CapsuleType::Decision,
        trust_level: trust,
        metadata: Default::default(),
        owner: None,
        created_by_overlay: None,
    }
}

pub async fn capsules_are_filtered_by_trust(env: &Env) {
    let svc = &env.service;
    let open =
        svc.create_capsule(&user(), capsule("adopt wasm overlays", TrustLevel::Sandbox)).await.unwrap();
    assert_eq!(open.owner.as_deref(), Some("ursula"));
    let secret =
        svc.create_capsule(&admin(), capsule("wasm budget decision", TrustLevel::Core)).await.unwrap();
    let err = svc.create_capsule(&user(), capsule("escalate", TrustLevel::Core)).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::AuthorizationError, "no capsule above the creator's trust");
    assert_eq!(
        svc.create_capsule(&user(), capsule("  ", TrustLevel::Sandbox)).await.unwrap_err().code,
        ErrorCode::ValidationError
    );
    let mut forged = capsule("made by an overlay, honest", TrustLevel::Sandbox);
    forged.metadata.insert("created_by_overlay".into(), uuid::Uuid::now_v7().to_string().into());
    let err = svc.create_capsule(&user(), forged).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::ValidationError, "provenance is the service's to write");

    assert_eq!(svc.get_capsule(&user(), open.id).await.unwrap().content, "adopt wasm overlays");
    let hidden = svc.get_capsule(&user(), secret.id).await.unwrap_err();
    assert_eq!(hidden.code, ErrorCode::NotFound);
    assert_eq!(hidden.message, format!("capsule {} not found", secret.id));
    assert_eq!(svc.get_capsule(&admin(), secret.id).await.unwrap().id, secret.id);

    let hits = svc.search_capsules(&user(), "wasm", 10).await.unwrap();
    assert_eq!(hits.iter().map(|h| h.capsule.id).collect::<Vec<_>>(), [open.id]);
    assert_eq!(svc.search_capsules(&admin(), "wasm", 10).await.unwrap().len(), 2);
    assert!(svc.search_capsules(&admin(), "\"unbalanced AND (", 10).await.unwrap().is_empty());
}

pub async fn users_get_tokens_that_authenticate_until_revoked(env: &Env) {
    let svc = &env.service;
    let new_user =
        NewUser { name: "dana".into(), roles: vec![Role::Operator], trust_level: TrustLevel::Trusted };
    let refused = svc.create_user(&operator(), new_user.clone()).await.unwrap_err();
    assert_eq!(refused.code, ErrorCode::AuthorizationError);
    let (dana, token) = svc.create_user(&admin(), new_user.clone()).await.unwrap();
    assert_eq!((dana.name.as_str(), dana.roles.as_slice()), ("dana", &[Role::Operator][..]));
    assert_eq!(svc.create_user(&admin(), new_user).await.unwrap_err().code, ErrorCode::Conflict);
    let dana = svc.authenticate(&token).await.unwrap();
    assert_eq!((dana.name.as_str(), dana.trust_level), ("dana", TrustLevel::Trusted));
    assert_eq!(svc.authenticate("fgo_not-a-token").await.unwrap_err().code, ErrorCode::AuthenticationError);
    let too_trusted = NewUser { name: "eve".into(), roles: vec![Role::User], trust_level: TrustLevel::Core };
    let modest = principal("modest", Role::Admin, TrustLevel::Standard);
    assert_eq!(svc.create_user(&modest, too_trusted).await.unwrap_err().code, ErrorCode::AuthorizationError);
    let repeated = NewUser {
        name: "rita".into(),
        roles: vec![Role::User, Role::Operator, Role::User],
        trust_level: TrustLevel::Standard,
    };
    let (rita, _) = svc.create_user(&admin(), repeated).await.unwrap();
    assert_eq!(rita.roles, [Role::User, Role::Operator], "each role once, wherever it was repeated");

    assert_eq!(svc.revoke_token(&user(), &token).await.unwrap_err().code, ErrorCode::NotFound, "not theirs");
    svc.revoke_token(&dana, &token).await.unwrap();
    assert_eq!(svc.authenticate(&token).await.unwrap_err().code, ErrorCode::AuthenticationError);
}

pub async fn bootstrap_token_is_idempotent(env: &Env) {
    let svc = &env.service;
    let token = forge_service::generate_token();
    let first = svc.ensure_token("admin", Role::Admin, TrustLevel::Core, &token).await.unwrap();
    let second = svc.ensure_token("admin", Role::Admin, TrustLevel::Core, &token).await.unwrap();
    assert_eq!(first.id, second.id);
    let another = forge_service::generate_token();
    assert_eq!(
        svc.ensure_token("admin", Role::Admin, TrustLevel::Core, &another).await.unwrap().id,
        first.id
    );
    let admin = svc.authenticate(&token).await.unwrap();
    assert!(admin.has_role(Role::Admin));
    assert_eq!(svc.authenticate(&another).await.unwrap().name, "admin");
    let clash =
        svc.ensure_token("admin", Role::Operator, TrustLevel::Core, &forge_service::generate_token()).await;
    assert_eq!(clash.unwrap_err().code, ErrorCode::Conflict);
}

pub async fn admins_manage_a_users_tokens_and_access(env: &Env) {
    let svc = &env.service;
    let new_user =
        NewUser { name: "greta".into(), roles: vec![Role::User], trust_level: TrustLevel::Standard };
    let (_, first) = svc.create_user(&admin(), new_user).await.unwrap();
    let second = forge_service::generate_token();
    svc.ensure_token("greta", Role::User, TrustLevel::Standard, &second).await.unwrap();
    let greta = svc.authenticate(&first).await.unwrap();

    let tokens = svc.user_tokens(&admin(), "greta", PageRequest::default()).await.unwrap().items;
    assert_eq!(tokens.len(), 2);
    assert!(tokens.iter().any(|t| forge_service::token_hash(&first).starts_with(&t.id)));
    assert_eq!(
        svc.user_tokens(&operator(), "greta", PageRequest::default()).await.unwrap_err().code,
        ErrorCode::AuthorizationError
    );
    assert_eq!(
        svc.user_tokens(&greta, "greta", PageRequest::default()).await.unwrap_err().code,
        ErrorCode::AuthorizationError
    );
    assert_eq!(
        svc.user_tokens(&admin(), "nobody", PageRequest::default()).await.unwrap_err().code,
        ErrorCode::NotFound
    );
    let modest = principal("modest", Role::Admin, TrustLevel::Sandbox);
    assert_eq!(
        svc.user_tokens(&modest, "greta", PageRequest::default()).await.unwrap_err().code,
        ErrorCode::AuthorizationError
    );

    // Disabling applies at once, though the token was verified (and cached) a moment ago.
    assert!(svc.set_user_disabled(&admin(), "greta", true).await.unwrap().disabled);
    assert_eq!(svc.authenticate(&first).await.unwrap_err().code, ErrorCode::AuthenticationError);
    assert_eq!(svc.authenticate(&second).await.unwrap_err().code, ErrorCode::AuthenticationError);
    assert!(!svc.set_user_disabled(&admin(), "greta", false).await.unwrap().disabled);
    assert_eq!(svc.authenticate(&second).await.unwrap().name, "greta", "enabled again");
    let root = admin();
    svc.ensure_token(&root.name, Role::Admin, root.trust_level, &forge_service::generate_token())
        .await
        .unwrap();
    let myself = svc.set_user_disabled(&root, &root.name, true).await.unwrap_err();
    assert_eq!(myself.code, ErrorCode::ValidationError, "an admin cannot lock itself out");
    assert_eq!(svc.set_user_disabled(&admin(), "nobody", true).await.unwrap_err().code, ErrorCode::NotFound);

    assert_eq!(svc.revoke_user_tokens(&admin(), "greta").await.unwrap(), 2);
    assert_eq!(svc.authenticate(&first).await.unwrap_err().code, ErrorCode::AuthenticationError);
    let tokens = svc.user_tokens(&admin(), "greta", PageRequest::default()).await.unwrap().items;
    assert!(tokens.iter().all(|t| t.revoked_at.is_some()));
    assert_eq!(svc.revoke_user_tokens(&admin(), "greta").await.unwrap(), 0);
}

pub async fn the_admin_token_is_replaced_when_it_changes_and_stays_revoked(env: &Env) {
    let svc = &env.service;
    let (first, second) = (forge_service::generate_token(), forge_service::generate_token());
    assert_eq!(
        svc.install_admin_token("admin", &first).await.unwrap(),
        BootstrapToken::Installed { replaced: 0 }
    );
    let minted = forge_service::generate_token();
    svc.ensure_token("admin", Role::Admin, TrustLevel::Core, &minted).await.unwrap();
    assert_eq!(svc.install_admin_token("admin", &first).await.unwrap(), BootstrapToken::Kept);
    assert_eq!(
        svc.install_admin_token("admin", &second).await.unwrap(),
        BootstrapToken::Installed { replaced: 1 }
    );
    assert_eq!(svc.authenticate(&first).await.unwrap_err().code, ErrorCode::AuthenticationError);
    assert_eq!(svc.authenticate(&minted).await.unwrap().name, "admin", "only the bootstrap token goes");

    let admin = svc.authenticate(&second).await.unwrap();
    svc.revoke_token(&admin, &second).await.unwrap();
    assert_eq!(svc.install_admin_token("admin", &second).await.unwrap(), BootstrapToken::Revoked);
    assert_eq!(svc.authenticate(&second).await.unwrap_err().code, ErrorCode::AuthenticationError);

    let operator_named =
        NewUser { name: "ops".into(), roles: vec![Role::Operator], trust_level: TrustLevel::Standard };
    svc.create_user(&crate::common::admin(), operator_named).await.unwrap();
    let clash = svc.install_admin_token("ops", &forge_service::generate_token()).await.unwrap_err();
    assert_eq!(clash.code, ErrorCode::Conflict, "a user of that name without the admin role");
}
