//! Users and the hashes of their API tokens.

use crate::Db;
use chrono::Utc;
use forge_model::{PageRequest, Role, TrustLevel, User};
use forge_storage::{BootstrapToken, StorageError};
use uuid::Uuid;

fn user(name: &str, roles: Vec<Role>) -> User {
    User {
        id: Uuid::now_v7(),
        name: name.into(),
        roles,
        trust_level: TrustLevel::Trusted,
        created_at: Utc::now(),
        disabled: false,
    }
}

pub async fn users_are_found_by_name(db: &Db) {
    let admin = db.repo.insert_user(&user("root", vec![Role::Admin, Role::Operator])).await.unwrap();
    assert_eq!(admin.roles, [Role::Admin, Role::Operator]);
    assert_eq!(db.repo.get_user_by_name("root").await.unwrap(), Some(admin));
    assert_eq!(db.repo.get_user_by_name("nobody").await.unwrap(), None);
    let err = db.repo.insert_user(&user("root", vec![Role::User])).await.unwrap_err();
    assert!(matches!(&err, StorageError::Conflict(m) if m.contains("root")), "{err:?}");
}

pub async fn tokens_authenticate_until_revoked(db: &Db) {
    let alice = db.repo.insert_user(&user("alice", vec![Role::User])).await.unwrap();
    db.repo.add_token(alice.id, "hash-1").await.unwrap();
    db.repo.add_token(alice.id, "hash-2").await.unwrap();
    assert_eq!(db.repo.user_by_token_hash("hash-1").await.unwrap().as_ref(), Some(&alice));
    assert_eq!(db.repo.user_by_token_hash("unknown").await.unwrap(), None);

    assert!(db.repo.revoke_token("hash-1").await.unwrap());
    assert_eq!(db.repo.user_by_token_hash("hash-1").await.unwrap(), None);
    assert!(!db.repo.revoke_token("hash-1").await.unwrap(), "already revoked");
    assert!(!db.repo.revoke_token("unknown").await.unwrap());
    assert_eq!(db.repo.user_by_token_hash("hash-2").await.unwrap(), Some(alice), "other tokens still work");
}

pub async fn token_refusals(db: &Db) {
    let err = db.repo.add_token(Uuid::now_v7(), "orphan").await.unwrap_err();
    assert!(matches!(err, StorageError::NotFound(_)), "{err:?}");
    let bob = db.repo.insert_user(&user("bob", vec![Role::User])).await.unwrap();
    db.repo.add_token(bob.id, "same").await.unwrap();
    db.repo.revoke_token("same").await.unwrap();
    let err = db.repo.add_token(bob.id, "same").await.unwrap_err();
    assert!(matches!(err, StorageError::Conflict(_)), "a revoked hash is never reused: {err:?}");
}

pub async fn tokens_are_listed_without_their_hashes(db: &Db) {
    let carl = db.repo.insert_user(&user("carl", vec![Role::User])).await.unwrap();
    let (first, second) = ("a".repeat(64), "b".repeat(64));
    db.repo.add_token(carl.id, &first).await.unwrap();
    db.repo.add_token(carl.id, &second).await.unwrap();
    db.repo.revoke_token(&first).await.unwrap();
    let tokens = db.repo.list_tokens(carl.id, PageRequest::default()).await.unwrap().items;
    let ids: Vec<&str> = tokens.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["a".repeat(12), "b".repeat(12)], "a 12-digit prefix, oldest first");
    assert!(tokens[0].revoked_at.is_some() && tokens[1].revoked_at.is_none());
    assert!(tokens.iter().all(|t| !t.bootstrap));
    assert!(db.repo.list_tokens(Uuid::now_v7(), PageRequest::default()).await.unwrap().items.is_empty());

    assert_eq!(db.repo.revoke_user_tokens(carl.id).await.unwrap(), 1, "only the live one");
    assert_eq!(db.repo.user_by_token_hash(&second).await.unwrap(), None);
    assert_eq!(db.repo.revoke_user_tokens(carl.id).await.unwrap(), 0);
}

