//! What keeping a layer at 16-bit means in each mode.
//!
//! - Static QDQ: the layer's quantized activation tensors (its float inputs and outputs) take
//!   the 16-bit counterpart of their type (uint8 → uint16, int8 → int16) and its weights int16
//!   symmetric, at the same granularity: per-tensor overrides of the configuration, so the
//!   planner and inserter write it (16-bit Q/DQ: opset 21, or `com.microsoft` as the config's
//!   `qdq_domain` says).
//! - Weight-only: the layer is left out of block-wise quantization and its weight stored as
//!   float16, read through a `Cast` to float32 (what fp16-weight models ship as).

use std::collections::{BTreeSet, HashMap};

use half::f16;
use kiln_passes::ir::{
    AttrValue, Dim, Graph, InputSlot, Model, NameSet, Node, NodeIndex, NodeKind, ValueRef,
};
use kiln_passes::quant::qdq::QuantPlan;
use kiln_passes::quant::{QuantConfig, QuantType, TensorOverride};
use kiln_passes::tensor::{DataType, Tensor};

/// The 16-bit counterpart of a quantized type (16-bit types stay as they are).
pub fn sixteen_bit(t: QuantType) -> QuantType {
    match t {
        QuantType::Uint8 => QuantType::Uint16,
        QuantType::Int8 => QuantType::Int16,
        other => other,
    }
}

/// The name the QDQ planner gives node `idx`: its name, else its first named output's.
pub fn node_id(g: &Graph, idx: NodeIndex) -> String {
    let n = &g[idx];
    if !n.name.is_empty() {
        return n.name.clone();
    }
    n.outputs
        .iter()
        .find(|o| !o.name.is_empty())
        .map_or_else(|| format!("#{}", idx.index()), |o| o.name.clone())
}

/// Whether constant input `slot` of an `op_type` node is quantized as a weight (the weight
/// scheme) rather than as an operand (the activation scheme), as the QDQ rules do.
fn weight_slot(op_type: &str, slot: usize) -> bool {
    match op_type {
        "Conv" | "ConvTranspose" | "Gemm" | "MatMul" => slot <= 1,
        "Gather" => slot == 0,
        "LayerNormalization" => slot == 1,
        _ => false,
    }
}

/// Whether input `slot` of an `op_type` node is a bias (int32, its scale follows the others).
fn bias_slot(op_type: &str, slot: usize) -> bool {
    matches!(op_type, "Conv" | "ConvTranspose" | "Gemm") && slot == 2
}

/// The tensors promoting a layer changes: activations (float inputs and outputs, by name) and
/// weights (constants the QDQ rules quantize with the weight scheme).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LayerTensors {
    /// Activation tensors (and constant operands, quantized like activations).
    pub activations: Vec<String>,
    /// Weights.
    pub weights: Vec<ValueRef>,
}

/// The tensors of node `idx` that promoting it changes. `plan` is the plan of the unpromoted
/// configuration: an output that a Relu/Clip alone reads, where the plan folded that
/// Relu/Clip into the node (it is neither quantized nor skipped), is named by the Relu's
/// output, the name the folded tensor takes; naming it keeps the fold.
pub fn layer_tensors(g: &Graph, idx: NodeIndex, plan: &QuantPlan) -> LayerTensors {
    let n = &g[idx];
    let mut out = LayerTensors::default();
    for (slot, v) in g.inputs(idx).into_iter().enumerate() {
        let Some(v) = v else { continue };
        if bias_slot(n.op_type(), slot) {
            continue;
        }
        let declared = g.value_info(v).elem_type();
        match g.constant(v) {
            Some(t) if t.dtype() != DataType::Float => {}
            Some(_) if weight_slot(n.op_type(), slot) => out.weights.push(v),
            // Known non-float values (shapes, indices) are never quantized.
            None if declared.is_some_and(|t| t != DataType::Float) => {}
            _ => out.activations.push(g.value_name(v).to_string()),
        }
    }
    for slot in 0..n.outputs.len() {
        let v = ValueRef::new(idx, slot);
        if g.value_info(v)
            .elem_type()
            .is_some_and(|t| t != DataType::Float)
        {
            continue;
        }
        let name = match folded_into(g, v, plan) {
            Some(relu_out) => relu_out,
            None => g.value_name(v).to_string(),
        };
        if !name.is_empty() {
            out.activations.push(name);
        }
    }
    out
}

