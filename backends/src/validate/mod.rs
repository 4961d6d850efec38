//! Validation: compare a candidate's outputs with a reference's, output by output, and judge
//! them against [`Thresholds`].
//!
//! - [`metrics`]: the error metrics of one output, accumulated over samples.
//! - [`thresholds`]: tolerances and limits, from flags or YAML, and the verdict.
//! - [`synthetic`]: seeded inputs for comparing models without data files.
//! - [`histogram`]: |candidate − reference| by decade, filled in the metrics' pass.
//! - [`html`]: the self-contained HTML report (SQNR chart, error histograms).
//! - [`Comparer`] matches outputs by name over samples and builds a [`Report`] (JSON via serde,
//!   JUnit XML via [`Report::junit`]).
//!
//! Sequences are compared item by item as `name[i]`, an optional's value under its own name,
//! so a sequence length or presence that differs shows up as a missing or extra output.

pub mod histogram;
pub mod html;
pub mod metrics;
pub mod per_layer;
pub mod stream;
pub mod synthetic;
pub mod thresholds;

mod junit;

use std::collections::BTreeMap;

use kiln_passes::tensor::Tensor;
use serde::Serialize;

pub use histogram::Histogram;
pub use html::{render_html, LayerPoint};
pub use metrics::{
    Accumulator, ExactMetrics, FloatMetrics, Metrics, MetricsError, TopkAxis, TopkRows,
};
pub use synthetic::{synthetic_inputs, Rng, SyntheticError, SyntheticSpec};
pub use thresholds::{judge, Failure, Limits, ThresholdError, Thresholds};

use crate::value::{NamedValues, Value};

/// How one output's comparison ended, apart from its metrics.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Both sides have it and it was compared.
    Compared,
    /// Only the reference has it.
    MissingInCandidate,
    /// Only the candidate has it.
    MissingInReference,
    /// Element types or kinds differ.
    TypeMismatch,
    /// Shapes differ.
    ShapeMismatch,
}

/// One output's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutputReport {
    /// The output's name (`name[i]` for a sequence item).
    pub name: String,
    /// Whether it was compared, or why not.
    pub status: Status,
    /// The reference value, described (`float32[1,10]`), as first seen.
    pub reference: Option<String>,
    /// The candidate value, described.
    pub candidate: Option<String>,
    /// The metrics, when compared (over every sample).
    pub metrics: Option<Metrics>,
    /// |candidate − reference| by decade, when compared as floats.
    pub histogram: Option<Histogram>,
    /// The limits this output was judged by (for the HTML report's threshold line).
    #[serde(skip)]
    pub limits: Limits,
    /// Limits not met.
    pub failures: Vec<Failure>,
    /// A mismatch explained (`shape differs: …`), when there is one.
    pub problem: Option<String>,
    /// Whether this output passes.
    pub passed: bool,
}

impl OutputReport {
    /// The failure text for people and JUnit: the problem, or the limits not met.
    pub fn failure_text(&self) -> Option<String> {
        if self.passed {
            return None;
        }
        Some(match &self.problem {
            Some(p) => p.clone(),
            None => self
                .failures
                .iter()
                .map(Failure::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        })
    }
}

/// The result of a comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Every output passed and none was missing or mismatched.
    pub passed: bool,
    /// Samples compared.
    pub samples: usize,
    /// Per output: the reference's order, then outputs only the candidate has.
    pub outputs: Vec<OutputReport>,
}

impl Report {
    /// The report as JUnit XML: one test case per output.
    pub fn junit(&self, suite: &str) -> String {
        junit::render(self, suite)
    }
}

/// What is known of one output so far.
struct Entry {
    reference: Option<String>,
    candidate: Option<String>,
    acc: Accumulator,
    limits: Limits,
    mismatch: Option<(Status, String)>,
    /// Samples where only one side had it: (in reference, in candidate).
    seen: (bool, bool),
}

/// Compares samples of two models' outputs and builds a [`Report`].
pub struct Comparer {
    thresholds: Thresholds,
    topk: TopkAxis,
    entries: BTreeMap<String, Entry>,
    order: Vec<String>,
    samples: usize,
}

impl Comparer {
    /// A comparer judging with `thresholds` and measuring top-k along `topk`.
    pub fn new(thresholds: Thresholds, topk: TopkAxis) -> Comparer {
        Comparer {
            thresholds,
            topk,
            entries: BTreeMap::new(),
            order: Vec::new(),
            samples: 0,
        }
    }

