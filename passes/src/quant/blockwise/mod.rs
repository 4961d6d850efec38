//! Weight-only block-wise quantization (`kiln quantize --weight-only int4|int8`): the constant
//! weights of MatMul and Gemm (and, when asked, Gather embedding tables) stored as 4- or 8-bit
//! integers with one scale per block of `block_size` weights along K; activations stay float.
//!
//! Two forms, chosen by [`WeightFormat`]:
//! - QDQ ([`qdq_form`]): an opset-21 `DequantizeLinear` with `axis` and `block_size` on an
//!   int4/uint4 (int8/uint8) initializer in front of the unchanged float MatMul/Gemm. The pass
//!   raises the model to opset 21 (with the opset converter) when it is below.
//! - MatMulNBits ([`matmulnbits`]): the node becomes ONNX Runtime's
//!   `com.microsoft.MatMulNBits` (a Gemm only when `transA` is unset and C is a per-column
//!   bias, which becomes the op's `bias`; `alpha` is folded into the weight).
//!
//! The integers come from a [`BlockQuantizer`]: [`Rtn`] (round to nearest with ONNX Runtime's
//! scale and zero-point conventions, see [`rtn`]) is the default; [`Gptq`] (see [`gptq`]) needs
//! the Hessians of the calibration inputs of each weight ([`linear_inputs`] lists which inputs,
//! [`Hessian`] accumulates them; the driver in `kiln-backends` runs the model) and plugs in
//! through [`quantize_blockwise_with`]. AWQ (see [`awq`]) first scales the model's weights per
//! input channel with the same statistics plus each activation's mean magnitude
//! ([`awq::apply_scales`], which folds the inverse scales into the producers), then its
//! [`awq::Awq`] quantizer clips each block's range. Both forms hold the same numbers for the
//! same settings.
//!
//! Embedding tables (Gather axis 0 from a constant `[V, D]`) are blocked along D and always
//! written in QDQ form (`DequantizeLinear` → `Gather`; MatMulNBits has no gather), so they
//! need opset 21 too. The LM head (see [`lm_head`]) can be kept in float. Weights in
//! initializers and in `Constant` nodes are both handled; a weight read by several nodes is
//! quantized once per form and its float copy dropped once nothing reads it. Subgraph bodies
//! are rewritten with the weights local to them.

pub mod awq;
pub mod config;
pub mod gptq;
pub mod hessian;
mod linalg;
mod lm_head;
pub mod matmulnbits;
pub mod qdq_form;
mod rewrite;
pub mod rtn;
mod rules;
mod scale_refit;
pub mod sequential;
mod weight;

#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;

pub use config::{BlockwiseConfig, ConfigError, WeightFormat, WeightMethod, BLOCK_SIZES};
pub use gptq::{calibration_error, quantize_gptq, FallbackLog, Gptq, GptqFallback, GptqOptions};
pub use hessian::Hessian;
pub use rtn::{quantize_rtn, Bits, BlockParams, BlockQuantized, BlockQuantizer, Rtn};

use kiln_proto::onnx::OperatorSetIdProto;

use crate::ir::{Graph, Model, NameSet, NodeIndex, NodeKind};
use crate::opset::UpgradeOpset;
use crate::pipeline::{Changes, Pass, PassError};
use crate::quant::bodies::label;
use crate::tensor::DataType;

use rewrite::Editor;
use rules::Skip;

/// The domain of MatMulNBits.
pub const MS_DOMAIN: &str = "com.microsoft";

/// What a quantized weight is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WeightRole {
    /// B of a MatMul or Gemm.
    Linear,
    /// B of the LM head.
    LmHead,
    /// A Gather table.
    Embedding,
}

/// One weight stored quantized.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockwiseWeight {
    /// The float weight's name.
    pub name: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// The element type the integers are stored in (uint8 for packed MatMulNBits).
    pub dtype: DataType,
    /// What it is for.
    pub role: WeightRole,
    /// Scales stored (blocks × columns).
    pub blocks: usize,
    /// Bytes of the float weight.
    pub float_bytes: usize,
    /// Bytes of the integers, scales and zero points that replace it.
    pub quantized_bytes: usize,
}

