//! The fusions on small models built the way exporters write them (Constant nodes for
//! literals, initializers for weights): each fires the expected number of times and ONNX
//! Runtime computes the same outputs before and after (rtol 1e-4, atol 1e-5). Also sweeps
//! over the ONNX backend test models and `models/`: wherever a fusion fires, outputs match.

use std::path::{Path, PathBuf};

use kiln_backends::compare::{allclose, Tolerance};
use kiln_backends::runtime::{Session, SessionOptions};
use kiln_backends::tensors::{read_test_data_set, IoSpec};
use kiln_backends::{NamedValues, Value};
use kiln_passes::fuse::{
    fusion_passes, FindAttention, FoldBias, FuseConvBn, FuseGelu, FuseLayerNorm, FuseMatMulAdd,
    FuseOptions, NoteActivations, NoteSilu,
};
use kiln_passes::ir::Model;
use kiln_passes::pipeline::{Changes, Pass, Pipeline};
use kiln_passes::tensor::Tensor;
use kiln_proto::onnx::attribute_proto::AttributeType;
use kiln_proto::onnx::{AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto};
use kiln_tests::proto_build::{attr_int, attr_ints, float_vi, noise};

const TOL: Tolerance = Tolerance {
    rtol: 1e-4,
    atol: 1e-5,
};

fn a_float(name: &str, f: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Float as i32,
        f: Some(f),
        ..AttributeProto::default()
    }
}

/// A model under construction, with random feeds for its inputs.
struct Builder {
    opset: i64,
    graph: GraphProto,
    feeds: NamedValues,
    n: usize,
}

impl Builder {
    fn new(opset: i64) -> Builder {
        Builder {
            opset,
            graph: GraphProto {
                name: "g".into(),
                ..GraphProto::default()
            },
            feeds: Vec::new(),
            n: 0,
        }
    }

    fn input(&mut self, name: &str, dims: &[usize]) -> String {
        self.graph.input.push(float_vi(name, dims));
        let n = dims.iter().product();
        let t = Tensor::from_vec(dims.to_vec(), noise(n, self.feeds.len() as u64 + 100)).unwrap();
        self.feeds.push((name.to_string(), Value::Tensor(t)));
        name.to_string()
    }

    fn init(&mut self, name: &str, dims: &[usize], v: Vec<f32>) -> String {
        let t = Tensor::from_vec(dims.to_vec(), v).unwrap();
        self.graph.initializer.push(t.to_proto(name));
        name.to_string()
    }

    fn weight(&mut self, name: &str, dims: &[usize]) -> String {
        self.n += 1;
        let v = noise(dims.iter().product(), self.n as u64);
        self.init(name, dims, v)
    }

    /// A `Constant` node, as PyTorch writes literals.
    fn constant(&mut self, dims: &[usize], v: Vec<f32>) -> String {
        let t = Tensor::from_vec(dims.to_vec(), v).unwrap();
        self.constant_tensor(t)
    }

    fn constant_tensor(&mut self, t: Tensor) -> String {
        self.n += 1;
        let out = format!("/Constant_{}_output_0", self.n);
        self.graph.node.push(NodeProto {
            op_type: "Constant".into(),
            name: format!("/Constant_{}", self.n),
            output: vec![out.clone()],
            attribute: vec![AttributeProto {
                name: "value".into(),
                r#type: AttributeType::Tensor as i32,
                t: Some(t.to_proto("")),
                ..AttributeProto::default()
            }],
            ..NodeProto::default()
        });
        out
    }

    fn scalar(&mut self, v: f32) -> String {
        self.constant(&[], vec![v])
    }

    fn node(&mut self, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> String {
        self.node_in(op, "", inputs, attrs)
    }

    fn node_in(
        &mut self,
        op: &str,
        domain: &str,
        inputs: &[&str],
        attrs: Vec<AttributeProto>,
    ) -> String {
        self.n += 1;
        let out = format!("/{op}_{}_output_0", self.n);
        self.graph.node.push(NodeProto {
            op_type: op.into(),
            domain: domain.into(),
            name: format!("/{op}_{}", self.n),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.clone()],
            attribute: attrs,
            ..NodeProto::default()
        });
        out
    }

