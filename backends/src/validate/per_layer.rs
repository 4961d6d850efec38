//! Per-layer error localization: compare the intermediate tensors a float reference and a
//! transformed candidate (quantized, fused) have in common, and find the first layer where the
//! error jumps.
//!
//! # Matching
//!
//! Every output of every operator of the reference's main graph is a candidate *layer*, taken
//! in the reference's topological order. Its value `T` is matched in the candidate's main
//! graph by these rules, first that applies:
//! 1. **Through QDQ.** If the candidate has a `QuantizeLinear` reading `T` and a
//!    `DequantizeLinear` reading that `QuantizeLinear`'s output, `T` is matched to the
//!    `DequantizeLinear`'s output (the first such one in node order): that is the float value
//!    the candidate's consumers see, quantization error included. ONNX Runtime's
//!    `quantize_static` (QDQ format, 1.31) names it `T_DequantizeLinear_Output` and keeps `T`
//!    as the float output of the op itself; matching structurally does not depend on the names.
//! 2. **By name.** Otherwise a candidate value named `T` matches. This covers ops Kiln or a
//!    quantizer left alone, fused ops (Kiln's fusions give the fused op the output name of the
//!    pattern's last node), and graph outputs of ORT's QDQ models (ORT renames the op's output
//!    to `T_QuantizeLinear_Input` and lets the `DequantizeLinear` write `T`).
//! 3. Otherwise `T` has no match (say, the inside of a fused pattern) and is left out.
//!
//! Only values that compare as floats become rows: integer and bool tensors (shape
//! arithmetic, masks) are compared exactly by the metrics but carry no SQNR, so they are not
//! reported. Values inside If/Loop/Scan bodies cannot be captured and are not considered.
//!
//! # The first jump
//!
//! Each row's *baseline* is the lowest SQNR among its nearest matched upstream rows (walking
//! back from the layer's node through producers that have no row of their own). Error
//! propagates: a layer is expected to be about as accurate as its worst input, so a layer much
//! worse than that is where new error enters. An upstream row that is exact or as good as
//! exact (SQNR ≥ [`EXACT_DB`], 100 dB: float rounding, or a huge-magnitude mask fill that
//! swamps the noise) passes on its own baseline instead of its SQNR; integer rows pass on
//! nothing. A row **jumps** when
//! - it has a baseline and its SQNR is more than `jump_db` (default 10 dB) below it, or
//! - its SQNR is below `min_sqnr` (when given), or
//! - the candidate has NaN or ±Inf where the reference has fewer.
//!
//! A row whose upstream rows are all exact (inputs, shape paths, an unquantized prefix) has
//! no baseline, so the error every quantized layer adds first does not count as
//! a jump; give `min_sqnr` to catch a layer that is bad from the start. The *first jump* is the
//! first jumping row in the reference's topological order.

use std::collections::{BTreeSet, HashMap, HashSet};

use kiln_passes::ir::{IrError, Model, NodeIndex};
use kiln_proto::onnx::ModelProto;
use serde::Serialize;

use super::metrics::{Accumulator, Metrics, TopkAxis};
use crate::compare::Tolerance;
use crate::value::{NamedValues, Value};

/// Why a per-layer comparison cannot be planned.
#[derive(Debug, thiserror::Error)]
pub enum PerLayerError {
    /// The reference's graph could not be built.
    #[error("reference graph: {0}")]
    Graph(#[from] Box<IrError>),
}

/// One matched value: the reference's tensor and the candidate's tensor it is compared with.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerMatch {
    /// The reference tensor's name (the layer's name in reports).
    pub name: String,
    /// The candidate tensor it is compared with.
    pub candidate: String,
    /// The reference op that produces it.
    pub op_type: String,
    /// Indices (into the plan) of the nearest matched layers upstream.
    pub upstream: Vec<usize>,
}

/// Which tensors to capture on each side, in the reference's topological order.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The matched layers.
    pub layers: Vec<LayerMatch>,
}

