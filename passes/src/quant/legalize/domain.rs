//! `com.microsoft` `QuantizeLinear` / `DequantizeLinear` (how ORT writes 16-bit Q/DQ before
//! opset 21) become the standard ops. Same attributes and arithmetic; 16-bit types need
//! opset 21, so the model's opset is raised when it holds them.

use crate::ir::{Model, NodeKind};
use crate::opset::UpgradeOpset;
use crate::pipeline::{Pass, PassError};

use super::edit::params;
use super::Outcome;

/// Moves every `com.microsoft` Q/DQ of the main graph to the standard domain.
pub fn standard_domain(model: &mut Model) -> Result<Outcome, PassError> {
    let g = &model.graph;
    let todo: Vec<_> = g
        .node_indices()
        .filter(|&n| {
            g[n].is_operator()
                && g[n].domain() == "com.microsoft"
                && matches!(g[n].op_type(), "QuantizeLinear" | "DequantizeLinear")
        })
        .collect();
    if todo.is_empty() {
        return Ok(Outcome::default());
    }
    let sixteen = todo
        .iter()
        .filter_map(|&n| params(g, n))
        .any(|p| p.dtype.bits() == 16);
    let need = if sixteen { 21 } else { 13 };
    let mut out = Outcome::default();
    if model.opset("").unwrap_or(0) < need {
        let before = model.opset("").unwrap_or(0);
        UpgradeOpset { target: need }.run(model)?;
        out.notes
            .push(format!("opset {before} → {need} for standard 16-bit Q/DQ"));
    }
    for &n in &todo {
        if let NodeKind::Op { domain, .. } = &mut model.graph[n].kind {
            domain.clear();
        }
    }
    model.graph.verify()?;
    out.changed = todo.len();
    out.notes.push(format!(
        "{} com.microsoft QuantizeLinear/DequantizeLinear moved to the standard domain",
        todo.len()
    ));
    Ok(out)
}