    /// Declares a value's shape (exporters and shape inference write these).
    fn shape(&mut self, name: &str, dims: &[usize]) {
        self.graph.value_info.push(float_vi(name, dims));
    }

    fn output(&mut self, name: &str, dims: &[usize]) {
        self.graph.output.push(float_vi(name, dims));
    }

    fn model(&self) -> ModelProto {
        ModelProto {
            ir_version: 10,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: self.opset,
            }],
            producer_name: "kiln-tests".into(),
            graph: Some(self.graph.clone()),
            ..ModelProto::default()
        }
    }
}

fn run(model: &ModelProto, feeds: &NamedValues) -> NamedValues {
    let mut s = Session::from_model_with(model, &SessionOptions::as_written()).unwrap();
    s.run(feeds).unwrap()
}

fn assert_same(before: &NamedValues, after: &NamedValues, what: &str) {
    assert_eq!(before.len(), after.len(), "{what}: output count");
    for ((nb, vb), (na, va)) in before.iter().zip(after) {
        assert_eq!(nb, na, "{what}: output names");
        if let Err(e) = allclose(vb, va, TOL) {
            panic!("{what}: output '{nb}' differs: {e:?}");
        }
    }
}

/// Runs `passes` on the model, checks the counts and that ORT's outputs did not change;
/// returns the rewritten model.
fn check(b: &Builder, passes: &[&dyn Pass], expect: &[(&str, usize)]) -> Model {
    let proto = b.model();
    let before = run(&proto, &b.feeds);
    let mut m = Model::from_proto(&proto).unwrap();
    let mut changes = Changes::none();
    for p in passes {
        changes.merge(&p.run(&mut m).unwrap());
        m.graph.verify().unwrap();
    }
    for (k, n) in expect {
        assert_eq!(changes.get(k), *n, "count '{k}' in {changes}");
    }
    let after = run(&m.to_proto(), &b.feeds);
    assert_same(&before, &after, &changes.to_string());
    m
}

fn op_count(m: &Model, op: &str) -> usize {
    m.graph
        .nodes()
        .filter(|(_, n)| n.is_operator() && n.op_type() == op)
        .count()
}

/// torchvision's Conv2d(bias=False) → BatchNorm2d → ReLU, grouped, padded.
#[test]
fn conv_batchnorm_relu() {
    let mut b = Builder::new(13);
    let x = b.input("input", &[1, 4, 6, 6]);
    let w = b.weight("conv.weight", &[8, 2, 3, 3]);
    let y = b.node(
        "Conv",
        &[&x, &w],
        vec![
            attr_int("group", 2),
            attr_ints("pads", &[1, 1, 1, 1]),
            attr_ints("kernel_shape", &[3, 3]),
        ],
    );
    let s = b.weight("bn.weight", &[8]);
    let bb = b.weight("bn.bias", &[8]);
    let mean = b.weight("bn.running_mean", &[8]);
    let var = b.init(
        "bn.running_var",
        &[8],
        noise(8, 9).iter().map(|v| v.abs() + 0.1).collect(),
    );
    let z = b.node(
        "BatchNormalization",
        &[&y, &s, &bb, &mean, &var],
        vec![a_float("epsilon", 1e-5), a_float("momentum", 0.9)],
    );
    let r = b.node("Relu", &[&z], vec![]);
    b.output(&r, &[1, 8, 6, 6]);
    let m = check(
        &b,
        &[&FuseConvBn, &NoteActivations],
        &[("conv+batchnorm", 1), ("relu noted", 1)],
    );
    assert_eq!(op_count(&m, "BatchNormalization"), 0);
}

