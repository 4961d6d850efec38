//! One rule per op type: MatMul and Gemm with a constant float B, Gather from a constant
//! float table. Each checks everything before it edits, so a node it leaves alone leaves no
//! trace in the graph.

use crate::ir::{Graph, NodeIndex, NodeKind, ValueRef};
use crate::tensor::{DataType, Tensor};

use super::config::WeightFormat;
use super::rewrite::{Editor, Key};
use super::WeightRole;

/// Why a node is not rewritten.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Skip {
    /// Left in float for a reason the summary gives.
    Reason(String),
    /// Not a candidate at all (an activation × activation MatMul, an integer table): silent.
    NotApplicable,
}

impl From<String> for Skip {
    fn from(s: String) -> Skip {
        Skip::Reason(s)
    }
}

/// The float weight at input `slot` of `node`, or why there is none to quantize.
fn weight_input(graph: &Graph, node: NodeIndex, slot: usize, what: &str) -> Result<ValueRef, Skip> {
    let v = graph.input(node, slot).ok_or(Skip::NotApplicable)?;
    match graph.constant(v) {
        Some(t) if t.dtype().is_float() => Ok(v),
        Some(_) => Err(Skip::NotApplicable),
        None => match graph.node(v.node).map(|n| &n.kind) {
            Some(NodeKind::Constant { value, .. }) if value.dtype().is_float() => {
                Err(Skip::Reason(format!(
                    "{what} is an initializer listed as a graph input (a caller may override it)"
                )))
            }
            Some(NodeKind::Outer) => Err(Skip::Reason(format!(
                "{what} is read from an enclosing graph (only weights local to the body are quantized)"
            ))),
            _ => Err(Skip::NotApplicable),
        },
    }
}

/// The activation at input 0 of `node`.
fn activation(ed: &Editor, node: NodeIndex) -> Result<ValueRef, Skip> {
    let a = ed
        .graph
        .input(node, 0)
        .ok_or_else(|| Skip::Reason("input A is missing".into()))?;
    if ed.graph.constant(a).is_some() {
        return Err(Skip::Reason(
            "input A is a constant too (fold the node first)".into(),
        ));
    }
    Ok(a)
}

/// The 2-D shape of the constant `v` (checked again, with the type, when it is read).
fn shape2(ed: &Editor, v: ValueRef) -> Result<[usize; 2], Skip> {
    let t = ed.graph.constant(v).ok_or(Skip::NotApplicable)?;
    match *t.shape() {
        [r, c] => Ok([r, c]),
        _ => Err(Skip::Reason(format!(
            "weight has rank {}; only 2-D weights are quantized",
            t.shape().len()
        ))),
    }
}

/// MatMul(A, B) with B `[K, N]`: `DequantizeLinear` in front of B, or MatMulNBits.
pub(super) fn matmul(ed: &mut Editor, node: NodeIndex, role: WeightRole) -> Result<(), Skip> {
    let b = weight_input(ed.graph, node, 1, "B")?;
    let a = activation(ed, node)?;
    shape2(ed, b)?;
    let nbits = ed.format() == WeightFormat::MatMulNBits;
    if nbits {
        if let Some(rank) = ed.graph.value_info(a).shape().map(|s| s.len()) {
            if rank < 2 {
                return Err(Skip::Reason(format!(
                    "A has rank {rank}; MatMulNBits needs [.., M, K]"
                )));
            }
        }
    }
    let key = Key {
        source: b,
        k_axis: 0,
        nbits,
        alpha: 1f32.to_bits(),
    };
    let w = ed.weight(key, role)?;
    if nbits {
        ed.become_nbits(node, a, w, None);
        ed.changes.add("MatMul → MatMulNBits", 1);
    } else {
        let base = ed.name(b);
        let dq = ed.dequantize(w, 0, &base);
        ed.graph.connect(dq, node, 1);
        ed.changes.add("MatMul weight → DequantizeLinear", 1);
    }
    ed.release(b);
    Ok(())
}