impl Plan {
    /// Matches the reference's intermediate tensors in the candidate (see the module docs).
    pub fn new(reference: &ModelProto, candidate: &ModelProto) -> Result<Plan, PerLayerError> {
        let model = Model::from_proto(reference).map_err(Box::new)?;
        let graph = &model.graph;
        let resolve = candidate_resolver(candidate);
        let mut layers: Vec<LayerMatch> = Vec::new();
        let mut row_of: HashMap<(NodeIndex, usize), usize> = HashMap::new();
        // Nearest matched rows upstream of each node's outputs, for nodes without a row.
        let mut reach: HashMap<NodeIndex, BTreeSet<usize>> = HashMap::new();
        for idx in graph.topo_order() {
            let Some(node) = graph.node(idx) else {
                continue;
            };
            let mut upstream = BTreeSet::new();
            let sources = graph
                .inputs(idx)
                .into_iter()
                .flatten()
                .chain(graph.captures(idx));
            for v in sources {
                match row_of.get(&(v.node, v.slot)) {
                    Some(&row) => {
                        upstream.insert(row);
                    }
                    None => upstream.extend(reach.get(&v.node).into_iter().flatten()),
                }
            }
            if node.is_operator() {
                for (slot, out) in node.outputs.iter().enumerate() {
                    let Some(cand) = (!out.name.is_empty()).then(|| resolve(&out.name)).flatten()
                    else {
                        continue;
                    };
                    row_of.insert((idx, slot), layers.len());
                    layers.push(LayerMatch {
                        name: out.name.clone(),
                        candidate: cand,
                        op_type: node.op_type().to_string(),
                        upstream: upstream.iter().copied().collect(),
                    });
                }
            }
            reach.insert(idx, upstream);
        }
        Ok(Plan { layers })
    }

    /// The reference tensors to capture.
    pub fn reference_names(&self) -> Vec<String> {
        self.layers.iter().map(|l| l.name.clone()).collect()
    }

    /// The candidate tensors to capture.
    pub fn candidate_names(&self) -> Vec<String> {
        self.layers.iter().map(|l| l.candidate.clone()).collect()
    }
}

/// A function from a reference tensor name to the candidate tensor it matches, if any.
fn candidate_resolver(candidate: &ModelProto) -> impl Fn(&str) -> Option<String> {
    let nodes = candidate
        .graph
        .as_ref()
        .map_or(&[][..], |g| g.node.as_slice());
    let produced: HashSet<String> = nodes.iter().flat_map(|n| n.output.clone()).collect();
    let is_std = |d: &str| d.is_empty() || d == "ai.onnx";
    let mut quantized: HashMap<String, String> = HashMap::new();
    let mut dequantized: HashMap<String, String> = HashMap::new();
    for n in nodes {
        let (Some(input), Some(output)) = (n.input.first(), n.output.first()) else {
            continue;
        };
        if !is_std(&n.domain) {
            continue;
        }
        let map = match n.op_type.as_str() {
            "QuantizeLinear" => &mut quantized,
            "DequantizeLinear" => &mut dequantized,
            _ => continue,
        };
        map.entry(input.clone()).or_insert_with(|| output.clone());
    }
    move |name: &str| {
        quantized
            .get(name)
            .and_then(|q| dequantized.get(q))
            .cloned()
            .or_else(|| produced.contains(name).then(|| name.to_string()))
    }
}

/// SQNR at or above this is float rounding, not lost precision: such a layer passes its own
/// baseline on instead of its SQNR (the reference's `-3.4e38` attention-mask fill makes the
/// masked Add read ~800 dB, which would otherwise make the Softmax after it look like a jump).
pub const EXACT_DB: f64 = 100.0;

/// When a layer counts as a jump (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JumpRule {
    /// A drop of more than this many dB below the baseline is a jump.
    pub jump_db: f64,
    /// Any SQNR below this is a jump, when given.
    pub min_sqnr: Option<f64>,
}

impl Default for JumpRule {
    /// 10 dB, no absolute floor.
    fn default() -> JumpRule {
        JumpRule {
            jump_db: 10.0,
            min_sqnr: None,
        }
    }
}

/// One layer of the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerRow {
    /// The reference tensor.
    pub name: String,
    /// The candidate tensor compared with it (differs through QDQ).
    pub candidate: String,
    /// The reference op producing it.
    pub op_type: String,
    /// Largest absolute error.
    #[serde(serialize_with = "finite_or_text")]
    pub max_abs: f64,
    /// SQNR in dB (`inf` when identical).
    #[serde(serialize_with = "finite_or_text")]
    pub sqnr_db: f64,
    /// Cosine similarity.
    #[serde(serialize_with = "finite_or_text")]
    pub cosine: f64,
    /// The lowest SQNR passed on by the nearest matched upstream layers, if any.
    #[serde(serialize_with = "option_finite_or_text")]
    pub baseline_db: Option<f64>,
    /// Whether this layer jumps.
    pub jump: bool,
}

