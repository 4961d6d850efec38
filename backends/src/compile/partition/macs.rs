//! Estimated multiply-accumulates of the ops that carry a model's arithmetic: Conv,
//! ConvTranspose, Gemm, MatMul and their integer forms. Shapes come from inference where it
//! typed the values, else from the weight (a constant, or a constant behind a
//! DequantizeLinear) and the input; a dim that is still unknown leaves the estimate unknown
//! rather than zero.

use kiln_passes::ir::{AttrValue, Graph, NodeIndex, ValueRef};

use super::values::{known_dims, param_dims};

/// The op's data input and weight slots, when it is one whose MACs are estimated.
pub(super) fn mac_slots(op_type: &str) -> Option<(usize, usize)> {
    Some(match op_type {
        "Conv" | "ConvInteger" | "ConvTranspose" | "Gemm" | "MatMul" | "MatMulInteger" => (0, 1),
        "QLinearConv" | "QLinearMatMul" => (0, 3),
        _ => return None,
    })
}

/// Estimated MACs of `n`; `None` when it is not a MAC op or a needed dim is unknown.
pub(super) fn macs(g: &Graph, n: NodeIndex) -> Option<u64> {
    let (xs, ws) = mac_slots(g[n].op_type())?;
    let x = g.input(n, xs).and_then(|v| known_dims(g, v));
    let w = g.input(n, ws).and_then(|v| param_dims(g, v));
    let out = known_dims(g, ValueRef::new(n, 0));
    let node = &g[n];
    match node.op_type() {
        "Conv" | "ConvInteger" | "QLinearConv" => {
            let w = w?;
            let out = match out {
                Some(o) => o,
                None => conv_output(node, &x?, &w)?,
            };
            product(&out)?.checked_mul(product(w.get(1..)?)?)
        }
        "ConvTranspose" => {
            // Each input element is scattered through C_out/group × kernel weights.
            let w = w?;
            product(&x?)?.checked_mul(product(w.get(1..)?)?)
        }
        "Gemm" => {
            let t = |k: &str| node.attr(k).and_then(AttrValue::as_int) == Some(1);
            let (m, k) = match x.as_deref() {
                Some(&[r, c]) if t("transA") => (Some(c), Some(r)),
                Some(&[r, c]) => (Some(r), Some(c)),
                _ => (out.as_ref().and_then(|o| o.first().copied()), None),
            };
            let (k2, nn) = match w.as_deref() {
                Some(&[r, c]) if t("transB") => (Some(c), Some(r)),
                Some(&[r, c]) => (Some(r), Some(c)),
                _ => (None, out.as_ref().and_then(|o| o.get(1).copied())),
            };
            product(&[m?, k.or(k2)?, nn?])
        }
        _ => {
            // MatMul: numpy semantics, a 1-D operand promoted and its axis dropped after.
            let k = match (&x, &w) {
                (Some(a), _) if !a.is_empty() => *a.last()?,
                (_, Some(b)) if b.len() >= 2 => b[b.len() - 2],
                (_, Some(b)) => *b.first()?,
                _ => return None,
            };
            let out = match out {
                Some(o) => o,
                None => matmul_output(&x?, &w?)?,
            };
            product(&out)?.checked_mul(non_negative(k)?)
        }
    }
}

/// Product of dims (`None` on a negative dim or overflow).
fn product(d: &[i64]) -> Option<u64> {
    d.iter()
        .try_fold(1u64, |acc, &x| acc.checked_mul(non_negative(x)?))
}

fn non_negative(x: i64) -> Option<u64> {
    u64::try_from(x).ok()
}

/// A Conv's output shape from its input, filter and attributes (ONNX's formulas).
fn conv_output(node: &kiln_passes::ir::Node, x: &[i64], w: &[i64]) -> Option<Vec<i64>> {
    let spatial = x.get(2..)?;
    let r = spatial.len();
    let ints = |k: &str| {
        node.attr(k)
            .and_then(AttrValue::as_ints)
            .map(<[i64]>::to_vec)
    };
    let kernel = ints("kernel_shape").unwrap_or_else(|| w.get(2..).unwrap_or(&[]).to_vec());
    let strides = ints("strides").unwrap_or_else(|| vec![1; r]);
    let dilations = ints("dilations").unwrap_or_else(|| vec![1; r]);
    let pads = ints("pads").unwrap_or_else(|| vec![0; 2 * r]);
    if kernel.len() != r || strides.len() != r || dilations.len() != r || pads.len() != 2 * r {
        return None;
    }
    let auto_pad = node
        .attr("auto_pad")
        .and_then(AttrValue::as_str)
        .unwrap_or("NOTSET");
    let mut out = vec![*x.first()?, *w.first()?];
    for i in 0..r {
        let (s, d) = (strides[i], dilations[i]);
        if s <= 0 || d <= 0 {
            return None;
        }
        let extent = d.checked_mul(kernel[i] - 1)? + 1;
        let o = match auto_pad {
            "SAME_UPPER" | "SAME_LOWER" => (spatial[i] + s - 1) / s,
            "VALID" => (spatial[i] - extent) / s + 1,
            _ => (spatial[i] + pads[i] + pads[i + r] - extent) / s + 1,
        };
        out.push(o);
    }
    out.iter().all(|&d| d > 0).then_some(out)
}

