//! `note-activations`: a Conv / ConvTranspose / Gemm / MatMul whose only reader is a Relu or a
//! Clip with constant bounds is marked for the quantizer; the computation is unchanged.
//!
//! # Convention
//!
//! The producing node gets two `metadata_props` entries:
//! - `kiln.fused_activation` = `Relu`, or `Clip(min,max)` with the bounds as shortest
//!   round-trip decimals and `-inf` / `inf` for an absent bound (`Clip(0,6)`);
//! - `kiln.fused_activation_output` = the name of the activation's output.
//!
//! In the QDQ form the activation disappears into the quantization range: the quantizer takes
//! the range of the activation's output for the producer's output and quantizes once after
//! the activation instead of twice.

use crate::ir::{Graph, Model, NodeIndex, ValueRef};
use crate::pipeline::{Changes, Pass, PassError};

use super::pattern::{each_graph, is_op, operators, scalar, set_mark, sole_consumer};

/// Metadata key naming the fused activation (`Relu`, `Clip(0,6)`).
pub const FUSED_ACTIVATION_KEY: &str = "kiln.fused_activation";
/// Metadata key naming the activation's output value, whose range the quantizer should use.
pub const FUSED_ACTIVATION_OUTPUT_KEY: &str = "kiln.fused_activation_output";

/// Marks Conv/Gemm/MatMul + Relu/Clip pairs for the quantizer.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoteActivations;

impl Pass for NoteActivations {
    fn name(&self) -> &'static str {
        "note-activations"
    }

    fn run(&self, model: &mut Model) -> Result<Changes, PassError> {
        let opset = model.opset("").unwrap_or(0);
        let (mut relu, mut clip) = (0, 0);
        each_graph(&mut model.graph, &mut |g| {
            for op in operators(g) {
                let Some((act, desc)) = activation_after(g, op, opset) else {
                    continue;
                };
                let act_out = g.value_name(ValueRef::new(act, 0)).to_string();
                let Some(node) = g.node_mut(op) else { continue };
                let a = set_mark(node, FUSED_ACTIVATION_KEY, &desc);
                let b = set_mark(node, FUSED_ACTIVATION_OUTPUT_KEY, &act_out);
                if a || b {
                    if desc == "Relu" {
                        relu += 1;
                    } else {
                        clip += 1;
                    }
                }
            }
            Ok(0)
        })?;
        let mut changes = Changes::none();
        changes.add("relu noted", relu);
        changes.add("clip noted", clip);
        Ok(changes)
    }
}

/// The Relu / Clip reading `op`'s only output, privately, and its description.
fn activation_after(g: &Graph, op: NodeIndex, opset: i64) -> Option<(NodeIndex, String)> {
    if !["Conv", "ConvTranspose", "Gemm", "MatMul"]
        .iter()
        .any(|t| is_op(g, op, t))
    {
        return None;
    }
    let (act, slot) = sole_consumer(g, ValueRef::new(op, 0))?;
    if slot != 0 {
        return None;
    }
    if is_op(g, act, "Relu") {
        return Some((act, "Relu".to_string()));
    }
    if !is_op(g, act, "Clip") {
        return None;
    }
    let node = g.node(act)?;
    let (lo, hi) = if opset < 11 {
        let f = |k: &str, d: f64| node.attr(k).and_then(|a| a.as_float()).map_or(d, f64::from);
        (f("min", f64::NEG_INFINITY), f("max", f64::INFINITY))
    } else {
        // Bounds are inputs since opset 11: absent means unbounded, present must be constant.
        let bound = |slot: usize, d: f64| match g.input(act, slot) {
            None => Some(d),
            Some(v) => scalar(g, v),
        };
        (bound(1, f64::NEG_INFINITY)?, bound(2, f64::INFINITY)?)
    };
    Some((act, format!("Clip({},{})", num(lo), num(hi))))
}

fn num(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "inf" } else { "-inf" }.to_string()
    } else {
        // The bound was an f32 or narrower: print the shortest form that round-trips as f32.
        format!("{}", v as f32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuse::testutil::{noise, Builder};
    use crate::ir::AttrValue;

    fn mark(b: &Builder, op: &str) -> Option<String> {
        let g = &b.model.graph;
        let (_, n) = g.nodes().find(|(_, n)| n.op_type() == op)?;
        n.metadata_props
            .iter()
            .find(|e| e.key == FUSED_ACTIVATION_KEY)
            .map(|e| e.value.clone())
    }

    fn conv_then(opset: i64, act: &str, bounds: Option<(f32, f32)>) -> Builder {
        let mut b = Builder::new(opset);
        let x = b.input("x", &[1, 2, 3, 3]);
        let w = b.floats("w", &[2, 2, 1, 1], noise(4, 1));
        let y = b.op("Conv", &[x, w], vec![]);
        let z = match (act, bounds) {
            ("Clip", Some((lo, hi))) if opset >= 11 => {
                let lo = b.scalar(lo);
                let hi = b.scalar(hi);
                b.op("Clip", &[y, lo, hi], vec![])
            }
            ("Clip", Some((lo, hi))) => b.op(
                "Clip",
                &[y],
                vec![("min", AttrValue::Float(lo)), ("max", AttrValue::Float(hi))],
            ),
            _ => b.op(act, &[y], vec![]),
        };
        b.output(z);
        b
    }

    #[test]
    fn notes_relu_and_clip() {
        let mut b = conv_then(13, "Relu", None);
        assert_eq!(b.run(&NoteActivations).get("relu noted"), 1);
        assert_eq!(mark(&b, "Conv").as_deref(), Some("Relu"));
        assert_eq!(b.count("Relu"), 1, "computation unchanged");
        // Running again notes nothing new.
        assert!(b.run(&NoteActivations).is_empty());

        let mut b = conv_then(13, "Clip", Some((0.0, 6.0)));
        assert_eq!(b.run(&NoteActivations).get("clip noted"), 1);
        assert_eq!(mark(&b, "Conv").as_deref(), Some("Clip(0,6)"));
        let mut b = conv_then(9, "Clip", Some((-1.5, 6.0)));
        assert_eq!(b.run(&NoteActivations).get("clip noted"), 1);
        assert_eq!(mark(&b, "Conv").as_deref(), Some("Clip(-1.5,6)"));
        let mut b = conv_then(13, "Clip", None);
        assert_eq!(b.run(&NoteActivations).get("clip noted"), 1);
        assert_eq!(mark(&b, "Conv").as_deref(), Some("Clip(-inf,inf)"));
    }

    #[test]
    fn leaves_shared_outputs_and_dynamic_bounds_alone() {
        let mut b = conv_then(13, "Relu", None);
        let conv = b
            .model
            .graph
            .nodes()
            .find(|(_, n)| n.op_type() == "Conv")
            .map(|(i, _)| i)
            .unwrap();
        b.output(ValueRef::new(conv, 0));
        assert!(b.run(&NoteActivations).is_empty());

        let mut b = Builder::new(13);
        let x = b.input("x", &[2, 3]);
        let w = b.floats("w", &[3, 4], noise(12, 1));
        let y = b.op("MatMul", &[x, w], vec![]);
        let lo = b.input("lo", &[]);
        let z = b.op("Clip", &[y, lo], vec![]);
        b.output(z);
        assert!(b.run(&NoteActivations).is_empty());

        let mut b = conv_then(13, "Sigmoid", None);
        assert!(b.run(&NoteActivations).is_empty());
    }
}
