//! `kiln compile` of models/llama_tiny (an Optimum-form Llama decoder with a KV cache) for the
//! LLM profiles `neon-int4` and `ane-int4`, for int8 weight-only variants (a user profile
//! extending each), and for neon-int4 with `method: gptq` calibrated on seeded tokens, judged by a decode loop in ONNX Runtime 1.31.1 (CPU): a prefill of a fixed
//! 8-token prompt, then 16 single-token steps with every `present.*` fed back as
//! `past_key_values.*` (`attention_mask` grows, `position_ids` advance). The float model
//! decodes greedily; each compiled model (the file the compile report says it validated: the
//! simulated twin where there is one) is fed the float model's tokens (teacher forcing), and
//! every step's logits are compared: SQNR against the float logits, and whether the next
//! token agrees. SQNR floors are measured minus a margin; int8 must beat int4 at every step,
//! and the calibrated variant RTN's int4 on the mean.
//! Random weights give flat logits, so token agreement is printed, not limited.
//!
//! `cargo test -p kiln-tests --test llm_decode -- --nocapture` prints the per-step tables.

use std::path::{Path, PathBuf};

use kiln_backends::runtime::{Session, SessionOptions};
use kiln_backends::tensors::{read_test_data_set, IoSpec};
use kiln_backends::value::Value;
use kiln_proto::onnx::tensor_proto::DataType as TensorDataType;
use kiln_proto::onnx::{GraphProto, NodeProto};
use kiln_tests::decode::{compare, last_argmax, Decoder, StepMetrics, Trace};
use kiln_tests::token_samples::write_token_samples;
use kiln_tests::{kiln, repo_root};

/// Decode steps after the prefill.
const STEPS: usize = 16;

/// The prompt: `input_ids` of llama_tiny's test_data_set_0.
const PROMPT: [i64; 8] = [52, 133, 217, 154, 209, 120, 53, 52];

/// What int8 must gain over int4 at every step (dB). Measured at least 22.2 (neon) and 18.6
/// (ane, where bfloat16 compute limits int8).
const INT8_GAIN_DB: f64 = 15.0;

/// One compile: a built-in, or a user profile extending one.
struct Variant {
    /// Label in the table (and the user profile's name).
    label: &'static str,
    /// The built-in profile.
    builtin: &'static str,
    /// Keys a user profile extending `builtin` sets under `quantization.weights` (flow style),
    /// or none to compile with the built-in itself.
    weights: Option<&'static str>,
    /// Bits of the quantized weights.
    bits: i64,
    /// Weights the report must list as quantized.
    quantized: usize,
    /// Lowest acceptable SQNR at any step (dB): the measured minimum less about 3 dB.
    floor_db: f64,
    /// Calibrate on seeded token samples (32 × 32 tokens) instead of the model's test data
    /// (8 + 1 tokens, which a calibrated method would fit rather than learn from).
    calibrate: bool,
}

fn llama() -> PathBuf {
    repo_root().join("models/llama_tiny/model.onnx")
}

fn options() -> SessionOptions {
    // One thread: reproducible numbers, and the machine's cores are shared.
    SessionOptions::default().with_intra_threads(1)
}