/// A MatMul's output shape: broadcast batch dims, then M and N.
fn matmul_output(a: &[i64], b: &[i64]) -> Option<Vec<i64>> {
    let (a_batch, m) = match a.len() {
        0 => return None,
        1 => (&[][..], None),
        l => (&a[..l - 2], Some(a[l - 2])),
    };
    let (b_batch, n) = match b.len() {
        0 => return None,
        1 => (&[][..], None),
        l => (&b[..l - 2], Some(b[l - 1])),
    };
    let rank = a_batch.len().max(b_batch.len());
    let at = |s: &[i64], i: usize| {
        let pad = rank - s.len();
        if i < pad {
            1
        } else {
            s[i - pad]
        }
    };
    let mut out = Vec::with_capacity(rank + 2);
    for i in 0..rank {
        let (x, y) = (at(a_batch, i), at(b_batch, i));
        out.push(match (x, y) {
            (1, y) => y,
            (x, 1) => x,
            (x, y) if x == y => x,
            _ => return None,
        });
    }
    out.extend(m);
    out.extend(n);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::partition::testutil::Builder;

    /// MACs read from the raw graph: no inference has typed any node output, so the
    /// estimates come from the input and the weight alone.
    fn macs_of(b: &Builder, v: ValueRef) -> Option<u64> {
        macs(&b.model.graph, v.node)
    }

    #[test]
    fn conv_output_dims_come_from_the_attributes() {
        let mut b = Builder::new();
        let x = b.input("x", &[2, 3, 9, 9]);
        let w = b.dq_weight(&[8, 3, 3, 3]);
        let strided = b.op(
            "Conv",
            &[x, w],
            vec![
                ("strides", AttrValue::Ints(vec![2, 2])),
                ("pads", AttrValue::Ints(vec![1, 1, 1, 1])),
            ],
        );
        // (9 + 2 - 3) / 2 + 1 = 5 per spatial axis.
        assert_eq!(macs_of(&b, strided), Some(2 * 8 * 5 * 5 * 27));
        let same = b.op(
            "Conv",
            &[x, w],
            vec![
                ("strides", AttrValue::Ints(vec![2, 2])),
                (
                    "auto_pad",
                    AttrValue::String(bytes::Bytes::from_static(b"SAME_UPPER")),
                ),
            ],
        );
        assert_eq!(macs_of(&b, same), Some(2 * 8 * 5 * 5 * 27));
        let dilated = b.op(
            "Conv",
            &[x, w],
            vec![("dilations", AttrValue::Ints(vec![2, 2]))],
        );
        // Extent 5: 9 - 5 + 1 = 5.
        assert_eq!(macs_of(&b, dilated), Some(2 * 8 * 5 * 5 * 27));
        // Depthwise: a [C, 1, k, k] filter, one input channel per output.
        let wd = b.weight(&[3, 1, 3, 3]);
        let dw = b.op("Conv", &[x, wd], vec![("group", AttrValue::Int(3))]);
        assert_eq!(macs_of(&b, dw), Some(2 * 3 * 7 * 7 * 9));
        let wt = b.weight(&[3, 4, 2, 2]);
        let up = b.op("ConvTranspose", &[x, wt], vec![]);
        assert_eq!(macs_of(&b, up), Some(2 * 3 * 81 * 4 * 4));
    }

    #[test]
    fn gemm_and_matmul_read_k_and_n_from_the_weight() {
        let mut b = Builder::new();
        let a = b.input("a", &[4, 6]);
        let w = b.dq_weight(&[5, 6]);
        let gemm = b.op("Gemm", &[a, w], vec![("transB", AttrValue::Int(1))]);
        assert_eq!(macs_of(&b, gemm), Some(4 * 6 * 5));
        let at = b.input("at", &[6, 4]);
        let w2 = b.weight(&[6, 5]);
        let gemm_t = b.op("Gemm", &[at, w2], vec![("transA", AttrValue::Int(1))]);
        assert_eq!(macs_of(&b, gemm_t), Some(4 * 6 * 5));
        let seq = b.input("seq", &[2, 3, 6]);
        let wm = b.dq_weight(&[6, 5]);
        let mm = b.op("MatMul", &[seq, wm], vec![]);
        assert_eq!(macs_of(&b, mm), Some(2 * 3 * 6 * 5));
        // Batched on both sides, broadcast: [2,1,3,6] x [4,6,5] -> [2,4,3,5].
        let l = b.input("l", &[2, 1, 3, 6]);
        let r = b.input("r", &[4, 6, 5]);
        let bmm = b.op("MatMul", &[l, r], vec![]);
        assert_eq!(macs_of(&b, bmm), Some(2 * 4 * 3 * 5 * 6));
        // A vector times a matrix: [6] x [6,5] -> [5].
        let v = b.input("v", &[6]);
        let vm = b.op("MatMul", &[v, wm], vec![]);
        assert_eq!(macs_of(&b, vm), Some(30));
    }

    #[test]
    fn an_unknown_dim_leaves_the_estimate_unknown() {
        let mut b = Builder::new();
        let seq = b.input("seq", &[-1, 6]);
        let w = b.weight(&[6, 5]);
        let mm = b.op("MatMul", &[seq, w], vec![]);
        assert_eq!(macs_of(&b, mm), None);
        let img = b.input("img", &[1, 3, -2, 8]);
        let wc = b.weight(&[4, 3, 1, 1]);
        let conv = b.op("Conv", &[img, wc], vec![]);
        assert_eq!(macs_of(&b, conv), None);
        // A weight that is neither constant nor typed.
        let x = b.input("x", &[2, 6]);
        let dynamic = b.op("Relu", &[w], vec![]);
        let mm2 = b.op("MatMul", &[x, dynamic], vec![]);
        assert_eq!(macs_of(&b, mm2), None);
        // Not a MAC op at all.
        let relu = b.op("Relu", &[x], vec![]);
        assert_eq!(macs_of(&b, relu), None);
        assert!(mac_slots("Relu").is_none());
    }
}
