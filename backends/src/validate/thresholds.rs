//! Pass/fail limits on the metrics: `allclose` tolerances plus bounds on any metric, global or
//! per output, from flags (`0.1` or `name:0.1`) or a YAML file.
//!
//! ```yaml
//! default: { atol: 1.0e-4, rtol: 1.0e-3, min_sqnr: 30 }
//! outputs:
//!   logits: { min_cosine: 0.999, min_top1: 1.0 }
//! ```

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::metrics::Metrics;
use crate::compare::Tolerance;

/// Default absolute tolerance (Polygraphy's).
pub const DEFAULT_ATOL: f64 = 1e-5;
/// Default relative tolerance (Polygraphy's).
pub const DEFAULT_RTOL: f64 = 1e-5;

/// Why thresholds could not be read.
#[derive(Debug, Error)]
pub enum ThresholdError {
    /// The YAML file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The YAML file is malformed or has an unknown key or a wrong value.
    #[error("{file}:{line}:{column}: {message}")]
    Yaml {
        /// The file.
        file: String,
        /// 1-based line (0 when the parser did not say).
        line: usize,
        /// 1-based column (0 when the parser did not say).
        column: usize,
        /// The parser's message, which names the key.
        message: String,
    },
    /// A flag's value is not `VALUE` or `NAME:VALUE`, or the value is out of range.
    #[error("--{flag} {text}: {reason}")]
    Flag {
        /// The flag, without dashes.
        flag: String,
        /// What was given.
        text: String,
        /// What is wrong.
        reason: String,
    },
    /// A value in the file is out of range.
    #[error("{file}: {key}: {reason}")]
    Range {
        /// The file.
        file: String,
        /// The key, with the output it belongs to.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

/// Limits for one output (or all); `None` leaves the one below in force.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Absolute tolerance of the `allclose` check.
    pub atol: Option<f64>,
    /// Relative tolerance of the `allclose` check.
    pub rtol: Option<f64>,
    /// Largest allowed share of elements outside tolerance (default 0: all must be close).
    pub max_outside_share: Option<f64>,
    /// Largest allowed max abs error.
    pub max_abs: Option<f64>,
    /// Largest allowed mean abs error.
    pub max_mean_abs: Option<f64>,
    /// Largest allowed max relative error.
    pub max_rel: Option<f64>,
    /// Largest allowed RMSE.
    pub max_rmse: Option<f64>,
    /// Smallest allowed SQNR in dB.
    pub min_sqnr: Option<f64>,
    /// Smallest allowed cosine similarity.
    pub min_cosine: Option<f64>,
    /// Smallest allowed top-1 agreement (where measured).
    pub min_top1: Option<f64>,
    /// Smallest allowed top-5 agreement (where measured).
    pub min_top5: Option<f64>,
}

/// The limit names, as flags (`--min-sqnr`) spell them with `-` and YAML with `_`.
pub const LIMIT_NAMES: [&str; 11] = [
    "atol",
    "rtol",
    "max_outside_share",
    "max_abs",
    "max_mean_abs",
    "max_rel",
    "max_rmse",
    "min_sqnr",
    "min_cosine",
    "min_top1",
    "min_top5",
];

impl Limits {
    fn slot(&mut self, key: &str) -> Option<&mut Option<f64>> {
        Some(match key {
            "atol" => &mut self.atol,
            "rtol" => &mut self.rtol,
            "max_outside_share" => &mut self.max_outside_share,
            "max_abs" => &mut self.max_abs,
            "max_mean_abs" => &mut self.max_mean_abs,
            "max_rel" => &mut self.max_rel,
            "max_rmse" => &mut self.max_rmse,
            "min_sqnr" => &mut self.min_sqnr,
            "min_cosine" => &mut self.min_cosine,
            "min_top1" => &mut self.min_top1,
            "min_top5" => &mut self.min_top5,
            _ => return None,
        })
    }

    fn entries(&mut self) -> Vec<(&'static str, Option<f64>)> {
        LIMIT_NAMES
            .iter()
            .map(|k| (*k, self.slot(k).and_then(|s| *s)))
            .collect()
    }

    /// These limits with every limit `over` sets replacing ours.
    pub fn overridden_by(&self, over: &Limits) -> Limits {
        let mut out = self.clone();
        let mut over = over.clone();
        for (key, value) in over.entries() {
            if let (Some(v), Some(slot)) = (value, out.slot(key)) {
                *slot = Some(v);
            }
        }
        out
    }

    /// The `allclose` tolerance, defaults filled in.
    pub fn tolerance(&self) -> Tolerance {
        Tolerance {
            atol: self.atol.unwrap_or(DEFAULT_ATOL),
            rtol: self.rtol.unwrap_or(DEFAULT_RTOL),
        }
    }