#[test]
fn conv_transpose_batchnorm() {
    let mut b = Builder::new(13);
    let x = b.input("input", &[1, 4, 5, 5]);
    let w = b.weight("up.weight", &[4, 3, 2, 2]);
    let bias = b.weight("up.bias", &[6]);
    let y = b.node(
        "ConvTranspose",
        &[&x, &w, &bias],
        vec![attr_int("group", 2), attr_ints("strides", &[2, 2])],
    );
    let s = b.weight("bn.weight", &[6]);
    let bb = b.weight("bn.bias", &[6]);
    let mean = b.weight("bn.running_mean", &[6]);
    let var = b.init("bn.running_var", &[6], vec![0.5, 1.0, 1.5, 2.0, 0.25, 3.0]);
    let z = b.node("BatchNormalization", &[&y, &s, &bb, &mean, &var], vec![]);
    b.output(&z, &[1, 6, 10, 10]);
    check(&b, &[&FuseConvBn], &[("convtranspose+batchnorm", 1)]);
}

/// A Conv without bias followed by a per-channel Add and ReLU6 (MobileNet habit).
#[test]
fn conv_bias_add_clip() {
    let mut b = Builder::new(13);
    let x = b.input("input", &[1, 3, 5, 5]);
    let w = b.weight("conv.weight", &[4, 3, 3, 3]);
    let y = b.node("Conv", &[&x, &w], vec![]);
    let c = b.weight("bias", &[1, 4, 1, 1]);
    let z = b.node("Add", &[&y, &c], vec![]);
    let lo = b.scalar(0.0);
    let hi = b.scalar(6.0);
    let r = b.node("Clip", &[&z, &lo, &hi], vec![]);
    b.output(&r, &[1, 4, 3, 3]);
    check(
        &b,
        &[&FoldBias, &NoteActivations],
        &[("conv+add", 1), ("clip noted", 1)],
    );
}

/// nn.Linear on a 2-D input exported as MatMul + Add, then an extra constant Add.
#[test]
fn matmul_add_to_gemm_then_bias() {
    let mut b = Builder::new(13);
    let x = b.input("input", &[3, 5]);
    let w = b.weight("fc.weight_t", &[5, 4]);
    let y = b.node("MatMul", &[&x, &w], vec![]);
    let c = b.weight("fc.bias", &[4]);
    let z = b.node("Add", &[&c, &y], vec![]);
    let d = b.weight("shift", &[3, 1]);
    let o = b.node("Add", &[&z, &d], vec![]);
    b.output(&o, &[3, 4]);
    let m = check(
        &b,
        &[&FuseMatMulAdd, &FoldBias],
        &[("matmul+add", 1), ("gemm+add", 1)],
    );
    assert_eq!(op_count(&m, "Gemm"), 1);
    assert_eq!(op_count(&m, "Add") + op_count(&m, "MatMul"), 0);
}

/// nn.LayerNorm(8) as torch.onnx.export writes it before opset 17.
fn torch_layernorm(b: &mut Builder, x: &str, axes_input: bool) -> String {
    let mean = reduce_mean(b, x, axes_input);
    let d = b.node("Sub", &[x, &mean], vec![]);
    let two = b.scalar(2.0);
    let p = b.node("Pow", &[&d, &two], vec![]);
    let var = reduce_mean(b, &p, axes_input);
    let eps = b.scalar(1e-5);
    let ve = b.node("Add", &[&var, &eps], vec![]);
    let std = b.node("Sqrt", &[&ve], vec![]);
    let n = b.node("Div", &[&d, &std], vec![]);
    let g = b.weight("ln.weight", &[8]);
    let m = b.node("Mul", &[&n, &g], vec![]);
    let bt = b.weight("ln.bias", &[8]);
    b.node("Add", &[&m, &bt], vec![])
}

fn reduce_mean(b: &mut Builder, x: &str, axes_input: bool) -> String {
    if axes_input {
        let axes = b.constant_tensor(Tensor::from_vec(vec![1], vec![-1i64]).unwrap());
        b.node("ReduceMean", &[x, &axes], vec![attr_int("keepdims", 1)])
    } else {
        b.node(
            "ReduceMean",
            &[x],
            vec![attr_ints("axes", &[-1]), attr_int("keepdims", 1)],
        )
    }
}

#[test]
fn layernorm_torch_pattern() {
    for (opset, axes_input, fires) in [(17, false, 1), (18, true, 1), (14, false, 0)] {
        let mut b = Builder::new(opset);
        let x = b.input("input", &[2, 5, 8]);
        let y = torch_layernorm(&mut b, &x, axes_input);
        b.output(&y, &[2, 5, 8]);
        let m = check(&b, &[&FuseLayerNorm], &[("layernorm", fires)]);
        assert_eq!(op_count(&m, "LayerNormalization"), fires);
    }
}

