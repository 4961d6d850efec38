//! Pinning and Cast cancellation on small hand-built graphs.

use std::collections::BTreeSet;

use half::{bf16, f16};

use super::*;
use crate::ir::{
    AttrValue, Dim, Graph, GraphOutput, InputSlot, Node, NodeIndex, NodeKind, ValueInfo, ValueRef,
};
use crate::tensor::Tensor;

fn input(g: &mut Graph, name: &str, dt: DataType, shape: &[i64]) -> ValueRef {
    let dims: Vec<Dim> = shape.iter().map(|&d| Dim::Known(d)).collect();
    ValueRef::new(
        g.add_node(Node::input(ValueInfo::tensor(name, dt, &dims))),
        0,
    )
}

fn init(g: &mut Graph, name: &str, t: Tensor) -> ValueRef {
    ValueRef::new(g.add_node(Node::initializer(name, t)), 0)
}

fn f32s(v: &[f32]) -> Tensor {
    Tensor::from_vec(vec![v.len()], v.to_vec()).unwrap()
}

fn node(g: &mut Graph, n: Node, inputs: &[ValueRef]) -> ValueRef {
    let idx = g.add_node(n);
    for (slot, &v) in inputs.iter().enumerate() {
        g.connect(v, idx, slot);
    }
    ValueRef::new(idx, 0)
}

fn op(g: &mut Graph, op_type: &str, inputs: &[ValueRef], out: &str) -> ValueRef {
    node(g, Node::op(op_type, out, &[out]), inputs)
}

fn cast(g: &mut Graph, x: ValueRef, to: DataType, out: &str) -> ValueRef {
    node(
        g,
        Node::op("Cast", out, &[out]).with_attr("to", AttrValue::Int(to.onnx() as i64)),
        &[x],
    )
}

fn layer_norm(g: &mut Graph, x: ValueRef, scale: ValueRef, bias: ValueRef, out: &str) -> ValueRef {
    node(
        g,
        Node::op("LayerNormalization", out, &[out])
            .with_attr("axis", AttrValue::Int(-1))
            .with_attr("epsilon", AttrValue::Float(1e-5))
            .with_attr("stash_type", AttrValue::Int(1)),
        &[x, scale, bias],
    )
}

fn softmax(g: &mut Graph, x: ValueRef, out: &str) -> ValueRef {
    node(
        g,
        Node::op("Softmax", out, &[out]).with_attr("axis", AttrValue::Int(-1)),
        &[x],
    )
}

fn output(g: &mut Graph, v: ValueRef) {
    let info = g.value_info(v).clone();
    g.outputs.push(GraphOutput { value: v, info });
}

fn set(ops: &[&str]) -> BTreeSet<String> {
    ops.iter().map(|s| s.to_string()).collect()
}

fn pinner(ops: &[&str], float: PinFloat) -> PinPrecision {
    PinPrecision {
        ops: set(ops),
        float,
        simulate: BTreeSet::new(),
    }
}

fn simulating(ops: &[&str], float: PinFloat) -> PinPrecision {
    PinPrecision {
        ops: set(ops),
        float,
        simulate: set(ops),
    }
}

/// Runs a pass, checks the graph before and after, and that the saved model reloads valid.
fn run(pass: &dyn Pass, m: &mut Model) -> Changes {
    m.graph.verify().expect("valid before");
    let c = pass.run(m).expect("pass runs");
    m.graph.verify().expect("valid after");
    let back = Model::from_proto(&m.to_proto()).expect("reloads");
    back.graph.verify().expect("valid after reload");
    c
}

/// Pins and returns the report, with the same checks as [`run`].
fn pin(p: &PinPrecision, m: &mut Model) -> PinReport {
    m.graph.verify().expect("valid before");
    let r = p.pin(m).expect("pin runs");
    m.graph.verify().expect("valid after");
    Model::from_proto(&m.to_proto())
        .expect("reloads")
        .graph
        .verify()
        .expect("valid after reload");
    r
}

fn count(g: &Graph, op_type: &str) -> usize {
    g.nodes().filter(|(_, n)| n.op_type() == op_type).count()
}

fn find(g: &Graph, op_type: &str) -> NodeIndex {
    g.nodes()
        .find(|(_, n)| n.op_type() == op_type)
        .map(|(i, _)| i)
        .unwrap_or_else(|| panic!("no {op_type}"))
}

/// The Cast target of the node producing `v` (panics if it is no Cast).
fn cast_target(g: &Graph, v: ValueRef) -> DataType {
    types::cast_to(&g[v.node]).unwrap_or_else(|| panic!("{} is no Cast", g.value_name(v)))
}

fn output_names(m: &Model) -> Vec<String> {
    m.to_proto()
        .graph
        .map(|g| g.output.into_iter().map(|o| o.name).collect())
        .unwrap_or_default()
}

fn ty(g: &Graph, v: ValueRef) -> Option<DataType> {
    types::elem_type(g, v)
}

/// x[2,8] → LayerNormalization(scale, bias) → y (graph output).
fn layer_norm_model(scale: &[f32]) -> (Model, ValueRef, ValueRef) {
    let mut m = Model::new(17);
    let g = &mut m.graph;
    let x = input(g, "x", DataType::Float, &[2, 8]);
    let s = init(g, "scale", f32s(scale));
    let b = init(g, "bias", f32s(&[0.5; 8]));
    let y = layer_norm(g, x, s, b, "y");
    output(g, y);
    (m, x, y)
}