    /// The first out-of-range value: tolerances and maxima must be ≥ 0, no value NaN.
    fn check(&mut self) -> Result<(), (String, String)> {
        for (key, value) in self.entries() {
            match value {
                Some(v) if v.is_nan() => return Err((key.into(), "is NaN".into())),
                Some(v) if !key.starts_with("min_") && v < 0.0 => {
                    return Err((key.into(), format!("must be ≥ 0, got {v}")))
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// One limit an output did not meet.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Failure {
    /// The limit's name (`max_abs`, `min_sqnr`, …).
    pub limit: &'static str,
    /// Its value.
    pub threshold: f64,
    /// The metric's value.
    pub value: f64,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let metric = match self.limit {
            "max_outside_share" => "outside share",
            "max_abs" => "max abs",
            "max_mean_abs" => "mean abs",
            "max_rel" => "max rel",
            "max_rmse" => "RMSE",
            "min_sqnr" => "SQNR dB",
            "min_cosine" => "cosine",
            "min_top1" => "top1",
            "min_top5" => "top5",
            other => other,
        };
        let op = if self.limit.starts_with("min_") {
            "<"
        } else {
            ">"
        };
        write!(
            f,
            "{metric} {} {op} {}",
            num(self.value),
            num(self.threshold)
        )
    }
}

/// A number short enough for a message: `0.5`, `1.2e-7`, `inf`.
pub fn num(v: f64) -> String {
    if v == 0.0 || !v.is_finite() || (1e-3..1e6).contains(&v.abs()) {
        let s = format!("{v:.6}");
        let s = if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        };
        if v.is_finite() {
            s
        } else {
            v.to_string()
        }
    } else {
        format!("{v:.3e}")
    }
}

/// Global limits and per-output overrides.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// Limits for every output.
    #[serde(default)]
    pub default: Limits,
    /// Limits for named outputs, over the defaults.
    #[serde(default)]
    pub outputs: BTreeMap<String, Limits>,
}

impl Thresholds {
    /// The limits in force for output `name`.
    pub fn for_output(&self, name: &str) -> Limits {
        match self.outputs.get(name) {
            Some(own) => self.default.overridden_by(own),
            None => self.default.clone(),
        }
    }

    /// Reads a YAML thresholds file.
    pub fn from_yaml_file(path: &Path) -> Result<Thresholds, ThresholdError> {
        let text = std::fs::read_to_string(path).map_err(|source| ThresholdError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Thresholds::from_yaml_str(&text, &path.display().to_string())
    }

    /// Parses YAML thresholds; `file` names the source in errors.
    pub fn from_yaml_str(text: &str, file: &str) -> Result<Thresholds, ThresholdError> {
        let mut t: Thresholds = if text.trim().is_empty() {
            Thresholds::default()
        } else {
            serde_yaml_ng::from_str(text).map_err(|e| {
                let (line, column, message) = crate::yaml::located(&e);
                ThresholdError::Yaml {
                    file: file.to_string(),
                    line,
                    column,
                    message,
                }
            })?
        };
        let range = |key: String, reason: String| ThresholdError::Range {
            file: file.to_string(),
            key,
            reason,
        };
        t.default
            .check()
            .map_err(|(k, r)| range(format!("default.{k}"), r))?;
        for (name, limits) in &mut t.outputs {
            limits
                .check()
                .map_err(|(k, r)| range(format!("outputs.{name}.{k}"), r))?;
        }
        Ok(t)
    }

    /// Applies one flag value: `VALUE` (every output) or `NAME:VALUE` (split at the last `:`,
    /// since names like `input:0` hold colons). `limit` is a [`LIMIT_NAMES`] entry.
    pub fn apply_flag(&mut self, limit: &str, text: &str) -> Result<(), ThresholdError> {
        let err = |reason: String| ThresholdError::Flag {
            flag: limit.replace('_', "-"),
            text: text.to_string(),
            reason,
        };
        let (name, value) = match text.trim().parse::<f64>() {
            Ok(v) => (None, v),
            Err(_) => match text.rsplit_once(':') {
                Some((name, v)) if !name.is_empty() => {
                    let v = v
                        .trim()
                        .parse::<f64>()
                        .map_err(|_| err(format!("'{v}' is not a number")))?;
                    (Some(name), v)
                }
                _ => return Err(err("expected VALUE or OUTPUT:VALUE".into())),
            },
        };
        let limits = match name {
            Some(n) => self.outputs.entry(n.to_string()).or_default(),
            None => &mut self.default,
        };
        let slot = limits
            .slot(limit)
            .ok_or_else(|| err(format!("unknown limit '{limit}'")))?;
        *slot = Some(value);
        limits.check().map_err(|(_, r)| err(r))
    }

    /// Every limit `over` sets replaces ours (flags over a file).
    pub fn overridden_by(&self, over: &Thresholds) -> Thresholds {
        let mut out = self.clone();
        out.default = out.default.overridden_by(&over.default);
        for (name, limits) in &over.outputs {
            let merged = out.outputs.get(name).cloned().unwrap_or_default();
            out.outputs
                .insert(name.clone(), merged.overridden_by(limits));
        }
        out
    }
}

/// The limits `metrics` breaks (empty: the output passes). A metric that was not measured
/// (top-k of a vector) is not judged; a NaN metric fails any limit on it.
pub fn judge(metrics: &Metrics, limits: &Limits) -> Vec<Failure> {
    let mut failures = Vec::new();
    let mut max = |limit: &'static str, bound: Option<f64>, value: f64| {
        if let Some(b) = bound {
            // `partial_cmp` is None for NaN, which must fail.
            if !matches!(
                value.partial_cmp(&b),
                Some(Ordering::Less | Ordering::Equal)
            ) {
                failures.push(Failure {
                    limit,
                    threshold: b,
                    value,
                });
            }
        }
    };
    let outside_limit = Some(limits.max_outside_share.unwrap_or(0.0));
    match metrics {
        Metrics::Exact(m) => max("max_outside_share", outside_limit, m.mismatched_share),
        Metrics::Float(m) => {
            max("max_outside_share", outside_limit, m.outside_share);
            max("max_abs", limits.max_abs, m.max_abs);
            max("max_mean_abs", limits.max_mean_abs, m.mean_abs);
            max("max_rel", limits.max_rel, m.max_rel);
            max("max_rmse", limits.max_rmse, m.rmse);
            let mut min = |limit: &'static str, bound: Option<f64>, value: Option<f64>| {
                if let (Some(b), Some(v)) = (bound, value) {
                    if !matches!(v.partial_cmp(&b), Some(Ordering::Greater | Ordering::Equal)) {
                        failures.push(Failure {
                            limit,
                            threshold: b,
                            value: v,
                        });
                    }
                }
            };
            min("min_sqnr", limits.min_sqnr, Some(m.sqnr_db));
            min("min_cosine", limits.min_cosine, Some(m.cosine));
            min("min_top1", limits.min_top1, m.top1);
            min("min_top5", limits.min_top5, m.top5);
        }
    }
    failures
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::metrics::{metrics, TopkAxis};
    use kiln_passes::tensor::Tensor;

