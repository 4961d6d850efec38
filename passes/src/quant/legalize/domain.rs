//! The domain of Q/DQ nodes. ONNX Runtime writes 16-bit Q/DQ below opset 21 as
//! `com.microsoft` ops (same attributes and arithmetic); the standard ops take 16-bit types
//! from opset 21. [`standard_domain`] moves them all to the standard domain so every other
//! step reads one form, and [`settle_domain`] then writes the form a target asks for: the
//! standard ops (raising the opset to 21 where 16-bit types need it) or `com.microsoft`.

use crate::ir::{Model, NodeKind};
use crate::opset::UpgradeOpset;
use crate::pipeline::{Pass, PassError};
use crate::quant::QdqDomainRule;

use super::edit::{self, params};
use super::Outcome;

/// The domain of ONNX Runtime's contrib ops.
const MICROSOFT: &str = "com.microsoft";

/// Moves every `com.microsoft` Q/DQ of the main graph to the standard domain. A model with
/// 16-bit types below opset 21 is not valid until [`settle_domain`] runs.
pub fn standard_domain(model: &mut Model) -> Result<Outcome, PassError> {
    let g = &mut model.graph;
    let todo: Vec<_> = g
        .node_indices()
        .filter(|&n| {
            g[n].is_operator()
                && g[n].domain() == MICROSOFT
                && matches!(g[n].op_type(), "QuantizeLinear" | "DequantizeLinear")
        })
        .collect();
    for &n in &todo {
        if let NodeKind::Op { domain, .. } = &mut g[n].kind {
            domain.clear();
        }
    }
    Ok(Outcome {
        changed: todo.len(),
        ..Outcome::default()
    })
}

/// Writes the main graph's Q/DQ in the domain `rule` asks for.
pub fn settle_domain(model: &mut Model, rule: QdqDomainRule) -> Result<Outcome, PassError> {
    let g = &model.graph;
    let qdq: Vec<_> = g
        .node_indices()
        .filter(|&n| edit::is(g, n, "QuantizeLinear") || edit::is(g, n, "DequantizeLinear"))
        .collect();
    let sixteen = qdq
        .iter()
        .filter_map(|&n| params(g, n))
        .any(|p| p.dtype.bits() == 16);
    let opset = model.opset("").unwrap_or(0);
    let microsoft = match rule {
        QdqDomainRule::Microsoft => true,
        QdqDomainRule::Auto => sixteen && opset < 21,
        QdqDomainRule::Standard => false,
    };
    let mut out = Outcome::default();
    if microsoft {
        for &n in &qdq {
            if let NodeKind::Op { domain, .. } = &mut model.graph[n].kind {
                *domain = MICROSOFT.to_string();
            }
        }
        if !qdq.is_empty() && model.opset(MICROSOFT).is_none() {
            model
                .opset_import
                .push(kiln_proto::onnx::OperatorSetIdProto {
                    domain: MICROSOFT.to_string(),
                    version: 1,
                });
        }
        out.changed = qdq.len();
        if !qdq.is_empty() {
            out.notes.push(format!(
                "{} QuantizeLinear/DequantizeLinear written as com.microsoft ops{}",
                qdq.len(),
                if sixteen && opset < 21 {
                    format!(" (16-bit types at opset {opset})")
                } else {
                    String::new()
                }
            ));
        }
    } else if sixteen && opset < 21 {
        UpgradeOpset { target: 21 }.run(model)?;
        out.notes
            .push(format!("opset {opset} → 21 for standard 16-bit Q/DQ"));
    }
    model.graph.verify()?;
    Ok(out)
}
