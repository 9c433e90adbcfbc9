//! Capsule insight: search capsules, then record what was found as a new `insight` capsule.
//!
//! `process` takes `{"query": "...", "limit": 5}`, searches (`capsule:read`), and when anything
//! matched creates an insight (`capsule:write`) listing the hits, with their ids in the metadata's
//! `source_capsule_ids`. It answers `{"found": n, "insight_id": "..."}` (`null` when nothing
//! matched, since an insight about nothing is noise).

use forge_sdk::capsules::{self, CapsuleType, NewCapsule, SearchHit};
use forge_sdk::{Error, log};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Most hits one insight summarises.
const MAX_LIMIT: u32 = 50;
/// Characters of each hit quoted in the insight.
const QUOTE_CHARS: usize = 120;

#[derive(Deserialize)]
struct Args {
    query: String,
    #[serde(default = "default_limit")]
    limit: u32,
}

fn default_limit() -> u32 {
    5
}

#[derive(Debug, PartialEq, Serialize)]
struct Output {
    found: usize,
    insight_id: Option<String>,
}

fn process(args: Args) -> Result<Output, Error> {
    let query = args.query.trim();
    if query.is_empty() {
        return Err(Error::invalid_input("query must not be empty"));
    }
    if !(1..=MAX_LIMIT).contains(&args.limit) {
        return Err(Error::invalid_input(format!(
            "limit must be between 1 and {MAX_LIMIT}, got {}",
            args.limit
        )));
    }
    let hits = capsules::search(query, args.limit)?;
    log::info(&format!("capsule-insight: {} capsules match {query:?}", hits.len()));
    if hits.is_empty() {
        return Ok(Output { found: 0, insight_id: None });
    }
    let insight = capsules::create(&insight(query, &hits))?;
    log::info(&format!("capsule-insight: created insight {}", insight.id));
    Ok(Output { found: hits.len(), insight_id: Some(insight.id) })
}

/// The insight capsule for `hits`: a summary line, one quoted line per hit, and the sources.
fn insight(query: &str, hits: &[SearchHit]) -> NewCapsule {
    let mut by_type: BTreeMap<&str, usize> = BTreeMap::new();
    for hit in hits {
        *by_type.entry(hit.capsule.capsule_type.as_str()).or_default() += 1;
    }
    let kinds: Vec<String> = by_type.iter().map(|(kind, n)| format!("{n} {kind}")).collect();
    let mut content = format!(
        "Insight for \"{query}\": {} related capsule{} ({}).\n",
        hits.len(),
        if hits.len() == 1 { "" } else { "s" },
        kinds.join(", ")
    );
    for (i, hit) in hits.iter().enumerate() {
        content.push_str(&format!(
            "{}. [{}] {} (score {:.2})\n",
            i + 1,
            hit.capsule.capsule_type,
            quote(&hit.capsule.content),
            hit.score
        ));
    }
    let sources: Vec<&str> = hits.iter().map(|hit| hit.capsule.id.as_str()).collect();
    NewCapsule::new(CapsuleType::Insight, content)
        .with_metadata("query", query)
        .with_metadata("source_capsule_ids", sources)
}

/// The first [`QUOTE_CHARS`] characters of `text` on one line, with an ellipsis if cut.
fn quote(text: &str) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut chars = flat.chars();
    let quoted: String = chars.by_ref().take(QUOTE_CHARS).collect();
    if chars.next().is_some() { format!("{quoted}…") } else { quoted }
}

forge_sdk::entry_point!(process);

#[cfg(test)]
mod tests {
    use super::*;
    use forge_sdk::capsules::{CapsulePreview, TrustLevel};
    use forge_sdk::handle;
    use forge_sdk::serde_json::json;

    fn hit(id: &str, kind: CapsuleType, content: &str, score: f64) -> SearchHit {
        SearchHit {
            capsule: CapsulePreview {
                id: id.into(),
                content: content.into(),
                capsule_type: kind,
                trust_level: TrustLevel::Standard,
            },
            score,
        }
    }

    #[test]
    fn the_insight_lists_hits_and_sources() {
        let hits = [
            hit("a", CapsuleType::Knowledge, "Deploys  fail\non Fridays", 1.7),
            hit("b", CapsuleType::Decision, &"x".repeat(200), 0.5),
            hit("c", CapsuleType::Knowledge, "Rollbacks are cheap", 0.25),
        ];
        let capsule = insight("deploy", &hits);
        assert_eq!(capsule.capsule_type, CapsuleType::Insight);
        assert!(capsule.content.starts_with(
            "Insight for \"deploy\": 3 related capsules (1 decision, 2 knowledge).\n\
             1. [knowledge] Deploys fail on Fridays (score 1.70)\n"
        ));
        assert!(capsule.content.contains(&format!("2. [decision] {}… (score 0.50)", "x".repeat(120))));
        assert_eq!(capsule.metadata["source_capsule_ids"], json!(["a", "b", "c"]));
        assert_eq!(capsule.metadata["query"], "deploy");
    }

    #[test]
    fn arguments_are_checked_before_any_host_call() {
        let err = handle(br#"{"query": "  "}"#, process).unwrap_err();
        assert_eq!((err.message(), err.is_invalid_input()), ("query must not be empty", true));
        let err = handle(br#"{"query": "x", "limit": 0}"#, process).unwrap_err();
        assert!(err.message().starts_with("limit must be between 1 and 50") && err.is_invalid_input());
    }

    #[test]
    fn host_errors_fail_the_call() {
        // Natively there is no host: the search answers `unavailable`.
        let err = handle(br#"{"query": "x"}"#, process).unwrap_err();
        assert!(err.message().starts_with("unavailable:"), "{err}");
    }
}
