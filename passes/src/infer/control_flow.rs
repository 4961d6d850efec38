//! If, Loop and Scan: what their bodies' inputs are, and their outputs from the bodies'.

use crate::ir::{Dim, Node};
use crate::tensor::DataType;

use super::dims;
use super::ty::{TensorTy, Ty};

/// Types an operator gives its bodies' inputs (by position), where the bodies declare none.
pub fn body_hints(op: &str, node: &Node, opset: i64, inputs: &[Ty]) -> Vec<Ty> {
    let elem_only = |t: &Ty| match t {
        Ty::Tensor(t) => Ty::tensor(t.elem, None),
        other => other.clone(),
    };
    match op {
        "Loop" => {
            let mut h = vec![
                Ty::known(DataType::Int64, vec![]),
                Ty::known(DataType::Bool, vec![]),
            ];
            // Carried values may change shape from one iteration to the next.
            h.extend(inputs.iter().skip(2).map(elem_only));
            h
        }
        "Scan" if opset >= 9 => {
            let m = scan_inputs(node, inputs.len());
            let n = inputs.len() - m;
            let axes = node.attr("scan_input_axes").and_then(|a| a.as_ints());
            let mut h: Vec<Ty> = inputs[..n].iter().map(elem_only).collect();
            for (j, t) in inputs[n..].iter().enumerate() {
                let axis = axes.and_then(|a| a.get(j).copied()).unwrap_or(0);
                let shape = t.shape().and_then(|s| {
                    let a = dims::axis(axis, s.len())?;
                    let mut o = s.to_vec();
                    o.remove(a);
                    Some(o)
                });
                h.push(Ty::tensor(t.elem(), shape));
            }
            h
        }
        _ => Vec::new(),
    }
}

/// How many of Scan's inputs are scanned (the rest are states).
fn scan_inputs(node: &Node, n_inputs: usize) -> usize {
    node.attr("num_scan_inputs")
        .and_then(|a| a.as_int())
        .and_then(|m| usize::try_from(m).ok())
        .unwrap_or(0)
        .min(n_inputs)
}

/// A type both `a` and `b` satisfy (an If's branches, a Loop's first and later values).
pub fn join(a: &Ty, b: &Ty) -> Ty {
    match (a, b) {
        (Ty::Tensor(x), Ty::Tensor(y)) => {
            let elem = match (x.elem, y.elem) {
                (Some(p), Some(q)) if p != q => None,
                (p, q) => p.or(q),
            };
            let shape = match (&x.shape, &y.shape) {
                (Some(p), Some(q)) if p.len() == q.len() => Some(
                    p.iter()
                        .zip(q)
                        .map(|(d, e)| if d == e { d.clone() } else { Dim::Unknown })
                        .collect(),
                ),
                _ => None,
            };
            Ty::Tensor(TensorTy { elem, shape })
        }
        // One side unknown: only the element type is shared (the operator requires it).
        (Ty::Tensor(x), Ty::Unknown) | (Ty::Unknown, Ty::Tensor(x)) => Ty::tensor(x.elem, None),
        (Ty::Seq(p), Ty::Seq(q)) if p == q => a.clone(),
        (Ty::Seq(p), Ty::Unknown) | (Ty::Unknown, Ty::Seq(p)) => Ty::Seq(*p),
        _ => Ty::Unknown,
    }
}

/// The outputs of If, Loop and Scan from their bodies' output types.
pub fn outputs(
    op: &str,
    node: &Node,
    opset: i64,
    inputs: &[Ty],
    bodies: &[(String, Vec<Ty>)],
) -> Vec<Ty> {
    let body = |name: &str| bodies.iter().find(|(n, _)| n == name).map(|(_, o)| o);
    let at = |v: &[Ty], i: usize| v.get(i).cloned().unwrap_or_default();
    match op {
        "If" => match (body("then_branch"), body("else_branch")) {
            (Some(t), Some(e)) => (0..node.outputs.len())
                .map(|i| join(&at(t, i), &at(e, i)))
                .collect(),
            _ => Vec::new(),
        },
        "Loop" => {
            let Some(b) = body("body") else {
                return Vec::new();
            };
            let n = inputs.len().saturating_sub(2);
            let mut out: Vec<Ty> = (0..n)
                .map(|i| join(&at(inputs, i + 2), &at(b, i + 1)))
                .collect();
            out.extend(b.iter().skip(1 + n).map(|t| stacked(t, 0, Dim::Unknown)));
            out
        }
        "Scan" if opset >= 9 => {
            let Some(b) = body("body") else {
                return Vec::new();
            };
            let m = scan_inputs(node, inputs.len());
            let n = inputs.len() - m;
            let len = inputs
                .get(n)
                .and_then(|t| {
                    let axis = node
                        .attr("scan_input_axes")
                        .and_then(|a| a.as_ints())
                        .and_then(|a| a.first().copied())
                        .unwrap_or(0);
                    let s = t.shape()?;
                    Some(s.get(dims::axis(axis, s.len())?)?.clone())
                })
                .unwrap_or(Dim::Unknown);
            let out_axes = node.attr("scan_output_axes").and_then(|a| a.as_ints());
            let mut out: Vec<Ty> = (0..n).map(|i| join(&at(inputs, i), &at(b, i))).collect();
            for (k, t) in b.iter().enumerate().skip(n) {
                let axis = out_axes.and_then(|a| a.get(k - n).copied()).unwrap_or(0);
                out.push(stacked(t, axis, len.clone()));
            }
            out
        }
        _ => Vec::new(),
    }
}

/// The type of per-iteration values `t` stacked along `axis` into `len` entries.
fn stacked(t: &Ty, axis: i64, len: Dim) -> Ty {
    let shape = t.shape().and_then(|s| {
        let a = dims::axis(axis, s.len() + 1)?;
        let mut o = s.to_vec();
        o.insert(a, len);
        Some(o)
    });
    Ty::tensor(t.elem(), shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_keeps_what_both_branches_agree_on() {
        let a = Ty::known(DataType::Float, vec![Dim::Known(2), Dim::Known(3)]);
        let b = Ty::known(DataType::Float, vec![Dim::Known(2), Dim::Known(4)]);
        assert_eq!(
            join(&a, &b),
            Ty::known(DataType::Float, vec![Dim::Known(2), Dim::Unknown])
        );
        let c = Ty::known(DataType::Float, vec![Dim::Known(2)]);
        assert_eq!(join(&a, &c), Ty::tensor(Some(DataType::Float), None));
        assert_eq!(
            join(&a, &Ty::Unknown),
            Ty::tensor(Some(DataType::Float), None)
        );
        let d = Ty::known(DataType::Int64, vec![]);
        assert_eq!(join(&a, &d), Ty::tensor(None, None));
    }
}
