//! Text statistics, pure compute: `process` takes `{"text": "...", "top": 5}` and answers counts
//! and the most frequent words. It needs no capability; it logs one line.

use forge_sdk::Error;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Most words `top` may ask for; the list is part of the output, so keep it small.
const MAX_TOP: usize = 50;

#[derive(Deserialize)]
struct Args {
    text: String,
    /// How many of the most frequent words to list.
    #[serde(default = "default_top")]
    top: usize,
}

fn default_top() -> usize {
    5
}

#[derive(Debug, PartialEq, Serialize)]
struct Stats {
    /// Unicode scalar values.
    characters: usize,
    letters: usize,
    words: usize,
    unique_words: usize,
    sentences: usize,
    lines: usize,
    /// ASCII vowels, either case (as the count-vowels overlay counts them).
    vowels: usize,
    /// Mean characters per word, rounded to two decimals; 0 without words.
    average_word_length: f64,
    /// Most frequent first; ties in alphabetical order.
    top_words: Vec<WordCount>,
}

#[derive(Debug, PartialEq, Serialize)]
struct WordCount {
    word: String,
    count: usize,
}

fn process(args: Args) -> Result<Stats, Error> {
    if args.top > MAX_TOP {
        return Err(Error::new(format!("top must be at most {MAX_TOP}, got {}", args.top)));
    }
    let stats = stats(&args.text, args.top);
    forge_sdk::log::info(&format!(
        "text-stats: {} words, {} sentences, {} characters",
        stats.words, stats.sentences, stats.characters
    ));
    Ok(stats)
}

/// Words are runs of letters, digits and inner apostrophes ("don't"), compared lower-cased.
fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !(c.is_alphanumeric() || c == '\'' || c == '’'))
        .map(|w| w.trim_matches(|c| c == '\'' || c == '’'))
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

/// Sentences are stretches ending in `.`, `!` or `?` (or the end of the text) that hold a word.
fn sentences(text: &str) -> usize {
    text.split(['.', '!', '?']).filter(|s| s.chars().any(char::is_alphanumeric)).count()
}

fn stats(text: &str, top: usize) -> Stats {
    let mut counts: HashMap<String, usize> = HashMap::new();
    let (mut words_total, mut word_chars) = (0, 0);
    for word in words(text) {
        words_total += 1;
        word_chars += word.chars().count();
        *counts.entry(word).or_default() += 1;
    }
    let unique_words = counts.len();
    let mut ranked: Vec<(String, usize)> = counts.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let top_words = ranked.into_iter().take(top).map(|(word, count)| WordCount { word, count }).collect();
    let average_word_length =
        if words_total == 0 { 0.0 } else { (word_chars as f64 / words_total as f64 * 100.0).round() / 100.0 };
    Stats {
        characters: text.chars().count(),
        letters: text.chars().filter(|c| c.is_alphabetic()).count(),
        words: words_total,
        unique_words,
        sentences: sentences(text),
        lines: text.lines().count(),
        vowels: text.bytes().filter(|b| b"aeiouAEIOU".contains(b)).count(),
        average_word_length,
        top_words,
    }
}

forge_sdk::entry_point!(process);

#[cfg(test)]
mod tests {
    use super::*;
    use forge_sdk::handle;
    use forge_sdk::serde_json::{Value, json};

    #[test]
    fn counts_a_small_text() {
        let s = stats("The cat sat. The cat ran!\nDon't panic?", 2);
        assert_eq!(s.characters, 38);
        assert_eq!(s.words, 8);
        assert_eq!(s.unique_words, 6);
        assert_eq!(s.sentences, 3);
        assert_eq!(s.lines, 2);
        assert_eq!(s.vowels, 9);
        assert_eq!(
            s.top_words,
            [WordCount { word: "cat".into(), count: 2 }, WordCount { word: "the".into(), count: 2 }]
        );
        assert_eq!(s.average_word_length, 3.5);
    }

    #[test]
    fn empty_text_is_all_zeroes() {
        let s = stats("", 5);
        assert_eq!((s.words, s.sentences, s.lines, s.average_word_length), (0, 0, 0, 0.0));
        assert!(s.top_words.is_empty());
    }

    #[test]
    fn the_json_contract() {
        let out = handle(br#"{"text": "Hi there. Hi!"}"#, process).unwrap().unwrap();
        let out: Value = forge_sdk::serde_json::from_slice(&out).unwrap();
        assert_eq!(out["words"], 3);
        assert_eq!(out["top_words"][0], json!({"word": "hi", "count": 2}));
        assert!(handle(br#"{"text": "x", "top": 51}"#, process).is_err());
        assert!(handle(br#"{"txt": "x"}"#, process).unwrap_err().message().contains("missing field `text`"));
    }
}