/// The output name of the Relu/Clip that the plan folded into the producer of `v`, if any.
fn folded_into(g: &Graph, v: ValueRef, plan: &QuantPlan) -> Option<String> {
    let consumers = g.consumers(v);
    let [(reader, InputSlot::Operand(0))] = consumers.as_slice() else {
        return None;
    };
    let reader = *reader;
    if g.outputs.iter().any(|o| o.value == v) || !matches!(g[reader].op_type(), "Relu" | "Clip") {
        return None;
    }
    let id = node_id(g, reader);
    let planned = plan.nodes.contains(&id) || plan.skipped.iter().any(|s| s.node == id);
    (!planned).then(|| g.value_name(ValueRef::new(reader, 0)).to_string())
}

/// `config` with the main-graph nodes named `nodes` (as the planner names them) promoted to
/// 16-bit: activations at the 16-bit counterpart of their type (a user's override keeps its
/// symmetry and range), weights int16 symmetric. `plan` is the plan of `config` on `model`.
pub fn promote_qdq(
    config: &QuantConfig,
    model: &Model,
    plan: &QuantPlan,
    nodes: &[String],
) -> QuantConfig {
    let g = &model.graph;
    let wanted: BTreeSet<&str> = nodes.iter().map(String::as_str).collect();
    let mut out = config.clone();
    let mut weights = Vec::new();
    for (idx, n) in g.nodes() {
        if !n.is_operator() || !wanted.contains(node_id(g, idx).as_str()) {
            continue;
        }
        let tensors = layer_tensors(g, idx, plan);
        for name in tensors.activations {
            let o = out.overrides.entry(name).or_default();
            o.dtype = Some(sixteen_bit(o.dtype.unwrap_or(config.activations.dtype)));
        }
        weights.extend(tensors.weights.iter().map(|&w| g.value_name(w).to_string()));
    }
    // Weights last: a constant both an operand and a weight is stored as a weight.
    for w in weights {
        out.overrides.insert(
            w,
            TensorOverride {
                dtype: Some(QuantType::Int16),
                symmetric: Some(true),
                range: None,
            },
        );
    }
    out
}

/// One weight stored as float16 instead of block-wise integers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Float16Weight {
    /// The float32 weight's name.
    pub name: String,
    /// Its elements (2 bytes each once stored).
    pub elements: usize,
}

/// What [`keep_float16`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Float16Summary {
    /// Weights now stored as float16 (once each, however many promoted nodes read them).
    pub weights: Vec<Float16Weight>,
    /// Nodes left as they were, with the reason.
    pub skipped: Vec<(String, String)>,
}

impl Float16Summary {
    /// Bytes of the float16 weights.
    pub fn bytes(&self) -> u64 {
        self.weights.iter().map(|w| 2 * w.elements as u64).sum()
    }
}

