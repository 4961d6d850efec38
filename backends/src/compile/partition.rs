//! Which nodes run on the device and which fall back to the CPU, and why; segments,
//! transitions, op coverage by count and by estimated MACs. Every rule is read from the
//! profile's data (supported ops and their constraints, shape rules); the one rule a target
//! adds is `integer_only`: a device with no float units cannot run a node left in float.

use std::collections::{BTreeMap, HashMap};

use kiln_passes::infer::InferShapes;
use kiln_passes::ir::{AttrValue, Dim, Graph, Model, NodeIndex, ValueRef};
use kiln_passes::pipeline::Pass;
use kiln_passes::tensor::DataType;
use serde::Serialize;

use crate::profile::{OpConstraints, Profile};

/// Why a node falls back to the CPU.
#[derive(Debug, Clone, Serialize)]
pub struct Fallback {
    /// The node's name (or `op#index` when it has none).
    pub node: String,
    /// Its op type.
    pub op_type: String,
    /// `op-unsupported`, `dtype`, `dynamic-shape`, `attribute`, `rank`.
    pub reason: &'static str,
    /// The detail.
    pub detail: String,
}

/// A run of consecutive nodes (in topological order) on one side.
#[derive(Debug, Clone, Serialize)]
pub struct Segment {
    /// `device` or `cpu`.
    pub on: &'static str,
    /// Nodes in it.
    pub nodes: usize,
    /// Its first node.
    pub first: String,
    /// Its last node.
    pub last: String,
}

/// Count and MACs of one side.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Coverage {
    /// Nodes (Q/DQ excluded).
    pub nodes: usize,
    /// Estimated multiply-accumulates of Conv, ConvTranspose, Gemm, MatMul.
    pub macs: u64,
}

/// The partition of a model.
#[derive(Debug, Clone, Serialize)]
pub struct Partition {
    /// On the device.
    pub device: Coverage,
    /// On the CPU.
    pub cpu: Coverage,
    /// Share of nodes on the device.
    pub device_node_share: f64,
    /// Share of MACs on the device (1 when the model has none).
    pub device_mac_share: f64,
    /// Conv/Gemm/MatMul nodes whose MACs could not be estimated (shapes unknown).
    pub macs_unknown: usize,
    /// Nodes that fall back, in topological order.
    pub fallbacks: Vec<Fallback>,
    /// Fallbacks by op type.
    pub fallback_ops: BTreeMap<String, usize>,
    /// Segments in topological order.
    pub segments: Vec<Segment>,
    /// Device segments (the Edge TPU's subgraphs).
    pub device_segments: usize,
    /// Data edges between a device node and a CPU node (through Q/DQ).
    pub transitions: usize,
}

/// Partitions `model` for `profile`.
pub fn partition(model: &Model, profile: &Profile, integer_only: bool) -> Partition {
    let mut m = model.clone();
    // Shapes drive the static-shape, rank and MAC rules; a model inference cannot type keeps
    // the shapes it has.
    let _ = InferShapes.run(&mut m);
    let g = &m.graph;
    let order: Vec<NodeIndex> = g
        .topo_order()
        .into_iter()
        .filter(|&n| g[n].is_operator() && !is_qdq(g, n) && g[n].op_type() != "Constant")
        .collect();
    let mut on_device: HashMap<NodeIndex, bool> = HashMap::new();
    let mut fallbacks = Vec::new();
    let (mut device, mut cpu) = (Coverage::default(), Coverage::default());
    let mut macs_unknown = 0;
    for &n in &order {
        let verdict = check(g, n, profile, integer_only);
        let macs = macs(g, n);
        if macs.is_none() && matches!(g[n].op_type(), "Conv" | "ConvTranspose" | "Gemm" | "MatMul")
        {
            macs_unknown += 1;
        }
        let side = if verdict.is_none() {
            &mut device
        } else {
            &mut cpu
        };
        side.nodes += 1;
        side.macs += macs.unwrap_or(0);
        on_device.insert(n, verdict.is_none());
        if let Some((reason, detail)) = verdict {
            fallbacks.push(Fallback {
                node: label(g, n),
                op_type: g[n].op_type().to_string(),
                reason,
                detail,
            });
        }
    }
    let mut segments: Vec<Segment> = Vec::new();
    for &n in &order {
        let on = if on_device[&n] { "device" } else { "cpu" };
        match segments.last_mut() {
            Some(s) if s.on == on => {
                s.nodes += 1;
                s.last = label(g, n);
            }
            _ => segments.push(Segment {
                on,
                nodes: 1,
                first: label(g, n),
                last: label(g, n),
            }),
        }
    }
    let mut transitions = 0;
    for &n in &order {
        for v in g.inputs(n).into_iter().flatten() {
            if let Some(src) = through_qdq(g, v) {
                if on_device.get(&src).is_some_and(|&d| d != on_device[&n]) {
                    transitions += 1;
                }
            }
        }
    }
    let mut fallback_ops = BTreeMap::new();
    for f in &fallbacks {
        *fallback_ops.entry(f.op_type.clone()).or_insert(0) += 1;
    }
    let total_nodes = device.nodes + cpu.nodes;
    let total_macs = device.macs + cpu.macs;
    Partition {
        device,
        cpu,
        device_node_share: if total_nodes == 0 {
            1.0
        } else {
            device.nodes as f64 / total_nodes as f64
        },
        device_mac_share: if total_macs == 0 {
            1.0
        } else {
            device.macs as f64 / total_macs as f64
        },
        macs_unknown,
        fallbacks,
        fallback_ops,
        device_segments: segments.iter().filter(|s| s.on == "device").count(),
        segments,
        transitions,
    }
}

