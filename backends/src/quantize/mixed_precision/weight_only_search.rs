//! The search in weight-only mode: candidates are the main-graph MatMul/Gemm nodes whose
//! weight is quantized block-wise; a promoted one keeps its weight as float16 (+ Cast).

use std::collections::{BTreeMap, BTreeSet};

use kiln_passes::ir::{Graph, Model, NameSet};
use kiln_passes::quant::blockwise::{BlockQuantizer, BlockwiseConfig};

use crate::calibrate::Progress;

use super::super::accuracy::Reference;
use super::super::error::QuantizeError;
use super::super::report::SkippedNode;
use super::super::sensitivity::each_alone;
use super::super::weight_only;
use super::super::Stage;
use super::promote::keep_float16;
use super::search::{explore, sensitivity_progress};
use super::{MixedPrecisionOptions, MixedPrecisionReport};

/// Whether a node is a default-domain MatMul or Gemm (what block-wise weights are for).
fn is_linear(n: &kiln_passes::ir::Node) -> bool {
    matches!(n.op_type(), "MatMul" | "Gemm") && n.domain().is_empty()
}

/// Names the unnamed MatMul/Gemm nodes of `model` (at every depth), so block-wise
/// quantization can leave any of them out by name; returns how many.
pub(crate) fn name_linear_nodes(model: &mut Model) -> usize {
    let mut names = NameSet::of(&model.graph);
    name_in(&mut model.graph, &mut names)
}

fn name_in(g: &mut Graph, names: &mut NameSet) -> usize {
    let mut named = 0;
    let indices: Vec<_> = g.nodes().map(|(i, _)| i).collect();
    for idx in indices {
        let Some(n) = g.node_mut(idx) else { continue };
        if is_linear(n) && n.name.is_empty() {
            n.name = names.fresh_node(&format!("{}_mixed_precision", n.op_type()));
            named += 1;
        }
        for body in n.subgraphs_mut() {
            named += name_in(body, names);
        }
    }
    named
}

/// Names of every MatMul/Gemm of `g` and its bodies.
fn linear_names(g: &Graph, out: &mut BTreeSet<String>) {
    for (_, n) in g.nodes() {
        if is_linear(n) && !n.name.is_empty() {
            out.insert(n.name.clone());
        }
        for body in n.subgraphs() {
            linear_names(body, out);
        }
    }
}

/// The float model, the block-wise settings and the samples a weight-only search measures on.
pub(crate) struct BlockSearch<'a> {
    /// The optimized float model, its MatMul/Gemm nodes named ([`name_linear_nodes`]).
    pub float: &'a Model,
    /// The settings without promotions.
    pub config: &'a BlockwiseConfig,
    /// How integers are chosen.
    pub quantizer: &'a (dyn BlockQuantizer + Sync),
    /// The float outputs on the samples.
    pub reference: &'a Reference<'a>,
}

/// The point chosen: the block-wise settings (promoted nodes excluded), the nodes to keep as
/// float16, and the report.
pub(crate) struct BlockChoice {
    /// The settings that leave the promoted nodes out.
    pub config: BlockwiseConfig,
    /// The promoted nodes.
    pub promoted: BTreeSet<String>,
    /// What the search did.
    pub report: MixedPrecisionReport,
}

/// One weight-only point built: the model, and the bytes its weights take.
struct Built {
    model: Model,
    /// The nodes block-wise quantization rewrote (subgraph ones prefixed by their path).
    quantized: Vec<String>,
    weight_bytes: u64,
    not_promoted: Vec<SkippedNode>,
}