/// The per-layer comparison of every sample.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PerLayerReport {
    /// Float layers compared, in the reference's topological order.
    pub rows: Vec<LayerRow>,
    /// The first jumping layer's name, if any.
    pub first_jump: Option<String>,
    /// The drop (dB) that counts as a jump.
    pub jump_db: f64,
    /// The absolute SQNR floor, if given.
    pub min_sqnr: Option<f64>,
    /// Matched layers left out: not float, or mismatched in type or shape (`name: why`).
    pub skipped: Vec<String>,
}

/// Accumulates the matched layers' metrics over samples.
pub struct PerLayer {
    plan: Plan,
    accs: Vec<Accumulator>,
    problems: Vec<Option<String>>,
}

impl PerLayer {
    /// A comparer of `plan`'s layers, judging closeness with `tol`.
    pub fn new(plan: Plan, tol: Tolerance) -> PerLayer {
        let n = plan.layers.len();
        PerLayer {
            plan,
            accs: vec![Accumulator::new(tol, TopkAxis::Off); n],
            problems: vec![None; n],
        }
    }

    /// The plan being compared.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Adds one sample: captured reference and candidate values (extra names are ignored).
    pub fn add_sample(&mut self, reference: &NamedValues, candidate: &NamedValues) {
        let reference = index(reference);
        let candidate = index(candidate);
        for (i, layer) in self.plan.layers.iter().enumerate() {
            if self.problems[i].is_some() {
                continue;
            }
            let pair = (
                reference.get(layer.name.as_str()),
                candidate.get(layer.candidate.as_str()),
            );
            let problem = match pair {
                (Some(&Value::Tensor(r)), Some(&Value::Tensor(c))) => {
                    self.accs[i].add(r, c).err().map(|e| e.to_string())
                }
                (Some(_), Some(_)) => Some("not a tensor".to_string()),
                _ => Some("not captured".to_string()),
            };
            self.problems[i] = problem;
        }
    }

    /// The rows, baselines and first jump under `rule`.
    pub fn finish(&self, rule: JumpRule) -> PerLayerReport {
        // What each layer contributes to its consumers' baselines.
        let mut passed_on: Vec<Option<f64>> = vec![None; self.accs.len()];
        let mut rows = Vec::new();
        let mut skipped = Vec::new();
        for (i, layer) in self.plan.layers.iter().enumerate() {
            if let Some(p) = &self.problems[i] {
                skipped.push(format!("{}: {p}", layer.name));
                continue;
            }
            let Metrics::Float(m) = self.accs[i].finish() else {
                skipped.push(format!("{}: not float", layer.name));
                continue;
            };
            let baseline = layer
                .upstream
                .iter()
                .filter_map(|&u| passed_on[u])
                .reduce(f64::min);
            passed_on[i] = if m.sqnr_db < EXACT_DB {
                Some(m.sqnr_db)
            } else {
                baseline
            };
            let dropped = baseline.is_some_and(|b| m.sqnr_db < b - rule.jump_db);
            let below = rule.min_sqnr.is_some_and(|floor| m.sqnr_db < floor);
            let broke = m.nan_candidate > m.nan_reference || m.inf_candidate > m.inf_reference;
            rows.push(LayerRow {
                name: layer.name.clone(),
                candidate: layer.candidate.clone(),
                op_type: layer.op_type.clone(),
                max_abs: m.max_abs,
                sqnr_db: m.sqnr_db,
                cosine: m.cosine,
                baseline_db: baseline,
                jump: dropped || below || broke,
            });
        }
        PerLayerReport {
            first_jump: rows.iter().find(|r| r.jump).map(|r| r.name.clone()),
            rows,
            jump_db: rule.jump_db,
            min_sqnr: rule.min_sqnr,
            skipped,
        }
    }
}

/// Captured values by name (the first of a repeated name).
fn index(values: &NamedValues) -> HashMap<&str, &Value> {
    let mut map = HashMap::with_capacity(values.len());
    for (n, v) in values {
        map.entry(n.as_str()).or_insert(v);
    }
    map
}

