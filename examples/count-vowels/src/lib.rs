//! The benchmark workload (shared/anchors) written with the SDK: `count_vowels` takes
//! `{"text": "..."}` and answers `{"vowels": N}`, counting `aeiouAEIOU`, the same as the
//! hand-written anchor guest, so the two can be compared call for call.

use forge_sdk::Error;
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct Args {
    text: String,
}

#[derive(Serialize)]
struct Output {
    vowels: usize,
}

fn count_vowels(args: Args) -> Result<Output, Error> {
    let vowels = args.text.bytes().filter(|b| b"aeiouAEIOU".contains(b)).count();
    Ok(Output { vowels })
}

forge_sdk::entry_point!(count_vowels);

#[cfg(test)]
mod tests {
    use super::*;
    use forge_sdk::handle;

    #[test]
    fn counts_like_the_anchor() {
        let text = "hello world, overlays are sandboxed ".repeat(4);
        let input = format!(r#"{{"text": "{text}"}}"#);
        assert_eq!(handle(input.as_bytes(), count_vowels).unwrap().unwrap(), br#"{"vowels":44}"#);
    }

    #[test]
    fn only_ascii_vowels_count() {
        assert_eq!(
            handle(r#"{"text": "ÀéIoU y"}"#.as_bytes(), count_vowels).unwrap().unwrap(),
            br#"{"vowels":3}"#
        );
    }
}
