//! The names a profile may use for operators and fusion passes, and the nearest valid name
//! when one is misspelled.

use kiln_passes::fuse::{fusion_passes, FuseOptions};

use super::onnx_ops::{MICROSOFT_OPS, ONNX_ML_OPS, ONNX_OPS};

/// Whether `op` is an operator type of ONNX (`ai.onnx`, `ai.onnx.ml`) or ONNX Runtime's
/// `com.microsoft` domain.
pub fn is_known_op(op: &str) -> bool {
    [ONNX_OPS, ONNX_ML_OPS, MICROSOFT_OPS]
        .iter()
        .any(|table| table.binary_search(&op).is_ok())
}

/// The closest known operator name to `op`, if one is close enough to be a typo.
pub fn closest_op(op: &str) -> Option<&'static str> {
    closest(
        op,
        ONNX_OPS
            .iter()
            .chain(ONNX_ML_OPS)
            .chain(MICROSOFT_OPS)
            .copied(),
    )
}

/// The fusion pass names a profile may list, in the order the pipeline runs them.
pub fn fusion_names() -> Vec<String> {
    fusion_passes(FuseOptions::default())
        .iter()
        .map(|p| p.name().to_string())
        .collect()
}

/// The candidate nearest to `name`: same letters ignoring case first, then the smallest edit
/// distance if it is at most a third of the name's length (at least 1, at most 3).
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lower = name.to_lowercase();
    let limit = (name.chars().count() / 3).clamp(1, 3);
    let mut best: Option<(usize, &'a str)> = None;
    for c in candidates {
        let d = if c.to_lowercase() == lower {
            0
        } else {
            edit_distance(&lower, &c.to_lowercase())
        };
        if d <= limit && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c)
}

/// Levenshtein distance over chars (names are short; inputs are capped so fuzzed keys stay
/// cheap).
fn edit_distance(a: &str, b: &str) -> usize {
    const CAP: usize = 64;
    let a: Vec<char> = a.chars().take(CAP).collect();
    let b: Vec<char> = b.chars().take(CAP).collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// `; did you mean 'X'?` when there is a close candidate, else empty.
pub fn did_you_mean(suggestion: Option<&str>) -> String {
    suggestion
        .map(|s| format!("; did you mean '{s}'?"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_sorted_for_binary_search() {
        for table in [ONNX_OPS, ONNX_ML_OPS, MICROSOFT_OPS] {
            assert!(table.windows(2).all(|w| w[0] < w[1]), "{:?}", &table[..3]);
        }
    }

    #[test]
    fn knows_standard_ml_and_contrib_ops() {
        for op in [
            "Conv",
            "LayerNormalization",
            "TreeEnsembleClassifier",
            "FusedMatMul",
        ] {
            assert!(is_known_op(op), "{op}");
        }
        assert!(!is_known_op("Convv"));
        assert!(!is_known_op("conv"));
    }

    #[test]
    fn suggests_the_nearest_op() {
        assert_eq!(closest_op("Convv"), Some("Conv"));
        assert_eq!(closest_op("conv"), Some("Conv"));
        assert_eq!(closest_op("Sigmod"), Some("Sigmoid"));
        assert_eq!(closest_op("LayerNormalisation"), Some("LayerNormalization"));
        assert_eq!(closest_op("Xyzzy"), None);
    }

    #[test]
    fn fusion_names_come_from_the_passes() {
        let names = fusion_names();
        assert!(names.contains(&"fuse-conv-bn".to_string()), "{names:?}");
        assert_eq!(
            closest("fuse-conv-nb", names.iter().map(String::as_str)),
            Some("fuse-conv-bn")
        );
    }

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }
}
