//! Turning user text into search patterns that match it literally, whatever it contains.

/// `%needle%` for LIKE, with LIKE's own wildcards in the needle taken literally.
pub(super) fn like_substring(needle: &str) -> String {
    let mut pattern = String::with_capacity(needle.len() + 2);
    pattern.push('%');
    for c in needle.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// The words of a search query: terms separated by whitespace or control characters (NUL among
/// them, which PostgreSQL refuses in text), with at least one letter or digit.
pub(super) fn search_terms(query: &str) -> Vec<&str> {
    query
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|t| t.chars().any(char::is_alphanumeric))
        .collect()
}

/// An FTS5 query matching every term, each quoted as a string so that no input is FTS5 syntax.
pub(super) fn fts5_query(terms: &[&str]) -> String {
    terms.iter().map(|t| format!("\"{}\"", t.replace('"', "\"\""))).collect::<Vec<_>>().join(" AND ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_pattern_takes_wildcards_literally() {
        assert_eq!(like_substring("Echo"), "%echo%");
        assert_eq!(like_substring("a_b%c\\"), "%a\\_b\\%c\\\\%");
    }

    #[test]
    fn fts5_terms_are_quoted() {
        let terms = search_terms("  rust \"wasm\" AND -- NEAR(x) * ");
        assert_eq!(terms, ["rust", "\"wasm\"", "AND", "NEAR(x)"]);
        assert_eq!(fts5_query(&terms), r#""rust" AND """wasm""" AND "AND" AND "NEAR(x)""#);
        assert!(search_terms(" -- * \" ").is_empty());
        assert_eq!(search_terms("sand\u{0}box"), ["sand", "box"]);
    }
}
