use super::*;
use crate::fuse::testutil::{ints_attr, noise, Builder};
use crate::ir::Node;

/// How x² is written.
#[derive(Clone, Copy, Debug)]
enum Square {
    /// `Pow(x, 2.0)`.
    Pow,
    /// `Pow(x, 2)` with an int64 exponent.
    PowInt,
    /// `Mul(x, x)`.
    MulSelf,
}

/// How the division by the RMS is written.
#[derive(Clone, Copy, Debug)]
enum Inv {
    /// `Mul(x, Div(1, sqrt))` (TorchScript's `torch.rsqrt`).
    DivOne,
    /// `Mul(Reciprocal(sqrt), x)` (dynamo, tf2onnx).
    Reciprocal,
    /// `Div(x, sqrt)`.
    DivX,
}

/// One way of writing the decomposed RMSNorm over x [2, 3, 4].
#[derive(Clone, Debug)]
struct Rms {
    opset: i64,
    square: Square,
    inv: Inv,
    /// `Cast(x → float32)` first (its output is what is normalized, and what the residual reads).
    cast_in: bool,
    /// `Cast(· → float32)` after the normalization.
    cast_out: bool,
    /// The weight's shape, if any.
    weight: Option<Vec<usize>>,
    /// `Mul(weight, ·)` rather than `Mul(·, weight)`.
    weight_first: bool,
    /// Reduce over the last `k` axes.
    k: usize,
}

impl Default for Rms {
    /// The TorchScript exporter's Llama form.
    fn default() -> Rms {
        Rms {
            opset: 17,
            square: Square::Pow,
            inv: Inv::DivOne,
            cast_in: true,
            cast_out: true,
            weight: Some(vec![4]),
            weight_first: true,
            k: 1,
        }
    }
}

fn cast_f32(b: &mut Builder, v: ValueRef) -> ValueRef {
    let c = b.op("Cast", &[v], vec![("to", AttrValue::Int(1))]);
    b.shape(c, &[2, 3, 4]);
    c
}

fn reduce_mean(b: &mut Builder, v: ValueRef, opset: i64, axes: &[i64]) -> ValueRef {
    if opset >= 18 {
        let a = b.ints(&format!("axes{}", b.count("ReduceMean")), axes.to_vec());
        b.op("ReduceMean", &[v, a], vec![])
    } else {
        b.op("ReduceMean", &[v], vec![("axes", ints_attr(axes))])
    }
}

/// Builds the pattern; returns the builder and the normalized value (x or its Cast).
fn rms(t: &Rms) -> (Builder, ValueRef) {
    let mut b = Builder::new(t.opset);
    let input = b.input("x", &[2, 3, 4]);
    let x = if t.cast_in {
        cast_f32(&mut b, input)
    } else {
        input
    };
    let sq = match t.square {
        Square::Pow => {
            let two = b.scalar(2.0);
            b.op("Pow", &[x, two], vec![])
        }
        Square::PowInt => {
            let two = b.constant("two", Tensor::scalar(2i64));
            b.op("Pow", &[x, two], vec![])
        }
        Square::MulSelf => b.op("Mul", &[x, x], vec![]),
    };
    let axes: Vec<i64> = (-(t.k as i64)..0).collect();
    let ms = reduce_mean(&mut b, sq, t.opset, &axes);
    let eps = b.scalar(1e-6);
    let ve = b.op("Add", &[ms, eps], vec![]);
    let rms = b.op("Sqrt", &[ve], vec![]);
    let mut y = match t.inv {
        Inv::DivOne => {
            let one = b.scalar(1.0);
            let inv = b.op("Div", &[one, rms], vec![]);
            b.op("Mul", &[x, inv], vec![])
        }
        Inv::Reciprocal => {
            let inv = b.op("Reciprocal", &[rms], vec![]);
            b.op("Mul", &[inv, x], vec![])
        }
        Inv::DivX => b.op("Div", &[x, rms], vec![]),
    };
    if t.cast_out {
        y = cast_f32(&mut b, y);
    }
    if let Some(shape) = &t.weight {
        let w = b.floats("weight", shape, noise(shape.iter().product(), 1));
        y = if t.weight_first {
            b.op("Mul", &[w, y], vec![])
        } else {
            b.op("Mul", &[y, w], vec![])
        };
    }
    b.shape(y, &[2, 3, 4]);
    b.output(y);
    (b, x)
}

