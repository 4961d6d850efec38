//! Per-layer sensitivity: quantize one op at a time, everything else float, and measure the
//! output SQNR, so a user sees which layers to keep in higher precision.

use std::collections::BTreeSet;

use kiln_passes::ir::Model;
use kiln_passes::quant::qdq::insert_qdq;
use kiln_passes::quant::{QuantConfig, Ranges};
use serde::Serialize;

use crate::runtime::SessionOptions;
use crate::value::NamedValues;

use super::accuracy::Reference;
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
    let reference = Reference::new(&model.to_proto(), samples, options)?;
    qdq_each_alone(model, config, ranges, nodes, &reference, progress)
}

/// [`sensitivity`] against outputs already computed: each node of `nodes` alone in QDQ form.
pub(crate) fn qdq_each_alone(
    model: &Model,
    config: &QuantConfig,
    ranges: &Ranges,
    nodes: &[String],
    reference: &Reference<'_>,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<LayerSensitivity>, QuantizeError> {
    each_alone(
        model,
        nodes,
        reference,
        &mut |node| {
            let mut one = model.clone();
            let mut cfg = config.clone();
            cfg.only_nodes = Some(BTreeSet::from([node.to_string()]));
            insert_qdq(&mut one, &cfg, ranges)?;
            Ok(one)
        },
        progress,
    )
}

/// Measures the model `build(node)` makes (`node` alone quantized, whatever the form) for every
/// node of `nodes`, worst first (ties by name, so the order is deterministic).
pub(crate) fn each_alone(
    model: &Model,
    nodes: &[String],
    reference: &Reference<'_>,
    build: &mut dyn FnMut(&str) -> Result<Model, QuantizeError>,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<LayerSensitivity>, QuantizeError> {
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
        let one = build(node)?;
        out.push(LayerSensitivity {
            node: node.clone(),
            op_type: op_of(node),
            sqnr_db: reference.measure(&one.to_proto())?.db(),
        });
    }
    progress(nodes.len(), nodes.len());
    out.sort_by(|a, b| {
        a.sqnr_db
            .total_cmp(&b.sqnr_db)
            .then_with(|| a.node.cmp(&b.node))
    });
    Ok(out)
}