    fn entry(&mut self, name: &str) -> &mut Entry {
        if !self.entries.contains_key(name) {
            let limits = self.thresholds.for_output(name);
            self.order.push(name.to_string());
            self.entries.insert(
                name.to_string(),
                Entry {
                    reference: None,
                    candidate: None,
                    acc: Accumulator::new(limits.tolerance(), self.topk),
                    limits,
                    mismatch: None,
                    seen: (false, false),
                },
            );
        }
        // Just inserted or already there.
        self.entries.get_mut(name).expect("entry exists")
    }

    /// Adds one sample: the reference's outputs and the candidate's, matched by name.
    pub fn add_sample(&mut self, reference: &NamedValues, candidate: &NamedValues) {
        let reference = flatten(reference);
        let candidate = flatten(candidate);
        let fed: Result<(), std::convert::Infallible> =
            self.add_sample_with(&reference, &candidate, |r, c, acc| {
                Ok(match (r.tensor, c.tensor) {
                    (Some(r), Some(c)) => acc.add(r, c).err().map(mismatch),
                    (None, None) => None,
                    _ => Some((
                        Status::TypeMismatch,
                        format!(
                            "kind differs: reference {}, candidate {}",
                            r.describe(),
                            c.describe()
                        ),
                    )),
                })
            });
        let Ok(()) = fed;
    }

    /// Adds one sample of outputs of any form: matches them by name and, for each pair not
    /// already mismatched, lets `feed` add it to the output's accumulator (returning the
    /// mismatch, if any). `feed`'s error (a file that cannot be read) stops the sample.
    pub(crate) fn add_sample_with<L: Described, E>(
        &mut self,
        reference: &[L],
        candidate: &[L],
        mut feed: impl FnMut(&L, &L, &mut Accumulator) -> Result<Option<(Status, String)>, E>,
    ) -> Result<(), E> {
        self.samples += 1;
        let cand_index: BTreeMap<&str, &L> = candidate.iter().map(|l| (l.name(), l)).collect();
        let ref_names: std::collections::BTreeSet<&str> =
            reference.iter().map(|l| l.name()).collect();
        for leaf in reference {
            let other = cand_index.get(leaf.name()).copied();
            let e = self.entry(leaf.name());
            e.reference.get_or_insert_with(|| leaf.describe());
            e.seen.0 = true;
            let Some(other) = other else { continue };
            e.candidate.get_or_insert_with(|| other.describe());
            e.seen.1 = true;
            if e.mismatch.is_some() {
                continue;
            }
            e.mismatch = feed(leaf, other, &mut e.acc)?;
        }
        for leaf in candidate.iter().filter(|l| !ref_names.contains(l.name())) {
            let e = self.entry(leaf.name());
            e.candidate.get_or_insert_with(|| leaf.describe());
            e.seen.1 = true;
        }
        Ok(())
    }

    /// The report of every sample added.
    pub fn finish(&self) -> Report {
        let mut outputs: Vec<OutputReport> = Vec::with_capacity(self.order.len());
        for name in &self.order {
            let e = &self.entries[name];
            let (status, problem) =
                match (&e.mismatch, e.reference.is_some(), e.candidate.is_some()) {
                    (Some((s, p)), _, _) => (s.clone(), Some(p.clone())),
                    (None, true, false) => (
                        Status::MissingInCandidate,
                        Some("only in the reference".to_string()),
                    ),
                    (None, false, true) => (
                        Status::MissingInReference,
                        Some("only in the candidate".to_string()),
                    ),
                    _ => (Status::Compared, None),
                };
            let compared = status == Status::Compared;
            let metrics = compared.then(|| e.acc.finish());
            let histogram = e.acc.histogram().filter(|_| compared).cloned();
            let failures = metrics
                .as_ref()
                .map_or_else(Vec::new, |m| judge(m, &e.limits));
            let passed = status == Status::Compared && failures.is_empty();
            outputs.push(OutputReport {
                name: name.clone(),
                status,
                reference: e.reference.clone(),
                candidate: e.candidate.clone(),
                metrics,
                histogram,
                limits: e.limits.clone(),
                failures,
                problem,
                passed,
            });
        }
        // Reference outputs first (in their order), then the candidate's extras.
        outputs.sort_by_key(|o| o.status == Status::MissingInReference);
        Report {
            passed: outputs.iter().all(|o| o.passed),
            samples: self.samples,
            outputs,
        }
    }
}

