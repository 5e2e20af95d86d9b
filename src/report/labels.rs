//! Bounded label values: models and clients named in metrics.
//!
//! A model name comes from the client's request and a pass-through client's
//! identity from its credentials, so either could take endless values and
//! grow `/metrics` without end. Each set names its first `max` distinct
//! values; later ones are `other`, for the life of the process.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, RwLock};

use metrics::SharedString;

/// The label of values past the limit.
pub const OTHER: &str = "other";

/// Longest value named as it is; longer ones are cut (at a character
/// boundary) before counting against the limit.
const MAX_LEN: usize = 128;

/// One label's named values.
#[derive(Debug)]
pub struct LabelSet {
    max: AtomicUsize,
    names: RwLock<HashMap<Box<str>, SharedString>>,
}

impl LabelSet {
    fn new() -> LabelSet {
        LabelSet {
            max: AtomicUsize::new(100),
            names: RwLock::new(HashMap::new()),
        }
    }

    /// Sets how many values are named (values already named stay named).
    pub fn set_max(&self, max: usize) {
        self.max.store(max, Ordering::Relaxed);
    }

    /// The label for `value`: itself while the set has room, else `other`.
    pub fn label(&self, value: &str) -> SharedString {
        let value = cut(value);
        {
            let names = self.names.read().unwrap_or_else(|e| e.into_inner());
            if let Some(label) = names.get(value) {
                return label.clone();
            }
        }
        let mut names = self.names.write().unwrap_or_else(|e| e.into_inner());
        if let Some(label) = names.get(value) {
            return label.clone();
        }
        if names.len() >= self.max.load(Ordering::Relaxed) {
            return SharedString::const_str(OTHER);
        }
        let label = SharedString::from(Arc::<str>::from(value));
        names.insert(value.into(), label.clone());
        label
    }
}

fn cut(value: &str) -> &str {
    if value.len() <= MAX_LEN {
        return value;
    }
    let mut end = MAX_LEN;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    &value[..end]
}

/// Models, as clients name them in requests.
pub static MODELS: LazyLock<LabelSet> = LazyLock::new(LabelSet::new);
/// Client identities: a client key's name, or a pass-through credential's
/// short digest.
pub static CLIENTS: LazyLock<LabelSet> = LazyLock::new(LabelSet::new);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_past_the_limit_are_other() {
        let set = LabelSet::new();
        set.set_max(2);
        assert_eq!(&*set.label("a"), "a");
        assert_eq!(&*set.label("b"), "b");
        assert_eq!(&*set.label("c"), OTHER);
        // Named values stay named.
        assert_eq!(&*set.label("a"), "a");
        set.set_max(3);
        assert_eq!(&*set.label("c"), "c");
    }

    #[test]
    fn long_values_are_cut_at_a_character() {
        let set = LabelSet::new();
        let long = "é".repeat(100);
        let label = set.label(&long);
        assert!(label.len() <= MAX_LEN);
        assert!(long.starts_with(&*label));
    }
}
