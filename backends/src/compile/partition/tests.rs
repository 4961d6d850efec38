//! `partition` end to end on hand-built graphs: which side each node lands on and why,
//! segments, transitions, MAC coverage, separate activations, parameter bytes.

use kiln_passes::fuse::{FUSED_ACTIVATION_KEY, FUSED_ACTIVATION_OUTPUT_KEY};
use kiln_passes::ir::{AttrValue, ValueRef};
use kiln_proto::onnx::StringStringEntryProto;

use super::testutil::{profile, Builder};
use super::*;

/// Relu, Add, Conv (4-D only), Gemm, MatMul, Softmax (≤ 1000 elements), Slice (unit steps),
/// ReduceMean (spatial only), MaxPool (kernel ≤ 3, no fused activation) on the device.
const DEVICE: &str = "
name: t
family: cpu
ops:
  supported:
    Relu: {}
    Add: {}
    Conv: {min_rank: 4, max_rank: 4, fused_activation: false}
    Gemm: {}
    MatMul: {}
    Softmax: {max_elements: 1000}
    Slice: {strides: [1]}
    ReduceMean: {spatial_only: true}
    MaxPool: {max_kernel: 3}
";

fn side(p: &Partition, node: &str) -> &'static str {
    match p.fallbacks.iter().find(|f| f.node == node) {
        Some(f) => f.reason,
        None => "device",
    }
}

fn verified(b: &Builder) {
    if let Err(e) = b.model.graph.verify() {
        panic!("test graph does not verify: {e}");
    }
}

#[test]
fn unsupported_ops_fall_back_and_are_counted_by_type() {
    let mut b = Builder::new();
    let x = b.input("x", &[1, 8]);
    let r = b.op("Relu", &[x], vec![]);
    let s = b.op("Sigmoid", &[r], vec![]);
    let t = b.op("Sigmoid", &[s], vec![]);
    b.output(t);
    verified(&b);
    let p = partition(&b.model, &profile(DEVICE), false);
    assert_eq!(side(&p, &b.name(r)), "device");
    assert_eq!(side(&p, &b.name(s)), "op-unsupported");
    assert_eq!(p.fallback_ops.get("Sigmoid"), Some(&2));
    assert_eq!((p.device.nodes, p.cpu.nodes), (1, 2));
    assert!((p.device_node_share - 1.0 / 3.0).abs() < 1e-9);
}

#[test]
fn integer_only_runs_a_float_op_only_between_dq_and_q() {
    let mut b = Builder::new();
    let x = b.input("x", &[1, 8]);
    let xq = b.qdq(x);
    let quantized = b.op("Relu", &[xq], vec![]);
    let yq = b.qdq(quantized);
    // Reads a float value straight from the quantized Relu's DQ, writes float to a float op.
    let float_out = b.op("Relu", &[yq], vec![]);
    let float_in = b.op("Add", &[float_out, x], vec![]);
    b.output(float_in);
    verified(&b);
    let p = partition(&b.model, &profile(DEVICE), true);
    assert_eq!(side(&p, &b.name(quantized)), "device");
    assert_eq!(side(&p, &b.name(float_out)), "dtype");
    assert_eq!(side(&p, &b.name(float_in)), "dtype");
    let detail = &p.fallbacks[0].detail;
    assert!(detail.contains("not quantized"), "{detail}");
    // Without integer_only the same graph runs on the device.
    let p = partition(&b.model, &profile(DEVICE), false);
    assert!(p.fallbacks.is_empty(), "{:?}", p.fallbacks);
}

#[test]
fn dynamic_shapes_fall_back_only_under_static_shapes() {
    let mut b = Builder::new();
    let x = b.input("x", &[-1, 8]);
    let r = b.op("Relu", &[x], vec![]);
    b.output(r);
    let p = partition(&b.model, &profile(DEVICE), false);
    assert!(p.fallbacks.is_empty());
    let strict = format!("{DEVICE}shapes: {{static: true}}\n");
    let p = partition(&b.model, &profile(&strict), false);
    assert_eq!(side(&p, &b.name(r)), "dynamic-shape");
    assert!(p.fallbacks[0].detail.contains("'x'"), "{:?}", p.fallbacks);
}