/// A candidate node left in float, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockwiseSkipped {
    /// The node's name (its first output's when unnamed), prefixed by the subgraph path.
    pub node: String,
    /// Its op type.
    pub op_type: String,
    /// Why it was left alone.
    pub reason: String,
}

/// What [`quantize_blockwise`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BlockwiseSummary {
    /// Nodes rewritten, in graph order (subgraph nodes prefixed by their path).
    pub nodes: Vec<String>,
    /// Candidate nodes left in float, with the reason.
    pub skipped: Vec<BlockwiseSkipped>,
    /// Every weight stored quantized.
    pub weights: Vec<BlockwiseWeight>,
    /// Counts of what changed.
    pub changes: Changes,
}

impl BlockwiseSummary {
    /// Bytes of the float weights that were quantized.
    pub fn float_bytes(&self) -> usize {
        self.weights.iter().map(|w| w.float_bytes).sum()
    }

    /// Bytes of what replaced them.
    pub fn quantized_bytes(&self) -> usize {
        self.weights.iter().map(|w| w.quantized_bytes).sum()
    }
}

/// Quantizes the weights of `model` block-wise by rounding to nearest (see the module doc).
/// GPTQ and AWQ need calibration statistics: they go through [`quantize_blockwise_with`] (and,
/// for AWQ, [`awq::apply_scales`]), and are refused here.
pub fn quantize_blockwise(
    model: &mut Model,
    config: &BlockwiseConfig,
) -> Result<BlockwiseSummary, PassError> {
    match config.method {
        WeightMethod::Rtn => quantize_blockwise_with(model, config, &Rtn),
        WeightMethod::Gptq => Err(PassError::Unsupported(
            "GPTQ needs the Hessians of calibration inputs: build a Gptq quantizer and call \
             quantize_blockwise_with"
                .into(),
        )),
        WeightMethod::Awq => Err(PassError::Unsupported(
            "AWQ needs calibration statistics: scale the model with awq::apply_scales and call \
             quantize_blockwise_with with its quantizer"
                .into(),
        )),
    }
}

/// A MatMul/Gemm weight of the main graph that [`quantize_blockwise`] would quantize, with
/// the activation it multiplies: what GPTQ needs statistics of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinearInput {
    /// The node (its name, or its first output's).
    pub node: String,
    /// The weight's value name (what a [`BlockQuantizer`] is called with).
    pub weight: String,
    /// The activation's value name; its last dim is `k`.
    pub activation: String,
    /// The weight's K (the reduction dim).
    pub k: usize,
    /// The weight's axis that is K (1 for a `transB` Gemm's `[N, K]`).
    pub k_axis: usize,
}

/// The weights of the main graph's MatMul and Gemm nodes that `config` selects, each with its
/// activation input, in graph order. Left out: Gemm with `transA` (its A is `[K, M]`), nodes
/// inside subgraphs (their values cannot be exposed), and embeddings (no activation).
pub fn linear_inputs(model: &Model, config: &BlockwiseConfig) -> Vec<LinearInput> {
    linear_nodes(model, config)
        .into_iter()
        .map(|(_, li)| li)
        .collect()
}

