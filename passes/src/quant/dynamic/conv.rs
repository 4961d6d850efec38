//! Conv with a constant float W → `DynamicQuantizeLinear(X)`, `ConvInteger` (same
//! attributes), `Cast`, `Mul` by `X_scale × W_scale`, and an `Add` of the bias reshaped to
//! `[1, M, 1, …]` (ORT's `ConvInteger` operator quantizer).
//!
//! ORT reshapes the bias with a `Reshape` node; a constant bias is reshaped here instead
//! (same values, one node less), a computed one gets ORT's `Reshape`. W is per channel only
//! when every channel has the same zero point (see `weight.rs`: ConvInteger takes one).

use crate::ir::{Attribute, NodeIndex, ValueRef};
use crate::quant::config::QuantConfig;
use crate::tensor::{DataType, Tensor};

use super::rewrite::Rewriter;
use super::rule::{activation_input, constant_weight, Skip};
use super::weight::{plan, Layout};

/// Rewrites one Conv, or says why not.
pub(super) fn rewrite(
    rw: &mut Rewriter,
    node: NodeIndex,
    config: &QuantConfig,
) -> Result<(), Skip> {
    let x_in = activation_input(rw, node, 0, "X")?;
    let (w, tensor) = constant_weight(rw, node, 1, "W")?;
    let rank = tensor.shape().len();
    if rank < 3 {
        return Err(Skip::Reason(format!(
            "W has rank {rank}, Conv needs at least 3"
        )));
    }
    let bias = bias_plan(rw, node, rank, tensor.shape()[0])?;
    let form = "conv";
    let stored = match rw.stored_weight(w, form) {
        Some(s) => s,
        None => {
            let base = rw.name(w);
            let planned = plan(w, &base, &tensor, Layout::Conv, config, |axis| axis)?;
            rw.store_weight(form, planned)
        }
    };
    let attrs: Vec<Attribute> = rw.graph[node].attributes.clone();
    let bias = match bias {
        None => None,
        Some(Bias::Reshaped(b, t)) => {
            rw.release(b);
            let base = format!("{}_reshaped", rw.name(b));
            Some(rw.constant(&base, t))
        }
        Some(Bias::Computed(b, dims)) => {
            let y = rw.name(ValueRef::new(node, 0));
            let shape = rw.constant(&format!("{y}_bias_reshape_shape"), dims);
            Some(rw.op(
                "Reshape",
                &format!("{y}_bias_reshape"),
                &[b, shape],
                vec![],
                &format!("{y}_bias_reshape_output"),
            ))
        }
    };
    let x = rw.activation(x_in);
    rw.integer_chain(node, "ConvInteger", attrs, x, stored, bias);
    rw.changes.add("Conv → ConvInteger", 1);
    Ok(())
}

/// How the bias reaches the final Add.
enum Bias {
    /// A constant bias, already reshaped to `[1, M, 1, …]`.
    Reshaped(ValueRef, Tensor),
    /// A computed bias, reshaped by a node to the shape `[1, -1, 1, …]` given.
    Computed(ValueRef, Tensor),
}

/// The bias of a Conv whose W has `rank` axes and `m` output channels, checked before
/// anything changes.
fn bias_plan(rw: &Rewriter, node: NodeIndex, rank: usize, m: usize) -> Result<Option<Bias>, Skip> {
    let Some(b) = rw.graph.input(node, 2) else {
        return Ok(None);
    };
    let Some(t) = rw.graph.constant(b) else {
        let mut dims = vec![1i64; rank];
        dims[1] = -1;
        let dims = Tensor::from_vec(vec![rank], dims).map_err(|e| e.to_string())?;
        return Ok(Some(Bias::Computed(b, dims)));
    };
    if t.dtype() != DataType::Float || t.shape() != [m] {
        return Err(Skip::Reason(format!(
            "bias is {} {:?}, expected float32 [{m}]",
            t.dtype().name(),
            t.shape()
        )));
    }
    let mut shape = vec![1; rank];
    shape[1] = m;
    let reshaped = t.reshaped(shape).map_err(|e| e.to_string())?;
    Ok(Some(Bias::Reshaped(b, reshaped)))
}