#[test]
fn rank_rules_apply_to_activations_not_weights() {
    let rules = format!("{DEVICE}shapes: {{max_rank: 4, max_nontrivial_dims: 3}}\n");
    let mut b = Builder::new();
    let five = b.input("five", &[1, 1, 2, 3, 4]);
    let r5 = b.op("Relu", &[five], vec![]);
    let outer = b.input("outer", &[2, 3, 4, 5]);
    let ro = b.op("Relu", &[outer], vec![]);
    let inner = b.input("inner", &[1, 3, 4, 5]);
    let ri = b.op("Relu", &[inner], vec![]);
    // A 4-D filter with 8 outputs: a size > 1 outside the 3 innermost dims, but a weight.
    let img = b.input("img", &[1, 3, 6, 6]);
    let w = b.weight(&[8, 3, 3, 3]);
    let conv = b.op("Conv", &[img, w], vec![]);
    let wq = b.dq_weight(&[8, 8, 1, 1]);
    let conv_q = b.op("Conv", &[conv, wq], vec![]);
    for v in [r5, ro, ri, conv_q] {
        b.output(v);
    }
    verified(&b);
    let p = partition(&b.model, &profile(&rules), false);
    assert_eq!(side(&p, &b.name(r5)), "rank");
    assert_eq!(side(&p, &b.name(ro)), "rank");
    assert!(
        p.fallbacks[1].detail.contains("3 innermost"),
        "{:?}",
        p.fallbacks
    );
    assert_eq!(side(&p, &b.name(ri)), "device");
    assert_eq!(side(&p, &b.name(conv)), "device");
    assert_eq!(side(&p, &b.name(conv_q)), "device");
}

#[test]
fn per_op_constraints_are_checked() {
    let mut b = Builder::new();
    // Conv on a 3-D input: below min_rank 4.
    let seq = b.input("seq", &[1, 3, 10]);
    let w1 = b.weight(&[4, 3, 3]);
    let conv1d = b.op("Conv", &[seq, w1], vec![]);
    // Softmax over 2000 elements.
    let big = b.input("big", &[1, 2000]);
    let soft_big = b.op("Softmax", &[big], vec![]);
    let small = b.input("small", &[1, 100]);
    let soft_small = b.op("Softmax", &[small], vec![]);
    // Slice with step 2, and with step 1.
    let v = b.input("v", &[1, 16]);
    let (st, en, ax) = (b.ints(&[0]), b.ints(&[16]), b.ints(&[1]));
    let two = b.ints(&[2]);
    let one = b.ints(&[1]);
    let strided = b.op("Slice", &[v, st, en, ax, two], vec![]);
    let unit = b.op("Slice", &[v, st, en, ax, one], vec![]);
    // ReduceMean over channels, and over height/width.
    let img = b.input("img", &[1, 4, 6, 6]);
    let keep = ("keepdims", AttrValue::Int(1));
    let over_c = b.op(
        "ReduceMean",
        &[img],
        vec![("axes", AttrValue::Ints(vec![1])), keep.clone()],
    );
    let over_hw = b.op(
        "ReduceMean",
        &[img],
        vec![("axes", AttrValue::Ints(vec![2, 3])), keep],
    );
    // MaxPool with a 5x5 kernel, and 3x3.
    let pool5 = b.op(
        "MaxPool",
        &[img],
        vec![("kernel_shape", AttrValue::Ints(vec![5, 5]))],
    );
    let pool3 = b.op(
        "MaxPool",
        &[img],
        vec![("kernel_shape", AttrValue::Ints(vec![3, 3]))],
    );
    for v in [
        conv1d, soft_big, soft_small, strided, unit, over_c, over_hw, pool5, pool3,
    ] {
        b.output(v);
    }
    verified(&b);
    let p = partition(&b.model, &profile(DEVICE), false);
    assert_eq!(side(&p, &b.name(conv1d)), "rank");
    assert_eq!(side(&p, &b.name(soft_big)), "attribute");
    assert_eq!(side(&p, &b.name(soft_small)), "device");
    assert_eq!(side(&p, &b.name(strided)), "attribute");
    assert_eq!(side(&p, &b.name(unit)), "device");
    assert_eq!(side(&p, &b.name(over_c)), "attribute");
    assert_eq!(side(&p, &b.name(over_hw)), "device");
    assert_eq!(side(&p, &b.name(pool5)), "attribute");
    assert_eq!(side(&p, &b.name(pool3)), "device");
}

