//! `fold-bias`: an Add of a constant after Conv / ConvTranspose / Gemm folded into the
//! operator's bias input.
//!
//! After a Conv with output `[N, C, spatial…]` the constant must be per channel: every dim 1
//! except the channel axis (`[C,1,1]`, `[1,C,1,1]`, or one value for all channels); it is
//! added to the bias `[C]` (created if absent). After a Gemm with output `[M, N]` the
//! constant must broadcast onto `[M, N]` without growing it; it is added to `beta·C` (C absent
//! or constant) and `beta` becomes 1. Sums are computed in f64 and rounded once.

use crate::ir::{AttrValue, Attribute, Dim, Graph, Model, NodeIndex, ValueRef};
use crate::pipeline::{Changes, Pass, PassError};
use crate::tensor::Tensor;

use super::pattern::{
    add_initializer, broadcast_shape, broadcast_to, dims, each_graph, fits_onto, float_tensor,
    is_op, known, operands_of, operators, remove_nodes, rewrite_node, sole_consumer,
};

/// Folds a constant Add after Conv / ConvTranspose / Gemm into their bias.
#[derive(Debug, Clone, Copy, Default)]
pub struct FoldBias;

impl Pass for FoldBias {
    fn name(&self) -> &'static str {
        "fold-bias"
    }

    fn run(&self, model: &mut Model) -> Result<Changes, PassError> {
        let mut changes = Changes::none();
        let (mut conv, mut gemm) = (0, 0);
        each_graph(&mut model.graph, &mut |g| {
            for add in operators(g) {
                match fold(g, add) {
                    Some(true) => gemm += 1,
                    Some(false) => conv += 1,
                    None => {}
                }
            }
            Ok(0)
        })?;
        changes.add("conv+add", conv);
        changes.add("gemm+add", gemm);
        Ok(changes)
    }
}

/// The folded bias for the operator feeding `add`: (operator, new bias, its name, is Gemm).
struct Plan {
    op: NodeIndex,
    bias: Tensor,
    bias_name: String,
    gemm: bool,
}

/// Folds the Add `add` into its producer; `Some(is_gemm)` when done.
fn fold(g: &mut Graph, add: NodeIndex) -> Option<bool> {
    let plan = plan(g, add)?;
    let inputs = g.inputs(plan.op);
    let (op_type, mut attributes, name, doc, meta) = {
        let n = g.node(plan.op)?;
        (
            n.op_type().to_string(),
            n.attributes.clone(),
            n.name.clone(),
            n.doc_string.clone(),
            n.metadata_props.clone(),
        )
    };
    if plan.gemm {
        attributes.retain(|a| a.name != "beta");
        attributes.push(Attribute::new("beta", AttrValue::Float(1.0)));
    }
    let old = operands_of(g, &[plan.op, add]);
    let keep: Vec<Option<ValueRef>> = inputs.iter().take(2).copied().collect();
    // The Add node becomes the operator, so the pattern's output keeps its name.
    rewrite_node(g, add, &op_type, "", attributes, &keep, 1);
    if let Some(n) = g.node_mut(add) {
        n.name = name;
        n.doc_string = doc;
        n.metadata_props = meta;
    }
    remove_nodes(g, &[plan.op], &old);
    let b = add_initializer(g, &plan.bias_name, plan.bias);
    g.connect(b, add, 2);
    Some(plan.gemm)
}

fn plan(g: &Graph, add: NodeIndex) -> Option<Plan> {
    if !is_op(g, add, "Add") {
        return None;
    }
    let ins = g.inputs(add);
    let [Some(l), Some(r)] = ins.as_slice() else {
        return None;
    };
    [(*l, *r), (*r, *l)]
        .into_iter()
        .enumerate()
        .find_map(|(which, (y, c))| {
            if y.slot != 0 || sole_consumer(g, y) != Some((add, which)) {
                return None;
            }
            let t = g.constant(c)?;
            if !t.dtype().is_float() {
                return None;
            }
            let op = y.node;
            let node = g.node(op)?;
            if node.outputs.len() != 1 {
                return None;
            }
            if is_op(g, op, "Conv") || is_op(g, op, "ConvTranspose") {
                conv_plan(g, op, t)
            } else if is_op(g, op, "Gemm") {
                gemm_plan(g, op, t)
            } else {
                None
            }
        })
}

