//! `fold-constants`: evaluates operators whose inputs are all constants and replaces their
//! outputs with initializers of the same names.
//!
//! Beyond plain constants it folds what shapes already tell: `Shape` / `Size` of a value whose
//! declared shape is static, and `Gather` / `Slice` picking only static dims out of a `Shape`
//! of a partly known shape. Under dynamic dims, `Reshape` / `Expand` shape inputs computed
//! from `Shape` are replaced by constants that mean the same at run time (`[0, 0, 4, -1]`,
//! see [`symbolic`]); `dead-code` then removes the shape subgraph. Subgraph bodies are folded too; an operator owning a subgraph
//! (If, Loop, Scan) is never executed, nor is a non-deterministic one. A size cap keeps the
//! pass from reading or materializing large tensors.

mod replace;
mod shapes;
mod symbolic;

#[cfg(test)]
mod tests;

use crate::eval::{evaluate_with, EvalError, EvalOptions};
use crate::ir::{Graph, Model, NodeIndex, NodeKind};
use crate::pipeline::{Changes, Pass, PassError};
use crate::tensor::Tensor;

/// Operators whose result changes from run to run: never folded.
const NON_DETERMINISTIC: &[&str] = &[
    "RandomNormal",
    "RandomNormalLike",
    "RandomUniform",
    "RandomUniformLike",
    "Multinomial",
    "Bernoulli",
];

/// The constant folding pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FoldConstants {
    /// The most elements an input may hold to be read, and an output to be materialized.
    pub max_output_elements: usize,
}

impl Default for FoldConstants {
    fn default() -> FoldConstants {
        FoldConstants {
            max_output_elements: 1 << 20,
        }
    }
}

impl Pass for FoldConstants {
    fn name(&self) -> &'static str {
        "fold-constants"
    }

    fn run(&self, model: &mut Model) -> Result<Changes, PassError> {
        let opset = model
            .opset_import
            .iter()
            .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
            .map_or(1, |o| o.version);
        let mut changes = Changes::none();
        model
            .graph
            .try_for_each_graph_mut::<std::convert::Infallible>(&mut |g| {
                self.fold_graph(g, opset, &mut changes);
                Ok(())
            })
            .unwrap_or_else(|never| match never {});
        Ok(changes)
    }
}

impl FoldConstants {
    /// Folds one graph (its bodies are visited before it by the caller).
    fn fold_graph(&self, graph: &mut Graph, opset: i64, changes: &mut Changes) {
        let mut created = replace::Created::default();
        for idx in graph.topo_order() {
            if graph.node(idx).is_some() {
                self.fold_node(graph, idx, opset, changes, &mut created);
            }
        }
        symbolic::make_targets_static(graph, opset, changes);
    }

    fn fold_node(
        &self,
        graph: &mut Graph,
        idx: NodeIndex,
        opset: i64,
        changes: &mut Changes,
        created: &mut replace::Created,
    ) {
        let node = &graph[idx];
        let NodeKind::Op {
            op_type, domain, ..
        } = &node.kind
        else {
            return;
        };
        if NON_DETERMINISTIC.contains(&op_type.as_str()) || node.subgraphs().next().is_some() {
            return;
        }
        let inputs = graph.inputs(idx);
        let mut consts: Vec<Option<&Tensor>> = Vec::with_capacity(inputs.len());
        let mut all_constant = true;
        for v in &inputs {
            match v {
                None => consts.push(None),
                Some(v) => match graph.constant(*v) {
                    Some(t) if t.len() <= self.max_output_elements => consts.push(Some(t)),
                    Some(_) => return,
                    None => {
                        all_constant = false;
                        consts.push(None);
                    }
                },
            }
        }
        let options = EvalOptions {
            max_elements: self.max_output_elements,
            num_outputs: Some(node.outputs.len()),
        };
        let result = if all_constant {
            evaluate_with(op_type, domain, opset, &node.attributes, &consts, options)
        } else {
            if let Some(outs) = shapes::fold_from_shapes(graph, idx, opset, options) {
                if self.fits(&outs) && replace::replace(graph, idx, outs, created) {
                    changes.add("folded from shapes", 1);
                }
            }
            return;
        };
        match result {
            Ok(Some(outs)) if self.fits(&outs) => {
                if replace::replace(graph, idx, outs, created) {
                    changes.add("folded", 1);
                }
            }
            // Unsupported, over the cap, or a contract the model breaks: leave it for
            // the runtime to report.
            Ok(_) | Err(EvalError::TooLarge { .. }) | Err(_) => {}
        }
    }

    fn fits(&self, outs: &[Tensor]) -> bool {
        outs.iter().all(|t| t.len() <= self.max_output_elements)
    }
}
