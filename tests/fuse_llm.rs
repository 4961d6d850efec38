//! The decoder fusions (`fuse-rmsnorm`, `note-rotary`, `note-silu`) on `models/llama_tiny`
//! and on hand-built RMSNorm variants, checked in ONNX Runtime: the optimize pipeline fuses the
//! 5 RMSNorms (2 per layer + the final norm) into ORT's SimplifiedLayerNormalization when
//! contrib ops are allowed, notes 4 rotary embeddings (q and k per layer) and 2 SiLUs, and the
//! outputs of both test data sets (prefill, one decode step) agree with the unoptimized model
//! within rtol 1e-4 / atol 1e-5. Each exporter variant of the decomposed RMSNorm is fused into
//! SimplifiedLayerNormalization (opset 17/18, contrib) and RMSNormalization (opset 23), and
//! ORT computes the same outputs before and after. Pinned to float16, the fused op (ORT's
//! native float16 kernel) and the decomposed RMSNorm pinned as a unit give the same logits,
//! and the unit survives hidden states whose squares overflow float16.

use std::collections::BTreeSet;

use kiln_backends::compare::{allclose, Tolerance};
use kiln_backends::runtime::{Session, SessionOptions};
use kiln_backends::tensors::{read_test_data_set, IoSpec};
use kiln_backends::{NamedValues, Value};
use kiln_passes::fuse::{FuseRmsNorm, ROTARY_KEY, SILU_KEY};
use kiln_passes::ir::Model;
use kiln_passes::optimize::{optimize, OptimizeOptions};
use kiln_passes::pipeline::Pass;
use kiln_passes::precision::{CancelCasts, PinPrecision, PinReport};
use kiln_passes::quant::PinFloat;
use kiln_passes::tensor::Tensor;
use kiln_proto::onnx::attribute_proto::AttributeType;
use kiln_proto::onnx::{AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto};
use kiln_tests::proto_build::{attr_int, attr_ints, float_vi, noise};
use kiln_tests::repo_root;

const TOL: Tolerance = Tolerance {
    rtol: 1e-4,
    atol: 1e-5,
};

fn run(model: &ModelProto, feeds: &NamedValues) -> NamedValues {
    let mut s = Session::from_model_with(model, &SessionOptions::as_written())
        .unwrap_or_else(|e| panic!("ORT cannot load the model: {e}"));
    s.run(feeds)
        .unwrap_or_else(|e| panic!("ORT cannot run it: {e}"))
}

/// Largest |a − b| over every output (outputs compared by position, names checked).
fn max_abs_diff(before: &NamedValues, after: &NamedValues) -> f64 {
    let mut worst = 0f64;
    for ((nb, vb), (na, va)) in before.iter().zip(after) {
        assert_eq!(nb, na);
        let (Value::Tensor(b), Value::Tensor(a)) = (vb, va) else {
            panic!("output '{nb}' is not a tensor");
        };
        let (b, a) = (b.to_f64_vec().unwrap(), a.to_f64_vec().unwrap());
        for (x, y) in b.iter().zip(&a) {
            worst = worst.max((x - y).abs());
        }
    }
    worst
}

fn assert_same(before: &NamedValues, after: &NamedValues, what: &str) {
    assert_eq!(before.len(), after.len(), "{what}: output count");
    for ((nb, vb), (_, va)) in before.iter().zip(after) {
        if let Err(e) = allclose(vb, va, TOL) {
            panic!("{what}: output '{nb}' differs: {e:?}");
        }
    }
}

fn op_count(m: &Model, op: &str) -> usize {
    m.graph
        .nodes()
        .filter(|(_, n)| n.is_operator() && n.op_type() == op)
        .count()
}

fn marked(m: &Model, key: &str, value: Option<&str>) -> usize {
    m.graph
        .nodes()
        .filter(|(_, n)| {
            n.metadata_props
                .iter()
                .any(|e| e.key == key && value.is_none_or(|v| e.value == v))
        })
        .count()
}