#[test]
fn layer_norm_reads_casts_and_converted_constants() {
    let scale = [0.1f32, 1.0, 2.0, -3.5, 1e-3, 7.0, 0.3, 1.5];
    let (mut m, x, ln_out) = layer_norm_model(&scale);
    let r = pin(&pinner(&["LayerNormalization"], PinFloat::Float16), &mut m);
    let c = &r.changes;
    assert_eq!(c.get("pinned"), 1, "{c}");
    assert_eq!(c.get("input casts"), 1, "{c}");
    assert_eq!(c.get("output casts"), 1, "{c}");
    assert_eq!(c.get("constants converted"), 2, "{c}");
    assert_eq!(r.pinned.len(), 1);
    assert!(r.skipped.is_empty());
    let g = &m.graph;
    let ln = ln_out.node;
    // X through one Cast to float16.
    let xin = g.input(ln, 0).unwrap();
    assert_eq!(cast_target(g, xin), DataType::Float16);
    assert_eq!(g.input(xin.node, 0), Some(x));
    // Scale and bias converted directly: float16 constants, no Cast; the originals are gone.
    let s = g.constant_input(ln, 1).expect("scale is a constant");
    assert_eq!(s.dtype(), DataType::Float16);
    let want: Vec<f16> = scale.iter().map(|&v| f16::from_f32(v)).collect();
    assert_eq!(s.to_vec::<f16>().unwrap(), want);
    assert_eq!(g.constant_input(ln, 2).unwrap().dtype(), DataType::Float16);
    assert!(g.find_value("scale").is_none() && g.find_value("bias").is_none());
    // Float attributes stay (ONNX float attributes are float32); stash_type stays 1.
    assert_eq!(g[ln].attr("epsilon").and_then(|a| a.as_float()), Some(1e-5));
    assert_eq!(g[ln].attr("stash_type").and_then(|a| a.as_int()), Some(1));
    // The op's output is float16 under a new name; a Cast back to float32 is the graph output "y".
    assert_eq!(ty(g, ln_out), Some(DataType::Float16));
    assert_eq!(g.value_name(ln_out), "y_float16");
    let out = g.outputs[0].value;
    assert_eq!(cast_target(g, out), DataType::Float);
    assert_eq!(g.input(out.node, 0), Some(ln_out));
    assert_eq!(output_names(&m), ["y"]);
    assert_eq!(g.outputs[0].info.elem_type(), Some(DataType::Float));
}

#[test]
fn bfloat16_converts_constants_to_bfloat16() {
    let (mut m, _, ln_out) = layer_norm_model(&[0.1; 8]);
    let r = pin(&pinner(&["LayerNormalization"], PinFloat::Bfloat16), &mut m);
    assert_eq!(r.changes.get("pinned"), 1);
    let s = m.graph.constant_input(ln_out.node, 1).unwrap();
    assert_eq!(s.to_vec::<bf16>().unwrap(), vec![bf16::from_f32(0.1); 8]);
    assert_eq!(ty(&m.graph, ln_out), Some(DataType::Bfloat16));
}

#[test]
fn a_tensor_read_by_several_pinned_ops_gets_one_cast() {
    let mut m = Model::new(17);
    let g = &mut m.graph;
    let x = input(g, "x", DataType::Float, &[2, 8]);
    let a = softmax(g, x, "a");
    let b = softmax(g, x, "b");
    let r = op(g, "Relu", &[x], "r");
    for v in [a, b, r] {
        output(g, v);
    }
    let c = run(&pinner(&["Softmax"], PinFloat::Float16), &mut m);
    assert_eq!((c.get("pinned"), c.get("input casts")), (2, 1), "{c}");
    let g = &m.graph;
    assert_eq!(g.input(a.node, 0), g.input(b.node, 0));
    assert_eq!(
        cast_target(g, g.input(a.node, 0).unwrap()),
        DataType::Float16
    );
    // The float32 reader still reads x itself.
    assert_eq!(g.input(r.node, 0), Some(x));
    assert_eq!(output_names(&m), ["a", "b", "r"]);
}

#[test]
fn a_constant_other_float_ops_read_is_kept() {
    let (mut m, x, ln_out) = layer_norm_model(&[2.0; 8]);
    let scale = m.graph.input(ln_out.node, 1).unwrap();
    let mul = op(&mut m.graph, "Mul", &[x, scale], "mul");
    output(&mut m.graph, mul);
    let c = run(&pinner(&["LayerNormalization"], PinFloat::Float16), &mut m);
    assert_eq!(c.get("constants converted"), 2);
    let g = &m.graph;
    assert_eq!(g.input(mul.node, 1), Some(scale));
    assert_eq!(g.constant(scale).unwrap().dtype(), DataType::Float);
    assert_eq!(
        g.constant_input(ln_out.node, 1).unwrap().dtype(),
        DataType::Float16
    );
    // The unshared bias is replaced, not kept.
    assert!(g.find_value("bias").is_none());
}

#[test]
fn readers_of_the_output_read_the_cast_that_keeps_its_name() {
    let (mut m, _, ln_out) = layer_norm_model(&[1.0; 8]);
    let relu = op(&mut m.graph, "Relu", &[ln_out], "relu");
    output(&mut m.graph, relu);
    run(&pinner(&["LayerNormalization"], PinFloat::Float16), &mut m);
    let g = &m.graph;
    let back = g.input(relu.node, 0).unwrap();
    assert_eq!(g.value_name(back), "y");
    assert_eq!(cast_target(g, back), DataType::Float);
    assert_eq!(g.outputs[0].value, back);
    assert_eq!(output_names(&m), ["y", "relu"]);
}

