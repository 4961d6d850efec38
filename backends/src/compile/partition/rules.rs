//! Whether the device runs one node, and if not, why: the profile's op set and per-op limits,
//! its shape rules, and `integer_only` (a device with no float units cannot run a node left in
//! float).

use kiln_passes::ir::{AttrValue, Graph, NodeIndex, ValueRef};
use kiln_passes::tensor::DataType;

use super::values::{
    dims, elem_type, is_float, is_parameter, known, known_dims, param_dims, tensors,
};
use crate::profile::{OpConstraints, Profile};

/// Why a node falls back: a short reason and the detail.
pub(super) type Verdict = Option<(&'static str, String)>;

/// `None` when the device runs `n`; else the reason and detail.
pub(super) fn check(g: &Graph, n: NodeIndex, p: &Profile, integer_only: bool) -> Verdict {
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
        let Some(d) = known_dims(g, v) else {
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
        if is_float(elem_type(g, v)) && !from_dq && g.constant(v).is_none() {
            return Some(v);
        }
    }
    for s in 0..g[n].outputs.len() {
        let v = ValueRef::new(n, s);
        if !is_float(elem_type(g, v)) {
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
            return elem_type(g, src);
        }
    }
    elem_type(g, v)
}

/// The op's own limits from the profile.
fn constraints(g: &Graph, n: NodeIndex, c: &OpConstraints) -> Verdict {
    let node = &g[n];
    let first = g.input(n, 0);
    let shape = first.and_then(|v| known_dims(g, v));
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
        // A Conv may leave `kernel_shape` out: its filter's spatial dims say it.
        let kernel: Option<Vec<i64>> = node
            .attr("kernel_shape")
            .and_then(AttrValue::as_ints)
            .map(<[i64]>::to_vec)
            .or_else(|| {
                matches!(node.op_type(), "Conv" | "ConvTranspose")
                    .then(|| g.input(n, 1).and_then(|w| param_dims(g, w)))
                    .flatten()
                    .and_then(|w| w.get(2..).map(<[i64]>::to_vec))
            });
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
