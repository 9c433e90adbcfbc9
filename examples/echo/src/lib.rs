//! Echo: the smallest useful overlay, and a reliable way to make a call fail.
//!
//! - `process` answers `{"echo": <args>}`.
//! - `fail` always fails, with the message from `{"message": "..."}` (or a default), so demos and
//!   tests can drive an overlay's failure count up to quarantine on demand.

use forge_sdk::Error;
use forge_sdk::serde_json::{Map, Value};
use serde::{Deserialize, Serialize};

#[derive(Serialize)]
struct Echo {
    echo: Map<String, Value>,
}

/// Arguments are always a JSON object, so a map takes any of them.
fn process(args: Map<String, Value>) -> Result<Echo, Error> {
    Ok(Echo { echo: args })
}

#[derive(Deserialize)]
struct FailArgs {
    #[serde(default)]
    message: Option<String>,
}

fn fail(args: FailArgs) -> Result<(), Error> {
    Err(Error::new(args.message.unwrap_or_else(|| "echo: failing on purpose".to_owned())))
}

forge_sdk::entry_point!(process);
forge_sdk::entry_point!(fail);

#[cfg(test)]
mod tests {
    use super::*;
    use forge_sdk::handle;

    #[test]
    fn process_echoes_the_arguments() {
        let out = handle(br#"{"a": [1, {"b": null}], "c": "d"}"#, process).unwrap().unwrap();
        assert_eq!(out, br#"{"echo":{"a":[1,{"b":null}],"c":"d"}}"#);
        assert_eq!(handle(b"{}", process).unwrap().unwrap(), br#"{"echo":{}}"#);
    }

    #[test]
    fn fail_fails_with_the_given_message() {
        assert_eq!(handle(br#"{"message": "boom"}"#, fail).unwrap_err().message(), "boom");
        assert_eq!(handle(b"{}", fail).unwrap_err().message(), "echo: failing on purpose");
    }
}