#[test]
fn dtypes_constraint_reads_through_dequantize() {
    let yaml = "
name: t
family: cpu
ops:
  supported:
    Relu: {dtypes: [uint8]}
";
    let mut b = Builder::new();
    let x = b.input("x", &[1, 8]);
    let float_relu = b.op("Relu", &[x], vec![]);
    let xq = b.qdq(x);
    let u8_relu = b.op("Relu", &[xq], vec![]);
    b.output(float_relu);
    b.output(u8_relu);
    let p = partition(&b.model, &profile(yaml), false);
    assert_eq!(side(&p, &b.name(float_relu)), "dtype");
    assert_eq!(side(&p, &b.name(u8_relu)), "device");
}

/// A chain `x -> Relu -> <middle> -> Relu -> out` with each op through Q/DQ.
#[test]
fn device_cpu_device_is_two_device_segments_and_two_transitions() {
    let mut b = Builder::new();
    let x = b.input("x", &[1, 8]);
    let a = b.op("Relu", &[x], vec![]);
    let aq = b.qdq(a);
    let c = b.op("Sigmoid", &[aq], vec![]);
    let cq = b.qdq(c);
    let d = b.op("Relu", &[cq], vec![]);
    b.output(d);
    verified(&b);
    let p = partition(&b.model, &profile(DEVICE), false);
    let on: Vec<&str> = p.segments.iter().map(|s| s.on).collect();
    assert_eq!(on, ["device", "cpu", "device"]);
    assert_eq!(p.device_segments, 2);
    assert_eq!(p.transitions, 2);
    assert_eq!(p.segments[0].first, b.name(a));
    assert_eq!(p.segments[2].last, b.name(d));
}

/// Two independent device branches and a CPU branch, inserted interleaved so that a run in
/// topological order alternates sides at every node.
#[test]
fn parallel_branches_are_one_segment_per_side() {
    let mut b = Builder::new();
    let x = b.input("x", &[1, 8]);
    let y = b.input("y", &[1, 8]);
    let d0 = b.op("Relu", &[x], vec![]);
    let c0 = b.op("Sigmoid", &[y], vec![]);
    let left = b.op("Relu", &[d0], vec![]);
    let c1 = b.op("Sigmoid", &[c0], vec![]);
    let right = b.op("Relu", &[d0], vec![]);
    let c2 = b.op("Sigmoid", &[c1], vec![]);
    let join = b.op("Add", &[left, right], vec![]);
    b.output(join);
    b.output(c2);
    verified(&b);
    let p = partition(&b.model, &profile(DEVICE), false);
    let seg: Vec<(&str, usize)> = p.segments.iter().map(|s| (s.on, s.nodes)).collect();
    assert_eq!(seg, [("device", 4), ("cpu", 3)]);
    assert_eq!(p.device_segments, 1);
    assert_eq!(p.transitions, 0);
    assert_eq!(p.segments[0].first, b.name(d0));
    assert_eq!(p.segments[0].last, b.name(join));
    assert_eq!(p.segments[1].first, b.name(c0));
}