fn conv_plan(g: &Graph, op: NodeIndex, t: &Tensor) -> Option<Plan> {
    let wv = g.input(op, 1)?;
    let wd = dims(g, wv)?;
    if wd.len() < 3 {
        return None;
    }
    let channels = if is_op(g, op, "ConvTranspose") {
        let group = g
            .node(op)?
            .attr("group")
            .and_then(|a| a.as_int())
            .unwrap_or(1);
        known(&wd[1])?.checked_mul(usize::try_from(group).ok().filter(|&v| v > 0)?)?
    } else {
        known(&wd[0])?
    };
    // Output rank equals the weight's; only the channel axis may be other than 1.
    let rank = wd.len();
    let ts = t.shape();
    if ts.len() > rank {
        return None;
    }
    let offset = rank - ts.len();
    let mut per_channel = false;
    for (i, &d) in ts.iter().enumerate() {
        match (offset + i, d) {
            (_, 1) => {}
            (1, d) if d == channels => per_channel = true,
            _ => return None,
        }
    }
    let add = t.to_f64_vec()?;
    let add: Vec<f64> = if per_channel {
        add
    } else {
        vec![*add.first()?; channels]
    };
    let (old, name) = match g.input(op, 2) {
        None => (vec![0.0; channels], format!("{}_bias", g.value_name(wv))),
        Some(v) => {
            let b = g.constant(v)?;
            if b.shape() != [channels] || b.dtype() != t.dtype() {
                return None;
            }
            (b.to_f64_vec()?, g.value_name(v).to_string())
        }
    };
    let sum: Vec<f64> = old.iter().zip(&add).map(|(a, b)| a + b).collect();
    Some(Plan {
        op,
        bias: float_tensor(t.dtype(), vec![channels], &sum)?,
        bias_name: name,
        gemm: false,
    })
}

