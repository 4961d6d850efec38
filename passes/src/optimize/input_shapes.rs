//! Fixing graph input shapes before optimizing (`--input-shape`, like onnx-simplifier's
//! `--overwrite-input-shape`), so inference and folding see static shapes everywhere.
//!
//! The named inputs' dims are overwritten. A symbolic name an input had (`batch`) now has a
//! number, and since ONNX makes equal names equal sizes, every declared dim of that name in
//! the graph (value_info, outputs, bodies) takes the number. Other symbolic dims on computed
//! values are forgotten, so `infer-shapes` can compute them from the now static inputs
//! (otherwise a stale declaration would win over what inference finds).

use std::collections::HashMap;

use kiln_proto::onnx::tensor_shape_proto::dimension;
use kiln_proto::onnx::{type_proto, TypeProto};

use crate::ir::{describe_type, Dim, Graph, Model, NodeKind};

/// Why an input shape cannot be applied.
#[derive(Debug, thiserror::Error)]
pub enum InputShapeError {
    /// No graph input has this name.
    #[error("--input-shape {name}: the model has no input '{name}' (inputs: {inputs})")]
    UnknownInput {
        /// The name given.
        name: String,
        /// The model's inputs with their declared types.
        inputs: String,
    },
    /// The given shape does not fit the declared one.
    #[error("--input-shape {name}: {given:?} does not fit the declared {declared}: {why}")]
    Mismatch {
        /// The input.
        name: String,
        /// The shape given.
        given: Vec<i64>,
        /// The declared type, e.g. `int64[batch,sequence]`.
        declared: String,
        /// What differs.
        why: String,
    },
}

/// Overwrites the dims of the named graph inputs of `model` (see the module docs).
pub fn apply_input_shapes(
    model: &mut Model,
    shapes: &[(String, Vec<i64>)],
) -> Result<(), InputShapeError> {
    if shapes.is_empty() {
        return Ok(());
    }
    let graph = &mut model.graph;
    let mut bound: HashMap<String, i64> = HashMap::new();
    let mut inputs = Vec::new();
    for (name, given) in shapes {
        let idx = graph
            .nodes()
            .find(|(_, n)| matches!(n.kind, NodeKind::Input) && n.outputs[0].name == *name)
            .map(|(i, _)| i)
            .ok_or_else(|| InputShapeError::UnknownInput {
                name: name.clone(),
                inputs: input_list(graph),
            })?;
        let info = &graph[idx].outputs[0];
        let mismatch = |why: String| InputShapeError::Mismatch {
            name: name.clone(),
            given: given.clone(),
            declared: describe_type(info.ty.as_ref()),
            why,
        };
        if let Some(&d) = given.iter().find(|&&d| d < 0) {
            return Err(mismatch(format!("dim {d} is negative")));
        }
        let declared = info
            .shape()
            .ok_or_else(|| mismatch("the input is not a tensor with a declared rank".into()))?;
        if declared.len() != given.len() {
            return Err(mismatch(format!(
                "rank {} given, {} declared",
                given.len(),
                declared.len()
            )));
        }
        for (axis, (d, &g)) in declared.iter().zip(given).enumerate() {
            match d {
                Dim::Known(n) if *n != g => {
                    return Err(mismatch(format!("axis {axis} is fixed at {n}")));
                }
                Dim::Symbolic(s) => match bound.insert(s.clone(), g) {
                    Some(other) if other != g => {
                        return Err(mismatch(format!(
                            "'{s}' is {other} in another input, {g} here"
                        )));
                    }
                    _ => {}
                },
                _ => {}
            }
        }
        inputs.push((idx, given.clone()));
    }
    for (idx, given) in inputs {
        set_dims(&mut graph[idx].outputs[0].ty, &given);
    }
    bind_graph(graph, &bound);
    Ok(())
}

/// `name: type` for every graph input.
fn input_list(graph: &Graph) -> String {
    graph
        .nodes()
        .filter(|(_, n)| matches!(n.kind, NodeKind::Input))
        .map(|(_, n)| {
            format!(
                "{}: {}",
                n.outputs[0].name,
                describe_type(n.outputs[0].ty.as_ref())
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Sets every dim of a tensor type to the given numbers (ranks already checked equal).
fn set_dims(ty: &mut Option<TypeProto>, dims: &[i64]) {
    if let Some(shape) = tensor_shape(ty) {
        for (d, &n) in shape.dim.iter_mut().zip(dims) {
            d.value = Some(dimension::Value::DimValue(n));
        }
    }
}

/// Applies `bound` names to every declared type in `graph` and its bodies; other symbolic
/// dims of computed values are forgotten.
fn bind_graph(graph: &mut Graph, bound: &HashMap<String, i64>) {
    let indices: Vec<_> = graph.node_indices().collect();
    for idx in indices {
        let Some(node) = graph.node_mut(idx) else {
            continue;
        };
        let computed = node.is_operator();
        for out in &mut node.outputs {
            bind_type(&mut out.ty, bound, computed);
        }
        for body in node.subgraphs_mut() {
            bind_graph(body, bound);
        }
    }
    for out in &mut graph.outputs {
        bind_type(&mut out.info.ty, bound, true);
    }
}

fn bind_type(ty: &mut Option<TypeProto>, bound: &HashMap<String, i64>, computed: bool) {
    let Some(shape) = tensor_shape(ty) else {
        return;
    };
    for d in &mut shape.dim {
        if let Some(dimension::Value::DimParam(name)) = &d.value {
            d.value = match bound.get(name) {
                Some(&n) => Some(dimension::Value::DimValue(n)),
                None if computed => None,
                None => continue,
            };
        }
    }
}

fn tensor_shape(ty: &mut Option<TypeProto>) -> Option<&mut kiln_proto::onnx::TensorShapeProto> {
    match ty.as_mut()?.value.as_mut()? {
        type_proto::Value::TensorType(t) => t.shape.as_mut(),
        _ => None,
    }
}