/// Device A feeds the CPU node C and, directly, device B, which also reads C: A and B are
/// joined by an edge but cannot run as one device call.
#[test]
fn a_segment_never_waits_on_the_other_side() {
    let mut b = Builder::new();
    let x = b.input("x", &[1, 8]);
    let a = b.op("Relu", &[x], vec![]);
    let c = b.op("Sigmoid", &[a], vec![]);
    let d = b.op("Add", &[a, c], vec![]);
    b.output(d);
    verified(&b);
    let p = partition(&b.model, &profile(DEVICE), false);
    let on: Vec<&str> = p.segments.iter().map(|s| s.on).collect();
    assert_eq!(on, ["device", "cpu", "device"]);
    assert_eq!(p.transitions, 2);
}

/// A CPU node feeding three device nodes (attention's query, key and value projections): one
/// device segment, though no edge joins them; a weight they share joins nothing.
#[test]
fn readers_of_one_value_are_one_segment_but_a_shared_weight_joins_nothing() {
    let mut b = Builder::new();
    let x = b.input("x", &[1, 4, 6]);
    let norm = b.op("Sigmoid", &[x], vec![]);
    let nq = b.qdq(norm);
    let w = b.dq_weight(&[6, 6]);
    let heads: Vec<ValueRef> = (0..3).map(|_| b.op("MatMul", &[nq, w], vec![])).collect();
    for &h in &heads {
        b.output(h);
    }
    let y = b.input("y", &[1, 4, 6]);
    let other = b.op("MatMul", &[y, w], vec![]);
    b.output(other);
    verified(&b);
    let p = partition(&b.model, &profile(DEVICE), false);
    let seg: Vec<(&str, usize)> = p.segments.iter().map(|s| (s.on, s.nodes)).collect();
    assert_eq!(seg, [("cpu", 1), ("device", 3), ("device", 1)]);
    assert_eq!(p.transitions, 3);
}

#[test]
fn macs_of_conv_gemm_matmul_and_their_share() {
    let mut b = Builder::new();
    let img = b.input("img", &[1, 3, 8, 8]);
    let w = b.dq_weight(&[4, 3, 3, 3]);
    let pads = ("pads", AttrValue::Ints(vec![1, 1, 1, 1]));
    let conv = b.op("Conv", &[img, w], vec![pads]);
    let flat = b.op("Flatten", &[conv], vec![]); // [1, 256], on the CPU here
    let wg = b.weight(&[10, 256]);
    let gemm = b.op("Gemm", &[flat, wg], vec![("transB", AttrValue::Int(1))]);
    let seq = b.input("seq", &[2, 5, 6]);
    let wm = b.dq_weight(&[6, 7]);
    let mm = b.op("MatMul", &[seq, wm], vec![]);
    b.output(gemm);
    b.output(mm);
    verified(&b);
    let p = partition(&b.model, &profile(DEVICE), false);
    let conv_macs = 4 * 8 * 8 * 3 * 3 * 3;
    let gemm_macs = 256 * 10;
    let mm_macs = 2 * 5 * 6 * 7;
    assert_eq!(p.device.macs, conv_macs + gemm_macs + mm_macs);
    assert_eq!(p.cpu.macs, 0);
    assert_eq!(p.device_mac_share, Some(1.0));

    // The same Gemm on the CPU (Gemm dropped from the profile): the share follows.
    let no_gemm = format!("{DEVICE}  drop: [Gemm]\n");
    let p = partition(&b.model, &profile(&no_gemm), false);
    assert_eq!(p.cpu.macs, gemm_macs);
    let share = (conv_macs + mm_macs) as f64 / (conv_macs + gemm_macs + mm_macs) as f64;
    assert_eq!(p.device_mac_share, Some(share));
}

