//! Dynamic quantization (`kiln quantize --dynamic`): weights stored as 8-bit integers,
//! activations quantized at run time, in the form ONNX Runtime's `quantize_dynamic` writes.
//!
//! Rules (ORT's `IntegerOpsRegistry`, plus Gemm):
//! - MatMul with constant B → `DynamicQuantizeLinear(A)`, `MatMulInteger`, `Cast`, `Mul` by
//!   `A_scale × B_scale`; B per column when per channel ([`matmul`]).
//! - Gemm with constant B → the same, `transB`/`alpha` folded into the weight, plus an `Add`
//!   of `beta × C` ([`gemm`]); ORT turns such Gemms into MatMul + Add first.
//! - Conv with constant W → `ConvInteger` in the same chain plus the bias `Add` ([`conv`]).
//! - Gather from a constant float table → uint8 table, Gather, `DequantizeLinear` ([`gather`]).
//!
//! Activations are always uint8 asymmetric (`DynamicQuantizeLinear` produces nothing else);
//! weights follow `config.weights` (int8 symmetric by default). Weights in initializers and
//! in `Constant` nodes are both handled; a weight read by several nodes is quantized once and
//! the float copy is dropped once nothing reads it. Subgraph bodies are rewritten the same
//! way with the weights local to them; a weight read from an enclosing graph is skipped with a
//! reason. ORT leaves subgraphs alone unless `EnableSubgraph` is set.

mod conv;
mod gather;
mod gemm;
mod matmul;
mod rewrite;
mod rule;
mod weight;

#[cfg(test)]
mod tests;

use crate::ir::{Graph, Model, NodeIndex, NodeKind};
use crate::pipeline::{Changes, Pass, PassError};
use crate::quant::bodies::label;
use crate::quant::config::QuantConfig;
use crate::quant::scheme::QuantType;

use crate::ir::NameSet as Names;
use rewrite::Rewriter;
use rule::Skip;

/// The op types rewritten when `config.op_types` is `None` (ORT's `IntegerOpsRegistry`
/// entries Kiln covers, plus Gemm).
pub const DYNAMIC_OP_TYPES: [&str; 4] = ["Conv", "Gather", "Gemm", "MatMul"];

/// The lowest default-domain opset the rewrite needs (`DynamicQuantizeLinear` is opset 11).
pub fn required_opset() -> i64 {
    11
}

/// A node left in float, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamicSkipped {
    /// The node's name (its first output's when unnamed), prefixed by the subgraph path.
    pub node: String,
    /// Its op type.
    pub op_type: String,
    /// Why it was left alone.
    pub reason: String,
}

/// A weight stored quantized.
#[derive(Debug, Clone, PartialEq)]
pub struct DynamicWeight {
    /// The float weight's name.
    pub name: String,
    /// Its integer type.
    pub dtype: QuantType,
    /// The channel axis of the float weight as the model stores it, if per channel.
    pub axis: Option<usize>,
    /// One scale per tensor, or one per channel.
    pub scales: Vec<f32>,
}

/// What [`quantize_dynamic`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DynamicSummary {
    /// Nodes rewritten, in graph order (subgraph nodes prefixed by their path).
    pub nodes: Vec<String>,
    /// Candidate nodes left in float, with the reason.
    pub skipped: Vec<DynamicSkipped>,
    /// Every weight stored quantized.
    pub weights: Vec<DynamicWeight>,
    /// Counts of what changed.
    pub changes: Changes,
}

/// Rewrites MatMul/Gemm/Conv (and Gather of embedding tables) with constant float weights
/// into the form `onnxruntime.quantization.quantize_dynamic` writes: `DynamicQuantizeLinear`
/// on the activation, `MatMulInteger` / `ConvInteger` on the integer tensors, `Cast` to float,
/// `Mul` by (activation scale × weight scale), bias `Add`.
///
/// Fails when the model's default-domain opset is below [`required_opset`] (upgrade it
/// first) or `config` asks for what the integer kernels cannot do (activations other than
/// uint8 asymmetric, weights wider than 8 bits). Nodes the rewrite cannot handle are left in
/// float and listed in [`DynamicSummary::skipped`].
pub fn quantize_dynamic(
    model: &mut Model,
    config: &QuantConfig,
) -> Result<DynamicSummary, PassError> {
    check_opset(model)?;
    check_config(config)?;
    let mut names = Names::of(&model.graph);
    let mut summary = DynamicSummary::default();
    quantize_graph(&mut model.graph, "", config, &mut names, &mut summary);
    Ok(summary)
}

/// [`quantize_dynamic`] as a pipeline pass.
#[derive(Debug, Clone, Default)]
pub struct QuantizeDynamic {
    /// What to quantize and how.
    pub config: QuantConfig,
}