/// tf2onnx's form of keras LayerNormalization (Rsqrt as Reciprocal(Sqrt)).
#[test]
fn layernorm_tf_pattern() {
    let mut b = Builder::new(17);
    let x = b.input("input:0", &[2, 5, 8]);
    let mean = b.node("ReduceMean", &[&x], vec![attr_ints("axes", &[2])]);
    let d = b.node("Sub", &[&x, &mean], vec![]);
    let sq = b.node("Mul", &[&d, &d], vec![]);
    let var = b.node("ReduceMean", &[&sq], vec![attr_ints("axes", &[2])]);
    let eps = b.scalar(1e-3);
    let ve = b.node("Add", &[&var, &eps], vec![]);
    let std = b.node("Sqrt", &[&ve], vec![]);
    let r = b.node("Reciprocal", &[&std], vec![]);
    let gm = b.weight("gamma:0", &[8]);
    let g = b.node("Mul", &[&r, &gm], vec![]);
    let t1 = b.node("Mul", &[&x, &g], vec![]);
    let t2 = b.node("Mul", &[&mean, &g], vec![]);
    let bt = b.weight("beta:0", &[8]);
    let t3 = b.node("Sub", &[&bt, &t2], vec![]);
    let y = b.node("Add", &[&t1, &t3], vec![]);
    b.output(&y, &[2, 5, 8]);
    check(&b, &[&FuseLayerNorm], &[("layernorm (tf form)", 1)]);
}

/// nn.GELU() as exported: x · 0.5 · (1 + erf(x / √2)), 0.5 applied last.
// The literal is the one exporters write, not the exact constant.
#[allow(clippy::approx_constant)]
fn erf_gelu(b: &mut Builder, x: &str) -> String {
    let c = b.scalar(1.4142135);
    let d = b.node("Div", &[x, &c], vec![]);
    let e = b.node("Erf", &[&d], vec![]);
    let one = b.scalar(1.0);
    let a = b.node("Add", &[&e, &one], vec![]);
    let m = b.node("Mul", &[x, &a], vec![]);
    let half = b.scalar(0.5);
    b.node("Mul", &[&m, &half], vec![])
}

/// GPT-2's NewGELU: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), literals on the left.
fn tanh_gelu(b: &mut Builder, x: &str) -> String {
    let half = b.scalar(0.5);
    let h = b.node("Mul", &[&half, x], vec![]);
    let three = b.scalar(3.0);
    let p = b.node("Pow", &[x, &three], vec![]);
    let k = b.scalar(0.044715);
    let kp = b.node("Mul", &[&k, &p], vec![]);
    let s = b.node("Add", &[x, &kp], vec![]);
    let c = b.scalar(0.7978846);
    let u = b.node("Mul", &[&c, &s], vec![]);
    let t = b.node("Tanh", &[&u], vec![]);
    let one = b.scalar(1.0);
    let a = b.node("Add", &[&one, &t], vec![]);
    b.node("Mul", &[&h, &a], vec![])
}

#[test]
fn gelu_forms() {
    for (opset, contrib, tanh, fires) in [
        (20, false, false, 1),
        (20, false, true, 1),
        (17, true, false, 1),
        (17, true, true, 1),
        (17, false, false, 0),
    ] {
        let mut b = Builder::new(opset);
        let x = b.input("input", &[2, 16]);
        let y = if tanh {
            tanh_gelu(&mut b, &x)
        } else {
            erf_gelu(&mut b, &x)
        };
        b.output(&y, &[2, 16]);
        let key = if tanh { "gelu (tanh)" } else { "gelu (erf)" };
        let pass = FuseGelu {
            allow_contrib: contrib,
        };
        let m = check(&b, &[&pass], &[(key, fires)]);
        let fused = op_count(&m, "Gelu") + op_count(&m, "FastGelu");
        assert_eq!(fused, fires);
    }
}

