//! Folding from declared shapes: `Shape` / `Size` of a value with a static shape, and
//! `Gather` / `Slice` that pick only static dims out of a `Shape` of a partly known one.

use crate::eval::{evaluate_with, EvalOptions};
use crate::ir::{Dim, Graph, NodeIndex, NodeKind, ValueRef};
use crate::tensor::Tensor;

/// The results for node `idx` if its outputs follow from declared shapes, else `None`.
pub(crate) fn fold_from_shapes(
    graph: &Graph,
    idx: NodeIndex,
    opset: i64,
    options: EvalOptions,
) -> Option<Vec<Tensor>> {
    let node = &graph[idx];
    if !node.domain().is_empty() {
        return None;
    }
    let input = graph.input(idx, 0)?;
    match node.op_type() {
        "Shape" => {
            let dims = shape_dims(graph, idx, input)?;
            let dims: Vec<i64> = dims.into_iter().collect::<Option<_>>()?;
            Some(vec![Tensor::from_vec(vec![dims.len()], dims).ok()?])
        }
        "Size" => {
            let dims = graph.value_info(input).shape()?;
            let n = dims.iter().try_fold(1i64, |acc, d| match d {
                Dim::Known(n) if *n >= 0 => acc.checked_mul(*n),
                _ => None,
            })?;
            Some(vec![Tensor::scalar(n)])
        }
        "Gather" | "Slice" => pick_dims(graph, idx, input, opset, options),
        _ => None,
    }
}

/// What a `Shape` node computes: its input's dims (`None` where not static), with
/// `start` / `end` applied.
fn shape_dims(graph: &Graph, shape_node: NodeIndex, input: ValueRef) -> Option<Vec<Option<i64>>> {
    let node = &graph[shape_node];
    let dims = graph.value_info(input).shape()?;
    let start = node.attr("start").map_or(Some(0), |a| a.as_int())?;
    let end = match node.attr("end") {
        Some(a) => Some(a.as_int()?),
        None => None,
    };
    let (s, e) = crate::eval::shape_range(start, end, dims.len());
    Some(
        dims[s..e]
            .iter()
            .map(|d| match d {
                Dim::Known(n) if *n >= 0 => Some(*n),
                _ => None,
            })
            .collect(),
    )
}

/// `Gather` / `Slice` of a `Shape`: runs the operator on the dims' positions and folds
/// when every picked position is a static dim.
fn pick_dims(
    graph: &Graph,
    idx: NodeIndex,
    data: ValueRef,
    opset: i64,
    options: EvalOptions,
) -> Option<Vec<Tensor>> {
    let producer = graph.node(data.node)?;
    if !matches!(&producer.kind, NodeKind::Op { op_type, domain, .. } if op_type == "Shape" && domain.is_empty())
    {
        return None;
    }
    let dims = shape_dims(graph, data.node, graph.input(data.node, 0)?)?;
    let positions = Tensor::from_vec(vec![dims.len()], (0..dims.len() as i64).collect()).ok()?;
    let inputs = graph.inputs(idx);
    let mut consts: Vec<Option<&Tensor>> = vec![Some(&positions)];
    for v in inputs.iter().skip(1) {
        match v {
            None => consts.push(None),
            Some(v) => consts.push(Some(graph.constant(*v)?)),
        }
    }
    let node = &graph[idx];
    let out = evaluate_with(
        node.op_type(),
        "",
        opset,
        &node.attributes,
        &consts,
        options,
    )
    .ok()??
    .into_iter()
    .next()?;
    let picked = out.to_vec::<i64>().ok()?;
    let values = picked
        .iter()
        .map(|&p| dims.get(usize::try_from(p).ok()?).copied().flatten())
        .collect::<Option<Vec<i64>>>()?;
    Some(vec![Tensor::from_vec(out.shape().to_vec(), values).ok()?])
}
