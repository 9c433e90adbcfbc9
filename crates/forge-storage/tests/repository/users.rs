//! Users and the hashes of their API tokens.

use crate::Db;
use chrono::Utc;
use forge_model::{Role, TrustLevel, User};
use forge_storage::StorageError;
use uuid::Uuid;

fn user(name: &str, roles: Vec<Role>) -> User {
    User {
        id: Uuid::now_v7(),
        name: name.into(),
        roles,
        trust_level: TrustLevel::Trusted,
        created_at: Utc::now(),
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