/// x → LayerNormalization → Softmax → out, and optionally a MatMul also reading the LN output.
fn chain(extra_reader: bool) -> (Model, ValueRef, ValueRef, Option<ValueRef>) {
    let (mut m, _, ln_out) = layer_norm_model(&[1.0; 8]);
    m.graph.outputs.clear();
    let g = &mut m.graph;
    let sm = softmax(g, ln_out, "out");
    output(g, sm);
    let mm = extra_reader.then(|| {
        let w = init(
            g,
            "w",
            Tensor::from_vec(vec![8, 4], vec![0.5f32; 32]).unwrap(),
        );
        let mm = op(g, "MatMul", &[ln_out, w], "mm");
        output(g, mm);
        mm
    });
    (m, ln_out, sm, mm)
}

#[test]
fn pinned_chains_stay_in_float16_after_cancel_casts() {
    let (mut m, ln_out, sm, _) = chain(false);
    let c = run(
        &pinner(&["LayerNormalization", "Softmax"], PinFloat::Float16),
        &mut m,
    );
    assert_eq!(c.get("pinned"), 2);
    assert_eq!(count(&m.graph, "Cast"), 4, "in, out, in, out");
    let c = run(&CancelCasts, &mut m);
    assert_eq!(c.get("cancelled pairs"), 1, "{c}");
    let g = &m.graph;
    // Softmax reads the LayerNorm's float16 output directly; only the outer Casts are left.
    assert_eq!(g.input(sm.node, 0), Some(ln_out));
    assert_eq!(ty(g, ln_out), Some(DataType::Float16));
    assert_eq!(count(g, "Cast"), 2);
    assert_eq!(output_names(&m), ["out"]);
    // Nothing left to cancel.
    assert!(run(&CancelCasts, &mut m).is_empty());
}

#[test]
fn cancel_casts_keeps_a_cast_other_ops_read() {
    let (mut m, ln_out, sm, mm) = chain(true);
    run(
        &pinner(&["LayerNormalization", "Softmax"], PinFloat::Float16),
        &mut m,
    );
    let c = run(&CancelCasts, &mut m);
    assert_eq!(c.get("cancelled pairs"), 1);
    let g = &m.graph;
    assert_eq!(g.input(sm.node, 0), Some(ln_out));
    // The MatMul still reads float32, through the Cast that kept the name.
    let mm_in = g.input(mm.unwrap().node, 0).unwrap();
    assert_eq!(cast_target(g, mm_in), DataType::Float);
    assert_eq!(g.value_name(mm_in), "y");
    assert_eq!(g.input(mm_in.node, 0), Some(ln_out));
}

#[test]
fn lossy_pairs_stay() {
    let mut m = Model::new(17);
    let g = &mut m.graph;
    let x = input(g, "x", DataType::Float, &[4]);
    let h = cast(g, x, DataType::Float16, "h");
    let back = cast(g, h, DataType::Float, "back");
    let r = op(g, "Relu", &[back], "r");
    output(g, r);
    // float16 → bfloat16 → float16 loses mantissa bits too.
    let x16 = input(g, "x16", DataType::Float16, &[4]);
    let b = cast(g, x16, DataType::Bfloat16, "b");
    let b16 = cast(g, b, DataType::Float16, "b16");
    output(g, b16);
    assert!(run(&CancelCasts, &mut m).is_empty());
    assert_eq!(count(&m.graph, "Cast"), 4);
}

#[test]
fn a_cast_to_the_type_a_value_has_goes_unless_it_names_an_output_of_an_input() {
    let mut m = Model::new(17);
    let g = &mut m.graph;
    let x = input(g, "x", DataType::Float, &[4]);
    let same = cast(g, x, DataType::Float, "same");
    let r = op(g, "Relu", &[same], "r");
    output(g, r);
    // A graph input cannot take the graph output's name: this one stays.
    let kept = cast(g, x, DataType::Float, "kept");
    output(g, kept);
    let c = run(&CancelCasts, &mut m);
    assert_eq!(c.get("no-op casts"), 1, "{c}");
    assert_eq!(m.graph.input(r.node, 0), Some(x));
    assert_eq!(count(&m.graph, "Cast"), 1);
    assert_eq!(output_names(&m), ["r", "kept"]);
}

#[test]
fn a_cancelled_pair_at_a_graph_output_hands_the_name_to_its_source() {
    let mut m = Model::new(17);
    let g = &mut m.graph;
    let x = input(g, "x", DataType::Float16, &[4]);
    let r = op(g, "Relu", &[x], "r");
    // Types as inference leaves them (cancel-casts reads declared types).
    g[r.node].outputs[0] = ValueInfo::tensor("r", DataType::Float16, &[Dim::Known(4)]);
    let wide = cast(g, r, DataType::Float, "wide");
    let back = cast(g, wide, DataType::Float16, "out");
    output(g, back);
    let c = run(&CancelCasts, &mut m);
    assert_eq!(c.get("cancelled pairs"), 1);
    assert_eq!(count(&m.graph, "Cast"), 0);
    assert_eq!(m.graph.outputs[0].value, r);
    assert_eq!(output_names(&m), ["out"]);
}

#[test]
fn integer_widening_pairs_cancel() {
    let mut m = Model::new(17);
    let g = &mut m.graph;
    let x = input(g, "x", DataType::Int8, &[4]);
    let w = cast(g, x, DataType::Float, "w");
    let back = cast(g, w, DataType::Int8, "back");
    let n = op(g, "Neg", &[back], "n");
    output(g, n);
    assert_eq!(run(&CancelCasts, &mut m).get("cancelled pairs"), 1);
    assert_eq!(m.graph.input(n.node, 0), Some(x));
}