/// Compiles llama_tiny for `v` into `dir`; returns the model the report validated and the
/// report.
fn compile(v: &Variant, dir: &Path) -> (PathBuf, serde_json::Value) {
    let profile = match v.weights {
        Some(keys) => {
            let file = dir.join(format!("{}.yaml", v.label));
            let text = format!(
                "name: {}\nextends: {}\nquantization:\n  weights: {keys}\n",
                v.label, v.builtin
            );
            std::fs::write(&file, text).unwrap();
            file.display().to_string()
        }
        None => v.builtin.to_string(),
    };
    let out = dir.join(v.label);
    let model = llama();
    let mut args = vec![
        "compile".to_string(),
        model.display().to_string(),
        "--profile".into(),
        profile,
        "-o".into(),
        out.display().to_string(),
    ];
    if v.calibrate {
        let samples = dir.join(format!("{}.calibration", v.label));
        let proto = kiln_proto::load_model(&model).unwrap().model;
        let graph = kiln_passes::ir::Model::from_proto(&proto).unwrap();
        write_token_samples("llama_tiny", &graph, &samples, 32, 32, 1);
        args.extend(["--calibration".into(), samples.display().to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, stdout, stderr) = kiln(&args);
    assert_eq!(code, 0, "{}: {stdout}\n{stderr}", v.label);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let validated = report["validation"]["validated"]
        .as_str()
        .expect("the report names the validated model");
    let file = match validated {
        "model.sim.onnx" => "model.sim.onnx",
        "model.onnx" => "model.onnx",
        other => panic!("{}: validated {other}", v.label),
    };
    (out.join(file), report)
}

/// The graph of the emitted `model.onnx` in `dir`.
fn emitted(dir: &Path) -> GraphProto {
    let loaded = kiln_proto::load_model(&dir.join("model.onnx")).unwrap();
    loaded.model.graph.unwrap_or_default()
}

/// The integer attribute `name` of `node`.
fn int_attr(node: &NodeProto, name: &str) -> Option<i64> {
    node.attribute
        .iter()
        .find(|a| a.name == name)
        .and_then(|a| a.i)
}

/// The float model's greedy decode of [`PROMPT`].
fn float_trace() -> Trace {
    let mut d = Decoder::load(&llama(), &options()).unwrap();
    d.decode(&PROMPT, STEPS, None).unwrap()
}

/// Compiles every variant, decodes it teacher-forced, checks floors and prints the table.
fn check_family(family: &str, variants: &[Variant], form: fn(&Variant, &Path)) {
    let reference = float_trace();
    let dir = tempfile::tempdir().unwrap();
    let mut rows: Vec<Vec<StepMetrics>> = Vec::new();
    for v in variants {
        let (model, report) = compile(v, dir.path());
        let listed = report["quantize"]["weight_only"]["weights"]
            .as_array()
            .map_or(0, Vec::len);
        assert_eq!(listed, v.quantized, "{}: {report}", v.label);
        form(v, &dir.path().join(v.label));
        let mut d = Decoder::load(&model, &options()).unwrap();
        let trace = d.decode(&PROMPT, STEPS, Some(&reference.tokens)).unwrap();
        assert_eq!(trace.tokens, reference.tokens, "{}", v.label);
        rows.push(compare(&reference, &trace).unwrap());
    }
    print_table(family, variants, &rows, &reference);
    for (v, r) in variants.iter().zip(&rows) {
        for (i, m) in r.iter().enumerate() {
            assert!(
                m.sqnr_db >= v.floor_db,
                "{} step {i}: {:.2} dB < {} dB",
                v.label,
                m.sqnr_db,
                v.floor_db
            );
        }
    }
    // A calibrated variant must beat the first (RTN) on the mean over the steps; measured
    // +1.61 dB (GPTQ with its clip search, neon).
    let mean = |r: &[StepMetrics]| r.iter().map(|m| m.sqnr_db).sum::<f64>() / r.len() as f64;
    for (v, r) in variants.iter().zip(&rows).filter(|(v, _)| v.calibrate) {
        assert!(
            mean(r) >= mean(&rows[0]) + 0.8,
            "{}: mean {:.2} dB is not 0.8 dB above {}'s {:.2} dB",
            v.label,
            mean(r),
            variants[0].label,
            mean(&rows[0])
        );
    }
    let (int4, int8) = (&rows[0], &rows[1]);
    for (i, (a, b)) in int4.iter().zip(int8).enumerate() {
        assert!(
            b.sqnr_db >= a.sqnr_db + INT8_GAIN_DB,
            "{family} step {i}: int8 {:.2} dB is not {INT8_GAIN_DB} dB above int4 {:.2} dB",
            b.sqnr_db,
            a.sqnr_db
        );
    }
}

fn print_table(family: &str, variants: &[Variant], rows: &[Vec<StepMetrics>], r: &Trace) {
    let mut head =
        format!("\n{family}: per-step logits SQNR (dB) / next token agrees\nstep      next");
    for v in variants {
        head.push_str(&format!("  {:>18}", v.label));
    }
    println!("{head}");
    for step in 0..=STEPS {
        let token = last_argmax(&r.logits[step]).unwrap();
        let name = if step == 0 {
            "prefill".to_string()
        } else {
            step.to_string()
        };
        let mut line = format!("{name:<8} {token:>5}");
        for row in rows {
            let m = row[step];
            line.push_str(&format!(
                "  {:>10.2} {:>7}",
                m.sqnr_db,
                if m.top1 { "yes" } else { "no" }
            ));
        }
        println!("{line}");
    }
    let mut summary = "min / mean / agree".to_string();
    for row in rows {
        let min = row.iter().map(|m| m.sqnr_db).fold(f64::INFINITY, f64::min);
        let mean = row.iter().map(|m| m.sqnr_db).sum::<f64>() / row.len() as f64;
        let agree = row.iter().filter(|m| m.top1).count();
        summary.push_str(&format!("  {min:.2} / {mean:.2} / {agree}/{}", row.len()));
    }
    println!("{summary}");
}

/// neon: every MatMul weight becomes a `com.microsoft.MatMulNBits` of the variant's bits.
fn neon_form(v: &Variant, dir: &Path) {
    let g = emitted(dir);
    let nbits: Vec<_> = g
        .node
        .iter()
        .filter(|n| n.op_type == "MatMulNBits" && n.domain == "com.microsoft")
        .collect();
    assert_eq!(nbits.len(), v.quantized, "{}", v.label);
    for n in nbits {
        assert_eq!(int_attr(n, "bits"), Some(v.bits), "{}: {}", v.label, n.name);
        assert_eq!(
            int_attr(n, "block_size"),
            Some(32),
            "{}: {}",
            v.label,
            n.name
        );
    }
}

/// ane: each quantized weight is an int4 (int8) initializer behind a DequantizeLinear with
/// `block_size` 32; no ONNX Runtime op.
fn ane_form(v: &Variant, dir: &Path) {
    let g = emitted(dir);
    let want = if v.bits == 4 {
        TensorDataType::Int4
    } else {
        TensorDataType::Int8
    } as i32;
    let blocked: Vec<_> = g
        .node
        .iter()
        .filter(|n| n.op_type == "DequantizeLinear" && int_attr(n, "block_size") == Some(32))
        .collect();
    assert_eq!(blocked.len(), v.quantized, "{}", v.label);
    for n in blocked {
        let data = g.initializer.iter().find(|t| t.name == n.input[0]);
        assert_eq!(
            data.map(|t| t.data_type),
            Some(want),
            "{}: {}",
            v.label,
            n.name
        );
    }
    assert!(g.node.iter().all(|n| n.domain.is_empty()), "{}", v.label);
}

#[test]
fn neon_int4_and_int8_decode() {
    // q, k, v, o, gate, up, down × 2 layers and the LM head.
    let variants = [
        Variant {
            label: "neon-int4",
            builtin: "neon-int4",
            weights: None,
            bits: 4,
            quantized: 15,
            // Measured 17.40 dB at worst (steps 1 and 10), mean 18.73.
            floor_db: 14.5,
            calibrate: false,
        },
        Variant {
            label: "neon-int8",
            builtin: "neon-int4",
            weights: Some("{dtype: int8}"),
            bits: 8,
            quantized: 15,
            // Measured 40.83 dB at worst, mean 42.05.
            floor_db: 38.0,
            calibrate: false,
        },
        Variant {
            label: "neon-int4-gptq",
            builtin: "neon-int4",
            weights: Some("{method: gptq}"),
            bits: 4,
            quantized: 15,
            // Calibrated on 32 × 32 seeded tokens: measured 18.56 dB at worst, mean 20.34
            // (RTN's 17.40 / 18.73 beside it). On the model's own 9 test tokens GPTQ fits the
            // prompt instead (34 dB on it, 15.97 at worst after), which Kiln now warns about.
            floor_db: 15.5,
            calibrate: true,
        },
    ];
    check_family("neon", &variants, neon_form);
}

#[test]
fn ane_int4_and_int8_decode() {
    // q, o, gate, up, down × 2 layers and the LM head: k and v (64 × 32 = 2048 elements) stay
    // float, as Core ML leaves weights of at most weight_threshold = 2048 elements; the third
    // variant drops that threshold and compresses all 15.
    let variants = [
        Variant {
            label: "ane-int4",
            builtin: "ane-int4",
            weights: None,
            bits: 4,
            quantized: 11,
            // Measured 18.73 dB at worst (step 1), mean 19.95.
            floor_db: 15.5,
            calibrate: false,
        },
        Variant {
            label: "ane-int8",
            builtin: "ane-int4",
            weights: Some("{dtype: int8}"),
            bits: 8,
            quantized: 11,
            // Measured 38.68 dB at worst, mean 39.89: bfloat16 compute caps it.
            floor_db: 35.5,
            calibrate: false,
        },
        Variant {
            label: "ane-int4-all",
            builtin: "ane-int4",
            weights: Some("{min_elements: null}"),
            bits: 4,
            quantized: 15,
            // Measured 17.34 dB at worst (step 1), mean 18.72: as neon-int4, bfloat16 adds
            // little to int4's error.
            floor_db: 14.5,
            calibrate: false,
        },
    ];
    check_family("ane", &variants, ane_form);
}

/// The loop itself: on the float model, the prefill of test_data_set_0's prompt and one step
/// forced to test_data_set_1's token reproduce both sets' logits (ORT-computed by the
/// generator); greedy decoding feeds the arg-max; forcing a run's own tokens repeats it.
#[test]
fn decode_loop_reproduces_the_test_data() {
    let dir = repo_root().join("models/llama_tiny");
    let mut d = Decoder::load(&llama(), &options()).unwrap();
    let session = Session::from_path(&llama()).unwrap();
    let ins: Vec<IoSpec> = session.inputs().iter().map(|i| i.spec()).collect();
    let outs: Vec<IoSpec> = session.outputs().iter().map(|o| o.spec()).collect();
    let expected = |set: &str| {
        let (feeds, outputs) = read_test_data_set(&dir.join(set), &ins, &outs).unwrap();
        let tensor =
            |values: &[(String, Value)], name: &str| match values.iter().find(|(n, _)| n == name) {
                Some((_, Value::Tensor(t))) => t.clone(),
                v => panic!("{set}: {name}: {v:?}"),
            };
        let ids = tensor(&feeds, "input_ids").to_vec::<i64>().unwrap();
        let logits = tensor(&outputs, "logits").to_vec::<f32>().unwrap();
        (ids, logits)
    };
    let (prompt, prefill) = expected("test_data_set_0");
    let (next, step) = expected("test_data_set_1");
    assert_eq!(prompt, PROMPT);
    let t = d.decode(&prompt, 1, Some(&next)).unwrap();
    assert_eq!(t.tokens, next);
    for (got, want) in [(&t.logits[0], &prefill), (&t.logits[1], &step)] {
        let got = got.to_vec::<f32>().unwrap();
        assert_eq!(got.len(), want.len());
        let worst = got
            .iter()
            .zip(want.iter())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 1e-4, "max abs difference {worst}");
    }
    let greedy = d.decode(&PROMPT, 4, None).unwrap();
    for (i, tok) in greedy.tokens.iter().enumerate() {
        assert_eq!(*tok, last_argmax(&greedy.logits[i]).unwrap() as i64);
    }
    let again = d.decode(&PROMPT, 4, Some(&greedy.tokens)).unwrap();
    assert_eq!(again, greedy);
    // A forced token changes what follows.
    let other: Vec<i64> = greedy.tokens.iter().map(|t| (t + 1) % 256).collect();
    let forced = d.decode(&PROMPT, 4, Some(&other)).unwrap();
    assert_eq!(forced.logits[0], greedy.logits[0]);
    assert_ne!(forced.logits[1], greedy.logits[1]);
    let r = compare(&greedy, &forced).unwrap();
    assert!(r[0].sqnr_db.is_infinite() && r[0].top1, "{r:?}");
    assert!(r[1].sqnr_db.is_finite(), "{r:?}");
}