fn gemm_plan(g: &Graph, op: NodeIndex, t: &Tensor) -> Option<Plan> {
    let node = g.node(op)?;
    let flag = |k: &str| node.attr(k).and_then(|a| a.as_int()).unwrap_or(0) != 0;
    let (ad, bd) = (dims(g, g.input(op, 0)?)?, dims(g, g.input(op, 1)?)?);
    if ad.len() != 2 || bd.len() != 2 {
        return None;
    }
    let m = if flag("transA") { &ad[1] } else { &ad[0] };
    let n = if flag("transB") { &bd[0] } else { &bd[1] };
    let product: [Dim; 2] = [m.clone(), n.clone()];
    if !fits_onto(t.shape(), &product) {
        return None;
    }
    let beta = node.attr("beta").and_then(|a| a.as_float()).unwrap_or(1.0) as f64;
    let (c_vals, c_shape, name) = match g.input(op, 2) {
        None => (
            vec![0.0],
            Vec::new(),
            format!("{}_bias", g.value_name(g.input(op, 1)?)),
        ),
        Some(v) => {
            let c = g.constant(v)?;
            if c.dtype() != t.dtype() || !fits_onto(c.shape(), &product) {
                return None;
            }
            (
                c.to_f64_vec()?,
                c.shape().to_vec(),
                g.value_name(v).to_string(),
            )
        }
    };
    let shape = broadcast_shape(&c_shape, t.shape())?;
    let cb = broadcast_to(&c_vals, &c_shape, &shape)?;
    let tb = broadcast_to(&t.to_f64_vec()?, t.shape(), &shape)?;
    let sum: Vec<f64> = cb.iter().zip(&tb).map(|(c, t)| beta * c + t).collect();
    Some(Plan {
        op,
        bias: float_tensor(t.dtype(), shape, &sum)?,
        bias_name: name,
        gemm: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuse::testutil::{noise, Builder};

    fn conv_add(bias: bool, add_shape: &[usize]) -> Builder {
        let mut b = Builder::new(13);
        let x = b.input("x", &[1, 3, 4, 4]);
        let w = b.floats("w", &[2, 3, 1, 1], noise(6, 1));
        let mut ins = vec![x, w];
        if bias {
            ins.push(b.floats("b", &[2], vec![1.0, 2.0]));
        }
        let y = b.op("Conv", &ins, vec![]);
        let n = add_shape.iter().product();
        let c = b.floats(
            "c",
            add_shape,
            (0..n).map(|i| 10.0 * (i + 1) as f32).collect(),
        );
        let z = b.op("Add", &[c, y], vec![]);
        b.output(z);
        b
    }

    fn bias_of(b: &Builder) -> Vec<f32> {
        let out = b.model.graph.outputs[0].value;
        b.model
            .graph
            .constant_input(out.node, 2)
            .unwrap()
            .to_vec::<f32>()
            .unwrap()
    }

    #[test]
    fn folds_per_channel_constants_into_conv_bias() {
        let mut b = conv_add(true, &[2, 1, 1]);
        assert_eq!(b.run(&FoldBias).get("conv+add"), 1);
        assert_eq!(b.count("Add"), 0);
        assert_eq!(bias_of(&b), vec![11.0, 22.0]);
        let mut b = conv_add(false, &[1, 2, 1, 1]);
        assert_eq!(b.run(&FoldBias).get("conv+add"), 1);
        assert_eq!(bias_of(&b), vec![10.0, 20.0]);
        let mut b = conv_add(true, &[1]);
        assert_eq!(b.run(&FoldBias).get("conv+add"), 1);
        assert_eq!(bias_of(&b), vec![11.0, 12.0]);
    }

    #[test]
    fn leaves_non_channel_constants_alone() {
        // [2] broadcasts on the last axis (W), not channels; [2,4,4] varies spatially.
        for shape in [vec![2], vec![2, 4, 4], vec![1, 1, 2, 1, 1], vec![3, 1, 1]] {
            let mut b = conv_add(true, &shape);
            assert!(b.run(&FoldBias).is_empty(), "{shape:?}");
        }
        // Conv output read elsewhere.
        let mut b = conv_add(true, &[2, 1, 1]);
        let out = b.model.graph.outputs[0].value;
        let y = b.model.graph.input(out.node, 1).unwrap();
        b.output(y);
        assert!(b.run(&FoldBias).is_empty());
    }

    #[test]
    fn folds_into_gemm_c_with_beta() {
        let mut b = Builder::new(13);
        let x = b.input("x", &[2, 3]);
        let w = b.floats("w", &[4, 3], noise(12, 1));
        let c = b.floats("c", &[4], vec![1.0, 2.0, 3.0, 4.0]);
        let y = b.op(
            "Gemm",
            &[x, w, c],
            vec![
                ("transB", AttrValue::Int(1)),
                ("beta", AttrValue::Float(2.0)),
            ],
        );
        let d = b.floats("d", &[2, 1], vec![10.0, 20.0]);
        let z = b.op("Add", &[y, d], vec![]);
        b.output(z);
        assert_eq!(b.run(&FoldBias).get("gemm+add"), 1);
        let node = b.model.graph.outputs[0].value.node;
        let g = &b.model.graph;
        assert_eq!(g[node].attr("beta").and_then(|a| a.as_float()), Some(1.0));
        assert_eq!(g[node].attr("transB").and_then(|a| a.as_int()), Some(1));
        let c = g.constant_input(node, 2).unwrap();
        assert_eq!(c.shape(), &[2, 4]);
        assert_eq!(
            c.to_vec::<f32>().unwrap(),
            vec![12.0, 14.0, 16.0, 18.0, 22.0, 24.0, 26.0, 28.0]
        );
    }

    #[test]
    fn gemm_without_c_takes_the_constant() {
        let mut b = Builder::new(13);
        let x = b.input("x", &[2, 3]);
        let w = b.floats("w", &[3, 4], noise(12, 1));
        let y = b.op("Gemm", &[x, w], vec![]);
        let d = b.floats("d", &[4], vec![1.0, 2.0, 3.0, 4.0]);
        let z = b.op("Add", &[y, d], vec![]);
        b.output(z);
        assert_eq!(b.run(&FoldBias).get("gemm+add"), 1);
        let node = b.model.graph.outputs[0].value.node;
        let c = b.model.graph.constant_input(node, 2).unwrap();
        assert_eq!(c.to_vec::<f32>().unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
        // A constant that would grow the output is left alone.
        let mut b = Builder::new(13);
        let x = b.input("x", &[2, 3]);
        let w = b.floats("w", &[3, 4], noise(12, 1));
        let y = b.op("Gemm", &[x, w], vec![]);
        let d = b.floats("d", &[3, 4], vec![1.0; 12]);
        let z = b.op("Add", &[y, d], vec![]);
        b.output(z);
        assert!(b.run(&FoldBias).is_empty());
    }
}
