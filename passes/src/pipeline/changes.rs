//! What a pass changed: named counts, merged across rounds.

use std::collections::BTreeMap;

/// Counts of what a pass did (`{"folded": 12, "removed": 3}`); empty when nothing changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    counts: BTreeMap<String, usize>,
}

impl Changes {
    /// Nothing changed.
    pub fn none() -> Changes {
        Changes::default()
    }

    /// Adds `n` to the count called `what` (a zero is not recorded).
    pub fn add(&mut self, what: &str, n: usize) {
        if n > 0 {
            *self.counts.entry(what.to_string()).or_default() += n;
        }
    }

    /// Adds every count of `other`.
    pub fn merge(&mut self, other: &Changes) {
        for (k, &v) in &other.counts {
            self.add(k, v);
        }
    }

    /// The count called `what` (0 if never added).
    pub fn get(&self, what: &str) -> usize {
        self.counts.get(what).copied().unwrap_or(0)
    }

    /// True when nothing was counted.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// All counts, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, usize)> {
        self.counts.iter().map(|(k, &v)| (k.as_str(), v))
    }
}

impl std::fmt::Display for Changes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.counts.is_empty() {
            return f.write_str("no change");
        }
        let parts: Vec<String> = self.iter().map(|(k, v)| format!("{v} {k}")).collect();
        f.write_str(&parts.join(", "))
    }
}
