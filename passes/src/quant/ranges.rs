//! The ranges calibration chose: per tensor name, the real interval to quantize.

use std::collections::BTreeMap;

/// A real interval `[min, max]` chosen for one tensor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Range {
    /// Lower end.
    pub min: f32,
    /// Upper end.
    pub max: f32,
}

impl Range {
    /// An interval; the ends are swapped if given in the wrong order.
    pub fn new(a: f32, b: f32) -> Range {
        if a <= b {
            Range { min: a, max: b }
        } else {
            Range { min: b, max: a }
        }
    }

    /// The smallest interval holding both.
    pub fn union(self, other: Range) -> Range {
        Range {
            min: self.min.min(other.min),
            max: self.max.max(other.max),
        }
    }
}

/// Ranges by tensor name, in name order (so reports and outputs are deterministic).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ranges {
    by_name: BTreeMap<String, Range>,
}

impl Ranges {
    /// No ranges.
    pub fn new() -> Ranges {
        Ranges::default()
    }

    /// Sets the range of `name`.
    pub fn insert(&mut self, name: impl Into<String>, range: Range) {
        self.by_name.insert(name.into(), range);
    }

    /// The range of `name`, if calibrated.
    pub fn get(&self, name: &str) -> Option<Range> {
        self.by_name.get(name).copied()
    }

    /// Every (name, range), in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Range)> + '_ {
        self.by_name.iter().map(|(k, v)| (k.as_str(), *v))
    }

    /// Number of tensors with a range.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether no tensor has a range.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

impl FromIterator<(String, Range)> for Ranges {
    fn from_iter<I: IntoIterator<Item = (String, Range)>>(iter: I) -> Ranges {
        Ranges {
            by_name: iter.into_iter().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_orders_and_union_widens() {
        assert_eq!(
            Range::new(2.0, -1.0),
            Range {
                min: -1.0,
                max: 2.0
            }
        );
        assert_eq!(
            Range::new(0.0, 1.0).union(Range::new(-3.0, 0.5)),
            Range {
                min: -3.0,
                max: 1.0
            }
        );
        let r: Ranges = [
            ("b".to_string(), Range::new(0.0, 1.0)),
            ("a".to_string(), Range::new(0.0, 2.0)),
        ]
        .into_iter()
        .collect();
        assert_eq!(r.iter().map(|(n, _)| n).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(r.get("a"), Some(Range::new(0.0, 2.0)));
        assert_eq!(r.get("c"), None);
    }
}
