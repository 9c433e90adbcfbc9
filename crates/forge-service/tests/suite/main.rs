//! One behaviour suite of the service on every storage setup.
//!
//! [`suite!`] instantiates each case on SQLite with a local blob directory (runs by default) and on
//! PostgreSQL with the S3-compatible test server (`#[ignore]`d: run with `--include-ignored`;
//! servers from `FORGE_TEST_POSTGRES_URL` and `FORGE_TEST_S3_ENDPOINT`). A case on a backend whose
//! server is absent fails, never passes.

mod capsules_and_users;
mod common;
mod concurrency;
mod invocation;
mod lifecycle;

macro_rules! suite {
    ($($module:ident: [$($case:ident),* $(,)?]),* $(,)?) => {
        mod embedded {
            $(mod $module {
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $case() {
                        let env = crate::common::Env::embedded().await;
                        crate::$module::$case(&env).await;
                    }
                )*
            })*
        }
        mod postgres_s3 {
            $(mod $module {
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    #[ignore = "needs PostgreSQL (FORGE_TEST_POSTGRES_URL) and S3 (FORGE_TEST_S3_ENDPOINT)"]
                    async fn $case() {
                        let env = crate::common::Env::postgres_s3().await;
                        crate::$module::$case(&env).await;
                    }
                )*
            })*
        }
    };
}

suite! {
    lifecycle: [
        registration_starts_pending_at_sandbox_trust,
        privileged_capabilities_need_approval,
        network_hosts_need_the_operators_allow_list,
        duplicate_name_version_is_a_conflict,
        a_name_belongs_to_its_first_registrant_and_admins,
        bad_registrations_leave_nothing_behind,
        reads_filters_and_pages,
        every_transition_follows_the_table,
        roles_are_enforced,
        reasons_are_required_where_the_action_needs_one,
        release_resets_health,
        trust_level_is_admin_only_and_bounded,
        delete_removes_record_and_binary_but_keeps_the_trail,
        a_registration_that_cannot_be_recorded_removes_its_binary,
    ],
    invocation: [
        refusals_come_in_the_original_order,
        tampered_or_missing_binary_is_never_run,
        invocations_are_counted_with_latency,
        failing_overlay_is_quarantined_once,
        core_overlays_are_never_quarantined,
        invoke_by_name_picks_the_newest_active_version,
        too_many_in_flight_is_refused_with_retry_after,
        capsule_insight_reads_and_writes_through_the_service,
        state_changes_apply_to_the_next_invocation,
        failures_the_caller_caused_do_not_quarantine,
        an_overlay_failing_its_probation_goes_straight_back,
        a_failing_capsule_store_is_a_generic_host_error,
        error_text_and_reasons_are_for_operations_and_the_submitter,
    ],
    capsules_and_users: [
        capsules_are_filtered_by_trust,
        users_get_tokens_that_authenticate_until_revoked,
        bootstrap_token_is_idempotent,
        admins_manage_a_users_tokens_and_access,
        the_admin_token_is_replaced_when_it_changes_and_stays_revoked,
    ],
}