/// A model under models/ as loaded (weights resolved into the proto).
fn llama_proto(name: &str) -> ModelProto {
    let dir = repo_root().join("models").join(name);
    kiln_proto::load_model(&dir.join("model.onnx"))
        .unwrap_or_else(|e| panic!("{name} loads: {e}"))
        .model
}

/// The feeds and stored outputs of test data set `set` of models/`name`.
fn llama_data(name: &str, proto: &ModelProto, set: &str) -> (NamedValues, NamedValues) {
    let s = Session::from_model_with(proto, &SessionOptions::as_written()).unwrap();
    let ins: Vec<_> = s.inputs().iter().map(|i| IoSpec::tensor(&i.name)).collect();
    let outs: Vec<_> = s
        .outputs()
        .iter()
        .map(|o| IoSpec::tensor(&o.name))
        .collect();
    let dir = repo_root().join("models").join(name).join(set);
    read_test_data_set(&dir, &ins, &outs).unwrap()
}

const SETS: [&str; 2] = ["test_data_set_0", "test_data_set_1"];

/// llama_tiny through `kiln optimize`'s pipeline.
fn optimize_llama(proto: &ModelProto, allow_contrib: bool) -> Model {
    let mut model = Model::from_proto(proto).unwrap();
    let opts = OptimizeOptions {
        allow_contrib,
        ..OptimizeOptions::default()
    };
    optimize(&mut model, &opts).expect("optimize runs");
    model.graph.verify().unwrap();
    model
}

/// llama_tiny optimized, and checked in ORT against the original on both test data sets
/// (and against the stored outputs); returns the model and the worst max |Δ|.
fn optimized_llama(allow_contrib: bool) -> (Model, f64) {
    optimized("llama_tiny", &SETS, 5, allow_contrib)
}

/// models/`name` optimized and checked in ORT against the original on `sets` (and against
/// the `outputs` stored outputs); returns the model and the worst max |Δ|.
fn optimized(name: &str, sets: &[&str], outputs: usize, allow_contrib: bool) -> (Model, f64) {
    let proto = llama_proto(name);
    let model = optimize_llama(&proto, allow_contrib);
    let after_proto = model.to_proto();
    let mut worst = 0f64;
    for &set in sets {
        let (feeds, expected) = llama_data(name, &proto, set);
        let before = run(&proto, &feeds);
        let after = run(&after_proto, &feeds);
        assert_same(&before, &after, set);
        assert_eq!(expected.len(), outputs, "{set}: outputs stored");
        assert_same(&expected, &after, &format!("{set} (stored outputs)"));
        let d = max_abs_diff(&before, &after);
        eprintln!("{name} {set}, allow_contrib {allow_contrib}: max |Δ| {d:.2e}");
        worst = worst.max(d);
    }
    (model, worst)
}

/// Pins `ops` to float16 as `kiln quantize` does on ORT's CPU (the twin where ORT lacks a
/// float16 kernel), then cancels Cast pairs.
fn pinned(model: &Model, ops: &[&str]) -> (ModelProto, PinReport) {
    let mut m = model.clone();
    let ops: BTreeSet<String> = ops.iter().map(|s| s.to_string()).collect();
    let report = PinPrecision::for_ort_cpu(ops, PinFloat::Float16)
        .pin(&mut m)
        .unwrap();
    m.graph.verify().unwrap();
    CancelCasts.run(&mut m).unwrap();
    m.graph.verify().unwrap();
    (m.to_proto(), report)
}

#[test]
fn llama_tiny_rmsnorm_fuses_with_contrib_and_outputs_agree() {
    let (m, worst) = optimized_llama(true);
    assert_eq!(
        op_count(&m, "SimplifiedLayerNormalization"),
        5,
        "2 per layer + the final norm"
    );
    for op in ["Pow", "ReduceMean", "Sqrt"] {
        assert_eq!(op_count(&m, op), 0, "{op} left");
    }
    assert_eq!(marked(&m, SILU_KEY, Some("Rotary")), 4, "q and k per layer");
    assert_eq!(marked(&m, ROTARY_KEY, None), 4);
    assert_eq!(marked(&m, SILU_KEY, Some("SiLU")), 2, "one MLP per layer");
    eprintln!("llama_tiny with SimplifiedLayerNormalization: worst max |Δ| {worst:.2e}");
}