#[test]
fn simulated_twin_rounds_inputs_and_outputs_in_float32() {
    let mut m = Model::new(17);
    let g = &mut m.graph;
    let x = input(g, "x", DataType::Float, &[2, 8]);
    let sm = softmax(g, x, "y");
    output(g, sm);
    let p = simulating(&["Softmax"], PinFloat::Bfloat16);
    let r = pin(&p, &mut m);
    let c = &r.changes;
    assert_eq!((c.get("simulated"), c.get("pinned")), (1, 0), "{c}");
    assert_eq!((c.get("input casts"), c.get("output casts")), (2, 2), "{c}");
    assert!(r.pinned[0].simulated);
    let g = &m.graph;
    // x → Cast(bf16) → Cast(f32) → Softmax (float32) → Cast(bf16) → Cast(f32) "y".
    let rounded = g.input(sm.node, 0).unwrap();
    assert_eq!(cast_target(g, rounded), DataType::Float);
    let low = g.input(rounded.node, 0).unwrap();
    assert_eq!(cast_target(g, low), DataType::Bfloat16);
    assert_eq!(g.input(low.node, 0), Some(x));
    assert_eq!(ty(g, sm), Some(DataType::Float));
    let out = g.outputs[0].value;
    assert_eq!(cast_target(g, out), DataType::Float);
    let out_low = g.input(out.node, 0).unwrap();
    assert_eq!(cast_target(g, out_low), DataType::Bfloat16);
    assert_eq!(g.input(out_low.node, 0), Some(sm));
    assert_eq!(output_names(&m), ["y"]);
    // The rounding is no identity: cancel-casts leaves it.
    assert!(run(&CancelCasts, &mut m).is_empty());
    // A second run finds it simulated already.
    let again = pin(&p, &mut m);
    assert!(again.changes.is_empty(), "{}", again.changes);
    assert!(again.skipped[0].reason.contains("already simulated"));
}

#[test]
fn simulated_constants_are_rounded_and_stay_float32() {
    // 0.1 is not a bfloat16; 0.5 is, so the bias needs nothing.
    let (mut m, _, ln_out) = layer_norm_model(&[0.1; 8]);
    let r = pin(
        &simulating(&["LayerNormalization"], PinFloat::Bfloat16),
        &mut m,
    );
    assert_eq!(r.changes.get("constants converted"), 1);
    let g = &m.graph;
    let s = g.constant_input(ln_out.node, 1).unwrap();
    assert_eq!(s.dtype(), DataType::Float);
    assert_eq!(
        s.to_vec::<f32>().unwrap(),
        vec![bf16::from_f32(0.1).to_f32(); 8]
    );
    assert_eq!(g.value_name(g.input(ln_out.node, 2).unwrap()), "bias");
}

#[test]
fn twin_then_pinned_op_cancels_to_the_rounded_value() {
    // Softmax (simulated) → LayerNormalization (float16): LN reads the twin's float16 rounding.
    let mut m = Model::new(17);
    let g = &mut m.graph;
    let x = input(g, "x", DataType::Float, &[2, 8]);
    let sm = softmax(g, x, "s");
    let sc = init(g, "scale", f32s(&[1.0; 8]));
    let b = init(g, "bias", f32s(&[0.0; 8]));
    let ln = layer_norm(g, sm, sc, b, "y");
    output(g, ln);
    let p = PinPrecision {
        ops: set(&["Softmax", "LayerNormalization"]),
        float: PinFloat::Float16,
        simulate: set(&["Softmax"]),
    };
    let c = run(&p, &mut m);
    assert_eq!((c.get("simulated"), c.get("pinned")), (1, 1), "{c}");
    assert_eq!(run(&CancelCasts, &mut m).get("cancelled pairs"), 1);
    let g = &m.graph;
    let ln_in = g.input(ln.node, 0).unwrap();
    assert_eq!(g.value_name(ln_in), "s_float16");
    assert_eq!(g.input(ln_in.node, 0), Some(sm));
}

#[test]
fn ops_already_in_float16_are_untouched() {
    let mut m = Model::new(17);
    let g = &mut m.graph;
    let x = input(g, "x", DataType::Float16, &[2, 8]);
    let s = init(
        g,
        "scale",
        Tensor::from_vec(vec![8], vec![f16::ONE; 8]).unwrap(),
    );
    let b = init(
        g,
        "bias",
        Tensor::from_vec(vec![8], vec![f16::ZERO; 8]).unwrap(),
    );
    let y = layer_norm(g, x, s, b, "y");
    output(g, y);
    let before = m.to_proto();
    let r = pin(&pinner(&["LayerNormalization"], PinFloat::Float16), &mut m);
    assert!(r.changes.is_empty(), "{}", r.changes);
    assert_eq!(r.skipped.len(), 1);
    assert_eq!(r.skipped[0].reason, "already computes in float16");
    assert_eq!(m.to_proto().graph.unwrap().node, before.graph.unwrap().node);
}

#[test]
fn ops_without_float_inputs_are_skipped() {
    let mut m = Model::new(17);
    let g = &mut m.graph;
    let a = input(g, "a", DataType::Int64, &[4]);
    let b = input(g, "b", DataType::Int64, &[4]);
    let s = op(g, "Add", &[a, b], "s");
    output(g, s);
    let r = pin(&pinner(&["Add"], PinFloat::Float16), &mut m);
    assert!(r.changes.is_empty());
    assert_eq!(r.skipped[0].reason, "output 's' is int64, not float32");
    assert_eq!(count(&m.graph, "Cast"), 0);
}