/// Compares one sample of outputs (a one-sample [`Comparer`]).
pub fn compare(
    reference: &NamedValues,
    candidate: &NamedValues,
    thresholds: Thresholds,
    topk: TopkAxis,
) -> Report {
    let mut c = Comparer::new(thresholds, topk);
    c.add_sample(reference, candidate);
    c.finish()
}

/// The status and text of a pair the accumulator refused.
pub(crate) fn mismatch(err: MetricsError) -> (Status, String) {
    let status = match err {
        MetricsError::Shape { .. } => Status::ShapeMismatch,
        _ => Status::TypeMismatch,
    };
    (status, err.to_string())
}

/// An output of one sample, as [`Comparer`] matches and describes it.
pub(crate) trait Described {
    /// The output's name.
    fn name(&self) -> &str;
    /// Its type and shape, as reports show it (`float32[1,10]`).
    fn describe(&self) -> String;
}

/// A tensor-or-nothing leaf of an output value.
struct Leaf<'a> {
    name: String,
    /// `None` for an absent optional.
    tensor: Option<&'a Tensor>,
}

impl Described for Leaf<'_> {
    fn name(&self) -> &str {
        &self.name
    }

    fn describe(&self) -> String {
        match self.tensor {
            Some(t) => Value::Tensor(t.clone()).describe(),
            None => "optional(none)".to_string(),
        }
    }
}

fn flatten(values: &NamedValues) -> Vec<Leaf<'_>> {
    fn walk<'a>(name: String, v: &'a Value, out: &mut Vec<Leaf<'a>>) {
        match v {
            Value::Tensor(t) => out.push(Leaf {
                name,
                tensor: Some(t),
            }),
            Value::Sequence { items, .. } => {
                for (i, item) in items.iter().enumerate() {
                    walk(format!("{name}[{i}]"), item, out);
                }
            }
            Value::Optional(Some(inner)) => walk(name, inner, out),
            Value::Optional(None) => out.push(Leaf { name, tensor: None }),
        }
    }
    let mut out = Vec::new();
    for (name, v) in values {
        walk(name.clone(), v, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: &[f32]) -> Value {
        Value::Tensor(Tensor::from_vec(vec![v.len()], v.to_vec()).unwrap())
    }

    fn named(items: &[(&str, Value)]) -> NamedValues {
        items
            .iter()
            .map(|(n, v)| (n.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn identical_outputs_pass() {
        let a = named(&[("y", t(&[1.0, 2.0])), ("z", t(&[3.0]))]);
        let r = compare(&a, &a, Thresholds::default(), TopkAxis::Auto);
        assert!(r.passed);
        assert_eq!(r.outputs.len(), 2);
        assert!(r.outputs.iter().all(|o| o.status == Status::Compared));
    }

    #[test]
    fn names_types_and_shapes_are_reported() {
        let a = named(&[("y", t(&[1.0])), ("only_ref", t(&[1.0])), ("s", t(&[1.0]))]);
        let i = Value::Tensor(Tensor::from_vec(vec![1], vec![1i32]).unwrap());
        let b = named(&[("y", i), ("s", t(&[1.0, 2.0])), ("only_cand", t(&[1.0]))]);
        let r = compare(&a, &b, Thresholds::default(), TopkAxis::Auto);
        assert!(!r.passed);
        let status: Vec<(&str, &Status)> = r
            .outputs
            .iter()
            .map(|o| (o.name.as_str(), &o.status))
            .collect();
        assert_eq!(
            status,
            [
                ("y", &Status::TypeMismatch),
                ("only_ref", &Status::MissingInCandidate),
                ("s", &Status::ShapeMismatch),
                ("only_cand", &Status::MissingInReference),
            ]
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["outputs"][1]["status"], "missing_in_candidate");
    }

    #[test]
    fn sequences_compare_by_item() {
        let seq = |v: Vec<Value>| Value::Sequence {
            elem_type: None,
            items: v,
        };
        let a = named(&[("s", seq(vec![t(&[1.0]), t(&[2.0])]))]);
        let b = named(&[("s", seq(vec![t(&[1.0])]))]);
        let r = compare(&a, &b, Thresholds::default(), TopkAxis::Auto);
        assert_eq!(r.outputs[1].name, "s[1]");
        assert_eq!(r.outputs[1].status, Status::MissingInCandidate);
    }
}