/// Stores the float32 weight (input B) of the main-graph MatMul/Gemm nodes named `nodes` as a
/// float16 initializer read through `Cast(to: float32)`; a float32 weight nobody else reads is
/// dropped. A node whose B is not a float32 constant, or whose weight would overflow float16,
/// is left alone and listed with the reason.
pub fn keep_float16(model: &mut Model, nodes: &BTreeSet<String>) -> Float16Summary {
    let mut summary = Float16Summary::default();
    let mut names = NameSet::of(&model.graph);
    let g = &mut model.graph;
    let targets: Vec<NodeIndex> = g
        .nodes()
        .filter(|(_, n)| {
            matches!(n.op_type(), "MatMul" | "Gemm")
                && n.domain().is_empty()
                && nodes.contains(&n.name)
        })
        .map(|(i, _)| i)
        .collect();
    // One float16 copy and one Cast per weight, shared by every promoted reader.
    let mut converted: HashMap<ValueRef, ValueRef> = HashMap::new();
    let mut released = Vec::new();
    for idx in targets {
        let label = g[idx].name.clone();
        let Some(b) = g.input(idx, 1) else {
            summary.skipped.push((label, "input B is missing".into()));
            continue;
        };
        if let Some(&cast) = converted.get(&b) {
            g.connect(cast, idx, 1);
            continue;
        }
        let low = match g.constant(b).map(to_float16) {
            Some(Ok(t)) => t,
            Some(Err(reason)) => {
                summary.skipped.push((label, reason));
                continue;
            }
            None => {
                summary
                    .skipped
                    .push((label, "input B is not a constant".into()));
                continue;
            }
        };
        let name = g.value_name(b).to_string();
        let dims: Vec<Dim> = low.shape().iter().map(|&d| Dim::Known(d as i64)).collect();
        summary.weights.push(Float16Weight {
            name: name.clone(),
            elements: low.len(),
        });
        let stored = g.add_node(Node::initializer(
            &names.fresh(&format!("{name}_fp16")),
            low,
        ));
        let out = names.fresh(&format!("{name}_fp32"));
        let node_name = names.fresh_node(&format!("{name}_Cast"));
        let cast = g.add_node(
            Node::op("Cast", &node_name, &[&out])
                .with_attr("to", AttrValue::Int(i64::from(DataType::Float.onnx()))),
        );
        g.connect(ValueRef::new(stored, 0), cast, 0);
        *g.value_info_mut(ValueRef::new(cast, 0)) =
            kiln_passes::ir::ValueInfo::tensor(&out, DataType::Float, &dims);
        let cast_out = ValueRef::new(cast, 0);
        g.connect(cast_out, idx, 1);
        converted.insert(b, cast_out);
        released.push(b);
    }
    for b in released {
        let is_constant = matches!(
            g.node(b.node).map(|n| &n.kind),
            Some(NodeKind::Constant { .. })
        );
        if is_constant && !g.is_used(b) {
            g.remove_node(b.node);
        }
    }
    summary
}

