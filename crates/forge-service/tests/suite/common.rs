//! A service on fresh storage, principals of each role, and the example overlays.

use bytes::Bytes;
use forge_model::{
    LifecycleAction, Overlay, OverlayInvocation, OverlayManifest, Principal, Role, TrustLevel,
};
use forge_service::{OverlayService, Registration, ServiceConfig};
use forge_storage::testing::{Db, TestBlobs};
use serde_json::{Value, json};

pub struct Env {
    pub service: OverlayService,
    pub db: Db,
    pub blobs: TestBlobs,
}

impl Env {
    pub async fn embedded() -> Env {
        Self::start(
            forge_storage::testing::sqlite().await,
            forge_storage::testing::local_blobs(),
            suite_config(),
        )
    }

    pub async fn postgres_s3() -> Env {
        Self::start(
            forge_storage::testing::postgres().await,
            forge_storage::testing::s3_blobs().await,
            suite_config(),
        )
    }

    pub fn start(db: Db, blobs: TestBlobs, config: ServiceConfig) -> Env {
        let service =
            OverlayService::new(config, db.repo.clone(), blobs.blobs.clone()).expect("service starts");
        Env { service, db, blobs }
    }

    /// Another service instance on the same storage, as a second server process would be.
    pub fn sibling(&self, config: ServiceConfig) -> OverlayService {
        OverlayService::new(config, self.db.repo.clone(), self.blobs.blobs.clone()).expect("service starts")
    }

    /// Registers an example overlay (`fixtures/wasm/{name}.wasm` with its manifest) as `user`.
    pub async fn register_example(&self, name: &str) -> Overlay {
        self.register_as(&user(), example_manifest(name), fixture(&format!("{name}.wasm")))
            .await
            .expect("registered")
    }

    pub async fn register_as(
        &self,
        actor: &Principal,
        manifest: OverlayManifest,
        wasm: Vec<u8>,
    ) -> Result<Overlay, forge_model::ForgeError> {
        self.service
            .register(actor, Registration { manifest, wasm: Bytes::from(wasm), source_hash: None })
            .await
    }

    /// Registers and activates an example overlay, at `trust`.
    pub async fn active_example(&self, name: &str, trust: TrustLevel) -> Overlay {
        let overlay = self.register_example(name).await;
        self.service.set_trust_level(&admin(), overlay.id, trust, None).await.unwrap();
        self.service.transition(&admin(), overlay.id, LifecycleAction::Activate, None).await.unwrap()
    }
}

/// The default settings, but with room for the dozens of registrations a case makes as one user.
pub fn suite_config() -> ServiceConfig {
    ServiceConfig { registrations_per_minute: 1000, ..ServiceConfig::default() }
}

pub fn principal(name: &str, role: Role, trust: TrustLevel) -> Principal {
    Principal { name: name.into(), roles: vec![role], trust_level: trust }
}
pub fn admin() -> Principal {
    principal("root", Role::Admin, TrustLevel::Core)
}
pub fn operator() -> Principal {
    principal("oscar", Role::Operator, TrustLevel::Trusted)
}
pub fn user() -> Principal {
    principal("ursula", Role::User, TrustLevel::Standard)
}

pub fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/../../fixtures/wasm/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e} (run scripts/build-fixtures.sh)"))
}

pub fn example_manifest(name: &str) -> OverlayManifest {
    OverlayManifest::parse(&String::from_utf8(fixture(&format!("{name}.toml"))).unwrap()).unwrap()
}

/// `toml` with the manifest's name and version replaced.
pub fn manifest_named(name: &str, version: &str, rest: &str) -> OverlayManifest {
    OverlayManifest::parse(&format!("name = \"{name}\"\nversion = \"{version}\"\n{rest}")).unwrap()
}

pub fn invocation(function: &str, args: Value) -> OverlayInvocation {
    OverlayInvocation::new(function, args.as_object().cloned().unwrap_or_default())
}

pub fn echo_args() -> Value {
    json!({"hello": "world"})
}