/// Gemm(A, B, C): `DequantizeLinear` in front of B (blocked along its K axis, 1 when
/// `transB`), or MatMulNBits with `alpha` folded into the weight and `beta × C` as its bias.
pub(super) fn gemm(ed: &mut Editor, node: NodeIndex, role: WeightRole) -> Result<(), Skip> {
    let b = weight_input(ed.graph, node, 1, "B")?;
    let a = activation(ed, node)?;
    let [rows, cols] = shape2(ed, b)?;
    let attr_int = |name: &str| {
        ed.graph[node]
            .attr(name)
            .and_then(|v| v.as_int())
            .unwrap_or(0)
    };
    let attr_float = |name: &str| {
        ed.graph[node]
            .attr(name)
            .and_then(|v| v.as_float())
            .unwrap_or(1.0)
    };
    let k_axis = usize::from(attr_int("transB") != 0);
    let n = if k_axis == 0 { cols } else { rows };
    if ed.format() == WeightFormat::Qdq {
        let w = ed.weight(
            Key {
                source: b,
                k_axis,
                nbits: false,
                alpha: 1f32.to_bits(),
            },
            role,
        )?;
        let base = ed.name(b);
        let dq = ed.dequantize(w, k_axis, &base);
        ed.graph.connect(dq, node, 1);
        ed.changes.add("Gemm weight → DequantizeLinear", 1);
        ed.release(b);
        return Ok(());
    }
    if attr_int("transA") != 0 {
        return Err(Skip::Reason(
            "transA is set; MatMulNBits reads A as [M, K]".into(),
        ));
    }
    let (alpha, beta) = (attr_float("alpha"), attr_float("beta"));
    let c = ed.graph.input(node, 2);
    let bias = match c {
        None => None,
        Some(c) => Some(bias(ed, c, n, beta)?),
    };
    let w = ed.weight(
        Key {
            source: b,
            k_axis,
            nbits: true,
            alpha: alpha.to_bits(),
        },
        role,
    )?;
    let bias = bias.map(|b| match b {
        Bias::Value(v) => v,
        Bias::New(name, t) => ed.constant(&name, t),
    });
    ed.become_nbits(node, a, w, bias);
    ed.changes.add("Gemm → MatMulNBits", 1);
    ed.release(b);
    if let Some(c) = c {
        ed.release(c);
    }
    Ok(())
}

/// MatMulNBits' bias: the Gemm's C as it is, or a new `[N]` tensor.
enum Bias {
    Value(ValueRef),
    New(String, Tensor),
}

/// Gemm's `beta × C` as a float32 `[N]` bias, when C is a constant `[N]` or `[1, N]`.
fn bias(ed: &Editor, c: ValueRef, n: usize, beta: f32) -> Result<Bias, Skip> {
    let refuse = || {
        Skip::Reason(format!(
            "C is not a constant float32 [{n}] or [1, {n}] bias (MatMulNBits adds a bias per column only)"
        ))
    };
    let t = ed.graph.constant(c).ok_or_else(refuse)?;
    if t.dtype() != DataType::Float || !(t.shape() == [n] || t.shape() == [1, n]) {
        return Err(refuse());
    }
    if beta == 1.0 && t.shape() == [n] {
        return Ok(Bias::Value(c));
    }
    let v: Vec<f32> = t.to_vec().map_err(|e| Skip::Reason(e.to_string()))?;
    let v: Vec<f32> = v.into_iter().map(|x| x * beta).collect();
    let t = Tensor::from_vec(vec![n], v).map_err(|e| Skip::Reason(e.to_string()))?;
    Ok(Bias::New(format!("{}_bias", ed.name(c)), t))
}

/// Gather(table, indices) from a constant float `[V, D]` table: a `DequantizeLinear` blocked
/// along D in front of it (the QDQ form whatever the format: MatMulNBits has no Gather).
pub(super) fn gather(ed: &mut Editor, node: NodeIndex) -> Result<(), Skip> {
    let table = weight_input(ed.graph, node, 0, "the table")?;
    if ed.graph.input(node, 1).is_none() {
        return Err(Skip::Reason("input indices is missing".into()));
    }
    let axis = ed.graph[node]
        .attr("axis")
        .and_then(|v| v.as_int())
        .unwrap_or(0);
    if axis != 0 {
        return Err(Skip::Reason(format!(
            "gathers along axis {axis}; only row lookups (axis 0) are embeddings"
        )));
    }
    shape2(ed, table)?;
    let w = ed.weight(
        Key {
            source: table,
            k_axis: 1,
            nbits: false,
            alpha: 1f32.to_bits(),
        },
        WeightRole::Embedding,
    )?;
    let base = ed.name(table);
    let dq = ed.dequantize(w, 1, &base);
    ed.graph.connect(dq, node, 0);
    ed.changes.add("Gather table → DequantizeLinear", 1);
    ed.release(table);
    Ok(())
}

/// Whether `node` (of `op_type`) reads a constant float weight a rule would quantize.
pub(super) fn is_candidate(graph: &Graph, node: NodeIndex, op_type: &str) -> bool {
    let slot = if op_type == "Gather" { 0 } else { 1 };
    !matches!(
        weight_input(graph, node, slot, ""),
        Err(Skip::NotApplicable)
    )
}