/// The same fusions on a real `torch.onnx.export(dynamo=True)` of transformers'
/// LlamaForCausalLM: `Reciprocal` rsqrt, gain first in the last Mul, rotary from in-graph
/// Cos/Sin of position × inv_freq, a right-padded second row in the test data.
#[test]
fn llama_dynamo_export_fuses_the_same_way_and_outputs_agree() {
    let (m, worst) = optimized("llama_dynamo", &["test_data_set_0"], 1, true);
    assert_eq!(op_count(&m, "SimplifiedLayerNormalization"), 5);
    for op in ["Pow", "ReduceMean", "Sqrt"] {
        assert_eq!(op_count(&m, op), 0, "{op} left");
    }
    assert_eq!(marked(&m, ROTARY_KEY, None), 4, "q and k per layer");
    assert_eq!(marked(&m, SILU_KEY, Some("SiLU")), 2, "one MLP per layer");
    eprintln!("llama_dynamo with SimplifiedLayerNormalization: worst max |Δ| {worst:.2e}");
}

#[test]
fn llama_tiny_without_contrib_keeps_the_decomposed_rmsnorm() {
    let (m, _) = optimized_llama(false);
    assert_eq!(op_count(&m, "SimplifiedLayerNormalization"), 0);
    assert_eq!(op_count(&m, "RMSNormalization"), 0);
    assert_eq!(op_count(&m, "Pow"), 5);
    assert_eq!(marked(&m, SILU_KEY, Some("Rotary")), 4);
}

// ---------------------------------------------------------------------------------------------
// hand-built variants
// ---------------------------------------------------------------------------------------------

/// A graph written node by node, exporter style (Constant nodes for literals).
struct Graph {
    g: GraphProto,
    n: usize,
}

impl Graph {
    fn node(&mut self, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> String {
        self.n += 1;
        let out = format!("/{op}_{}_output_0", self.n);
        self.g.node.push(NodeProto {
            op_type: op.into(),
            name: format!("/{op}_{}", self.n),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.clone()],
            attribute: attrs,
            ..NodeProto::default()
        });
        out
    }

    fn constant(&mut self, t: Tensor) -> String {
        let attr = AttributeProto {
            name: "value".into(),
            r#type: AttributeType::Tensor as i32,
            t: Some(t.to_proto("")),
            ..AttributeProto::default()
        };
        self.node("Constant", &[], vec![attr])
    }
}

/// One exporter's way of writing the RMSNorm of x [2, 5, 16] with a [16] weight.
#[derive(Debug, Clone, Copy)]
struct Variant {
    pow: bool,
    /// 0: Mul(x, Div(1, ·)); 1: Mul(x, Reciprocal(·)); 2: Div(x, ·).
    inv: u8,
    casts: bool,
}

/// The RMSNorm of `v` (outputs: the residual sum, then the norm itself) and its feeds: rows
/// of growing scale, the largest about `scale`.
fn rmsnorm_model(v: Variant, opset: i64) -> (ModelProto, NamedValues) {
    rmsnorm_model_scaled(v, opset, 10.0)
}