#[test]
fn non_float_inputs_of_a_pinned_op_stay() {
    let mut m = Model::new(17);
    let g = &mut m.graph;
    let cond = input(g, "cond", DataType::Bool, &[4]);
    let a = input(g, "a", DataType::Float, &[4]);
    let b = input(g, "b", DataType::Float, &[4]);
    let w = op(g, "Where", &[cond, a, b], "w");
    output(g, w);
    let c = run(&pinner(&["Where"], PinFloat::Float16), &mut m);
    assert_eq!((c.get("pinned"), c.get("input casts")), (1, 2), "{c}");
    assert_eq!(m.graph.input(w.node, 0), Some(cond));
}

#[test]
fn a_read_mean_output_stays_float32_and_is_read_directly() {
    let mut m = Model::new(17);
    let g = &mut m.graph;
    let x = input(g, "x", DataType::Float, &[2, 8]);
    let s = init(g, "scale", f32s(&[1.0; 8]));
    let b = init(g, "bias", f32s(&[0.0; 8]));
    let ln = node(
        g,
        Node::op("LayerNormalization", "ln", &["y", "mean", "inv"]),
        &[x, s, b],
    );
    let mean = ValueRef::new(ln.node, 1);
    let neg = op(g, "Neg", &[mean], "neg");
    output(g, ln);
    output(g, mean);
    output(g, neg);
    let c = run(&pinner(&["LayerNormalization"], PinFloat::Float16), &mut m);
    assert_eq!((c.get("pinned"), c.get("output casts")), (1, 1), "{c}");
    let g = &m.graph;
    assert_eq!(ty(g, ln), Some(DataType::Float16));
    // Mean is of stash_type (float32): no Cast, same readers.
    assert_eq!(ty(g, mean), Some(DataType::Float));
    assert_eq!(g.outputs[1].value, mean);
    assert_eq!(g.input(neg.node, 0), Some(mean));
    assert_eq!(output_names(&m), ["y", "mean", "neg"]);
}

#[test]
fn every_read_float_output_gets_its_cast() {
    let mut m = Model::new(18);
    let g = &mut m.graph;
    let x = input(g, "x", DataType::Float, &[2, 8]);
    let split = node(
        g,
        Node::op("Split", "split", &["a", "b", "c"])
            .with_attr("axis", AttrValue::Int(1))
            .with_attr("num_outputs", AttrValue::Int(3)),
        &[x],
    );
    let (a, b, c) = (
        split,
        ValueRef::new(split.node, 1),
        ValueRef::new(split.node, 2),
    );
    let r = op(g, "Relu", &[b], "r");
    output(g, a);
    output(g, r);
    let ch = run(&pinner(&["Split"], PinFloat::Float16), &mut m);
    assert_eq!((ch.get("pinned"), ch.get("output casts")), (1, 2), "{ch}");
    let g = &m.graph;
    for v in [a, b, c] {
        assert_eq!(ty(g, v), Some(DataType::Float16), "{}", g.value_name(v));
    }
    let rin = g.input(r.node, 0).unwrap();
    assert_eq!(
        (cast_target(g, rin), g.value_name(rin)),
        (DataType::Float, "b")
    );
    assert_eq!(output_names(&m), ["a", "r"]);
}

#[test]
fn a_read_output_of_unknown_type_leaves_the_op_alone() {
    let mut m = Model::new(17);
    let g = &mut m.graph;
    let x = input(g, "x", DataType::Float, &[2, 8]);
    let n = node(g, Node::op("Softmax", "s", &["y", "odd"]), &[x]);
    output(g, n);
    output(g, ValueRef::new(n.node, 1));
    let r = pin(&pinner(&["Softmax"], PinFloat::Float16), &mut m);
    assert!(r.changes.is_empty());
    assert_eq!(r.skipped[0].reason, "type of output 1 'odd' is unknown");
}

#[test]
fn unused_mean_output_keeps_its_stash_type() {
    let mut m = Model::new(17);
    let g = &mut m.graph;
    let x = input(g, "x", DataType::Float, &[2, 8]);
    let s = init(g, "scale", f32s(&[1.0; 8]));
    let b = init(g, "bias", f32s(&[0.0; 8]));
    let ln = node(
        g,
        Node::op("LayerNormalization", "ln", &["y", "mean"]),
        &[x, s, b],
    );
    output(g, ln);
    run(&pinner(&["LayerNormalization"], PinFloat::Float16), &mut m);
    assert_eq!(ty(&m.graph, ln), Some(DataType::Float16));
    assert_eq!(
        ty(&m.graph, ValueRef::new(ln.node, 1)),
        Some(DataType::Float)
    );
}

#[test]
fn constants_beyond_float16_range_leave_the_op_alone() {
    let (mut m, _, _) = layer_norm_model(&[1e5; 8]);
    let r = pin(&pinner(&["LayerNormalization"], PinFloat::Float16), &mut m);
    assert!(r.changes.is_empty());
    assert_eq!(
        r.skipped[0].reason,
        "constant 'scale' has values beyond float16's range"
    );
    // bfloat16 has float32's range.
    let (mut m, _, _) = layer_norm_model(&[1e5; 8]);
    let r = pin(&pinner(&["LayerNormalization"], PinFloat::Bfloat16), &mut m);
    assert_eq!(r.changes.get("pinned"), 1);
}