fn out_node(b: &Builder) -> &Node {
    let out = b.model.graph.outputs[0].value;
    &b.model.graph[out.node]
}

fn operators(b: &Builder) -> Vec<String> {
    b.model
        .graph
        .nodes()
        .filter(|(_, n)| n.is_operator())
        .map(|(_, n)| n.op_type().to_string())
        .collect()
}

/// Checks the fused node: type, attributes, inputs, and that nothing else of the pattern is left.
fn assert_fused(b: &Builder, x: ValueRef, op: &str, axis: i64, scale: &[f32], cast_in: bool) {
    let mut want = vec![op.to_string()];
    if cast_in {
        want.insert(0, "Cast".into());
    }
    assert_eq!(operators(b), want);
    let n = out_node(b);
    assert_eq!(n.op_type(), op);
    assert_eq!(n.domain(), "");
    assert_eq!(n.attr("axis").and_then(|a| a.as_int()), Some(axis));
    assert_eq!(n.attr("stash_type").and_then(|a| a.as_int()), Some(1));
    let eps = n.attr("epsilon").and_then(|a| a.as_float()).unwrap();
    assert!((eps - 1e-6).abs() < 1e-12, "{eps}");
    let out = b.model.graph.outputs[0].value;
    assert_eq!(b.model.graph.input(out.node, 0), Some(x));
    let s = b.model.graph.constant_input(out.node, 1).unwrap();
    assert_eq!(s.to_vec::<f32>().unwrap(), scale);
}

#[test]
fn fuses_every_exporter_variant_at_opset_23_and_with_contrib() {
    let mut variants = Vec::new();
    for square in [Square::Pow, Square::PowInt, Square::MulSelf] {
        for inv in [Inv::DivOne, Inv::Reciprocal, Inv::DivX] {
            for (cast_in, cast_out) in [(true, true), (false, false)] {
                variants.push(Rms {
                    square,
                    inv,
                    cast_in,
                    cast_out,
                    ..Rms::default()
                });
            }
        }
    }
    variants.push(Rms {
        weight_first: false,
        ..Rms::default()
    });
    for t in variants {
        for (opset, contrib, op) in [
            (17, true, "SimplifiedLayerNormalization"),
            (18, true, "SimplifiedLayerNormalization"),
            (23, false, "RMSNormalization"),
            (23, true, "RMSNormalization"),
        ] {
            let t = Rms { opset, ..t.clone() };
            let (mut b, x) = rms(&t);
            let name = b
                .model
                .graph
                .value_name(b.model.graph.outputs[0].value)
                .to_string();
            let c = b.run(&FuseRmsNorm {
                allow_contrib: contrib,
            });
            assert_eq!(c.iter().map(|(_, n)| n).sum::<usize>(), 1, "{t:?}: {c}");
            assert_fused(&b, x, op, -1, &noise(4, 1), t.cast_in);
            // The output keeps its name (readers and graph outputs are unchanged).
            assert_eq!(
                b.model.graph.value_name(b.model.graph.outputs[0].value),
                name
            );
            assert!(b
                .run(&FuseRmsNorm {
                    allow_contrib: contrib
                })
                .is_empty());
        }
    }
}

#[test]
fn counts_name_the_form() {
    let (mut b, _) = rms(&Rms {
        opset: 23,
        ..Rms::default()
    });
    assert_eq!(b.run(&FuseRmsNorm::default()).get("rmsnorm"), 1);
    let (mut b, _) = rms(&Rms::default());
    let c = b.run(&FuseRmsNorm {
        allow_contrib: true,
    });
    assert_eq!(c.get("rmsnorm (SimplifiedLayerNormalization)"), 1);
}