pub async fn a_disabled_users_tokens_do_not_authenticate(db: &Db) {
    let dora = db.repo.insert_user(&user("dora", vec![Role::User])).await.unwrap();
    db.repo.add_token(dora.id, "dora-1").await.unwrap();
    let disabled = db.repo.set_user_disabled("dora", true).await.unwrap().unwrap();
    assert!(disabled.disabled);
    assert_eq!(db.repo.user_by_token_hash("dora-1").await.unwrap(), None);
    assert!(db.repo.get_user_by_name("dora").await.unwrap().unwrap().disabled);
    let enabled = db.repo.set_user_disabled("dora", false).await.unwrap().unwrap();
    assert!(!enabled.disabled);
    assert_eq!(db.repo.user_by_token_hash("dora-1").await.unwrap(), Some(enabled), "its tokens work again");
    assert_eq!(db.repo.set_user_disabled("nobody", true).await.unwrap(), None);
}

pub async fn the_bootstrap_token_replaces_only_the_previous_one(db: &Db) {
    let admin = db.repo.insert_user(&user("admin", vec![Role::Admin])).await.unwrap();
    db.repo.add_token(admin.id, "minted").await.unwrap();
    let install = |hash: &'static str| db.repo.install_bootstrap_token(admin.id, hash);
    assert_eq!(install("boot-1").await.unwrap(), BootstrapToken::Installed { replaced: 0 });
    assert_eq!(install("boot-1").await.unwrap(), BootstrapToken::Kept);
    assert_eq!(install("boot-2").await.unwrap(), BootstrapToken::Installed { replaced: 1 });
    assert_eq!(db.repo.user_by_token_hash("boot-1").await.unwrap(), None, "the previous one is revoked");
    assert!(db.repo.user_by_token_hash("boot-2").await.unwrap().is_some());
    assert!(db.repo.user_by_token_hash("minted").await.unwrap().is_some(), "other admin tokens stay");
    let tokens = db.repo.list_tokens(admin.id, PageRequest::default()).await.unwrap().items;
    assert_eq!(tokens.iter().filter(|t| t.bootstrap).count(), 2);

    db.repo.revoke_token("boot-2").await.unwrap();
    assert_eq!(install("boot-2").await.unwrap(), BootstrapToken::Revoked);
    assert_eq!(db.repo.user_by_token_hash("boot-2").await.unwrap(), None, "a revoked token stays revoked");

    // A token stored before tokens were marked becomes the bootstrap one when it is given again.
    db.repo.add_token(admin.id, "old-boot").await.unwrap();
    assert_eq!(install("old-boot").await.unwrap(), BootstrapToken::Kept);
    assert_eq!(install("boot-3").await.unwrap(), BootstrapToken::Installed { replaced: 1 });
    assert_eq!(db.repo.user_by_token_hash("old-boot").await.unwrap(), None);

    let other = db.repo.insert_user(&user("other", vec![Role::User])).await.unwrap();
    let err = db.repo.install_bootstrap_token(other.id, "boot-3").await.unwrap_err();
    assert!(matches!(err, StorageError::Conflict(_)), "{err:?}");
}

/// Four installs of one new token at once, over an old one (processes starting together): all
/// succeed, the token is stored once and live, and the old one is revoked.
pub async fn concurrent_bootstrap_installs_all_succeed(db: &Db) {
    let admin = db.repo.insert_user(&user("admin", vec![Role::Admin])).await.unwrap().id;
    db.repo.install_bootstrap_token(admin, "old").await.unwrap();
    let installs: Vec<_> = (0..4)
        .map(|_| {
            let repo = db.repo.clone();
            tokio::spawn(async move { repo.install_bootstrap_token(admin, "new").await })
        })
        .collect();
    for install in installs {
        let outcome = install.await.unwrap().unwrap();
        assert!(matches!(outcome, BootstrapToken::Installed { .. } | BootstrapToken::Kept), "{outcome:?}");
    }
    assert_eq!(db.repo.list_tokens(admin, PageRequest::default()).await.unwrap().items.len(), 2);
    assert!(db.repo.user_by_token_hash("new").await.unwrap().is_some());
    assert_eq!(db.repo.user_by_token_hash("old").await.unwrap(), None);
}
