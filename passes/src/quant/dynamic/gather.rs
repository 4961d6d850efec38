//! Gather from a constant float table (an embedding) → the table stored as uint8, the
//! Gather on the integers, and a `DequantizeLinear` after it (ORT's `GatherQuant` in
//! integer-ops mode, which quantizes the table like an activation: uint8, asymmetric,
//! per tensor). A Gather of computed data is no weight and is not a candidate.

use crate::ir::{NodeIndex, ValueRef};
use crate::quant::config::QuantConfig;

use super::rewrite::Rewriter;
use super::rule::Skip;
use super::weight::{plan, Layout};

/// Rewrites one Gather, or says why not.
pub(super) fn rewrite(
    rw: &mut Rewriter,
    node: NodeIndex,
    config: &QuantConfig,
) -> Result<(), Skip> {
    let data = rw.graph.input(node, 0).ok_or(Skip::NotApplicable)?;
    let indices = rw
        .graph
        .input(node, 1)
        .ok_or_else(|| Skip::Reason("input indices is missing".into()))?;
    let table = rw
        .graph
        .constant(data)
        .cloned()
        .ok_or(Skip::NotApplicable)?;
    if !table.dtype().is_float() {
        // Constant integer tables (shapes, ids) are no weights.
        return Err(Skip::NotApplicable);
    }
    let form = "gather";
    let stored = match rw.stored_weight(data, form) {
        Some(s) => s,
        None => {
            let base = rw.name(data);
            let planned = plan(data, &base, &table, Layout::Gather, config, |a| a)?;
            rw.store_weight(form, planned)
        }
    };
    let y = rw.name(ValueRef::new(node, 0));
    let (name, attrs) = {
        let n = &rw.graph[node];
        (n.name.clone(), n.attributes.clone())
    };
    let gathered = rw.op(
        "Gather",
        &name,
        &[stored.q, indices],
        attrs,
        &format!("{y}_quantized"),
    );
    rw.become_op(
        node,
        "DequantizeLinear",
        &format!("{y}_DequantizeLinear"),
        &[gathered, stored.scale, stored.zero_point],
    );
    rw.changes
        .add("Gather → uint8 Gather + DequantizeLinear", 1);
    Ok(())
}
