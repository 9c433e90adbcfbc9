//! One behaviour suite for every [`Repository`] backend.
//!
//! Each case is an `async fn(&Db)` in a module per concern; [`suite!`] instantiates every case once
//! per backend, each on a fresh database: SQLite in a temporary directory (runs by default) and
//! PostgreSQL in a database created for the test and dropped after it (`#[ignore]`d: run with
//! `cargo test -p forge-storage -- --include-ignored`, server from `FORGE_TEST_POSTGRES_URL`,
//! default `postgres://postgres@127.0.0.1:5432/test`). A PostgreSQL case fails, never passes, when
//! the server is absent.

mod capsules;
mod fixture;
mod health;
mod logs;
mod overlays;
mod users;

pub use fixture::Db;

macro_rules! suite {
    ($($module:ident: [$($case:ident),* $(,)?]),* $(,)?) => {
        mod sqlite {
            $(mod $module {
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $case() {
                        let db = crate::fixture::sqlite().await;
                        crate::$module::$case(&db).await;
                    }
                )*
            })*
        }
        mod postgres {
            $(mod $module {
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    #[ignore = "needs PostgreSQL (FORGE_TEST_POSTGRES_URL)"]
                    async fn $case() {
                        let db = crate::fixture::postgres().await;
                        crate::$module::$case(&db).await;
                    }
                )*
            })*
        }
    };
}

suite! {
    overlays: [
        insert_returns_the_stored_overlay_and_records_the_event,
        name_and_version_are_unique,
        unknown_overlays_are_none,
        list_filters_orders_and_pages,
        active_overlays_named_skips_other_states,
        transition_is_compare_and_set,
        concurrent_transitions_let_exactly_one_win,
        transition_can_reset_health,
        set_trust_level_records_the_change,
        delete_keeps_the_audit_trail,
        events_page_oldest_first,
        reopening_keeps_everything,
        manifests_broken_by_newer_rules_are_still_read,
    ],
    health: [
        deltas_add_up,
        auto_quarantine_happens_once_with_its_numbers,
        core_overlays_are_never_quarantined,
        only_active_overlays_are_quarantined,
        host_failures_do_not_count_against_the_overlay,
        deltas_of_missing_overlays_are_skipped,
        one_batch_covers_many_overlays,
        latency_histogram_of_unknown_overlay_is_not_found,
        concurrent_recorders_lose_nothing_and_quarantine_once,
        a_long_good_past_does_not_shield_an_overlay_that_starts_failing,
        caller_failures_are_recorded_but_not_held_against_the_overlay,
        probation_after_a_release,
        the_window_keeps_only_the_most_recent_calls,
    ],
    logs: [
        appended_logs_are_read_newest_first_and_filtered,
        trims_keep_the_retention_and_reads_never_exceed_it,
        logs_of_missing_overlays_are_skipped_and_deleted_with_their_overlay,
    ],
    users: [
        users_are_found_by_name,
        tokens_authenticate_until_revoked,
        tokens_are_listed_without_their_hashes,
        a_disabled_users_tokens_do_not_authenticate,
        the_bootstrap_token_replaces_only_the_previous_one,
        concurrent_bootstrap_installs_all_succeed,
        token_refusals,
    ],
    capsules: [
        capsules_are_stored_as_version_one,
        search_ranks_by_relevance_and_stems,
        search_filters_by_trust,
        search_returns_previews,
        hostile_queries_are_plain_words,
        queries_without_words_find_nothing,
        nul_characters_are_replaced_alike,
        delete_respects_trust_and_records_the_event,
        capsule_writes_past_their_deadline_roll_back,
    ],
}