/// [`linear_inputs`] with each node's index.
fn linear_nodes(model: &Model, config: &BlockwiseConfig) -> Vec<(NodeIndex, LinearInput)> {
    let graph = &model.graph;
    let heads = lm_head::lm_heads(graph);
    let mut out = Vec::new();
    for idx in graph.topo_order() {
        let Some(op) = rule_op(graph, idx) else {
            continue;
        };
        if op == "Gather" || selected(graph, idx, &op, config, &heads).is_err() {
            continue;
        }
        let node = &graph[idx];
        let int_attr = |name: &str| node.attr(name).and_then(|v| v.as_int()).unwrap_or(0);
        if op == "Gemm" && int_attr("transA") != 0 {
            continue;
        }
        let k_axis = usize::from(op == "Gemm" && int_attr("transB") != 0);
        let (Some(a), Some(b)) = (graph.input(idx, 0), graph.input(idx, 1)) else {
            continue;
        };
        if graph.constant(a).is_some() {
            continue;
        }
        let Some(k) = graph.constant(b).and_then(|t| match *t.shape() {
            [r, c] => Some(if k_axis == 0 { r } else { c }),
            _ => None,
        }) else {
            continue;
        };
        out.push((
            idx,
            LinearInput {
                node: label(graph, idx),
                weight: graph.value_name(b).to_string(),
                activation: graph.value_name(a).to_string(),
                k,
                k_axis,
            },
        ));
    }
    out
}

/// [`quantize_blockwise`] with the integers chosen by `quantizer`.
///
/// Fails on a block size outside [`BLOCK_SIZES`], and when the QDQ form needs opset 21 and
/// the model cannot be upgraded to it.
pub fn quantize_blockwise_with(
    model: &mut Model,
    config: &BlockwiseConfig,
    quantizer: &(dyn BlockQuantizer + Sync),
) -> Result<BlockwiseSummary, PassError> {
    config
        .validate()
        .map_err(|e| PassError::Unsupported(e.to_string()))?;
    let mut summary = BlockwiseSummary::default();
    let (linear, embeddings) = candidates(&model.graph, config);
    let needs_dq = (config.format == WeightFormat::Qdq && linear) || embeddings;
    if let Some(target) = config.required_opset().filter(|_| needs_dq) {
        let current = model.opset("").unwrap_or(0);
        if current < target {
            let changes = UpgradeOpset { target }.run(model).map_err(|e| {
                PassError::Unsupported(format!(
                    "the QDQ form of block-wise weights needs opset {target} \
                     (DequantizeLinear with block_size): {e}"
                ))
            })?;
            summary.changes.merge(&changes);
        }
    }
    let mut names = NameSet::of(&model.graph);
    quantize_graph(
        &mut model.graph,
        "",
        config,
        quantizer,
        &mut names,
        &mut summary,
    );
    let nbits =
        summary.changes.get("MatMul → MatMulNBits") + summary.changes.get("Gemm → MatMulNBits");
    if nbits > 0 && model.opset(MS_DOMAIN).is_none() {
        model.opset_import.push(OperatorSetIdProto {
            domain: MS_DOMAIN.to_string(),
            version: 1,
        });
    }
    Ok(summary)
}

/// [`quantize_blockwise`] as a pipeline pass.
#[derive(Debug, Clone, Default)]
pub struct QuantizeBlockwise {
    /// What to quantize and how.
    pub config: BlockwiseConfig,
}

impl Pass for QuantizeBlockwise {
    fn name(&self) -> &'static str {
        "quantize-blockwise"
    }

    fn run(&self, model: &mut Model) -> Result<Changes, PassError> {
        quantize_blockwise(model, &self.config).map(|s| s.changes)
    }
}

/// The op types the rules cover.
fn covered(op_type: &str) -> bool {
    matches!(op_type, "MatMul" | "Gemm" | "Gather")
}

/// The default-domain operators of `node`, when the rules cover it.
fn rule_op(graph: &Graph, idx: NodeIndex) -> Option<String> {
    let node = graph.node(idx)?;
    let NodeKind::Op {
        op_type, domain, ..
    } = &node.kind
    else {
        return None;
    };
    ((domain.is_empty() || domain == "ai.onnx") && covered(op_type)).then(|| op_type.clone())
}