impl Pass for QuantizeDynamic {
    fn name(&self) -> &'static str {
        "quantize-dynamic"
    }

    fn run(&self, model: &mut Model) -> Result<Changes, PassError> {
        quantize_dynamic(model, &self.config).map(|s| s.changes)
    }
}

fn check_opset(model: &Model) -> Result<(), PassError> {
    match model.opset("") {
        Some(v) if v >= required_opset() => Ok(()),
        Some(v) => Err(PassError::Unsupported(format!(
            "dynamic quantization needs default-domain opset {} or later (DynamicQuantizeLinear); \
             the model imports opset {v}: upgrade it first",
            required_opset()
        ))),
        None => Err(PassError::Unsupported(
            "dynamic quantization needs the default ONNX domain, which the model does not import"
                .into(),
        )),
    }
}

fn check_config(config: &QuantConfig) -> Result<(), PassError> {
    let a = config.activations;
    if a.dtype != QuantType::Uint8 || a.symmetric {
        return Err(PassError::Unsupported(format!(
            "dynamic quantization quantizes activations at run time with DynamicQuantizeLinear, \
             which gives asymmetric uint8 only (asked: {}{})",
            if a.symmetric { "symmetric " } else { "" },
            a.dtype
        )));
    }
    let w = config.weights.scheme.dtype;
    if !matches!(w, QuantType::Int8 | QuantType::Uint8) {
        return Err(PassError::Unsupported(format!(
            "dynamic quantization stores int8 or uint8 weights (MatMulInteger and ConvInteger \
             take nothing wider); asked: {w}"
        )));
    }
    Ok(())
}

/// Whether the config selects `op_type` / `name` at all (op types, only-nodes).
fn selected(config: &QuantConfig, op_type: &str, name: &str) -> bool {
    let op_ok = match &config.op_types {
        Some(set) => set.contains(op_type) && DYNAMIC_OP_TYPES.contains(&op_type),
        None => DYNAMIC_OP_TYPES.contains(&op_type),
    };
    op_ok
        && config
            .only_nodes
            .as_ref()
            .is_none_or(|only| only.contains(name))
}

/// Why the config keeps a selected node in float, if it does.
fn excluded(config: &QuantConfig, op_type: &str, name: &str) -> Option<String> {
    if config.exclude_op_types.contains(op_type) {
        Some(format!("op type {op_type} excluded"))
    } else if !name.is_empty() && config.exclude_nodes.contains(name) {
        Some("node excluded by name".to_string())
    } else {
        None
    }
}

/// Rewrites the candidates of `graph`, then of its subgraphs.
fn quantize_graph(
    graph: &mut Graph,
    scope: &str,
    config: &QuantConfig,
    names: &mut Names,
    summary: &mut DynamicSummary,
) {
    let order = graph.topo_order();
    let mut rw = Rewriter::new(graph, names);
    for &idx in &order {
        let Some(node) = rw.graph.node(idx) else {
            continue;
        };
        let NodeKind::Op {
            op_type, domain, ..
        } = &node.kind
        else {
            continue;
        };
        if !(domain.is_empty() || domain == "ai.onnx") || !selected(config, op_type, &node.name) {
            continue;
        }
        let (op_type, name) = (op_type.clone(), node.name.clone());
        let label = format!("{scope}{}", label(rw.graph, idx));
        let outcome = match excluded(config, &op_type, &name) {
            Some(reason) => Err(Skip::Reason(reason)),
            None => rewrite(&mut rw, idx, &op_type, config),
        };
        match outcome {
            Ok(()) => summary.nodes.push(label),
            Err(Skip::Reason(reason)) => summary.skipped.push(DynamicSkipped {
                node: label,
                op_type,
                reason,
            }),
            Err(Skip::NotApplicable) => {}
        }
    }
    rw.drop_dead_constants();
    summary.changes.merge(&rw.changes);
    summary.weights.append(&mut rw.stored);
    super::bodies::each_body(graph, &order, scope, &mut |body, path| {
        quantize_graph(body, path, config, names, summary);
    });
}

/// Dispatches to the rule for `op_type`.
fn rewrite(
    rw: &mut Rewriter,
    idx: NodeIndex,
    op_type: &str,
    config: &QuantConfig,
) -> Result<(), Skip> {
    if rw.graph[idx].outputs.len() != 1 {
        return Err(Skip::Reason("expected exactly one output".into()));
    }
    match op_type {
        "MatMul" => matmul::rewrite(rw, idx, config),
        "Gemm" => gemm::rewrite(rw, idx, config),
        "Conv" => conv::rewrite(rw, idx, config),
        "Gather" => gather::rewrite(rw, idx, config),
        _ => Err(Skip::NotApplicable),
    }
}