fn rmsnorm_model_scaled(v: Variant, opset: i64, scale: f32) -> (ModelProto, NamedValues) {
    let mut g = Graph {
        g: GraphProto {
            name: "rmsnorm".into(),
            ..GraphProto::default()
        },
        n: 0,
    };
    let dims = [2, 5, 16];
    g.g.input.push(float_vi("x", &dims));
    let mut x = "x".to_string();
    if v.casts {
        x = g.node("Cast", &[&x], vec![attr_int("to", 1)]);
    }
    let sq = if v.pow {
        let two = g.constant(Tensor::scalar(2.0f32));
        g.node("Pow", &[&x, &two], vec![])
    } else {
        g.node("Mul", &[&x, &x], vec![])
    };
    let ms = if opset >= 18 {
        let axes = g.constant(Tensor::from_vec(vec![1], vec![-1i64]).unwrap());
        g.node("ReduceMean", &[&sq, &axes], vec![])
    } else {
        g.node("ReduceMean", &[&sq], vec![attr_ints("axes", &[-1])])
    };
    let eps = g.constant(Tensor::scalar(1e-6f32));
    let ve = g.node("Add", &[&ms, &eps], vec![]);
    let rms = g.node("Sqrt", &[&ve], vec![]);
    let mut y = match v.inv {
        0 => {
            let one = g.constant(Tensor::scalar(1.0f32));
            let inv = g.node("Div", &[&one, &rms], vec![]);
            g.node("Mul", &[&x, &inv], vec![])
        }
        1 => {
            let inv = g.node("Reciprocal", &[&rms], vec![]);
            g.node("Mul", &[&inv, &x], vec![])
        }
        _ => g.node("Div", &[&x, &rms], vec![]),
    };
    if v.casts {
        y = g.node("Cast", &[&y], vec![attr_int("to", 1)]);
    }
    let w: Vec<f32> = noise(16, 7).iter().map(|w| 1.0 + 0.3 * w).collect();
    g.g.initializer
        .push(Tensor::from_vec(vec![16], w).unwrap().to_proto("weight"));
    let out = g.node("Mul", &["weight", &y], vec![]);
    // A residual reads x too, as in a decoder layer.
    let res = g.node("Add", &[&x, &out], vec![]);
    g.g.output.push(float_vi(&res, &dims));
    g.g.output.push(float_vi(&out, &dims));
    let model = ModelProto {
        ir_version: 10,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: opset,
        }],
        producer_name: "kiln-tests".into(),
        graph: Some(g.g),
        ..ModelProto::default()
    };
    // Rows of different scales, so the normalization matters.
    let xs: Vec<f32> = noise(160, 3)
        .iter()
        .enumerate()
        .map(|(i, v)| v * scale * (1 + i / 16) as f32 / 10.0)
        .collect();
    let feeds = vec![(
        "x".to_string(),
        Value::Tensor(Tensor::from_vec(dims.to_vec(), xs).unwrap()),
    )];
    (model, feeds)
}

#[test]
fn every_rmsnorm_variant_fuses_and_ort_agrees() {
    let mut worst = 0f64;
    let mut cases = 0;
    for pow in [true, false] {
        for inv in 0..3 {
            for casts in [true, false] {
                let v = Variant { pow, inv, casts };
                for (opset, contrib, op) in [
                    (17, true, "SimplifiedLayerNormalization"),
                    (18, true, "SimplifiedLayerNormalization"),
                    (23, false, "RMSNormalization"),
                ] {
                    let (proto, feeds) = rmsnorm_model(v, opset);
                    let before = run(&proto, &feeds);
                    let mut m = Model::from_proto(&proto).unwrap();
                    kiln_passes::infer::InferShapes.run(&mut m).unwrap();
                    let c = FuseRmsNorm {
                        allow_contrib: contrib,
                    }
                    .run(&mut m)
                    .unwrap();
                    m.graph.verify().unwrap();
                    assert_eq!(c.iter().map(|(_, n)| n).sum::<usize>(), 1, "{v:?} {c}");
                    assert_eq!(op_count(&m, op), 1, "{v:?} opset {opset}");
                    let after = run(&m.to_proto(), &feeds);
                    assert_same(&before, &after, &format!("{v:?} opset {opset}"));
                    worst = worst.max(max_abs_diff(&before, &after));
                    cases += 1;
                }
            }
        }
    }
    assert_eq!(cases, 36);
    eprintln!("{cases} RMSNorm variants fused, worst max |Δ| in ORT {worst:.2e}");
}

/// The weight really is carried over: dropping it would change the outputs.
#[test]
fn the_check_sees_a_dropped_weight() {
    let v = Variant {
        pow: true,
        inv: 0,
        casts: true,
    };
    let (proto, feeds) = rmsnorm_model(v, 17);
    let before = run(&proto, &feeds);
    let mut m = Model::from_proto(&proto).unwrap();
    kiln_passes::infer::InferShapes.run(&mut m).unwrap();
    FuseRmsNorm {
        allow_contrib: true,
    }
    .run(&mut m)
    .unwrap();
    let mut p = m.to_proto();
    let g = p.graph.as_mut().unwrap();
    let sln = g
        .node
        .iter_mut()
        .find(|n| n.op_type == "SimplifiedLayerNormalization")
        .unwrap();
    let ones = Tensor::from_vec(vec![16], vec![1f32; 16]).unwrap();
    sln.input[1] = "ones".into();
    g.initializer.push(ones.to_proto("ones"));
    let after = run(&p, &feeds);
    assert!(
        max_abs_diff(&before, &after) > 1e-2,
        "a fused op without the weight must differ"
    );
}

