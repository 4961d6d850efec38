//! Per-tensor Q/DQ parameters stored as one-element 1-D tensors (PyTorch's export writes
//! scales of shape [1]) become scalars. ONNX allows both, but ONNX Runtime's fused QDQ kernels
//! (QLinearAdd, …) reject a shape-[1] scale once their fusion applies, and QNN and the TFLite
//! converters read a per-tensor parameter as a scalar.

use crate::ir::{Model, NameSet};
use crate::pipeline::PassError;

use super::edit;
use super::Outcome;

/// Makes the one-element scale and zero point of every Q/DQ of the main graph scalars.
pub fn scalar_params(model: &mut Model) -> Result<Outcome, PassError> {
    let mut names = NameSet::of(&model.graph);
    let g = &mut model.graph;
    let todo: Vec<_> = g
        .node_indices()
        .filter(|&n| edit::is(g, n, "QuantizeLinear") || edit::is(g, n, "DequantizeLinear"))
        .collect();
    let mut out = Outcome::default();
    for n in todo {
        let mut changed = false;
        for slot in [1, 2] {
            let Some(t) = g.constant_input(n, slot) else {
                continue;
            };
            if t.len() != 1 || t.shape().is_empty() {
                continue;
            }
            let scalar = t.reshaped(Vec::new())?;
            let old = g.input(n, slot);
            let base = format!("{}_scalar", old.map_or("", |v| g.value_name(v)));
            let v = edit::constant(g, &mut names, &base, scalar);
            g.connect(v, n, slot);
            if let Some(old) = old {
                edit::drop_unused(g, &[old]);
            }
            changed = true;
        }
        out.changed += usize::from(changed);
    }
    g.verify()?;
    if out.changed > 0 {
        out.notes.push(format!(
            "{} Q/DQ node(s) given scalar scale/zero point (they were shape [1])",
            out.changed
        ));
    }
    Ok(out)
}
