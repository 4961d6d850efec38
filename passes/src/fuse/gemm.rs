//! `fuse-matmul-add`: `Add(MatMul(A, B), C)` → `Gemm(A, B, C)` where the product is 2-D.
//!
//! Safe when A and B are known to be rank 2 (declared shapes or a constant), the Add's other
//! operand C is a constant that broadcasts onto the `[M, N]` product without growing it
//! (Gemm broadcasts C one way only), the element type is one Gemm takes, and the default
//! opset is at least 11. The Add's output keeps its name.

use crate::ir::{Graph, Model, NodeIndex};
use crate::pipeline::{Changes, Pass, PassError};
use crate::tensor::DataType;

use super::pattern::{
    dims, each_graph, elem_type, fits_onto, is_op, operands_of, operators, producer, remove_nodes,
    rewrite_node, sole_consumer,
};

/// Turns MatMul + constant Add on 2-D operands into Gemm.
#[derive(Debug, Clone, Copy, Default)]
pub struct FuseMatMulAdd;

impl Pass for FuseMatMulAdd {
    fn name(&self) -> &'static str {
        "fuse-matmul-add"
    }

    fn run(&self, model: &mut Model) -> Result<Changes, PassError> {
        let mut changes = Changes::none();
        if model.opset("").unwrap_or(0) < 11 {
            return Ok(changes);
        }
        let n = each_graph(&mut model.graph, &mut |g| {
            Ok(operators(g).into_iter().filter(|&add| fuse(g, add)).count())
        })?;
        changes.add("matmul+add", n);
        Ok(changes)
    }
}

/// Element types both MatMul and Gemm (opset 13) accept.
fn gemm_type(t: DataType) -> bool {
    t.is_float()
        || matches!(
            t,
            DataType::Int32 | DataType::Int64 | DataType::Uint32 | DataType::Uint64
        )
}

