//! Two service instances (two server processes) on one database, eight tasks invoking at once:
//! every count exact, exactly one quarantine.

use crate::common::*;
use forge_model::{ErrorCode, ForgeError, LifecycleAction, OverlayResult, PageRequest, Role, TrustLevel};
use forge_service::{OverlayService, ServiceConfig};
use serde_json::json;
use std::time::Duration;

const TASKS: usize = 8;
const CALLS: usize = 500;

/// Runs `CALLS` invocations of `id` from `TASKS` tasks spread over both services, alternating a
/// failing and a succeeding call (failing first); returns every answer.
async fn hammer(services: [&OverlayService; 2], id: uuid::Uuid) -> Vec<Result<OverlayResult, ForgeError>> {
    let caller = principal("loadgen", Role::User, TrustLevel::Core);
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let service = services[task % 2].clone();
            let caller = caller.clone();
            tokio::spawn(async move {
                let mut answers = Vec::new();
                for call in (task..CALLS).step_by(TASKS) {
                    let function = if call % 2 == 0 { "fail" } else { "process" };
                    answers.push(
                        service
                            .invoke(&caller, id, invocation(function, json!({"message": "half fail"})))
                            .await,
                    );
                }
                answers
            })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.extend(task.await.expect("task"));
    }
    answers
}

async fn exact_counts_and_one_quarantine(env: &Env, other: OverlayService) {
    let services = [&env.service, &other];
    let steady = env.active_example("echo", TrustLevel::Core).await;
    let flaky_manifest = manifest_named("flaky", "1.0.0", "entry_points = [\"process\", \"fail\"]");
    let flaky = env.register_as(&user(), flaky_manifest, fixture("echo.wasm")).await.unwrap();
    env.service.transition(&admin(), flaky.id, LifecycleAction::Activate, None).await.unwrap();

    let (steady_answers, flaky_answers) =
        tokio::join!(hammer(services, steady.id), hammer(services, flaky.id));
    for service in services {
        service.flush_health().await.unwrap();
    }

    // Core trust: never quarantined, so all 500 ran and all are counted.
    let health = env.service.health(&admin(), steady.id).await.unwrap();
    assert!(steady_answers.iter().all(Result::is_ok));
    assert_eq!((health.invocation_count, health.failure_count), (CALLS as u64, (CALLS / 2) as u64));

    // Sandbox: quarantined once; exactly the invocations that ran are counted.
    let ran: Vec<&OverlayResult> = flaky_answers.iter().filter_map(|a| a.as_ref().ok()).collect();
    let refused = flaky_answers.iter().filter(|a| a.is_err()).count();
    assert_eq!(ran.len() + refused, CALLS);
    assert!(
        flaky_answers.iter().filter_map(|a| a.as_ref().err()).all(|e| e.message.contains("is quarantined"))
    );
    let health = env.service.health(&admin(), flaky.id).await.unwrap();
    assert_eq!(health.invocation_count, ran.len() as u64);
    assert_eq!(health.failure_count, ran.iter().filter(|r| !r.success).count() as u64);
    assert_eq!(health.state, forge_model::OverlayState::Quarantined);
    let events = env.service.events(&admin(), flaky.id, PageRequest::new(None, Some(100))).await.unwrap();
    assert_eq!(
        events.items.iter().filter(|e| e.action == forge_model::AuditAction::AutoQuarantine).count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_services_on_one_sqlite_file() {
    let env = Env::embedded().await;
    let second_repo = forge_storage::open_repository(&env.db.url).await.unwrap();
    let other = OverlayService::new(ServiceConfig::default(), second_repo, env.blobs.blobs.clone()).unwrap();
    exact_counts_and_one_quarantine(&env, other).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL (FORGE_TEST_POSTGRES_URL) and S3 (FORGE_TEST_S3_ENDPOINT)"]
async fn two_services_on_one_postgres() {
    let env = Env::postgres_s3().await;
    let second_repo = forge_storage::open_repository(&env.db.url).await.unwrap();
    let other = OverlayService::new(ServiceConfig::default(), second_repo, env.blobs.blobs.clone()).unwrap();
    exact_counts_and_one_quarantine(&env, other).await;
}

/// A delete whose binary removal is slow, and a re-registration of the same name, version and
/// binary (so the same key) retried meanwhile: the new overlay keeps its binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_racing_an_identical_re_registration_leaves_the_new_binary() {
    let slow_deletes = forge_storage::testing::blobs_with_slow_deletes(Duration::from_millis(400));
    let env = Env::start(forge_storage::testing::sqlite().await, slow_deletes, suite_config());
    let first = env.register_example("echo").await;
    let deleting = {
        let service = env.service.clone();
        tokio::spawn(async move { service.delete(&admin(), first.id, None).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let again = loop {
        // As an admin, whose registrations are not rate-limited.
        match env.register_as(&admin(), example_manifest("echo"), fixture("echo.wasm")).await {
            Ok(overlay) => break overlay,
            Err(error) if error.code == ErrorCode::Conflict => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(error) => panic!("{error:?}"),
        }
    };
    deleting.await.unwrap().unwrap();
    assert_eq!(again.wasm_key, first.wasm_key, "the same content-addressed key");
    assert!(env.blobs.blobs.exists(&again.wasm_key).await.unwrap(), "the new overlay's binary is kept");
}
