//! What the latest user message refers to, and which older messages hold it.
//!
//! The terms of a question are the specific words it names: file paths
//! (and their file names), identifiers (`snake_case`, `camelCase`,
//! `CONSTANTS`, `a::path`, words with digits), `backticked` spans, and
//! longer plain words. A message scores the rarer-is-better weight (idf)
//! of each term it contains; terms found nowhere else, or nearly
//! everywhere, say nothing and are dropped.

use memchr::memmem;

/// Plain words shorter than this are not terms (identifiers may be).
const MIN_PLAIN_WORD: usize = 6;
const MAX_TERMS: usize = 32;

/// Common words that are long enough to look like terms.
const STOPWORDS: [&str; 40] = [
    "about",
    "across",
    "actually",
    "after",
    "again",
    "against",
    "before",
    "because",
    "between",
    "beginning",
    "change",
    "changed",
    "could",
    "during",
    "earlier",
    "either",
    "exactly",
    "finish",
    "first",
    "should",
    "something",
    "specific",
    "started",
    "thanks",
    "there",
    "these",
    "things",
    "through",
    "value",
    "which",
    "whether",
    "within",
    "without",
    "would",
    "please",
    "remember",
    "mentioned",
    "wrap",
    "answer",
    "question",
];

/// A term and whether it is an identifier or path (weighs more).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    pub text: String,
    pub specific: bool,
}

/// The terms of `query`, deduplicated, at most [`MAX_TERMS`].
pub fn terms(query: &str) -> Vec<Term> {
    let mut out: Vec<Term> = Vec::new();
    let mut push = |text: &str, specific: bool| {
        if text.len() >= 3
            && text.len() <= 120
            && !out.iter().any(|t| t.text == text)
            && out.len() < MAX_TERMS
        {
            out.push(Term {
                text: text.to_owned(),
                specific,
            });
        }
    };
    // `backticked` spans first: the user marked them.
    let mut rest = query;
    while let Some(start) = rest.find('`') {
        let after = &rest[start + 1..];
        let Some(end) = after.find('`') else { break };
        let span = after[..end].trim();
        if !span.is_empty() && !span.contains('\n') {
            push(span, true);
        }
        rest = &after[end + 1..];
    }
    for word in query.split(|c: char| c.is_whitespace() || ",;()[]{}<>\"'`?!=".contains(c)) {
        let word = word.trim_matches(|c: char| matches!(c, '.' | ':' | '*' | '-'));
        if word.len() < 3 {
            continue;
        }
        if is_specific(word) {
            push(word, true);
            // A path also names its file.
            if let Some((_, file)) = word.rsplit_once('/') {
                push(file, true);
            }
        } else if word.len() >= MIN_PLAIN_WORD
            && word.chars().all(char::is_alphabetic)
            && !STOPWORDS.contains(&word.to_lowercase().as_str())
        {
            push(word, false);
        }
    }
    out
}

/// Paths, identifiers and words with digits: names, not prose.
fn is_specific(word: &str) -> bool {
    let has_lower = word.chars().any(|c| c.is_ascii_lowercase());
    let has_upper_inside = word.chars().skip(1).any(|c| c.is_ascii_uppercase());
    let has_digit = word.chars().any(|c| c.is_ascii_digit());
    let has_alpha = word.chars().any(char::is_alphabetic);
    let all_caps = word.len() >= 3
        && word
            .chars()
            .all(|c| c.is_ascii_uppercase() || c == '_' || c.is_ascii_digit())
        && word.chars().any(|c| c.is_ascii_uppercase());
    let inner_dot = word.trim_matches('.').contains('.');
    word.contains('_')
        || word.contains('/')
        || word.contains("::")
        || (inner_dot && has_alpha)
        || (has_lower && has_upper_inside)
        || (has_digit && has_alpha)
        || all_caps
}

/// Scores `texts` (one per candidate) against `terms`: the summed idf of
/// the terms each contains.
pub fn scores(terms: &[Term], texts: &[&[u8]]) -> Vec<f64> {
    let mut scores = vec![0.0; texts.len()];
    if terms.is_empty() || texts.is_empty() {
        return scores;
    }
    let n = texts.len() as f64;
    for term in terms {
        let finder = memmem::Finder::new(term.text.as_bytes());
        let hits: Vec<usize> = texts
            .iter()
            .enumerate()
            .filter(|(_, text)| finder.find(text).is_some())
            .map(|(i, _)| i)
            .collect();
        let df = hits.len() as f64;
        // Found nowhere, or in most messages: not telling.
        if hits.is_empty() || (df > n * 0.5 && n >= 4.0) {
            continue;
        }
        let weight = (1.0 + n / df).ln() * if term.specific { 2.0 } else { 1.0 };
        for i in hits {
            scores[i] += weight;
        }
    }
    scores
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(terms: &[Term]) -> Vec<&str> {
        terms.iter().map(|t| t.text.as_str()).collect()
    }

    #[test]
    fn names_are_terms_prose_is_not() {
        let found = terms(
            "Before we wrap up: in src/cache/store.rs, which you read at the start, what is ENTRY_OVERHEAD set to? And `max_entry`, and parseHeader, v2?",
        );
        let found = texts(&found);
        for expected in [
            "max_entry",
            "src/cache/store.rs",
            "store.rs",
            "ENTRY_OVERHEAD",
            "parseHeader",
        ] {
            assert!(
                found.contains(&expected),
                "{expected} missing from {found:?}"
            );
        }
        for prose in ["Before", "wrap", "which", "start", "what"] {
            assert!(!found.contains(&prose), "{prose} in {found:?}");
        }
    }

    #[test]
    fn rare_terms_weigh_more() {
        let terms = terms("what did ENTRY_OVERHEAD and deadline say");
        let texts: Vec<&[u8]> = vec![
            b"const ENTRY_OVERHEAD: u32 = 256;",
            b"the deadline passed",
            b"nothing here",
            b"deadline again",
        ];
        let s = scores(&terms, &texts);
        assert!(s[0] > s[1], "{s:?}");
        assert!(s[1] > 0.0);
        assert_eq!(s[2], 0.0);
    }
}
