//! QAT exports store weights as float constants behind `QuantizeLinear` → `DequantizeLinear`
//! (PyTorch's fake-quant export). The `QuantizeLinear` of a constant is folded into the
//! integer constant it computes, with `QuantizeLinear`'s own arithmetic, so the weight is
//! stored as integers behind its `DequantizeLinear`, as ORT's QDQ form has it.

use crate::ir::Model;
use crate::pipeline::PassError;
use crate::quant::weights::int_tensor;
use crate::quant::QuantType;
use crate::tensor::DataType;

use super::edit::{self, params};
use super::Outcome;

/// Folds every `QuantizeLinear` of a float32 constant (main graph).
pub fn fold_weight_quantize(model: &mut Model) -> Result<Outcome, PassError> {
    let g = &mut model.graph;
    let mut out = Outcome::default();
    let todo: Vec<_> = g
        .topo_order()
        .into_iter()
        .filter(|&n| edit::is(g, n, "QuantizeLinear"))
        .collect();
    for n in todo {
        let Some(x) = g.constant_input(n, 0) else {
            continue;
        };
        if x.dtype() != DataType::Float {
            continue;
        }
        let label = g[n].label(n.index());
        let Some(p) = params(g, n) else {
            out.kept
                .push(format!("{label}: scale or zero point is not a constant"));
            continue;
        };
        let Some(dtype) = QuantType::from_data_type(p.dtype) else {
            out.kept.push(format!(
                "{label}: zero point type {} not handled",
                p.dtype.name()
            ));
            continue;
        };
        let shape = x.shape().to_vec();
        let values: Vec<f32> = x.to_vec()?;
        let Some(q) = p.quantize(&values, &shape) else {
            out.kept
                .push(format!("{label}: scale count does not match the weight"));
            continue;
        };
        edit::replace_by_constant(g, n, int_tensor(dtype, shape, &q));
        out.changed += 1;
    }
    g.verify()?;
    if out.changed > 0 {
        out.notes.push(format!(
            "{} QuantizeLinear of float weights folded into integer weights (QAT export form)",
            out.changed
        ));
    }
    Ok(out)
}