/// Bytes of constants read (directly or through a DequantizeLinear) by device nodes: the
/// parameters an on-chip cache would hold.
pub fn device_parameter_bytes(model: &Model, partition: &Partition) -> u64 {
    let g = &model.graph;
    let cpu: std::collections::HashSet<&str> = partition
        .fallbacks
        .iter()
        .map(|f| f.node.as_str())
        .collect();
    let mut seen = std::collections::HashSet::new();
    let mut bytes = 0u64;
    for n in g.node_indices() {
        if !g[n].is_operator() || is_qdq(g, n) || cpu.contains(label(g, n).as_str()) {
            continue;
        }
        for v in g.inputs(n).into_iter().flatten() {
            let mut vals = vec![v];
            if is_qdq(g, v.node) {
                vals = g.inputs(v.node).into_iter().flatten().collect();
            }
            for c in vals {
                if let Some(t) = g.constant(c) {
                    if seen.insert(c) {
                        bytes += t.dtype().byte_len(t.len()).unwrap_or(0) as u64;
                    }
                }
            }
        }
    }
    bytes
}

fn is_qdq(g: &Graph, n: NodeIndex) -> bool {
    matches!(g[n].op_type(), "QuantizeLinear" | "DequantizeLinear")
}

/// The node's name, or `op#index`.
pub fn label(g: &Graph, n: NodeIndex) -> String {
    let node = &g[n];
    if node.name.is_empty() {
        format!("{}#{}", node.op_type(), n.index())
    } else {
        node.name.clone()
    }
}

/// The operator that produces `v`, looking through Q/DQ nodes.
fn through_qdq(g: &Graph, mut v: ValueRef) -> Option<NodeIndex> {
    for _ in 0..8 {
        if !g[v.node].is_operator() {
            return None;
        }
        if !is_qdq(g, v.node) {
            return Some(v.node);
        }
        v = g.input(v.node, 0)?;
    }
    None
}

fn dims(g: &Graph, v: ValueRef) -> Option<Vec<Dim>> {
    if let Some(t) = g.constant(v) {
        return Some(t.shape().iter().map(|&d| Dim::Known(d as i64)).collect());
    }
    g.value_info(v).shape()
}

fn known(d: &[Dim]) -> Option<Vec<i64>> {
    d.iter()
        .map(|d| match d {
            Dim::Known(k) => Some(*k),
            _ => None,
        })
        .collect()
}

fn is_float(t: Option<DataType>) -> bool {
    matches!(
        t,
        Some(DataType::Float | DataType::Float16 | DataType::Bfloat16 | DataType::Double)
    )
}