impl BlockSearch<'_> {
    /// Ranks the candidates, evaluates the points, chooses one.
    pub fn run(
        &self,
        options: &MixedPrecisionOptions,
        on: &str,
        progress: &mut dyn FnMut(Stage, Progress),
    ) -> Result<BlockChoice, QuantizeError> {
        // The unpromoted point says which nodes are candidates: those it quantized.
        let base = self.build(&BTreeSet::new())?;
        let (candidates, elements) = self.candidates(&base.quantized);
        let mut all = BTreeSet::new();
        linear_names(&self.float.graph, &mut all);

        let ranking = each_alone(
            self.float,
            &candidates,
            self.reference,
            &mut |node| {
                let mut alone = self.config.clone();
                alone.embeddings = false;
                alone
                    .exclude_nodes
                    .extend(all.iter().filter(|n| *n != node).cloned());
                let mut m = self.float.clone();
                weight_only::run(&mut m, &alone, self.quantizer)?;
                Ok(m)
            },
            &mut sensitivity_progress(candidates.len(), progress),
        )?;
        let order: Vec<String> = ranking.iter().map(|l| l.node.clone()).collect();
        let shares = shares(&order, &elements);
        let mut base = Some(base);
        let (front, choice) = explore(options, &shares, progress, &mut |k| {
            let built = match (k, base.take()) {
                (0, Some(b)) => b,
                _ => self.build(&order[..k].iter().cloned().collect())?,
            };
            let sqnr = self.reference.measure(&built.model.to_proto())?;
            Ok((built.weight_bytes, sqnr.db()))
        })?;
        let k = front[choice.index].promoted;
        let promoted: BTreeSet<String> = order[..k].iter().cloned().collect();
        // Which promotions did not apply (a weight beyond float16's range) is known only by
        // building: the chosen point is built once more here, as the driver will.
        let not_promoted = if k == 0 {
            Vec::new()
        } else {
            self.build(&promoted)?.not_promoted
        };
        let report = MixedPrecisionReport {
            target_sqnr: options.target_sqnr,
            max_16bit_share: options.max_16bit_share,
            promotion: "float16 weight (Cast to float32)".into(),
            on: on.to_string(),
            samples: self.reference.samples(),
            ranking,
            front,
            chosen: choice.index,
            target_reached: choice.reached,
            promoted: order[..k].to_vec(),
            not_promoted,
        };
        Ok(BlockChoice {
            config: self.excluding(&promoted),
            promoted,
            report,
        })
    }

    /// The settings with `promoted` left out of block-wise quantization.
    fn excluding(&self, promoted: &BTreeSet<String>) -> BlockwiseConfig {
        let mut c = self.config.clone();
        c.exclude_nodes.extend(promoted.iter().cloned());
        c
    }

    /// The model with `promoted` kept as float16 and everything else as the config says.
    fn build(&self, promoted: &BTreeSet<String>) -> Result<Built, QuantizeError> {
        let mut model = self.float.clone();
        let (report, quantized, _) =
            weight_only::run(&mut model, &self.excluding(promoted), self.quantizer)?;
        let fp16 = keep_float16(&mut model, promoted);
        Ok(Built {
            model,
            quantized,
            weight_bytes: report.quantized_bytes + fp16.bytes(),
            not_promoted: fp16
                .skipped
                .iter()
                .map(|(node, reason)| SkippedNode::new(node, "", reason))
                .collect(),
        })
    }

    /// The candidates (main-graph MatMul/Gemm nodes among the `quantized` ones, in graph
    /// order) and the weight each reads, with its elements.
    fn candidates(&self, quantized: &[String]) -> (Vec<String>, BTreeMap<String, (String, usize)>) {
        let g = &self.float.graph;
        let quantized: BTreeSet<&str> = quantized.iter().map(String::as_str).collect();
        let mut names = Vec::new();
        let mut elements = BTreeMap::new();
        for idx in g.topo_order() {
            let n = &g[idx];
            if !is_linear(n) || !quantized.contains(n.name.as_str()) {
                continue;
            }
            let Some(t) = g.input(idx, 1).and_then(|b| Some((b, g.constant(b)?))) else {
                continue;
            };
            names.push(n.name.clone());
            elements.insert(n.name.clone(), (g.value_name(t.0).to_string(), t.1.len()));
        }
        (names, elements)
    }
}

/// The 16-bit share with the first `k` of `order` promoted, for every `k` (each weight
/// counted once).
fn shares(order: &[String], elements: &BTreeMap<String, (String, usize)>) -> Vec<f64> {
    let mut seen = BTreeSet::new();
    let mut cumulative = vec![0usize];
    let mut total = 0;
    for node in order {
        if let Some((weight, n)) = elements.get(node) {
            if seen.insert(weight.clone()) {
                total += n;
            }
        }
        cumulative.push(total);
    }
    cumulative
        .iter()
        .map(|&c| {
            if total == 0 {
                0.0
            } else {
                c as f64 / total as f64
            }
        })
        .collect()
}