/// JSON has no infinities or NaN: write them as `inf`, `-inf`, `nan`.
fn finite_or_text<S: serde::Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    match *v {
        v if v.is_finite() => s.serialize_f64(v),
        v if v.is_nan() => s.serialize_str("nan"),
        v if v > 0.0 => s.serialize_str("inf"),
        _ => s.serialize_str("-inf"),
    }
}

fn option_finite_or_text<S: serde::Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => finite_or_text(v, s),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use kiln_passes::tensor::Tensor;
    use kiln_proto::onnx::{GraphProto, NodeProto, OperatorSetIdProto, ValueInfoProto};

    use super::*;

    fn node(op: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
        NodeProto {
            op_type: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            ..NodeProto::default()
        }
    }

    fn model(nodes: Vec<NodeProto>) -> ModelProto {
        let named = |n: &str| ValueInfoProto {
            name: n.into(),
            ..ValueInfoProto::default()
        };
        ModelProto {
            ir_version: 10,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: 17,
            }],
            graph: Some(GraphProto {
                name: "g".into(),
                node: nodes,
                input: vec![named("x"), named("s"), named("zp")],
                output: vec![named("z")],
                ..GraphProto::default()
            }),
            ..ModelProto::default()
        }
    }

    #[test]
    fn matches_through_qdq_and_by_name() {
        let reference = model(vec![
            node("Relu", &["x"], &["y"]),
            node("Neg", &["y"], &["inner"]),
            node("Neg", &["inner"], &["z"]),
        ]);
        // Quantized y, and the two Negs fused into one op keeping the last name.
        let candidate = model(vec![
            node("Relu", &["x"], &["y"]),
            node("QuantizeLinear", &["y", "s", "zp"], &["y_q"]),
            node("DequantizeLinear", &["y_q", "s", "zp"], &["y_dq"]),
            node("Fused", &["y_dq"], &["z"]),
        ]);
        let plan = Plan::new(&reference, &candidate).unwrap();
        let got: Vec<(&str, &str, &[usize])> = plan
            .layers
            .iter()
            .map(|l| (l.name.as_str(), l.candidate.as_str(), l.upstream.as_slice()))
            .collect();
        // `inner` has no match; z's nearest matched upstream is y, through it.
        assert_eq!(got, [("y", "y_dq", &[][..]), ("z", "z", &[0][..])]);
    }

    fn t(v: &[f32]) -> Value {
        Value::Tensor(Tensor::from_vec(vec![v.len()], v.to_vec()).unwrap())
    }

    fn layer(name: &str, upstream: &[usize]) -> LayerMatch {
        LayerMatch {
            name: name.into(),
            candidate: name.into(),
            op_type: "Op".into(),
            upstream: upstream.to_vec(),
        }
    }

    #[test]
    fn near_exact_layers_pass_their_baseline_on() {
        // a: ~30 dB; mask: a huge fill swamps the error (>100 dB); b: ~10 dB after it.
        let plan = Plan {
            layers: vec![layer("a", &[]), layer("mask", &[0]), layer("b", &[1])],
        };
        let reference = vec![
            ("a".to_string(), t(&[1.0, 1.0])),
            ("mask".to_string(), t(&[1.0, -3.0e38])),
            ("b".to_string(), t(&[1.0, 1.0])),
        ];
        let candidate = vec![
            ("a".to_string(), t(&[1.0, 1.0316])),
            ("mask".to_string(), t(&[1.0316, -3.0e38])),
            ("b".to_string(), t(&[1.0, 1.45])),
        ];
        let mut per = PerLayer::new(plan, Tolerance::ONNX_BACKEND);
        per.add_sample(&reference, &candidate);
        let report = per.finish(JumpRule::default());
        let base: Vec<Option<i64>> = report
            .rows
            .iter()
            .map(|r| r.baseline_db.map(|b| b.round() as i64))
            .collect();
        assert_eq!(base, [None, Some(33), Some(33)]);
        assert_eq!(report.first_jump.as_deref(), Some("b"));
        // Without a baseline an error is not a jump unless below the floor.
        let floor = per.finish(JumpRule {
            jump_db: 10.0,
            min_sqnr: Some(40.0),
        });
        assert_eq!(floor.first_jump.as_deref(), Some("a"));
    }
}