/// The data values a node reads and writes (absent optional inputs skipped).
fn tensors(g: &Graph, n: NodeIndex) -> Vec<ValueRef> {
    let mut v: Vec<ValueRef> = g.inputs(n).into_iter().flatten().collect();
    v.extend((0..g[n].outputs.len()).map(|s| ValueRef::new(n, s)));
    v
}

/// A constant, or a constant's `DequantizeLinear` (a quantized weight or bias).
fn is_parameter(g: &Graph, v: ValueRef) -> bool {
    g.constant(v).is_some()
        || (g[v.node].op_type() == "DequantizeLinear"
            && g.input(v.node, 0).is_some_and(|w| g.constant(w).is_some()))
}

/// `None` when the device runs `n`; else the reason and detail.
fn check(
    g: &Graph,
    n: NodeIndex,
    p: &Profile,
    integer_only: bool,
) -> Option<(&'static str, String)> {
    let node = &g[n];
    let op = node.op_type();
    let known_domain = node.domain().is_empty() || node.domain() == "ai.onnx";
    let Some(c) = p.supports(op).filter(|_| known_domain || p.ops.all) else {
        return Some((
            "op-unsupported",
            format!("{op} is not in the profile's supported ops"),
        ));
    };
    let values = tensors(g, n);
    if p.shapes.static_shapes || c.static_shapes == Some(true) {
        for &v in &values {
            match dims(g, v) {
                Some(d) if known(&d).is_some() => {}
                Some(_) => {
                    return Some((
                        "dynamic-shape",
                        format!("'{}' has a symbolic or unknown dim", g.value_name(v)),
                    ))
                }
                None => {
                    return Some((
                        "dynamic-shape",
                        format!("'{}' has no known shape", g.value_name(v)),
                    ))
                }
            }
        }
    }
    // The rank rules are about activations: a Conv filter is 4-D on every target.
    for &v in values.iter().filter(|&&v| !is_parameter(g, v)) {
        let Some(d) = dims(g, v).and_then(|d| known(&d)) else {
            continue;
        };
        if let Some(max) = p.shapes.max_rank {
            if d.len() > max as usize {
                return Some((
                    "rank",
                    format!("'{}' has rank {} > {max}", g.value_name(v), d.len()),
                ));
            }
        }
        if let Some(k) = p.shapes.max_nontrivial_dims {
            let k = k as usize;
            if d.len() > k && d[..d.len() - k].iter().any(|&x| x > 1) {
                return Some((
                    "rank",
                    format!(
                        "'{}' {d:?} has a size > 1 outside the {k} innermost dims",
                        g.value_name(v)
                    ),
                ));
            }
        }
    }
    if let Some(r) = constraints(g, n, c) {
        return Some(r);
    }
    if integer_only {
        if let Some(v) = float_compute(g, n) {
            return Some((
                "dtype",
                format!("computes in float: '{}' is not quantized", g.value_name(v)),
            ));
        }
    }
    None
}

/// A float value that `n` reads not from a DequantizeLinear (constants aside), or writes not
/// only into QuantizeLinear nodes: the node computes in float.
fn float_compute(g: &Graph, n: NodeIndex) -> Option<ValueRef> {
    for v in g.inputs(n).into_iter().flatten() {
        let from_dq = g[v.node].op_type() == "DequantizeLinear";
        if is_float(g.value_info(v).elem_type()) && !from_dq && g.constant(v).is_none() {
            return Some(v);
        }
    }
    for s in 0..g[n].outputs.len() {
        let v = ValueRef::new(n, s);
        if !is_float(g.value_info(v).elem_type()) {
            continue;
        }
        let consumers = g.consumers(v);
        let to_q = consumers
            .iter()
            .all(|(c, _)| g[*c].op_type() == "QuantizeLinear");
        let is_output = g.outputs.iter().any(|o| o.value == v);
        if !is_output && (consumers.is_empty() || to_q) {
            continue;
        }
        return Some(v);
    }
    None
}

/// The element type a data input really has: a DequantizeLinear's integer input type.
fn effective_dtype(g: &Graph, v: ValueRef) -> Option<DataType> {
    if g[v.node].op_type() == "DequantizeLinear" {
        if let Some(src) = g.input(v.node, 0) {
            return g.value_info(src).elem_type();
        }
    }
    g.value_info(v).elem_type()
}