    #[test]
    fn flags_global_and_per_output() {
        let mut t = Thresholds::default();
        t.apply_flag("max_abs", "0.1").unwrap();
        t.apply_flag("max_abs", "input:0:0.5").unwrap();
        t.apply_flag("min_sqnr", "logits: 30").unwrap();
        assert_eq!(t.for_output("y").max_abs, Some(0.1));
        assert_eq!(t.for_output("input:0").max_abs, Some(0.5));
        assert_eq!(t.for_output("logits").min_sqnr, Some(30.0));
        assert_eq!(t.for_output("logits").max_abs, Some(0.1));
        let e = t.apply_flag("atol", "x:abc").unwrap_err().to_string();
        assert_eq!(e, "--atol x:abc: 'abc' is not a number");
        assert!(t.apply_flag("atol", "-1").is_err());
    }

    #[test]
    fn yaml_file_and_errors_name_line_and_key() {
        let t = Thresholds::from_yaml_str(
            "default:\n  atol: 1.0e-3\noutputs:\n  logits:\n    min_cosine: 0.999\n",
            "t.yaml",
        )
        .unwrap();
        assert_eq!(t.default.atol, Some(1e-3));
        assert_eq!(t.for_output("logits").min_cosine, Some(0.999));
        let e = Thresholds::from_yaml_str("default:\n  min_sqrn: 30\n", "t.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("t.yaml:2:3: "), "{e}");
        assert!(e.contains("min_sqrn"), "{e}");
        let e = Thresholds::from_yaml_str("outputs:\n  y: {max_abs: -1}\n", "t.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("outputs.y.max_abs"), "{e}");
    }

    #[test]
    fn verdict_lists_failed_limits() {
        let r = Tensor::from_vec(vec![2], vec![1.0f32, 2.0]).unwrap();
        let c = Tensor::from_vec(vec![2], vec![1.0f32, 2.5]).unwrap();
        let mut t = Thresholds::default();
        t.apply_flag("max_abs", "0.1").unwrap();
        t.apply_flag("min_sqnr", "100").unwrap();
        let limits = t.for_output("y");
        let m = metrics(&r, &c, limits.tolerance(), TopkAxis::Auto).unwrap();
        let names: Vec<&str> = judge(&m, &limits).iter().map(|f| f.limit).collect();
        assert_eq!(names, ["max_outside_share", "max_abs", "min_sqnr"]);
        assert_eq!(judge(&m, &limits)[1].to_string(), "max abs 0.5 > 0.1");
        // Loose enough limits pass.
        let loose = Limits {
            atol: Some(1.0),
            ..Limits::default()
        };
        let m = metrics(&r, &c, loose.tolerance(), TopkAxis::Auto).unwrap();
        assert!(judge(&m, &loose).is_empty());
    }
}