/// `t` (float32) as float16, rounded to nearest even as `Cast` does; an error when a finite
/// value is beyond float16's range (65504).
fn to_float16(t: &Tensor) -> Result<Tensor, String> {
    if t.dtype() != DataType::Float {
        return Err(format!("weight is {}, not float32", t.dtype()));
    }
    let values = t.to_vec::<f32>().map_err(|e| e.to_string())?;
    let mut low = Vec::with_capacity(values.len());
    for x in values {
        let h = f16::from_f32(x);
        if x.is_finite() && !h.is_finite() {
            return Err(format!("weight value {x} is beyond float16's range"));
        }
        low.push(h);
    }
    Tensor::from_vec(t.shape().to_vec(), low).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_passes::ir::{GraphOutput, ValueInfo};
    use kiln_passes::quant::qdq::{insert_qdq, plan};
    use kiln_passes::quant::{Range, Ranges};

    fn input(g: &mut Graph, name: &str, dims: &[i64]) -> ValueRef {
        let dims: Vec<Dim> = dims.iter().map(|&d| Dim::Known(d)).collect();
        ValueRef::new(
            g.add_node(Node::input(ValueInfo::tensor(name, DataType::Float, &dims))),
            0,
        )
    }

    fn constant(g: &mut Graph, name: &str, shape: &[usize], value: f32) -> ValueRef {
        let n = shape.iter().product();
        let vals = (0..n)
            .map(|i| value * (1.0 + i as f32 / n as f32))
            .collect();
        let t = Tensor::from_vec(shape.to_vec(), vals).unwrap();
        ValueRef::new(g.add_node(Node::initializer(name, t)), 0)
    }

    fn op(g: &mut Graph, op: &str, name: &str, ins: &[ValueRef], out: &str) -> ValueRef {
        let idx = g.add_node(Node::op(op, name, &[out]));
        for (slot, &v) in ins.iter().enumerate() {
            g.connect(v, idx, slot);
        }
        ValueRef::new(idx, 0)
    }

    fn output(g: &mut Graph, v: ValueRef) {
        let info = ValueInfo::new(g.value_name(v));
        g.outputs.push(GraphOutput { value: v, info });
    }

    /// x → conv1 (bias) → Relu (folded into conv1) → conv2 (bias) → Add(k) → y.
    fn cnn() -> Model {
        let mut m = Model::new(21);
        let g = &mut m.graph;
        let x = input(g, "x", &[1, 2, 4, 4]);
        let w1 = constant(g, "w1", &[3, 2, 1, 1], 0.5);
        let b1 = constant(g, "b1", &[3], 0.1);
        let c1 = op(g, "Conv", "conv1", &[x, w1, b1], "c1");
        let r = op(g, "Relu", "relu", &[c1], "r");
        let w2 = constant(g, "w2", &[2, 3, 1, 1], -0.25);
        let b2 = constant(g, "b2", &[2], 0.2);
        let c2 = op(g, "Conv", "conv2", &[r, w2, b2], "c2");
        let k = constant(g, "k", &[1], 2.0);
        let y = op(g, "Add", "add", &[c2, k], "y");
        output(g, y);
        m
    }

    fn ranges(p: &QuantPlan) -> Ranges {
        p.tensors
            .iter()
            .map(|n| (n.clone(), Range::new(-1.0, 2.0)))
            .collect()
    }

    #[test]
    fn qdq_promotion_names_the_layer_tensors_and_keeps_the_fold() {
        let m = cnn();
        let config = QuantConfig::default();
        let p = plan(&m, &config).unwrap();
        assert_eq!(p.nodes, vec!["conv1", "conv2", "add"]);
        let c = promote_qdq(&config, &m, &p, &["conv1".to_string()]);
        // conv1's input, its output under the folded Relu's name, its weight; not its bias.
        let names: Vec<&str> = c.overrides.keys().map(String::as_str).collect();
        assert_eq!(names, vec!["r", "w1", "x"]);
        assert_eq!(c.overrides["x"].dtype, Some(QuantType::Uint16));
        assert_eq!(c.overrides["r"].dtype, Some(QuantType::Uint16));
        assert_eq!(c.overrides["w1"].dtype, Some(QuantType::Int16));
        assert_eq!(c.overrides["w1"].symmetric, Some(true));
        // Quantized with it: the Relu stays folded, conv1's tensors are 16-bit, conv2's
        // weight 8-bit, and the model is valid.
        let mut q = m.clone();
        let done = insert_qdq(&mut q, &c, &ranges(&plan(&m, &c).unwrap())).unwrap();
        q.graph.verify().unwrap();
        assert_eq!(done.removed_activations, vec!["relu"]);
        let dtype = |name: &str| {
            done.tensors
                .iter()
                .find(|t| t.name == name)
                .map(|t| t.dtype)
                .unwrap()
        };
        assert_eq!(dtype("x"), QuantType::Uint16);
        assert_eq!(dtype("r"), QuantType::Uint16);
        assert_eq!(dtype("w1"), QuantType::Int16);
        assert_eq!(dtype("w2"), QuantType::Int8);
        assert_eq!(dtype("c2"), QuantType::Uint8);
    }

    #[test]
    fn qdq_promotion_keeps_user_overrides_and_promotes_constant_operands() {
        let m = cnn();
        let mut config = QuantConfig {
            activations: kiln_passes::quant::QuantScheme::new(QuantType::Int8, true),
            ..QuantConfig::default()
        };
        config.overrides.insert(
            "y".into(),
            TensorOverride {
                dtype: None,
                symmetric: Some(false),
                range: Some(Range::new(0.0, 4.0)),
            },
        );
        let p = plan(&m, &config).unwrap();
        let c = promote_qdq(&config, &m, &p, &["add".to_string()]);
        // int8 activations become int16; the user's symmetry and range stay.
        assert_eq!(c.overrides["y"].dtype, Some(QuantType::Int16));
        assert_eq!(c.overrides["y"].symmetric, Some(false));
        assert_eq!(c.overrides["y"].range, Some(Range::new(0.0, 4.0)));
        assert_eq!(c.overrides["c2"].dtype, Some(QuantType::Int16));
        // The Add's constant is an operand: activation scheme, 16-bit.
        assert_eq!(c.overrides["k"].dtype, Some(QuantType::Int16));
        assert_eq!(c.overrides["k"].symmetric, None);
        // Nothing promoted: the configuration as it was.
        assert_eq!(promote_qdq(&config, &m, &p, &[]), config);
    }

    /// x → mm1(w) → mm2(w, shared) → Gemm(big) → y.
    fn mlp() -> Model {
        let mut m = Model::new(21);
        let g = &mut m.graph;
        let x = input(g, "x", &[1, 4]);
        let w = constant(g, "w", &[4, 4], 0.25);
        let h = op(g, "MatMul", "mm1", &[x, w], "h");
        let h2 = op(g, "MatMul", "mm2", &[h, w], "h2");
        let big = constant(g, "big", &[4, 2], 70000.0);
        let y = op(g, "Gemm", "gemm", &[h2, big], "y");
        output(g, y);
        m
    }

    #[test]
    fn float16_weights_are_read_through_one_cast_per_weight() {
        let mut m = mlp();
        let nodes: BTreeSet<String> = ["mm1", "mm2", "gemm"].map(String::from).into();
        let s = keep_float16(&mut m, &nodes);
        m.graph.verify().unwrap();
        assert_eq!(
            s.weights,
            vec![Float16Weight {
                name: "w".into(),
                elements: 16
            }]
        );
        assert_eq!(s.bytes(), 32);
        // The Gemm's weight is beyond float16's range: left as it was, with why.
        assert_eq!(s.skipped.len(), 1);
        assert_eq!(s.skipped[0].0, "gemm");
        assert!(s.skipped[0].1.contains("float16"), "{:?}", s.skipped);
        let g = &m.graph;
        let find = |name: &str| g.nodes().find(|(_, n)| n.name == name).unwrap().0;
        let (mm1, mm2) = (find("mm1"), find("mm2"));
        let cast = g.input(mm1, 1).unwrap();
        assert_eq!(g.input(mm2, 1), Some(cast));
        assert_eq!(g[cast.node].op_type(), "Cast");
        assert_eq!(
            g[cast.node].attr("to").and_then(AttrValue::as_int),
            Some(i64::from(DataType::Float.onnx()))
        );
        let low = g.constant(g.input(cast.node, 0).unwrap()).unwrap();
        assert_eq!(low.dtype(), DataType::Float16);
        let back: Vec<f32> = low
            .to_vec::<f16>()
            .unwrap()
            .iter()
            .map(|h| h.to_f32())
            .collect();
        assert_eq!(back[0], 0.25);
        assert!((back[15] - 0.25 * (1.0 + 15.0 / 16.0)).abs() < 1e-3);
        // The float32 copy nobody reads any more is gone; the Gemm's is kept.
        assert!(g.find_value("w").is_none());
        assert!(g.constant(g.input(find("gemm"), 1).unwrap()).is_some());
    }

    #[test]
    fn a_float32_weight_still_read_elsewhere_stays() {
        let mut m = mlp();
        let s = keep_float16(&mut m, &BTreeSet::from(["mm1".to_string()]));
        m.graph.verify().unwrap();
        assert_eq!(s.weights.len(), 1);
        let g = &m.graph;
        let mm2 = g.nodes().find(|(_, n)| n.name == "mm2").unwrap().0;
        let w = g.input(mm2, 1).unwrap();
        assert_eq!(g.value_name(w), "w");
        assert_eq!(g.constant(w).unwrap().dtype(), DataType::Float);
        // Nothing asked: nothing changes.
        let before = mlp();
        let mut after = mlp();
        assert_eq!(
            keep_float16(&mut after, &BTreeSet::new()),
            Float16Summary::default()
        );
        assert_eq!(after.to_proto(), before.to_proto());
    }
}
