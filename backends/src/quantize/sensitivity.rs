//! Per-layer sensitivity: quantize one op at a time, everything else float, and measure the
//! output SQNR, so a user sees which layers to keep in higher precision.

use std::collections::BTreeSet;

use kiln_passes::ir::Model;
use kiln_passes::quant::qdq::insert_qdq;
use kiln_passes::quant::{QuantConfig, Ranges};
use serde::Serialize;

use crate::runtime::{Session, SessionOptions};
use crate::value::NamedValues;

use super::accuracy::Sqnr;
use super::error::QuantizeError;

/// The effect of quantizing one node alone.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerSensitivity {
    /// The node.
    pub node: String,
    /// Its op type.
    pub op_type: String,
    /// Output SQNR (dB) with only this node quantized; lower is more sensitive.
    #[serde(serialize_with = "crate::validate::metrics::finite_or_text")]
    pub sqnr_db: f64,
}

/// Measures every node in `nodes` (names the plan quantizes) alone, worst first.
///
/// `model` is the float model after optimization; `reference` its outputs on `samples`.
pub fn sensitivity(
    model: &Model,
    config: &QuantConfig,
    ranges: &Ranges,
    nodes: &[String],
    samples: &[NamedValues],
    options: &SessionOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<LayerSensitivity>, QuantizeError> {
    let mut float = Session::from_model_with(&model.to_proto(), options)?;
    let reference: Vec<NamedValues> = samples
        .iter()
        .map(|s| float.run(s))
        .collect::<Result<_, _>>()?;
    drop(float);
    let op_of = |name: &str| {
        model
            .graph
            .nodes()
            .find(|(_, n)| n.name == name)
            .map(|(_, n)| n.op_type().to_string())
            .unwrap_or_default()
    };
    let mut out = Vec::with_capacity(nodes.len());
    for (i, node) in nodes.iter().enumerate() {
        progress(i, nodes.len());
        let mut one = model.clone();
        let mut cfg = config.clone();
        cfg.only_nodes = Some(BTreeSet::from([node.clone()]));
        insert_qdq(&mut one, &cfg, ranges)?;
        let mut session = Session::from_model_with(&one.to_proto(), options)?;
        let mut acc = Sqnr::default();
        for (s, r) in samples.iter().zip(&reference) {
            acc.add(r, &session.run(s)?);
        }
        out.push(LayerSensitivity {
            node: node.clone(),
            op_type: op_of(node),
            sqnr_db: acc.db(),
        });
    }
    progress(nodes.len(), nodes.len());
    // Worst first; ties by name so the report is deterministic.
    out.sort_by(|a, b| {
        a.sqnr_db
            .total_cmp(&b.sqnr_db)
            .then_with(|| a.node.cmp(&b.node))
    });
    Ok(out)
}
