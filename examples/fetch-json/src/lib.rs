//! Fetch JSON: get a JSON document from a host the manifest allows and keep it as a capsule.
//!
//! `process` takes `{"url": "..."}`, fetches it (`network:http`), checks that a 2xx answer is JSON,
//! and stores it as a `knowledge` capsule (`capsule:write`) whose metadata names the URL. It answers
//! `{"status": 200, "capsule_id": "..."}`. A refusal of the host (`network_denied`, for example a
//! name resolving to a private address) or an answer that is not JSON fails the call with the reason.

use forge_sdk::capsules::{self, CapsuleType, NewCapsule};
use forge_sdk::serde_json::Value;
use forge_sdk::{Error, http, log};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct Args {
    url: String,
}

#[derive(Debug, PartialEq, Serialize)]
struct Output {
    status: u16,
    capsule_id: String,
}

fn process(args: Args) -> Result<Output, Error> {
    if args.url.trim().is_empty() {
        return Err(Error::invalid_input("url must not be empty"));
    }
    let response = http::get(&args.url)?;
    if !response.is_success() {
        return Err(Error::new(format!("{} answered {}", args.url, response.status)));
    }
    let document = keep_json(&response.body)?;
    let capsule = capsules::create(
        &NewCapsule::new(CapsuleType::Knowledge, document).with_metadata("source_url", args.url.as_str()),
    )?;
    log::info(&format!("fetch-json: kept {} as capsule {}", args.url, capsule.id));
    Ok(Output { status: response.status, capsule_id: capsule.id })
}

/// The body, if it is JSON, in compact form.
fn keep_json(body: &str) -> Result<String, Error> {
    let document: Value = forge_sdk::serde_json::from_str(body)
        .map_err(|e| Error::new(format!("the answer is not JSON: {e}")))?;
    Ok(document.to_string())
}

forge_sdk::entry_point!(process);

#[cfg(test)]
mod tests {
    use super::*;
    use forge_sdk::handle;

    #[test]
    fn only_json_is_kept_compact() {
        assert_eq!(keep_json("{ \"price\": 42 }").unwrap(), r#"{"price":42}"#);
        assert!(keep_json("<html>").unwrap_err().message().starts_with("the answer is not JSON"));
    }

    #[test]
    fn the_url_is_checked_before_any_host_call() {
        let err = handle(br#"{"url": " "}"#, process).unwrap_err();
        assert!(err.is_invalid_input(), "{}", err.message());
    }
}