fn fuse(g: &mut Graph, add: NodeIndex) -> bool {
    if !is_op(g, add, "Add") {
        return false;
    }
    let ins = g.inputs(add);
    let [Some(l), Some(r)] = ins.as_slice() else {
        return false;
    };
    for (which, (p, c)) in [(*l, *r), (*r, *l)].into_iter().enumerate() {
        let Some(mm) = producer(g, p, "MatMul") else {
            continue;
        };
        if p.slot != 0 || sole_consumer(g, p) != Some((add, which)) {
            continue;
        }
        let Some(ct) = g.constant(c) else { continue };
        let (Some(a), Some(b)) = (g.input(mm, 0), g.input(mm, 1)) else {
            continue;
        };
        let (Some(ad), Some(bd)) = (dims(g, a), dims(g, b)) else {
            continue;
        };
        if ad.len() != 2 || bd.len() != 2 {
            continue;
        }
        let product = [ad[0].clone(), bd[1].clone()];
        if !fits_onto(ct.shape(), &product) || !gemm_type(ct.dtype()) {
            continue;
        }
        if [a, b]
            .iter()
            .any(|&v| elem_type(g, v).is_some_and(|t| t != ct.dtype()))
        {
            continue;
        }
        let old = operands_of(g, &[mm]);
        let name = g.node(mm).map(|n| n.name.clone()).unwrap_or_default();
        rewrite_node(
            g,
            add,
            "Gemm",
            "",
            Vec::new(),
            &[Some(a), Some(b), Some(c)],
            1,
        );
        if let Some(n) = g.node_mut(add) {
            if !name.is_empty() {
                n.name = name;
            }
        }
        remove_nodes(g, &[mm], &old);
        return true;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuse::testutil::{noise, Builder};
    use crate::ir::ValueRef;

    /// x [2,3] @ w [3,4] + c (shape `c_shape`).
    fn build(opset: i64, x_dims: &[i64], c_shape: &[usize]) -> (Builder, ValueRef) {
        let mut b = Builder::new(opset);
        let x = b.input("x", x_dims);
        let w = b.floats("w", &[3, 4], noise(12, 1));
        let n: usize = c_shape.iter().product();
        let c = b.floats("c", c_shape, noise(n, 2));
        let m = b.op("MatMul", &[x, w], vec![]);
        let y = b.op("Add", &[c, m], vec![]);
        b.output(y);
        (b, y)
    }

    fn eval_gemm(b: &Builder, x: &[f32]) -> Vec<f32> {
        let g = &b.model.graph;
        let node = g.outputs[0].value.node;
        assert_eq!(g[node].op_type(), "Gemm");
        let w = g.constant_input(node, 1).unwrap().to_vec::<f32>().unwrap();
        let c = g.constant_input(node, 2).unwrap();
        let cv = c.to_vec::<f32>().unwrap();
        let cs = c.shape().to_vec();
        let mut y = vec![0f32; 8];
        for i in 0..2 {
            for j in 0..4 {
                let mut acc = 0f32;
                for k in 0..3 {
                    acc += x[i * 3 + k] * w[k * 4 + j];
                }
                let ci = match cs.as_slice() {
                    [] => 0,
                    [n] => {
                        if *n == 1 {
                            0
                        } else {
                            j
                        }
                    }
                    [r, n] => (if *r == 1 { 0 } else { i }) * n + if *n == 1 { 0 } else { j },
                    _ => unreachable!(),
                };
                y[i * 4 + j] = acc + cv[ci];
            }
        }
        y
    }

    #[test]
    fn fuses_2d_matmul_with_constant_bias() {
        for c_shape in [vec![4], vec![1, 4], vec![2, 4], vec![2, 1], vec![]] {
            let (mut b, y) = build(13, &[2, 3], &c_shape);
            let name = b.model.graph.value_name(y).to_string();
            let c = b.run(&FuseMatMulAdd);
            assert_eq!(c.get("matmul+add"), 1, "{c_shape:?}");
            assert_eq!(b.count("Gemm"), 1);
            assert_eq!(b.count("MatMul") + b.count("Add"), 0);
            let out = b.model.graph.outputs[0].value;
            assert_eq!(b.model.graph.value_name(out), name);
            // Numerically the same as MatMul then Add.
            let x = noise(6, 3);
            let w = noise(12, 1);
            let cv = noise(c_shape.iter().product(), 2);
            let got = eval_gemm(&b, &x);
            for i in 0..2 {
                for j in 0..4 {
                    let mut acc = 0f32;
                    for k in 0..3 {
                        acc += x[i * 3 + k] * w[k * 4 + j];
                    }
                    let ci = match c_shape.as_slice() {
                        [] => 0,
                        [_] => j,
                        [r, n] => (if *r == 1 { 0 } else { i }) * n + if *n == 1 { 0 } else { j },
                        _ => unreachable!(),
                    };
                    assert!((got[i * 4 + j] - (acc + cv[ci])).abs() < 1e-6);
                }
            }
        }
    }

    #[test]
    fn leaves_alone_what_gemm_cannot_do() {
        // 3-D A.
        let (mut b, _) = build(13, &[1, 2, 3], &[4]);
        assert!(b.run(&FuseMatMulAdd).is_empty());
        // Rank of A unknown.
        let mut b = Builder::new(13);
        let x = b.op("Relu", &[], vec![]);
        let w = b.floats("w", &[3, 4], noise(12, 1));
        let c = b.floats("c", &[4], noise(4, 2));
        let m = b.op("MatMul", &[x, w], vec![]);
        let y = b.op("Add", &[m, c], vec![]);
        b.output(y);
        assert!(b.run(&FuseMatMulAdd).is_empty());
        // A bias that would grow the output ([3,4] onto [2,4]) or does not broadcast.
        let (mut b, _) = build(13, &[2, 3], &[3, 4]);
        assert!(b.run(&FuseMatMulAdd).is_empty());
        let (mut b, _) = build(13, &[2, 3], &[1, 1, 4]);
        assert!(b.run(&FuseMatMulAdd).is_empty());
        // M symbolic: a [2,4] bias cannot be proved to fit.
        let (mut b, _) = build(13, &[-1, 3], &[2, 4]);
        assert!(b.run(&FuseMatMulAdd).is_empty());
        let (mut b, _) = build(13, &[-1, 3], &[4]);
        assert_eq!(b.run(&FuseMatMulAdd).get("matmul+add"), 1);
        // Opset too low.
        let (mut b, _) = build(9, &[2, 3], &[4]);
        assert!(b.run(&FuseMatMulAdd).is_empty());
    }

    #[test]
    fn leaves_shared_products_alone() {
        let (mut b, y) = build(13, &[2, 3], &[4]);
        let m = b.model.graph.input(y.node, 1).unwrap();
        b.op("Relu", &[m], vec![]);
        assert!(b.run(&FuseMatMulAdd).is_empty());
        let (mut b, y) = build(13, &[2, 3], &[4]);
        let m = b.model.graph.input(y.node, 1).unwrap();
        b.output(m);
        assert!(b.run(&FuseMatMulAdd).is_empty());
        // Non-constant other operand.
        let mut b = Builder::new(13);
        let x = b.input("x", &[2, 3]);
        let w = b.floats("w", &[3, 4], noise(12, 1));
        let c = b.input("c", &[4]);
        let m = b.op("MatMul", &[x, w], vec![]);
        let y = b.op("Add", &[m, c], vec![]);
        b.output(y);
        assert!(b.run(&FuseMatMulAdd).is_empty());
    }
}