#[test]
fn below_opset_23_without_contrib_nothing_changes() {
    let (mut b, _) = rms(&Rms::default());
    assert!(b.run(&FuseRmsNorm::default()).is_empty());
    assert_eq!(b.count("Pow"), 1);
    // But the unit is still found, for pinning.
    let units = decomposed_rmsnorms(&b.model.graph);
    assert_eq!(units.len(), 1);
    assert_eq!(
        units[0].nodes.len(),
        8,
        "Pow … Mul(weight), without the first Cast"
    );
}

#[test]
fn weights_of_other_shapes_and_no_weight() {
    // [1, 1, 4] is reshaped to the normalized shape [4].
    let (mut b, x) = rms(&Rms {
        weight: Some(vec![1, 1, 4]),
        ..Rms::default()
    });
    b.run(&FuseRmsNorm {
        allow_contrib: true,
    });
    assert_fused(
        &b,
        x,
        "SimplifiedLayerNormalization",
        -1,
        &noise(4, 1),
        true,
    );
    assert_eq!(
        b.model
            .graph
            .constant_input(out_node_index(&b), 1)
            .unwrap()
            .shape(),
        &[4]
    );
    // No weight: a scale of ones.
    let (mut b, x) = rms(&Rms {
        weight: None,
        ..Rms::default()
    });
    b.run(&FuseRmsNorm {
        allow_contrib: true,
    });
    assert_fused(&b, x, "SimplifiedLayerNormalization", -1, &[1.0; 4], true);
    // Over the last two axes: axis -2, scale [3, 4].
    let (mut b, x) = rms(&Rms {
        k: 2,
        weight: Some(vec![3, 4]),
        ..Rms::default()
    });
    b.run(&FuseRmsNorm {
        allow_contrib: true,
    });
    assert_fused(
        &b,
        x,
        "SimplifiedLayerNormalization",
        -2,
        &noise(12, 1),
        true,
    );
}

fn out_node_index(b: &Builder) -> NodeIndex {
    b.model.graph.outputs[0].value.node
}

#[test]
fn leaves_alone_what_it_cannot_prove() {
    let fuse = FuseRmsNorm {
        allow_contrib: true,
    };
    // A weight varying over the leading axes.
    let (mut b, _) = rms(&Rms {
        weight: Some(vec![3, 1]),
        ..Rms::default()
    });
    b.run(&fuse);
    assert_eq!(b.count("Pow"), 1);

    // Not the last axis.
    let mut b = Builder::new(17);
    let x = b.input("x", &[2, 3, 4]);
    let sq = b.op("Mul", &[x, x], vec![]);
    let ms = b.op("ReduceMean", &[sq], vec![("axes", ints_attr(&[1]))]);
    let eps = b.scalar(1e-6);
    let ve = b.op("Add", &[ms, eps], vec![]);
    let r = b.op("Sqrt", &[ve], vec![]);
    let y = b.op("Div", &[x, r], vec![]);
    b.output(y);
    assert!(b.run(&fuse).is_empty());

    // keepdims = 0.
    let mut b = Builder::new(17);
    let x = b.input("x", &[2, 3, 4]);
    let sq = b.op("Mul", &[x, x], vec![]);
    let ms = b.op(
        "ReduceMean",
        &[sq],
        vec![("axes", ints_attr(&[-1])), ("keepdims", AttrValue::Int(0))],
    );
    let eps = b.scalar(1e-6);
    let ve = b.op("Add", &[ms, eps], vec![]);
    let r = b.op("Sqrt", &[ve], vec![]);
    let y = b.op("Div", &[x, r], vec![]);
    b.output(y);
    assert!(b.run(&fuse).is_empty());

    // Pow(x, 3), Div(2, ·), an input epsilon, x's shape unknown.
    for what in ["cube", "two", "eps input", "no shape"] {
        let mut b = Builder::new(17);
        let x = if what == "no shape" {
            b.op("Identity", &[], vec![])
        } else {
            b.input("x", &[2, 3, 4])
        };
        let e = b.scalar(if what == "cube" { 3.0 } else { 2.0 });
        let sq = b.op("Pow", &[x, e], vec![]);
        let ms = b.op("ReduceMean", &[sq], vec![("axes", ints_attr(&[-1]))]);
        let eps = if what == "eps input" {
            b.input("eps", &[])
        } else {
            b.scalar(1e-6)
        };
        let ve = b.op("Add", &[ms, eps], vec![]);
        let r = b.op("Sqrt", &[ve], vec![]);
        let one = b.scalar(if what == "two" { 2.0 } else { 1.0 });
        let inv = b.op("Div", &[one, r], vec![]);
        let y = b.op("Mul", &[x, inv], vec![]);
        b.output(y);
        assert!(b.run(&fuse).is_empty(), "{what}");
    }

    // float64 (stash_type float32 would lose precision).
    let mut b = Builder::new(23);
    let x = b.input("x", &[2, 3, 4]);
    let x = b.op("Cast", &[x], vec![("to", AttrValue::Int(11))]);
    let sq = b.op("Mul", &[x, x], vec![]);
    let ms = b.op("ReduceMean", &[sq], vec![("axes", ints_attr(&[-1]))]);
    let eps = b.constant("eps", Tensor::scalar(1e-6f64));
    let ve = b.op("Add", &[ms, eps], vec![]);
    let r = b.op("Sqrt", &[ve], vec![]);
    let y = b.op("Div", &[x, r], vec![]);
    b.output(y);
    assert!(b.run(&fuse).is_empty());
}

