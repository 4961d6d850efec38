//! The weight-only stage of `quantize`: block-wise int4/int8 weights, the integers chosen by
//! RTN (no data), GPTQ or AWQ (with the statistics [`hessian`](super::hessian) collected), with
//! what each weight cost before and after.

use kiln_passes::ir::{Graph, Model, NodeKind};
use kiln_passes::quant::blockwise::awq::{AwqGroup, AwqWeight, Scaling};
use kiln_passes::quant::blockwise::{
    quantize_blockwise_with, BlockQuantizer, BlockwiseConfig, WeightRole,
};

use super::error::QuantizeError;
use super::report::{
    AwqGroupReport, AwqReport, AwqWeightReport, Before, BlockWeightReport, SkippedNode,
    WeightOnlyReport,
};

/// Quantizes the weights of `model` as `config` says, the integers chosen by `quantizer`,
/// and reports them; also returns the nodes rewritten and those left in float.
pub(super) fn run(
    model: &mut Model,
    config: &BlockwiseConfig,
    quantizer: &(dyn BlockQuantizer + Sync),
) -> Result<(WeightOnlyReport, Vec<String>, Vec<SkippedNode>), QuantizeError> {
    let before = constant_bytes(&model.graph);
    let done = quantize_blockwise_with(model, config, quantizer)?;
    let report = WeightOnlyReport {
        bits: config.bits.count(),
        block_size: config.block_size,
        symmetric: config.symmetric,
        format: config.format.to_string(),
        method: config.method.to_string(),
        lm_head: config.lm_head,
        embeddings: config.embeddings,
        float_bytes: done.float_bytes() as u64,
        quantized_bytes: done.quantized_bytes() as u64,
        constant_bytes: Before {
            before: before as i64,
            after: constant_bytes(&model.graph) as i64,
        },
        weights: done
            .weights
            .iter()
            .map(|w| BlockWeightReport {
                name: w.name.clone(),
                shape: w.shape.clone(),
                dtype: w.dtype.name().to_string(),
                role: match w.role {
                    WeightRole::Linear => "linear",
                    WeightRole::LmHead => "lm_head",
                    WeightRole::Embedding => "embedding",
                }
                .to_string(),
                blocks: w.blocks,
                float_bytes: w.float_bytes as u64,
                quantized_bytes: w.quantized_bytes as u64,
            })
            .collect(),
        awq: None,
    };
    let skipped = done
        .skipped
        .iter()
        .map(|s| SkippedNode::new(&s.node, &s.op_type, &s.reason))
        .collect();
    Ok((report, done.nodes, skipped))
}

/// AWQ's part of the report: its groups, and the integers its quantizer chose.
pub(super) fn awq_report(groups: &[AwqGroup], chosen: Vec<AwqWeight>) -> AwqReport {
    AwqReport {
        groups: groups
            .iter()
            .map(|g| {
                let (scaled, into, reason) = match &g.scaling {
                    Scaling::Folded { into } => ("folded", Some(into.clone()), None),
                    Scaling::Mul { node } => ("mul", Some(node.clone()), None),
                    Scaling::Unscaled { reason } => ("none", None, Some(reason.clone())),
                };
                AwqGroupReport {
                    activation: g.activation.clone(),
                    nodes: g.nodes.clone(),
                    weights: g.weights.clone(),
                    alpha: g.alpha,
                    scaled: scaled.to_string(),
                    into,
                    reason,
                    error_ratio: (g.rtn_error > 0.0 && g.error.is_finite())
                        .then(|| g.error / g.rtn_error),
                }
            })
            .collect(),
        weights: chosen
            .into_iter()
            .map(|w| AwqWeightReport {
                name: w.weight,
                integers: w.integers.to_string(),
                clipped_blocks: w.clipped,
                blocks: w.blocks,
                mean_clip_ratio: w.mean_ratio,
                error_ratio: w.error_ratio,
            })
            .collect(),
    }
}

/// Bytes of every constant in `graph` and its bodies.
pub(super) fn constant_bytes(graph: &Graph) -> usize {
    graph
        .nodes()
        .map(|(_, n)| {
            let own = match &n.kind {
                NodeKind::Constant { value, .. } => value.byte_size(),
                _ => 0,
            };
            own + n.subgraphs().map(constant_bytes).sum::<usize>()
        })
        .sum()
}
