use super::*;
use crate::fuse::testutil::{ints_attr, noise, Builder};

/// How the PyTorch-style test pattern is written.
#[derive(Clone)]
struct Torch {
    opset: i64,
    /// Reduce over the last `k` axes of x [2, 3, 4].
    k: usize,
    negative_axes: bool,
    pow: bool,
    reciprocal: bool,
    gamma: Option<Vec<usize>>,
    beta: Option<Vec<usize>>,
    x_shape: bool,
}

impl Default for Torch {
    fn default() -> Torch {
        Torch {
            opset: 17,
            k: 1,
            negative_axes: true,
            pow: true,
            reciprocal: false,
            gamma: Some(vec![4]),
            beta: Some(vec![4]),
            x_shape: true,
        }
    }
}

fn reduce_mean(b: &mut Builder, v: ValueRef, t: &Torch, axes: &[i64]) -> ValueRef {
    if t.opset >= 18 {
        let a = b.ints(&format!("axes{}", b.count("ReduceMean")), axes.to_vec());
        b.op("ReduceMean", &[v, a], vec![])
    } else {
        b.op("ReduceMean", &[v], vec![("axes", ints_attr(axes))])
    }
}

fn torch(t: &Torch) -> Builder {
    let mut b = Builder::new(t.opset);
    let x = if t.x_shape {
        b.input("x", &[2, 3, 4])
    } else {
        b.op("Identity", &[], vec![])
    };
    let axes: Vec<i64> = (3 - t.k as i64..3)
        .map(|a| if t.negative_axes { a - 3 } else { a })
        .collect();
    let mean = reduce_mean(&mut b, x, t, &axes);
    let d = b.op("Sub", &[x, mean], vec![]);
    let sq = if t.pow {
        let two = b.scalar(2.0);
        b.op("Pow", &[d, two], vec![])
    } else {
        b.op("Mul", &[d, d], vec![])
    };
    let var = reduce_mean(&mut b, sq, t, &axes);
    let eps = b.scalar(1e-5);
    let ve = b.op("Add", &[var, eps], vec![]);
    let std = b.op("Sqrt", &[ve], vec![]);
    let mut y = if t.reciprocal {
        let r = b.op("Reciprocal", &[std], vec![]);
        b.op("Mul", &[r, d], vec![])
    } else {
        b.op("Div", &[d, std], vec![])
    };
    if let Some(shape) = &t.gamma {
        let gm = b.floats("gamma", shape, noise(shape.iter().product(), 1));
        y = b.op("Mul", &[y, gm], vec![]);
    }
    if let Some(shape) = &t.beta {
        let bt = b.floats("beta", shape, noise(shape.iter().product(), 2));
        y = b.op("Add", &[bt, y], vec![]);
    }
    b.output(y);
    b
}

fn ln_node(b: &Builder) -> &crate::ir::Node {
    let out = b.model.graph.outputs[0].value;
    &b.model.graph[out.node]
}

