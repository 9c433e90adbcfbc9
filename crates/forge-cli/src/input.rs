//! What commands read from the user: files, standard input and JSON objects given as flags. Shared
//! by the local commands and the client commands, so both word their refusals the same way.

use serde_json::{Map, Value};
use std::io::Read;
use std::path::Path;

pub fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

pub fn read_text(path: &Path) -> Result<String, String> {
    String::from_utf8(read(path)?).map_err(|_| format!("{} is not UTF-8 text", path.display()))
}

pub fn read_stdin() -> Result<String, String> {
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text).map_err(|e| format!("cannot read standard input: {e}"))?;
    Ok(text)
}

/// Parses a flag's value as a JSON object (`--args`, `--metadata`); clap reports the refusal.
pub fn json_object(text: &str) -> Result<Map<String, Value>, String> {
    match serde_json::from_str(text) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(r#"must be a JSON object, e.g. '{"text": "hello"}'"#.into()),
        Err(e) => Err(format!("not valid JSON: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_json_objects_are_taken() {
        assert_eq!(json_object(r#"{"a": 1}"#).unwrap()["a"], 1);
        assert!(json_object("[1]").unwrap_err().contains("must be a JSON object"));
        assert!(json_object("{oops").unwrap_err().contains("not valid JSON"));
    }
}