/// The op's own limits from the profile.
fn constraints(g: &Graph, n: NodeIndex, c: &OpConstraints) -> Option<(&'static str, String)> {
    let node = &g[n];
    let first = g.input(n, 0);
    let shape = first.and_then(|v| dims(g, v)).and_then(|d| known(&d));
    if let Some(types) = &c.dtypes {
        if let Some(t) = first.and_then(|v| effective_dtype(g, v)) {
            if !types.iter().any(|d| d.name() == t.name()) {
                return Some((
                    "dtype",
                    format!("input type {} not in the op's types", t.name()),
                ));
            }
        }
    }
    if let Some(s) = &shape {
        let r = s.len() as u32;
        if c.min_rank.is_some_and(|m| r < m) || c.max_rank.is_some_and(|m| r > m) {
            return Some(("rank", format!("input rank {r} outside the op's limits")));
        }
        if let Some(max) = c.max_elements {
            let e: i64 = s.iter().product();
            if e as u64 > max {
                return Some(("attribute", format!("{e} input elements > {max}")));
            }
        }
        if c.spatial_only == Some(true) && s.len() >= 3 {
            let rank = s.len() as i64;
            let axes: Vec<i64> = match node.op_type() {
                "ReduceMean" => node
                    .attr("axes")
                    .and_then(AttrValue::as_ints)
                    .map(<[i64]>::to_vec)
                    .or_else(|| {
                        g.constant_input(n, 1)
                            .and_then(|t| t.to_f64_vec())
                            .map(|v| v.iter().map(|&x| x as i64).collect())
                    })
                    .unwrap_or_else(|| (0..rank).collect()),
                _ => Vec::new(),
            };
            if axes.iter().any(|&a| {
                let a = if a < 0 { a + rank } else { a };
                a < rank - 2
            }) {
                return Some((
                    "attribute",
                    format!("reduces axes {axes:?}, not only height/width"),
                ));
            }
        }
    }
    if let Some(max) = c.max_kernel {
        let kernel: Option<Vec<i64>> = node
            .attr("kernel_shape")
            .and_then(AttrValue::as_ints)
            .map(<[i64]>::to_vec);
        if kernel.is_some_and(|k| k.iter().any(|&x| x > max as i64)) {
            return Some(("attribute", format!("kernel larger than {max}")));
        }
    }
    if let Some(allowed) = &c.strides {
        let strides = node
            .attr("strides")
            .and_then(AttrValue::as_ints)
            .map(<[i64]>::to_vec);
        let strides = strides.or_else(|| {
            (node.op_type() == "Slice")
                .then(|| g.constant_input(n, 4).and_then(|t| t.to_f64_vec()))
                .flatten()
                .map(|v| v.iter().map(|&x| x as i64).collect())
        });
        if let Some(s) = strides {
            if s.iter().any(|&x| !allowed.iter().any(|&a| a as i64 == x)) {
                return Some(("attribute", format!("strides {s:?} not in {allowed:?}")));
            }
        }
    }
    None
}

/// Estimated multiply-accumulates of a Conv, ConvTranspose, Gemm or MatMul.
fn macs(g: &Graph, n: NodeIndex) -> Option<u64> {
    let shape = |slot: usize| {
        g.input(n, slot)
            .and_then(|v| dims(g, v))
            .and_then(|d| known(&d))
    };
    let out = dims(g, ValueRef::new(n, 0)).and_then(|d| known(&d));
    let elems = |s: &[i64]| s.iter().product::<i64>().max(0) as u64;
    let r = match g[n].op_type() {
        "Conv" => {
            let w = shape(1)?;
            elems(&out?) * elems(w.get(1..)?)
        }
        "ConvTranspose" => {
            let w = shape(1)?;
            elems(&shape(0)?) * elems(w.get(1..)?)
        }
        "Gemm" => {
            let a = shape(0)?;
            let ta = g[n].attr("transA").and_then(AttrValue::as_int) == Some(1);
            let k = if ta { *a.first()? } else { *a.get(1)? };
            elems(&out?) * k.max(0) as u64
        }
        "MatMul" => {
            let a = shape(0)?;
            elems(&out?) * (*a.last()?).max(0) as u64
        }
        _ => return None,
    };
    Some(r)
}