#[test]
fn fuses_the_pytorch_pattern_and_its_variants() {
    let variants = [
        Torch::default(),
        Torch {
            pow: false,
            ..Torch::default()
        },
        Torch {
            reciprocal: true,
            ..Torch::default()
        },
        Torch {
            opset: 18,
            ..Torch::default()
        },
        Torch {
            negative_axes: false,
            ..Torch::default()
        },
        Torch {
            gamma: Some(vec![1, 1, 4]),
            beta: Some(vec![1, 4]),
            ..Torch::default()
        },
    ];
    for t in variants {
        let mut b = torch(&t);
        let name = b
            .model
            .graph
            .value_name(b.model.graph.outputs[0].value)
            .to_string();
        assert_eq!(
            b.run(&FuseLayerNorm).get("layernorm"),
            1,
            "opset {} pow {} rec {}",
            t.opset,
            t.pow,
            t.reciprocal
        );
        let ops: Vec<&str> = b
            .model
            .graph
            .nodes()
            .filter(|(_, n)| n.is_operator())
            .map(|(_, n)| n.op_type())
            .collect();
        assert_eq!(ops, vec!["LayerNormalization"]);
        let n = ln_node(&b);
        assert_eq!(n.attr("axis").and_then(|a| a.as_int()), Some(-1));
        let eps = n.attr("epsilon").and_then(|a| a.as_float()).unwrap();
        assert!((eps - 1e-5).abs() < 1e-12);
        assert_eq!(
            b.model.graph.value_name(b.model.graph.outputs[0].value),
            name
        );
        let out = b.model.graph.outputs[0].value;
        let scale = b.model.graph.constant_input(out.node, 1).unwrap();
        assert_eq!(scale.shape(), &[4]);
        assert_eq!(scale.to_vec::<f32>().unwrap(), noise(4, 1));
        assert_eq!(
            b.model.graph.constant_input(out.node, 2).unwrap().shape(),
            &[4]
        );
        // Only x, scale and bias remain.
        assert_eq!(b.model.graph.node_count(), 4);
    }
}

#[test]
fn fuses_over_the_last_two_axes_and_without_affine() {
    let mut b = torch(&Torch {
        k: 2,
        gamma: Some(vec![3, 4]),
        beta: None,
        ..Torch::default()
    });
    assert_eq!(b.run(&FuseLayerNorm).get("layernorm"), 1);
    let n = ln_node(&b);
    assert_eq!(n.attr("axis").and_then(|a| a.as_int()), Some(-2));
    assert_eq!(n.input_arity, 2, "no bias input");

    let mut b = torch(&Torch {
        gamma: None,
        beta: None,
        ..Torch::default()
    });
    assert_eq!(b.run(&FuseLayerNorm).get("layernorm"), 1);
    let out = b.model.graph.outputs[0].value;
    let scale = b.model.graph.constant_input(out.node, 1).unwrap();
    assert_eq!(scale.to_vec::<f32>().unwrap(), vec![1.0; 4]);

    // A scalar gamma is broadcast to the normalized shape.
    let mut b = torch(&Torch {
        gamma: Some(vec![1]),
        ..Torch::default()
    });
    assert_eq!(b.run(&FuseLayerNorm).get("layernorm"), 1);
    let out = b.model.graph.outputs[0].value;
    let scale = b.model.graph.constant_input(out.node, 1).unwrap();
    assert_eq!(scale.shape(), &[4]);
}

#[test]
fn leaves_alone_what_it_cannot_prove() {
    // Opset too low.
    let mut b = torch(&Torch {
        opset: 16,
        ..Torch::default()
    });
    assert!(b.run(&FuseLayerNorm).is_empty());
    // Rank / normalized dims unknown.
    let mut b = torch(&Torch {
        x_shape: false,
        ..Torch::default()
    });
    assert!(b.run(&FuseLayerNorm).is_empty());
    // Not the last axis.
    let mut b = Builder::new(17);
    let x = b.input("x", &[2, 3, 4]);
    let mean = b.op("ReduceMean", &[x], vec![("axes", ints_attr(&[1]))]);
    let d = b.op("Sub", &[x, mean], vec![]);
    let sq = b.op("Mul", &[d, d], vec![]);
    let var = b.op("ReduceMean", &[sq], vec![("axes", ints_attr(&[1]))]);
    let eps = b.scalar(1e-5);
    let ve = b.op("Add", &[var, eps], vec![]);
    let std = b.op("Sqrt", &[ve], vec![]);
    let y = b.op("Div", &[d, std], vec![]);
    b.output(y);
    assert!(b.run(&FuseLayerNorm).is_empty());
    // A gamma varying over the leading axes.
    let mut b = torch(&Torch {
        gamma: Some(vec![3, 1]),
        ..Torch::default()
    });
    assert!(b.run(&FuseLayerNorm).is_empty());
}

