//! Which nodes run on the device and which fall back to the CPU, and why; segments (connected
//! subgraphs on one side), transitions, op coverage by count and by estimated MACs. Every rule
//! is read from the profile's data (supported ops and their constraints, shape rules); the one
//! rule a target adds is `integer_only`: a device with no float units cannot run a node left
//! in float.

mod activation;
mod macs;
mod rules;
mod segments;
mod values;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod testutil;

use std::collections::{BTreeMap, HashSet};

use kiln_passes::infer::InferShapes;
use kiln_passes::ir::{Graph, Model, NodeIndex};
use kiln_passes::pipeline::Pass;
use serde::Serialize;

use crate::profile::Profile;
use values::is_qdq;

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

/// A device node whose noted activation its op may not fuse (`fused_activation: false`): it
/// stays on the device, the activation is a separate op.
#[derive(Debug, Clone, Serialize)]
pub struct SeparateActivation {
    /// The node's name (or `op#index`).
    pub node: String,
    /// Its op type.
    pub op_type: String,
    /// The activation noted on it (`Relu`, `Clip(0,6)`).
    pub activation: String,
    /// Where the activation runs instead.
    pub detail: String,
}

/// A connected subgraph of nodes on one side: joined by data edges or by reading one value
/// (through Q/DQ), never with the other side on a path between two of its nodes.
#[derive(Debug, Clone, Serialize)]
pub struct Segment {
    /// `device` or `cpu`.
    pub on: &'static str,
    /// Nodes in it.
    pub nodes: usize,
    /// Its first node in topological order.
    pub first: String,
    /// Its last node in topological order.
    pub last: String,
}

/// Count and MACs of one side.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Coverage {
    /// Nodes (Q/DQ excluded).
    pub nodes: usize,
    /// Estimated multiply-accumulates of Conv, ConvTranspose, Gemm, MatMul (and their integer
    /// forms) whose shapes are known.
    pub macs: u64,
    /// Such nodes whose MACs could not be estimated (a dim unknown): not in `macs`.
    pub macs_unknown: usize,
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
    /// Share of MACs on the device; `None` when it cannot be told: MAC nodes with unknown
    /// shapes (see `macs_unknown`) on a side whose share matters, or no MACs at all.
    pub device_mac_share: Option<f64>,
    /// Conv/Gemm/MatMul nodes whose MACs could not be estimated, on either side.
    pub macs_unknown: usize,
    /// Nodes that fall back, in topological order.
    pub fallbacks: Vec<Fallback>,
    /// Fallbacks by op type.
    pub fallback_ops: BTreeMap<String, usize>,
    /// Device nodes that run their activation as a separate op, in topological order.
    pub separate_activations: Vec<SeparateActivation>,
    /// Segments, by their first node in topological order.
    pub segments: Vec<Segment>,
    /// Device segments: the TPU subgraphs on the Edge TPU. Its compiler has been documented to
    /// map one only (ops after the first unsupported one stay on the CPU, "More than one
    /// subgraph is not supported" in its log): with more than one, expect less on the device.
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
    let mut on_device = Vec::with_capacity(order.len());
    let mut fallbacks = Vec::new();
    let mut separate_activations = Vec::new();
    let (mut device, mut cpu) = (Coverage::default(), Coverage::default());
    for &n in &order {
        let verdict = rules::check(g, n, profile, integer_only);
        let side = if verdict.is_none() {
            &mut device
        } else {
            &mut cpu
        };
        side.nodes += 1;
        match macs::macs(g, n) {
            Some(x) => side.macs = side.macs.saturating_add(x),
            None if macs::mac_slots(g[n].op_type()).is_some() => side.macs_unknown += 1,
            None => {}
        }
        on_device.push(verdict.is_none());
        match verdict {
            Some((reason, detail)) => fallbacks.push(Fallback {
                node: label(g, n),
                op_type: g[n].op_type().to_string(),
                reason,
                detail,
            }),
            None => {
                let noted = profile
                    .supports(g[n].op_type())
                    .and_then(|c| activation::separate_activation(g, n, c));
                separate_activations.extend(noted);
            }
        }
    }
    let links = segments::links(g, &order);
    let component = segments::components(&links, &on_device);
    let mut segments: Vec<Segment> = Vec::new();
    for (p, &n) in order.iter().enumerate() {
        let c = component[p];
        if c == segments.len() {
            segments.push(Segment {
                on: if on_device[p] { "device" } else { "cpu" },
                nodes: 0,
                first: label(g, n),
                last: String::new(),
            });
        }
        if let Some(s) = segments.get_mut(c) {
            s.nodes += 1;
            s.last = label(g, n);
        }
    }
    let mut fallback_ops = BTreeMap::new();
    for f in &fallbacks {
        *fallback_ops.entry(f.op_type.clone()).or_insert(0) += 1;
    }
    let total_nodes = device.nodes + cpu.nodes;
    let macs_unknown = device.macs_unknown + cpu.macs_unknown;
    Partition {
        device,
        cpu,
        device_node_share: if total_nodes == 0 {
            1.0
        } else {
            device.nodes as f64 / total_nodes as f64
        },
        device_mac_share: mac_share(&device, &cpu),
        macs_unknown,
        fallbacks,
        fallback_ops,
        separate_activations,
        device_segments: segments.iter().filter(|s| s.on == "device").count(),
        transitions: segments::transitions(&links.edges, &on_device),
        segments,
    }
}

/// The device's share of MACs, when the unknown estimates cannot change it: all on one side
/// whose other side has no MAC node, or none unknown.
fn mac_share(device: &Coverage, cpu: &Coverage) -> Option<f64> {
    let none = |c: &Coverage| c.macs == 0 && c.macs_unknown == 0;
    match (device.macs_unknown, cpu.macs_unknown) {
        (0, 0) => {
            let total = device.macs.saturating_add(cpu.macs);
            (total > 0).then(|| device.macs as f64 / total as f64)
        }
        (_, 0) if none(cpu) => Some(1.0),
        (0, _) if none(device) => Some(0.0),
        _ => None,
    }
}

/// Bytes of constants read (directly or through a DequantizeLinear) by device nodes: the
/// parameters an on-chip cache would hold.
pub fn device_parameter_bytes(model: &Model, partition: &Partition) -> u64 {
    let g = &model.graph;
    let cpu: HashSet<&str> = partition
        .fallbacks
        .iter()
        .map(|f| f.node.as_str())
        .collect();
    let mut seen = HashSet::new();
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

/// The node's name, or `op#index`.
pub fn label(g: &Graph, n: NodeIndex) -> String {
    let node = &g[n];
    if node.name.is_empty() {
        format!("{}#{}", node.op_type(), n.index())
    } else {
        node.name.clone()
    }
}
