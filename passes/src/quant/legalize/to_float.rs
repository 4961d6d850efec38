//! Integer weights behind a `DequantizeLinear` become the float constants they stand for:
//! exact (the dequantized values are what the model computed with), for targets that
//! re-quantize a model whose activations carry no scales (the dynamic form).

use crate::ir::Model;
use crate::pipeline::PassError;
use crate::tensor::Tensor;

use super::edit::{self, params};
use super::Outcome;

/// Replaces every `DequantizeLinear` of a constant (main graph) by its float result.
pub fn dequantize_weights(model: &mut Model) -> Result<Outcome, PassError> {
    let g = &mut model.graph;
    let mut out = Outcome::default();
    let todo: Vec<_> = g
        .topo_order()
        .into_iter()
        .filter(|&n| edit::is(g, n, "DequantizeLinear"))
        .collect();
    for n in todo {
        let Some(q) = g.constant_input(n, 0) else {
            continue;
        };
        let label = g[n].label(n.index());
        let Some(values) = params(g, n).and_then(|p| p.dequantize(q)) else {
            out.kept.push(format!(
                "{label}: its scale or zero point is not a constant that matches the weight"
            ));
            continue;
        };
        let tensor = Tensor::from_vec(q.shape().to_vec(), values)?;
        edit::replace_by_constant(g, n, tensor);
        out.changed += 1;
    }
    g.verify()?;
    if out.changed > 0 {
        out.notes.push(format!(
            "{} integer weight(s) dequantized to float (exact)",
            out.changed
        ));
    }
    Ok(out)
}
