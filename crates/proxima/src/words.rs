//! Words as full-text search sees them: split on anything not a letter or digit, stop words
//! dropped, lower-cased, common English endings cut (so "launching", "launched" and "launch"
//! meet). Conversation recall and vector-store search index and query with the same words.

use std::collections::HashMap;

/// Words that match nearly every turn and so rank nothing.
const STOP_WORDS: &[&str] = &[
    "a", "about", "after", "again", "all", "am", "an", "and", "any", "are", "as", "at", "be",
    "been", "before", "but", "by", "can", "could", "did", "do", "does", "for", "from", "had",
    "has", "have", "he", "her", "here", "him", "his", "how", "i", "if", "in", "into", "is", "it",
    "its", "just", "me", "my", "no", "not", "now", "of", "on", "or", "our", "she", "so", "some",
    "than", "that", "the", "their", "them", "then", "there", "these", "they", "this", "to", "too",
    "us", "was", "we", "were", "what", "when", "where", "which", "who", "why", "will", "with",
    "would", "you", "your",
];

/// A word as the index keeps it: lower-case, with common English endings cut, so that
/// "launching", "launched" and "launch" meet.
pub fn normalise(word: &str) -> String {
    let word = word.to_lowercase();
    let cut = |w: &str, suffix: &str, keep: usize| {
        w.strip_suffix(suffix)
            .filter(|stem| stem.chars().count() >= keep)
            .map(str::to_owned)
    };
    cut(&word, "ies", 3)
        .map(|stem| stem + "y")
        .or_else(|| {
            ["sses", "ches", "shes", "xes", "zes"]
                .iter()
                .any(|s| word.ends_with(s))
                .then(|| cut(&word, "es", 3))
                .flatten()
        })
        .or_else(|| cut(&word, "ing", 4))
        .or_else(|| cut(&word, "ed", 4))
        .or_else(|| {
            (!word.ends_with("ss"))
                .then(|| cut(&word, "s", 3))
                .flatten()
        })
        .unwrap_or(word)
}

/// The words of `text` worth indexing or searching, normalised, each with how often it
/// occurs, in order of first occurrence; at most `max_terms` distinct ones.
pub fn terms(text: &str, max_terms: usize) -> Vec<(String, u32)> {
    let mut terms: Vec<(String, u32)> = Vec::new();
    let mut at: HashMap<String, usize> = HashMap::new();
    for word in text.split(|c: char| !c.is_alphanumeric()) {
        if word.chars().count() < 2 || is_stop_word(word) {
            continue;
        }
        let term = normalise(word);
        match at.get(&term) {
            Some(&i) => terms[i].1 += 1,
            None if terms.len() < max_terms => {
                at.insert(term.clone(), terms.len());
                terms.push((term, 1));
            }
            None => {}
        }
    }
    terms
}

fn is_stop_word(word: &str) -> bool {
    word.len() <= 7
        && STOP_WORDS
            .binary_search(&word.to_lowercase().as_str())
            .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_normalised_counted_and_capped() {
        let found = terms(
            "Launching the rockets; we launched one rocket. Glasses, cities.",
            64,
        );
        assert_eq!(
            found,
            vec![
                ("launch".to_owned(), 2),
                ("rocket".to_owned(), 2),
                ("one".to_owned(), 1),
                ("glass".to_owned(), 1),
                ("city".to_owned(), 1),
            ]
        );
        assert_eq!(terms("alpha beta gamma alpha", 2).len(), 2);
        assert!(
            STOP_WORDS.windows(2).all(|w| w[0] < w[1]),
            "binary search needs order"
        );
    }
}