#[test]
fn unknown_macs_make_the_share_unknown() {
    let mut b = Builder::new();
    let seq = b.input("seq", &[-1, 6]);
    let w = b.weight(&[6, 7]);
    let mm = b.op("MatMul", &[seq, w], vec![]);
    let s = b.op("Sigmoid", &[mm], vec![]);
    let img = b.input("img", &[1, 3, 8, 8]);
    let wc = b.weight(&[4, 3, 1, 1]);
    let conv = b.op("Conv", &[img, wc], vec![]);
    b.output(s);
    b.output(conv);
    // The MatMul on the CPU, with its batch unknown: no share can be claimed, though every
    // known MAC is on the device.
    let yaml = DEVICE.replace("    MatMul: {}\n", "");
    let p = partition(&b.model, &profile(&yaml), false);
    assert_eq!(side(&p, &b.name(mm)), "op-unsupported");
    assert_eq!(p.cpu.macs_unknown, 1);
    assert_eq!(p.macs_unknown, 1);
    assert_eq!(p.device.macs, 4 * 64 * 3);
    assert_eq!(p.device_mac_share, None);
    // With the MatMul on the device too, every MAC is there, known or not.
    let p = partition(&b.model, &profile(DEVICE), false);
    assert_eq!(p.device.macs_unknown, 1);
    assert_eq!(p.device_mac_share, Some(1.0));
}

fn mark(b: &mut Builder, v: ValueRef, activation: &str, out: &str) {
    let node = b.model.graph.node_mut(v.node).expect("node");
    for (key, value) in [
        (FUSED_ACTIVATION_KEY, activation),
        (FUSED_ACTIVATION_OUTPUT_KEY, out),
    ] {
        node.metadata_props.push(StringStringEntryProto {
            key: key.to_string(),
            value: value.to_string(),
        });
    }
}

#[test]
fn an_activation_the_op_may_not_fuse_stays_a_separate_op_on_the_device() {
    let mut b = Builder::new();
    let img = b.input("img", &[1, 3, 8, 8]);
    let w = b.weight(&[4, 3, 1, 1]);
    let conv = b.op("Conv", &[img, w], vec![]);
    let relu = b.op("Relu", &[conv], vec![]);
    let relu_out = b.model.graph.value_name(relu).to_string();
    mark(&mut b, conv, "Relu", &relu_out);
    // A second Conv whose noted Clip is gone (its range went into the quantizer).
    let w2 = b.weight(&[4, 4, 1, 1]);
    let conv2 = b.op("Conv", &[relu, w2], vec![]);
    mark(&mut b, conv2, "Clip(0,6)", "removed_clip_output");
    b.output(conv2);
    verified(&b);
    let p = partition(&b.model, &profile(DEVICE), false);
    assert!(p.fallbacks.is_empty(), "{:?}", p.fallbacks);
    assert_eq!(p.separate_activations.len(), 2);
    let first = &p.separate_activations[0];
    assert_eq!(
        (first.node.as_str(), first.activation.as_str()),
        (b.name(conv).as_str(), "Relu")
    );
    assert!(first.detail.contains(&b.name(relu)), "{}", first.detail);
    let second = &p.separate_activations[1];
    assert!(
        second.detail.contains("no longer in the graph"),
        "{}",
        second.detail
    );

    // An op allowed to fuse reports nothing.
    let fusing = DEVICE.replace(", fused_activation: false", "");
    let p = partition(&b.model, &profile(&fusing), false);
    assert!(p.separate_activations.is_empty());
}

#[test]
fn parameter_bytes_count_device_weights_once() {
    let mut b = Builder::new();
    let img = b.input("img", &[1, 3, 4, 4]);
    // int8 [4,3,1,1] = 12 bytes, its float scale 4 and int8 zero point 1.
    let w = b.dq_weight(&[4, 3, 1, 1]);
    let conv = b.op("Conv", &[img, w], vec![]);
    let again = b.op("Conv", &[img, w], vec![]);
    // A CPU node's weight does not count.
    let seq = b.input("seq", &[1, 6]);
    let wm = b.weight(&[6, 7]);
    let mm = b.op("MatMul", &[seq, wm], vec![]);
    for v in [conv, again, mm] {
        b.output(v);
    }
    let yaml = DEVICE.replace("    MatMul: {}\n", "");
    let p = partition(&b.model, &profile(&yaml), false);
    assert_eq!(side(&p, &b.name(mm)), "op-unsupported");
    assert_eq!(device_parameter_bytes(&b.model, &p), 12 + 4 + 1);
}