#[test]
fn shared_intermediates_block_it() {
    // The mean square is also a graph output.
    let (mut b, _) = rms(&Rms::default());
    let (sqrt, _) = b
        .model
        .graph
        .nodes()
        .find(|(_, n)| n.op_type() == "Sqrt")
        .unwrap();
    let ve = b.model.graph.input(sqrt, 0).unwrap();
    b.output(ve);
    assert!(b
        .run(&FuseRmsNorm {
            allow_contrib: true
        })
        .is_empty());
    // The inverse RMS also read by a third node.
    let (mut b, _) = rms(&Rms {
        cast_out: false,
        ..Rms::default()
    });
    let (mul, _) = b
        .model
        .graph
        .nodes()
        .find(|(_, n)| n.op_type() == "Div")
        .unwrap();
    let inv = ValueRef::new(mul, 0);
    let r = b.op("Relu", &[inv], vec![]);
    b.output(r);
    assert!(b
        .run(&FuseRmsNorm {
            allow_contrib: true
        })
        .is_empty());
}

#[test]
fn a_cast_to_another_type_ends_the_pattern() {
    // float16 out of a float32 normalization: fused up to the Cast, with a scale of ones; the
    // Cast and the weight Mul stay.
    let mut b = Builder::new(17);
    let x = b.input("x", &[2, 3, 4]);
    let two = b.scalar(2.0);
    let sq = b.op("Pow", &[x, two], vec![]);
    let ms = b.op("ReduceMean", &[sq], vec![("axes", ints_attr(&[-1]))]);
    let eps = b.scalar(1e-6);
    let ve = b.op("Add", &[ms, eps], vec![]);
    let r = b.op("Sqrt", &[ve], vec![]);
    let y = b.op("Div", &[x, r], vec![]);
    let h = b.op("Cast", &[y], vec![("to", AttrValue::Int(10))]);
    let w = b.constant(
        "w",
        Tensor::from_vec(vec![4], vec![half::f16::ONE; 4]).unwrap(),
    );
    let z = b.op("Mul", &[w, h], vec![]);
    b.output(z);
    let c = b.run(&FuseRmsNorm {
        allow_contrib: true,
    });
    assert_eq!(c.get("rmsnorm (SimplifiedLayerNormalization)"), 1);
    assert_eq!(
        operators(&b),
        vec!["SimplifiedLayerNormalization", "Cast", "Mul"]
    );
}
