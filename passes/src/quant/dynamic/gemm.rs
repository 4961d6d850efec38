//! Gemm with a constant float B → the MatMul form (`DynamicQuantizeLinear`,
//! `MatMulInteger`, `Cast`, `Mul`) plus an `Add` of `beta × C`.
//!
//! ONNX Runtime's `quantize_dynamic` first rewrites a Gemm with `alpha = beta = 1` and
//! `transA = 0` into MatMul (+ Add), transposing B in place when `transB = 1`, and leaves
//! other Gemms in float. Here `transB` and `alpha` are folded into the quantized weight
//! (a transposed copy when B is shared), and a constant C is multiplied by `beta`, so only
//! `transA = 1` (which would need a Transpose of the activation) and a computed C with
//! `beta ≠ 1` stay in float.

use crate::ir::{NodeIndex, ValueRef};
use crate::quant::config::QuantConfig;
use crate::tensor::{DataType, Tensor};

use super::rewrite::Rewriter;
use super::rule::{activation_input, constant_weight, Skip};
use super::weight::{gemm_weight, plan, Layout};

/// Rewrites one Gemm, or says why not.
pub(super) fn rewrite(
    rw: &mut Rewriter,
    node: NodeIndex,
    config: &QuantConfig,
) -> Result<(), Skip> {
    let (alpha, beta, trans_a, trans_b) = {
        let n = &rw.graph[node];
        let f = |k: &str| n.attr(k).and_then(|a| a.as_float()).unwrap_or(1.0);
        let i = |k: &str| n.attr(k).and_then(|a| a.as_int()).unwrap_or(0);
        (f("alpha"), f("beta"), i("transA"), i("transB"))
    };
    if trans_a != 0 {
        return Err(Skip::Reason(
            "transA = 1: A would need a Transpose before DynamicQuantizeLinear (ORT leaves it in float too)"
                .into(),
        ));
    }
    let a = activation_input(rw, node, 0, "A")?;
    let (b, tensor) = constant_weight(rw, node, 1, "B")?;
    let bias = bias_plan(rw, node, beta)?;
    let form = format!("gemm transB={trans_b} alpha={}", alpha.to_bits());
    let stored = match rw.stored_weight(b, &form) {
        Some(s) => s,
        None => {
            if tensor.dtype() != DataType::Float {
                return Err(Skip::Reason(format!(
                    "B is {}, not float32",
                    tensor.dtype().name()
                )));
            }
            let w = gemm_weight(&tensor, trans_b != 0, alpha)?;
            let base = rw.name(b);
            // Column c of the kernel's [K, N] is row c of B when transB = 1.
            let axis = |_: usize| if trans_b != 0 { 0 } else { 1 };
            let planned = plan(b, &base, &w, Layout::MatMul, config, axis)?;
            rw.store_weight(&form, planned)
        }
    };
    let bias = match bias {
        Bias::None => None,
        Bias::Dropped(c) => {
            rw.release(c);
            None
        }
        Bias::Value(c) => Some(c),
        Bias::Scaled(c, t) => {
            rw.release(c);
            let base = format!("{}_beta", rw.name(c));
            Some(rw.constant(&base, t))
        }
    };
    let x = rw.activation(a);
    rw.integer_chain(node, "MatMulInteger", vec![], x, stored, bias);
    rw.changes.add("Gemm → MatMulInteger", 1);
    Ok(())
}

/// What the final Add adds.
enum Bias {
    /// No C.
    None,
    /// C is there but beta = 0 makes Gemm ignore it.
    Dropped(ValueRef),
    /// C as it is (beta = 1, or computed).
    Value(ValueRef),
    /// A constant C times beta: the source and the new tensor.
    Scaled(ValueRef, Tensor),
}

/// C scaled by beta, checked before anything changes.
fn bias_plan(rw: &Rewriter, node: NodeIndex, beta: f32) -> Result<Bias, Skip> {
    let Some(c) = rw.graph.input(node, 2) else {
        return Ok(Bias::None);
    };
    if beta == 0.0 {
        return Ok(Bias::Dropped(c));
    }
    match rw.graph.constant(c) {
        Some(_) if beta == 1.0 => Ok(Bias::Value(c)),
        Some(t) => {
            if t.dtype() != DataType::Float {
                return Err(Skip::Reason(format!(
                    "C is {}, not float32",
                    t.dtype().name()
                )));
            }
            let v: Vec<f32> = t.to_vec().map_err(|e| e.to_string())?;
            let scaled = v.iter().map(|x| x * beta).collect();
            let t = Tensor::from_vec(t.shape().to_vec(), scaled).map_err(|e| e.to_string())?;
            Ok(Bias::Scaled(c, t))
        }
        None if beta == 1.0 => Ok(Bias::Value(c)),
        None => Err(Skip::Reason(format!(
            "C is computed and beta = {beta}: the Add would need a Mul too"
        ))),
    }
}