/// One BERT-style encoder layer at opset 20 (3-D activations, so no Gemm), every fusion in
/// the order `fusion_passes` gives, run by the pipeline with verification.
#[test]
fn encoder_layer_through_all_fusions() {
    let (s, h) = (4, 8);
    let mut b = Builder::new(20);
    let x = b.input("hidden", &[1, s, h]);
    let mask = b.input("mask", &[1, 1, 1, s]);
    let proj = |b: &mut Builder, name: &str, v: &str| {
        let w = b.weight(&format!("{name}.weight"), &[h, h]);
        let m = b.node("MatMul", &[v, &w], vec![]);
        let bias = b.weight(&format!("{name}.bias"), &[h]);
        b.node("Add", &[&bias, &m], vec![])
    };
    let heads = |b: &mut Builder, v: &str| {
        let shape =
            b.constant_tensor(Tensor::from_vec(vec![4], vec![1i64, s as i64, 2, 4]).unwrap());
        let r = b.node("Reshape", &[v, &shape], vec![]);
        b.node("Transpose", &[&r], vec![attr_ints("perm", &[0, 2, 1, 3])])
    };
    let q = proj(&mut b, "q", &x);
    let q = heads(&mut b, &q);
    let k = proj(&mut b, "k", &x);
    let k = heads(&mut b, &k);
    let v = proj(&mut b, "v", &x);
    let v = heads(&mut b, &v);
    let kt = b.node("Transpose", &[&k], vec![attr_ints("perm", &[0, 1, 3, 2])]);
    let sc = b.node("MatMul", &[&q, &kt], vec![]);
    let c = b.scalar(2.0);
    let sc = b.node("Div", &[&sc, &c], vec![]);
    let sc = b.node("Add", &[&sc, &mask], vec![]);
    let p = b.node("Softmax", &[&sc], vec![attr_int("axis", -1)]);
    let ctx = b.node("MatMul", &[&p, &v], vec![]);
    let ctx = b.node("Transpose", &[&ctx], vec![attr_ints("perm", &[0, 2, 1, 3])]);
    let shape =
        b.constant_tensor(Tensor::from_vec(vec![3], vec![1i64, s as i64, h as i64]).unwrap());
    let ctx = b.node("Reshape", &[&ctx, &shape], vec![]);
    let o = proj(&mut b, "o", &ctx);
    let res = b.node("Add", &[&o, &x], vec![]);
    b.shape(&res, &[1, s, h]);
    let ln1 = torch_layernorm(&mut b, &res, true);
    b.shape(&ln1, &[1, s, h]);
    let f = proj(&mut b, "ff1", &ln1);
    let act = erf_gelu(&mut b, &f);
    let f2 = proj(&mut b, "ff2", &act);
    let sig = b.node("Sigmoid", &[&f2], vec![]);
    let silu = b.node("Mul", &[&f2, &sig], vec![]);
    let res2 = b.node("Add", &[&silu, &ln1], vec![]);
    b.output(&res2, &[1, s, h]);

    let proto = b.model();
    let before = run(&proto, &b.feeds);
    let mut m = Model::from_proto(&proto).unwrap();
    let mut pipeline = Pipeline::new().verify_each(true);
    for pass in fusion_passes(FuseOptions::default()) {
        pipeline = pipeline.until_fixed_point(vec![pass]);
    }
    let records = pipeline.run(&mut m).unwrap();
    let count = |pass: &str, key: &str| {
        records
            .iter()
            .filter(|r| r.pass == pass)
            .map(|r| r.changes.get(key))
            .sum::<usize>()
    };
    assert_eq!(count("fuse-layernorm", "layernorm"), 1);
    assert_eq!(count("fuse-gelu", "gelu (erf)"), 1);
    assert_eq!(count("find-attention", "attention blocks"), 1);
    assert_eq!(count("note-silu", "silu noted"), 1);
    assert_eq!(
        count("fuse-matmul-add", "matmul+add"),
        0,
        "3-D MatMul is not Gemm"
    );
    let after = run(&m.to_proto(), &b.feeds);
    assert_same(&before, &after, "encoder layer");
}