// ---------------------------------------------------------------------------------------------
// pinning
// ---------------------------------------------------------------------------------------------

#[test]
fn llama_tiny_rmsnorm_pins_to_float16_fused_or_as_a_unit() {
    let proto = llama_proto("llama_tiny");
    let (fused, r) = pinned(
        &optimize_llama(&proto, true),
        &["SimplifiedLayerNormalization"],
    );
    assert_eq!(r.changes.get("pinned"), 5, "{}", r.changes);
    assert!(
        r.pinned.iter().all(|p| !p.simulated),
        "ORT has the float16 kernel"
    );
    let (unit, r) = pinned(
        &optimize_llama(&proto, false),
        &["SimplifiedLayerNormalization"],
    );
    assert_eq!(r.changes.get("rmsnorm units"), 5, "{}", r.changes);
    assert_eq!(r.changes.get("pinned") + r.changes.get("simulated"), 0);
    let (mut to_float, mut between) = (0f64, 0f64);
    for set in SETS {
        let (feeds, _) = llama_data("llama_tiny", &proto, set);
        let float = run(&proto, &feeds);
        let f = run(&fused, &feeds);
        let u = run(&unit, &feeds);
        let d = max_abs_diff(&float, &f).max(max_abs_diff(&float, &u));
        to_float = to_float.max(d);
        between = between.max(max_abs_diff(&f, &u));
    }
    eprintln!(
        "llama_tiny RMSNorm in float16: max |Δ| vs float32 {to_float:.2e}; fused (ORT float16 \
         kernel) vs decomposed unit {between:.2e}"
    );
    assert!(to_float > 0.0, "pinning changed nothing");
    assert!(to_float < 5e-3, "{to_float}");
    assert!(between < 1e-3, "{between}");
}

/// Rows whose largest values are about 1000: x² overflows float16 (65504). Pinned as a unit
/// (float32 inside), the norm stays close; pinned op by op it collapses.
#[test]
fn a_unit_survives_squares_float16_cannot_hold() {
    let v = Variant {
        pow: true,
        inv: 0,
        casts: false,
    };
    let (proto, feeds) = rmsnorm_model_scaled(v, 17, 1000.0);
    let model = Model::from_proto(&proto).unwrap();
    let norm = |out: &NamedValues| match &out[1].1 {
        Value::Tensor(t) => t.to_f64_vec().unwrap(),
        _ => panic!("not a tensor"),
    };
    let float = norm(&run(&proto, &feeds));
    let (unit, r) = pinned(&model, &["RMSNormalization"]);
    assert_eq!(r.changes.get("rmsnorm units"), 1);
    let (per_op, _) = pinned(&model, &["Pow", "ReduceMean", "Add", "Sqrt", "Div", "Mul"]);
    let err = |y: &[f64]| {
        y.iter()
            .zip(&float)
            .map(|(a, b)| {
                if a.is_finite() {
                    (a - b).abs()
                } else {
                    f64::INFINITY
                }
            })
            .fold(0f64, f64::max)
    };
    let scale = float.iter().fold(0f64, |m, v| m.max(v.abs()));
    let (e_unit, e_op) = (
        err(&norm(&run(&unit, &feeds))),
        err(&norm(&run(&per_op, &feeds))),
    );
    eprintln!(
        "|x| up to 1000, norm up to {scale:.2}: max |Δ| unit {e_unit:.2e}, op by op {e_op:.2e}"
    );
    assert!(e_unit < 5e-3 * scale, "{e_unit}");
    assert!(e_op > 0.5 * scale, "{e_op}");
}