#[test]
fn float_tensor_attributes_are_converted() {
    let mut m = Model::new(17);
    let g = &mut m.graph;
    let x = input(g, "x", DataType::Float, &[4]);
    let t = Tensor::scalar(0.1f32);
    let y = node(
        g,
        Node::op("Relu", "r", &["y"]).with_attr("hint", AttrValue::Tensor(t)),
        &[x],
    );
    output(g, y);
    let c = run(&pinner(&["Relu"], PinFloat::Float16), &mut m);
    assert_eq!(c.get("attributes converted"), 1);
    match m.graph[y.node].attr("hint") {
        Some(AttrValue::Tensor(t)) => {
            assert_eq!(t.to_vec::<f16>().unwrap(), vec![f16::from_f32(0.1)])
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn bfloat16_needs_opset_13() {
    let mut m = Model::new(12);
    let g = &mut m.graph;
    let x = input(g, "x", DataType::Float, &[2, 8]);
    let y = softmax(g, x, "y");
    output(g, y);
    let r = pin(&pinner(&["Softmax"], PinFloat::Bfloat16), &mut m);
    assert!(r.changes.is_empty());
    assert!(r.skipped[0].reason.contains("opset 13"), "{:?}", r.skipped);
    // float16 Casts exist since opset 6.
    let r = pin(&pinner(&["Softmax"], PinFloat::Float16), &mut m);
    assert_eq!(r.changes.get("pinned"), 1);
}

#[test]
fn unknown_types_leave_the_op_alone() {
    let mut m = Model::new(17);
    let g = &mut m.graph;
    let x = ValueRef::new(g.add_node(Node::input(ValueInfo::new("x"))), 0);
    let y = softmax(g, x, "y");
    output(g, y);
    let r = pin(&pinner(&["Softmax"], PinFloat::Float16), &mut m);
    assert!(r.changes.is_empty());
    assert!(r.skipped[0].reason.contains("unknown"), "{:?}", r.skipped);
}

#[test]
fn untyped_intermediates_are_typed_by_inference_first() {
    // The Relu output has no declared type; shape inference gives it float32.
    let mut m = Model::new(17);
    let g = &mut m.graph;
    let x = input(g, "x", DataType::Float, &[2, 8]);
    let r = op(g, "Relu", &[x], "r");
    let y = softmax(g, r, "y");
    output(g, y);
    assert_eq!(m.graph.value_info(r).elem_type(), None);
    let c = run(&pinner(&["Softmax"], PinFloat::Float16), &mut m);
    assert_eq!(c.get("pinned"), 1);
}

#[test]
fn nodes_in_if_branches_are_pinned() {
    let mut m = Model::new(17);
    let x = input(&mut m.graph, "x", DataType::Float, &[2, 8]);
    let cond = input(&mut m.graph, "cond", DataType::Bool, &[]);
    let mut then_g = Graph::new("then");
    // As loaded: the body's reference to x declares no type; the pass finds it outside.
    let outer = ValueRef::new(then_g.add_node(Node::outer("x")), 0);
    let t = softmax(&mut then_g, outer, "t_out");
    output(&mut then_g, t);
    let mut else_g = Graph::new("else");
    let eo = ValueRef::new(else_g.add_node(Node::outer("x")), 0);
    let e = op(&mut else_g, "Neg", &[eo], "e_out");
    output(&mut else_g, e);
    let iff = node(
        &mut m.graph,
        Node::op("If", "if", &["y"])
            .with_attr("then_branch", AttrValue::Graph(Box::new(then_g)))
            .with_attr("else_branch", AttrValue::Graph(Box::new(else_g))),
        &[cond],
    );
    m.graph.capture(x, iff.node);
    output(&mut m.graph, iff);
    let r = pin(&pinner(&["Softmax"], PinFloat::Float16), &mut m);
    assert_eq!(r.changes.get("pinned"), 1, "{:?}", r);
    assert_eq!(r.pinned[0].graph, "then");
    let body = m.graph[iff.node].subgraphs().next().unwrap();
    let sm = find(body, "Softmax");
    let xin = body.input(sm, 0).unwrap();
    assert_eq!(cast_target(body, xin), DataType::Float16);
    assert!(matches!(
        body[body.input(xin.node, 0).unwrap().node].kind,
        NodeKind::Outer
    ));
    let out = body.outputs[0].value;
    assert_eq!(body.value_name(out), "t_out");
    assert_eq!(cast_target(body, out), DataType::Float);
    // The main graph still captures x and nothing else.
    assert_eq!(m.graph.captures(iff.node), vec![x]);
    assert!(m
        .graph
        .consumers(x)
        .iter()
        .all(|&(_, s)| s == InputSlot::Captured));
    // The type lent to the reference is not left behind (it would be saved as value_info).
    assert!(body[outer.node].outputs[0].is_bare());
}

#[test]
fn for_ort_cpu_simulates_what_ort_lacks() {
    let p = PinPrecision::for_ort_cpu(set(&["LayerNormalization", "Softmax"]), PinFloat::Bfloat16);
    assert_eq!(p.simulate, set(&["Softmax"]));
    assert_eq!(p.name(), "pin-precision");
    assert_eq!(CancelCasts.name(), "cancel-casts");
}

#[test]
fn no_ops_no_change() {
    let (mut m, _, _) = layer_norm_model(&[1.0; 8]);
    let before = m.clone();
    let r = pin(&pinner(&[], PinFloat::Float16), &mut m);
    assert!(r.changes.is_empty() && r.pinned.is_empty() && r.skipped.is_empty());
    assert_eq!(m, before);
}

#[test]
fn a_body_reading_the_pinned_output_reads_the_float32_cast() {
    let (mut m, _, ln_out) = layer_norm_model(&[1.0; 8]);
    let cond = input(&mut m.graph, "cond", DataType::Bool, &[]);
    let branch = |name: &str| {
        let mut b = Graph::new(name);
        let y = ValueRef::new(b.add_node(Node::outer("y")), 0);
        let out = format!("{name}_out");
        let n = op(&mut b, "Neg", &[y], &out);
        output(&mut b, n);
        b
    };
    let iff = node(
        &mut m.graph,
        Node::op("If", "if", &["z"])
            .with_attr("then_branch", AttrValue::Graph(Box::new(branch("then"))))
            .with_attr("else_branch", AttrValue::Graph(Box::new(branch("else")))),
        &[cond],
    );
    m.graph.capture(ln_out, iff.node);
    output(&mut m.graph, iff);
    run(&pinner(&["LayerNormalization"], PinFloat::Float16), &mut m);
    let g = &m.graph;
    let captured = g.captures(iff.node);
    assert_eq!(captured.len(), 1);
    assert_eq!(g.value_name(captured[0]), "y");
    assert_eq!(cast_target(g, captured[0]), DataType::Float);
    for body in g[iff.node].subgraphs() {
        let outer: Vec<&str> = body
            .nodes()
            .filter(|(_, n)| matches!(n.kind, NodeKind::Outer))
            .map(|(_, n)| n.outputs[0].name.as_str())
            .collect();
        assert_eq!(outer, ["y"]);
    }
}

#[test]
fn pinning_is_deterministic() {
    let build = || {
        let (mut m, ln_out, _, _) = chain(true);
        let sm = softmax(&mut m.graph, ln_out, "again");
        output(&mut m.graph, sm);
        m
    };
    let p = PinPrecision {
        ops: set(&["LayerNormalization", "Softmax"]),
        float: PinFloat::Float16,
        simulate: set(&["Softmax"]),
    };
    let (mut a, mut b) = (build(), build());
    for m in [&mut a, &mut b] {
        run(&p, m);
        run(&CancelCasts, m);
    }
    assert_eq!(a.to_proto(), b.to_proto());
}

fn simplified_layer_norm(g: &mut Graph, x: ValueRef, scale: ValueRef, out: &str) -> ValueRef {
    node(
        g,
        Node::op("SimplifiedLayerNormalization", out, &[out])
            .with_attr("axis", AttrValue::Int(-1))
            .with_attr("epsilon", AttrValue::Float(1e-5))
            .with_attr("stash_type", AttrValue::Int(1)),
        &[x, scale],
    )
}

#[test]
fn simplified_layer_norm_pins_like_layer_norm() {
    let mut m = Model::new(17);
    let g = &mut m.graph;
    let x = input(g, "x", DataType::Float, &[2, 8]);
    let s = init(g, "scale", f32s(&[1.5; 8]));
    let y = simplified_layer_norm(g, x, s, "y");
    output(g, y);
    let r = pin(
        &PinPrecision::for_ort_cpu(set(&["SimplifiedLayerNormalization"]), PinFloat::Float16),
        &mut m,
    );
    assert_eq!(r.changes.get("pinned"), 1, "{}", r.changes);
    assert!(!r.pinned[0].simulated, "ORT's CPU has a float16 kernel");
    let g = &m.graph;
    assert_eq!(
        cast_target(g, g.input(y.node, 0).unwrap()),
        DataType::Float16
    );
    assert_eq!(
        g.constant_input(y.node, 1).unwrap().dtype(),
        DataType::Float16
    );
    assert_eq!(ty(g, y), Some(DataType::Float16));
    assert_eq!(output_names(&m), ["y"]);
}

#[test]
fn simplified_layer_norm_inv_std_var_keeps_its_type() {
    let mut m = Model::new(17);
    let g = &mut m.graph;
    let x = input(g, "x", DataType::Float, &[2, 8]);
    let s = init(g, "scale", f32s(&[1.5; 8]));
    let n = node(
        g,
        Node::op("SimplifiedLayerNormalization", "sln", &["y", "inv"])
            .with_attr("axis", AttrValue::Int(-1)),
        &[x, s],
    );
    let inv = ValueRef::new(n.node, 1);
    output(g, n);
    output(g, inv);
    *g.value_info_mut(inv) =
        ValueInfo::tensor("inv", DataType::Float, &[Dim::Known(2), Dim::Known(1)]);
    let r = pin(
        &pinner(&["SimplifiedLayerNormalization"], PinFloat::Float16),
        &mut m,
    );
    assert_eq!(r.changes.get("output casts"), 1, "{}", r.changes);
    let g = &m.graph;
    assert_eq!(
        ty(g, inv),
        Some(DataType::Float),
        "inv_std_var is float32 (U)"
    );
    assert_eq!(g.outputs[1].value, inv);
}

/// x [2, 8] → decomposed RMSNorm (Pow, ReduceMean, Add, Sqrt, Div(1, ·), Mul(x, ·),
/// Mul(weight, ·)) → y, plus a residual Add(x, y) → z: the Llama form.
fn rmsnorm_model() -> (Model, ValueRef, Vec<ValueRef>, ValueRef, ValueRef) {
    let mut m = Model::new(17);
    let g = &mut m.graph;
    let x = input(g, "x", DataType::Float, &[2, 8]);
    let two = init(g, "two", Tensor::scalar(2.0f32));
    let sq = op(g, "Pow", &[x, two], "sq");
    let ms = node(
        g,
        Node::op("ReduceMean", "ms", &["ms"]).with_attr("axes", AttrValue::Ints(vec![-1])),
        &[sq],
    );
    let eps = init(g, "eps", Tensor::scalar(1e-5f32));
    let ve = op(g, "Add", &[ms, eps], "ve");
    let rms = op(g, "Sqrt", &[ve], "rms");
    let one = init(g, "one", Tensor::scalar(1.0f32));
    let inv = op(g, "Div", &[one, rms], "inv");
    let normed = op(g, "Mul", &[x, inv], "normed");
    let w = init(
        g,
        "weight",
        f32s(&[0.1, 1.0, 2.0, -3.5, 1e-3, 7.0, 0.3, 1.5]),
    );
    let y = op(g, "Mul", &[w, normed], "y");
    let z = op(g, "Add", &[x, y], "z");
    output(g, z);
    (m, x, vec![sq, ms, ve, rms, inv, normed, y], y, z)
}

#[test]
fn a_decomposed_rmsnorm_is_pinned_as_a_unit() {
    let (mut m, x, members, y, z) = rmsnorm_model();
    // Mul and Add are pinned by type too: the unit's Muls and Add are left to the unit.
    let p = pinner(&["RMSNormalization", "Mul", "Add"], PinFloat::Float16);
    let r = pin(&p, &mut m);
    let c = &r.changes;
    assert_eq!(c.get("rmsnorm units"), 1, "{c}");
    assert_eq!(
        r.pinned.len(),
        2,
        "the unit and the residual Add: {:?}",
        r.pinned
    );
    assert_eq!(r.pinned[0].op_type, "RMSNorm (decomposed)");
    let skipped: Vec<&str> = r.skipped.iter().map(|s| s.reason.as_str()).collect();
    assert_eq!(
        skipped,
        vec!["part of a decomposed RMSNorm pinned as a unit"; 3],
        "Add(eps), Mul(x, inv), Mul(weight)"
    );
    let g = &m.graph;
    // Pow and Mul(x, ·) read x rounded through float16; inside, everything stays float32.
    for &reader in &[members[0], members[5]] {
        let rx = g.input(reader.node, 0).unwrap();
        assert_eq!(cast_target(g, rx), DataType::Float);
        let low = g.input(rx.node, 0).unwrap();
        assert_eq!(cast_target(g, low), DataType::Float16);
        assert_eq!(g.input(low.node, 0), Some(x));
    }
    for &v in &members {
        assert_eq!(ty(g, v), Some(DataType::Float), "{}", g.value_name(v));
        assert!(units::in_pinned_unit(&g[v.node]));
    }
    // The weight is rounded and stays float32.
    let w = g.constant_input(y.node, 0).unwrap();
    assert_eq!(w.dtype(), DataType::Float);
    assert_eq!(w.to_vec::<f32>().unwrap()[0], f16::from_f32(0.1).to_f32());
    assert!(g.find_value("weight").is_none());
    // The output is rounded: Mul → Cast(f16) → Cast(f32) named "y", which the residual reads.
    assert_eq!(g.value_name(y), "y_unrounded");
    let y_now = g.find_value("y").unwrap();
    assert_eq!(cast_target(g, y_now), DataType::Float);
    let y_low = g.input(y_now.node, 0).unwrap();
    assert_eq!(cast_target(g, y_low), DataType::Float16);
    assert_eq!(g.input(y_low.node, 0), Some(y));
    // The residual Add, pinned by type, reads a float16 x and y.
    let z_in: Vec<DataType> = g
        .inputs(z.node)
        .into_iter()
        .map(|v| ty(g, v.unwrap()).unwrap())
        .collect();
    assert_eq!(z_in, [DataType::Float16; 2]);
    // The epsilon and the literals are not rounded (a fused kernel takes epsilon as float32).
    assert_eq!(
        g.constant_input(members[2].node, 1)
            .unwrap()
            .to_vec::<f32>()
            .unwrap(),
        [1e-5]
    );
    // A second run changes nothing.
    let again = pin(&p, &mut m);
    assert!(again.changes.is_empty(), "{}", again.changes);
    assert!(again
        .skipped
        .iter()
        .any(|s| s.reason == "already pinned as a unit"));
}

#[test]
fn without_an_rmsnorm_op_the_decomposed_ops_pin_by_type() {
    let (mut m, _, members, _, _) = rmsnorm_model();
    let r = pin(&pinner(&["Pow"], PinFloat::Float16), &mut m);
    assert_eq!(r.changes.get("rmsnorm units"), 0);
    assert_eq!(r.changes.get("pinned"), 1);
    assert_eq!(ty(&m.graph, members[0]), Some(DataType::Float16));
    assert!(units::unit_nodes(&m.graph, &set(&["Pow"])).is_empty());
}

#[test]
fn both_fused_names_pin_the_unit_and_list_its_nodes() {
    for op_name in RMSNORM_OPS {
        let (mut m, _, members, _, _) = rmsnorm_model();
        let nodes = unit_nodes(&m.graph, &set(&[op_name]));
        assert_eq!(nodes.len(), members.len(), "{op_name}");
        assert!(members.iter().all(|v| nodes.contains(&v.node)));
        let r = pin(&pinner(&[op_name], PinFloat::Bfloat16), &mut m);
        assert_eq!(r.changes.get("rmsnorm units"), 1, "{op_name}");
    }
}