#[test]
fn notes_leave_outputs_unchanged() {
    let mut b = Builder::new(13);
    let x = b.input("input", &[2, 8]);
    let sig = b.node("Sigmoid", &[&x], vec![]);
    let y = b.node("Mul", &[&sig, &x], vec![]);
    b.output(&y, &[2, 8]);
    check(&b, &[&NoteSilu, &FindAttention], &[("silu noted", 1)]);
}

/// The model folders (holding `model.onnx`) directly under each of `roots`, sorted.
fn model_dirs(roots: &[PathBuf]) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for root in roots {
        let Ok(rd) = std::fs::read_dir(root) else {
            continue;
        };
        let mut dirs: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        dirs.sort();
        v.extend(dirs.into_iter().filter(|d| d.join("model.onnx").is_file()));
    }
    v
}

/// What a sweep saw: models where something fired, models compared in ORT, all counts.
struct Sweep {
    loaded: usize,
    fired: usize,
    compared: usize,
    totals: Changes,
}

/// Runs every fusion (contrib allowed) on each model: the graph stays valid and, where the
/// computation was rewritten, ORT's outputs on `test_data_set_0` do not change.
fn sweep(dirs: &[PathBuf]) -> Sweep {
    let mut out = Sweep {
        loaded: 0,
        fired: 0,
        compared: 0,
        totals: Changes::none(),
    };
    let mut failed = Vec::new();
    for dir in dirs {
        let Ok(loaded) = kiln_proto::load_model(&dir.join("model.onnx")) else {
            continue;
        };
        let Ok(mut m) = Model::from_proto(&loaded.model) else {
            continue;
        };
        out.loaded += 1;
        let mut changes = Changes::none();
        for pass in fusion_passes(FuseOptions {
            allow_contrib: true,
        }) {
            changes.merge(&pass.run(&mut m).unwrap());
            m.graph.verify().unwrap();
        }
        // Notes only add metadata; compare only where the computation was rewritten.
        let rewrote = changes
            .iter()
            .any(|(k, _)| !k.ends_with("noted") && k != "attention blocks");
        out.totals.merge(&changes);
        if changes.is_empty() {
            continue;
        }
        out.fired += 1;
        eprintln!("{}: {changes}", dir.display());
        if !rewrote {
            continue;
        }
        let Ok(mut s) = Session::from_model_with(&loaded.model, &SessionOptions::as_written())
        else {
            continue;
        };
        let ins: Vec<_> = s.inputs().iter().map(|i| IoSpec::tensor(&i.name)).collect();
        let outs: Vec<_> = s
            .outputs()
            .iter()
            .map(|o| IoSpec::tensor(&o.name))
            .collect();
        let Ok((feeds, _)) = read_test_data_set(&dir.join("test_data_set_0"), &ins, &outs) else {
            continue;
        };
        let before = s.run(&feeds).unwrap();
        let after = match Session::from_model_with(&m.to_proto(), &SessionOptions::as_written())
            .and_then(|mut s| s.run(&feeds))
        {
            Ok(a) => a,
            Err(e) => {
                failed.push(format!("{}: {e}", dir.display()));
                continue;
            }
        };
        out.compared += 1;
        for ((name, vb), (_, va)) in before.iter().zip(&after) {
            if let Err(e) = allclose(vb, va, TOL) {
                failed.push(format!("{} output {name}: {e:?}", dir.display()));
            }
        }
    }
    eprintln!(
        "{} models loaded, fusions fired on {}, {} compared in ORT; totals: {}",
        out.loaded, out.fired, out.compared, out.totals
    );
    assert!(failed.is_empty(), "{failed:#?}");
    out
}

/// The repository's `models/`: the fusions fire there (tiny_cnn's Conv+BatchNorm,
/// constant_weights' and external_mlp's MatMul+Add …) and outputs stay equal.
#[test]
fn repo_models_stay_equal() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    let s = sweep(&model_dirs(&[root]));
    assert!(s.totals.get("conv+batchnorm") >= 1, "{}", s.totals);
    assert!(s.totals.get("matmul+add") >= 2, "{}", s.totals);
    assert!(s.compared >= 3);
}