#[test]
fn shared_intermediates_block_the_fusion_but_an_outside_add_does_not() {
    // The variance is also a graph output.
    let mut b = torch(&Torch::default());
    let (sqrt, _) = b
        .model
        .graph
        .nodes()
        .find(|(_, n)| n.op_type() == "Sqrt")
        .unwrap();
    let ve = b.model.graph.input(sqrt, 0).unwrap();
    b.output(ve);
    assert!(b.run(&FuseLayerNorm).is_empty());
    // The mean read by a third node.
    let mut b = torch(&Torch::default());
    let (sub, _) = b
        .model
        .graph
        .nodes()
        .find(|(_, n)| n.op_type() == "Sub")
        .unwrap();
    let mean = b.model.graph.input(sub, 1).unwrap();
    let r = b.op("Relu", &[mean], vec![]);
    b.output(r);
    assert!(b.run(&FuseLayerNorm).is_empty());
    // A residual Add (not constant) after gamma is not a beta: fused up to gamma.
    let mut b = torch(&Torch {
        beta: None,
        ..Torch::default()
    });
    let out = b.model.graph.outputs[0].value;
    b.model.graph.outputs.clear();
    let res = b.input("res", &[2, 3, 4]);
    let y = b.op("Add", &[out, res], vec![]);
    b.output(y);
    assert_eq!(b.run(&FuseLayerNorm).get("layernorm"), 1);
    assert_eq!(b.count("Add"), 1);
}

#[test]
fn rms_norm_is_not_layer_norm() {
    let mut b = Builder::new(17);
    let x = b.input("x", &[2, 3, 4]);
    let sq = b.op("Mul", &[x, x], vec![]);
    let ms = b.op("ReduceMean", &[sq], vec![("axes", ints_attr(&[-1]))]);
    let eps = b.scalar(1e-6);
    let ve = b.op("Add", &[ms, eps], vec![]);
    let rms = b.op("Sqrt", &[ve], vec![]);
    let y = b.op("Div", &[x, rms], vec![]);
    b.output(y);
    assert!(b.run(&FuseLayerNorm).is_empty());
}

/// tf2onnx's Keras LayerNormalization: x·g + (beta − mean·g), g = gamma / sqrt(var + eps).
fn tf_pattern(gamma: bool) -> Builder {
    let mut b = Builder::new(17);
    let x = b.input("x", &[2, 3, 4]);
    let mean = b.op("ReduceMean", &[x], vec![("axes", ints_attr(&[2]))]);
    let d = b.op("Sub", &[x, mean], vec![]);
    let sq = b.op("Mul", &[d, d], vec![]);
    let var = b.op("ReduceMean", &[sq], vec![("axes", ints_attr(&[2]))]);
    let eps = b.scalar(1e-3);
    let ve = b.op("Add", &[var, eps], vec![]);
    let std = b.op("Sqrt", &[ve], vec![]);
    let mut gv = b.op("Reciprocal", &[std], vec![]);
    if gamma {
        let gm = b.floats("gamma", &[4], noise(4, 1));
        gv = b.op("Mul", &[gv, gm], vec![]);
    }
    let t1 = b.op("Mul", &[x, gv], vec![]);
    let t2 = b.op("Mul", &[mean, gv], vec![]);
    let bt = b.floats("beta", &[4], noise(4, 2));
    let t3 = b.op("Sub", &[bt, t2], vec![]);
    let y = b.op("Add", &[t1, t3], vec![]);
    b.output(y);
    b
}

#[test]
fn fuses_the_tf_pattern() {
    for gamma in [true, false] {
        let mut b = tf_pattern(gamma);
        assert_eq!(b.run(&FuseLayerNorm).get("layernorm (tf form)"), 1);
        let n = ln_node(&b);
        assert_eq!(n.op_type(), "LayerNormalization");
        let eps = n.attr("epsilon").and_then(|a| a.as_float()).unwrap();
        assert!((eps - 1e-3).abs() < 1e-9);
        assert_eq!(b.model.graph.node_count(), 4);
    }
}
