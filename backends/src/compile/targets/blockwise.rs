//! The weight-only targets' shared step: block-wise int4/int8 weights as the profile says
//! (`quantization.weights.granularity: per-block`), through `quantize`'s weight-only mode, with
//! weights below `min_elements` left in float; a calibrated method (`method: awq | gptq`) gets the
//! compile's calibration data.

use std::collections::BTreeSet;

use kiln_passes::ir::{Graph, NodeKind};
use kiln_passes::quant::blockwise::{BlockwiseConfig, WeightMethod};

use super::super::error::CompileError;
use super::super::Context;
use crate::quantize::{quantize, Mode, QuantizeOptions, QuantizeReport};

/// Quantizes the weights of `model` block-wise with `config` (the profile's); returns the
/// quantizer's report and one line for the compile report.
pub fn run(
    model: &mut kiln_passes::ir::Model,
    mut config: BlockwiseConfig,
    cx: &Context,
) -> Result<(QuantizeReport, String), CompileError> {
    let min = cx.profile.quantization.weights.min_elements.unwrap_or(0) as usize;
    config.exclude_nodes = small_weight_nodes(&mut model.graph, &config, min);
    let mixed_precision = super::quantized::mixed_precision(&cx.profile);
    let options = QuantizeOptions {
        config: cx.profile.quant_config(),
        optimize: None,
        mode: Mode::WeightOnly {
            config: config.clone(),
            // RTN reads no data; calibrated methods and the mixed-precision search do.
            samples: (config.method != WeightMethod::Rtn || mixed_precision.is_some())
                .then(|| cx.calibration.clone()),
        },
        check: None,
        sensitivity: None,
        mixed_precision,
        session: cx.session.clone(),
        synthetic: cx.synthetic.clone(),
    };
    let report = quantize(model, &options, &mut |_, _| {})
        .map_err(|e| CompileError::Quantize(Box::new(e)))?;
    let quantized = report.weight_only.as_ref().map_or(0, |w| w.weights.len());
    let sign = if config.symmetric { "int" } else { "uint" };
    let mut line = format!(
        "{quantized} weight(s) to {sign}{} per block of {} ({} form{})",
        config.bits.count(),
        config.block_size,
        config.format,
        if config.method == WeightMethod::Rtn {
            String::new()
        } else {
            format!(", {}", config.method)
        }
    );
    if !config.exclude_nodes.is_empty() {
        line.push_str(&format!(
            "; {} below {min} elements kept float",
            config.exclude_nodes.len()
        ));
    }
    if let Some(m) = &report.mixed_precision {
        line.push_str(&format!(
            "; {} kept as float16 by mixed precision",
            m.promoted.len()
        ));
    }
    Ok((report, line))
}

/// Names of the MatMul/Gemm (and, with embeddings, Gather) nodes of `graph` and its bodies
/// whose constant weight has fewer than `min` elements. An unnamed one is given a name so the
/// quantizer can leave it out by name.
fn small_weight_nodes(graph: &mut Graph, config: &BlockwiseConfig, min: usize) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    if min > 0 {
        let mut taken = BTreeSet::new();
        collect_names(graph, &mut taken);
        visit(graph, config, min, &mut taken, &mut out);
    }
    out
}

fn collect_names(graph: &Graph, taken: &mut BTreeSet<String>) {
    for (_, n) in graph.nodes() {
        taken.insert(n.name.clone());
        for body in n.subgraphs() {
            collect_names(body, taken);
        }
    }
}

fn visit(
    graph: &mut Graph,
    config: &BlockwiseConfig,
    min: usize,
    taken: &mut BTreeSet<String>,
    out: &mut BTreeSet<String>,
) {
    let indices: Vec<_> = graph.nodes().map(|(i, _)| i).collect();
    for idx in indices {
        let slot = match &graph[idx].kind {
            NodeKind::Op {
                op_type, domain, ..
            } if domain.is_empty() || domain == "ai.onnx" => match op_type.as_str() {
                "MatMul" | "Gemm" => Some(1),
                "Gather" if config.embeddings => Some(0),
                _ => None,
            },
            _ => None,
        };
        let small = slot
            .and_then(|s| graph.constant_input(idx, s))
            .is_some_and(|t| t.len() < min);
        if let (true, Some(node)) = (small, graph.node_mut(idx)) {
            if node.name.is_empty() {
                let base = format!("{}_small_weight", node.op_type());
                let name = (0..)
                    .map(|i| format!("{base}_{i}"))
                    .find(|n| !taken.contains(n))
                    .unwrap_or(base);
                taken.insert(name.clone());
                node.name = name;
            }
            out.insert(node.name.clone());
        }
        if let Some(node) = graph.node_mut(idx) {
            for body in node.subgraphs_mut() {
                visit(body, config, min, taken, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_passes::ir::{Dim, GraphOutput, Node, ValueInfo, ValueRef};
    use kiln_passes::tensor::{DataType, Tensor};

    /// x → MatMul(w_big) → MatMul(w_small, unnamed) → y.
    fn graph() -> Graph {
        let mut g = Graph::default();
        let dims = [Dim::Known(1), Dim::Known(64)];
        let x = g.add_node(Node::input(ValueInfo::tensor("x", DataType::Float, &dims)));
        let big = g.add_node(Node::initializer(
            "w_big",
            Tensor::from_vec(vec![64, 64], vec![0.5f32; 64 * 64]).unwrap(),
        ));
        let small = g.add_node(Node::initializer(
            "w_small",
            Tensor::from_vec(vec![64, 8], vec![0.5f32; 64 * 8]).unwrap(),
        ));
        let m1 = g.add_node(Node::op("MatMul", "big", &["h"]));
        let m2 = g.add_node(Node::op("MatMul", "", &["y"]));
        g.connect(ValueRef::new(x, 0), m1, 0);
        g.connect(ValueRef::new(big, 0), m1, 1);
        g.connect(ValueRef::new(m1, 0), m2, 0);
        g.connect(ValueRef::new(small, 0), m2, 1);
        let info = ValueInfo::tensor("y", DataType::Float, &[Dim::Known(1), Dim::Known(8)]);
        g.outputs.push(GraphOutput {
            value: ValueRef::new(m2, 0),
            info,
        });
        g
    }

    #[test]
    fn small_weights_are_named_and_listed() {
        let mut g = graph();
        let names = small_weight_nodes(&mut g, &BlockwiseConfig::default(), 2049);
        assert_eq!(names.len(), 1, "{names:?}");
        let name = names.iter().next().unwrap();
        assert_eq!(name, "MatMul_small_weight_0");
        assert!(g.nodes().any(|(_, n)| &n.name == name));
        g.verify().unwrap();
        // The threshold is a count of elements: 512 < 513 only.
        let mut g = graph();
        assert!(small_weight_nodes(&mut g, &BlockwiseConfig::default(), 512).is_empty());
        let mut g = graph();
        assert_eq!(
            small_weight_nodes(&mut g, &BlockwiseConfig::default(), 4097).len(),
            2
        );
        let mut g = graph();
        assert!(small_weight_nodes(&mut g, &BlockwiseConfig::default(), 0).is_empty());
    }
}
