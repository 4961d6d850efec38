//! MatMul with a constant float B → `DynamicQuantizeLinear(A)`, `MatMulInteger`, `Cast`,
//! `Mul` by `A_scale × B_scale` (ORT's `MatMulInteger` operator quantizer). B is quantized
//! per column (the last axis) when per channel is asked, as ORT does with `per_channel`.

use crate::ir::NodeIndex;
use crate::quant::config::QuantConfig;

use super::rewrite::Rewriter;
use super::rule::{activation_input, constant_weight, Skip};
use super::weight::{plan, Layout};

/// Rewrites one MatMul, or says why not.
pub(super) fn rewrite(
    rw: &mut Rewriter,
    node: NodeIndex,
    config: &QuantConfig,
) -> Result<(), Skip> {
    let a = activation_input(rw, node, 0, "A")?;
    let (b, tensor) = constant_weight(rw, node, 1, "B")?;
    let form = "matmul";
    let stored = match rw.stored_weight(b, form) {
        Some(s) => s,
        None => {
            let base = rw.name(b);
            let w = plan(b, &base, &tensor, Layout::MatMul, config, |axis| axis)
                .map_err(Skip::Reason)?;
            rw.store_weight(form, w)
        }
    };
    let x = rw.activation(a);
    rw.integer_chain(node, "MatMulInteger", vec![], x, stored, None);
    rw.changes.add("MatMul → MatMulInteger", 1);
    Ok(())
}