/// Whether `graph` (or a body) holds a MatMul/Gemm weight, and an embedding, that the
/// config selects.
fn candidates(graph: &Graph, config: &BlockwiseConfig) -> (bool, bool) {
    let (mut linear, mut embeddings) = (false, false);
    let heads = lm_head::lm_heads(graph);
    for (idx, node) in graph.nodes() {
        if let Some(op) = rule_op(graph, idx) {
            if selected(graph, idx, &op, config, &heads).is_ok() {
                if op == "Gather" {
                    embeddings = true;
                } else {
                    linear = true;
                }
            }
        }
        for body in node.subgraphs() {
            let (l, e) = candidates(body, config);
            linear |= l;
            embeddings |= e;
        }
    }
    (linear, embeddings)
}

/// Whether the config selects node `idx` (of `op_type`, which a rule covers), or why not.
fn selected(
    graph: &Graph,
    idx: NodeIndex,
    op_type: &str,
    config: &BlockwiseConfig,
    heads: &std::collections::BTreeSet<NodeIndex>,
) -> Result<(), Skip> {
    let name = &graph[idx].name;
    if !rules::is_candidate(graph, idx, op_type) {
        Err(Skip::NotApplicable)
    } else if !name.is_empty() && config.exclude_nodes.contains(name) {
        Err(Skip::Reason("node excluded by name".into()))
    } else if op_type == "Gather" && !config.embeddings {
        Err(Skip::Reason(
            "embedding tables stay in float unless asked".into(),
        ))
    } else if heads.contains(&idx) && !config.lm_head {
        Err(Skip::Reason("LM head kept in float".into()))
    } else if graph[idx].outputs.len() != 1 {
        Err(Skip::Reason("expected exactly one output".into()))
    } else {
        Ok(())
    }
}

/// Rewrites the candidates of `graph`, then of its subgraphs.
///
/// The rules run twice: a dry run that only collects the weights they ask for, which are
/// then quantized in parallel ([`Editor::prepare`]), and the run that edits. The graph does
/// not change between the two (float weights are dropped at the end), so both runs see the
/// same candidates.
fn quantize_graph(
    graph: &mut Graph,
    scope: &str,
    config: &BlockwiseConfig,
    quantizer: &(dyn BlockQuantizer + Sync),
    names: &mut NameSet,
    summary: &mut BlockwiseSummary,
) {
    let order = graph.topo_order();
    let heads = lm_head::lm_heads(graph);
    let mut ed = Editor::new(graph, names, config, quantizer);
    ed.start_plan();
    for &idx in &order {
        if let Some(op_type) = rule_op(ed.graph, idx) {
            let _ = apply_rule(&mut ed, idx, &op_type, config, &heads);
        }
    }
    ed.prepare();
    for &idx in &order {
        let Some(op_type) = rule_op(ed.graph, idx) else {
            continue;
        };
        let label = format!("{scope}{}", label(ed.graph, idx));
        match apply_rule(&mut ed, idx, &op_type, config, &heads) {
            Ok(()) => summary.nodes.push(label),
            Err(Skip::Reason(reason)) => summary.skipped.push(BlockwiseSkipped {
                node: label,
                op_type,
                reason,
            }),
            Err(Skip::NotApplicable) => {}
        }
    }
    ed.drop_dead_constants();
    summary.changes.merge(&ed.changes);
    summary.weights.append(&mut ed.weights);
    super::bodies::each_body(graph, &order, scope, &mut |body, path| {
        quantize_graph(body, path, config, quantizer, names, summary);
    });
}

/// Runs the rule of `op_type` on node `idx` when the config selects it.
fn apply_rule(
    ed: &mut Editor,
    idx: NodeIndex,
    op_type: &str,
    config: &BlockwiseConfig,
    heads: &std::collections::BTreeSet<NodeIndex>,
) -> Result<(), Skip> {
    let role = if heads.contains(&idx) {
        WeightRole::LmHead
    } else {
        WeightRole::Linear
    };
    selected(ed.graph, idx, op_type, config, heads)?;
    match op_type {
        "MatMul" => rules::matmul(ed, idx, role),
        "Gemm" => rules::gemm(ed, idx, role),
        _ => rules::gather(ed, idx),
    }
}
