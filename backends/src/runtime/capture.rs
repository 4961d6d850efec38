//! Reading intermediate values: make them graph outputs, then run.
//!
//! ONNX Runtime only returns graph outputs, so to read a value in the middle of the graph the
//! model is copied with that value added to `graph.output`, and run as usual. Recipe for
//! reading many batches: `Session::from_model(&expose_outputs(&model, &names))`, then `run`
//! and pick the names out of the result; [`capture`] does this for one run.
//!
//! Caveats:
//! - Only values of the main graph can be exposed: values inside If/Loop/Scan bodies live in
//!   a nested scope that graph outputs cannot name ([`capturable_names`] lists what can be).
//! - A value that is a graph output can no longer be fused away, so with ORT's optimizations
//!   on, a captured run may round differently from the plain one; use
//!   [`SessionOptions::as_written`](super::SessionOptions::as_written) for faithful values.

use std::collections::HashSet;

use kiln_proto::onnx::tensor_shape_proto::{dimension, Dimension};
use kiln_proto::onnx::{
    type_proto, GraphProto, ModelProto, TensorShapeProto, TypeProto, ValueInfoProto,
};

use super::{RuntimeError, Session, SessionOptions};
use crate::value::{NamedValues, Value};

/// A copy of `model` with each named value added as a graph output (existing outputs are kept
/// and not repeated). The output carries the type the model records for the value (value_info,
/// graph input or initializer) and no type otherwise, which ONNX Runtime infers.
pub fn expose_outputs(model: &ModelProto, names: &[String]) -> ModelProto {
    let mut model = model.clone();
    let Some(graph) = model.graph.as_mut() else {
        return model;
    };
    let mut present: HashSet<String> = graph.output.iter().map(|o| o.name.clone()).collect();
    for name in names {
        if !present.insert(name.clone()) {
            continue;
        }
        let r#type = known_type(graph, name);
        graph.output.push(ValueInfoProto {
            name: name.clone(),
            r#type,
            ..ValueInfoProto::default()
        });
    }
    model
}

/// The type the graph records for `name`, if it records one.
fn known_type(graph: &GraphProto, name: &str) -> Option<TypeProto> {
    if let Some(vi) = graph
        .value_info
        .iter()
        .chain(&graph.input)
        .find(|v| v.name == name)
    {
        return vi.r#type.clone();
    }
    graph
        .initializer
        .iter()
        .find(|t| t.name == name)
        .map(|t| TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: t.data_type,
                shape: Some(TensorShapeProto {
                    dim: t
                        .dims
                        .iter()
                        .map(|&d| Dimension {
                            value: Some(dimension::Value::DimValue(d)),
                            ..Dimension::default()
                        })
                        .collect(),
                }),
            })),
            ..TypeProto::default()
        })
}

/// Every value name the main graph produces (graph inputs, initializers, node outputs), in
/// graph order: the names [`expose_outputs`] can make outputs.
pub fn capturable_names(model: &ModelProto) -> Vec<String> {
    let Some(graph) = model.graph.as_ref() else {
        return Vec::new();
    };
    let mut seen = HashSet::new();
    graph
        .input
        .iter()
        .map(|i| &i.name)
        .chain(graph.initializer.iter().map(|t| &t.name))
        .chain(graph.node.iter().flat_map(|n| n.output.iter()))
        .filter(|n| !n.is_empty() && seen.insert(n.as_str()))
        .cloned()
        .collect()
}

/// Runs `model` once and returns the named values (intermediate or not), in the order asked.
pub fn capture(
    model: &ModelProto,
    names: &[String],
    inputs: &[(String, Value)],
    options: &SessionOptions,
) -> Result<NamedValues, RuntimeError> {
    let known: HashSet<String> = capturable_names(model).into_iter().collect();
    if let Some(name) = names.iter().find(|n| !known.contains(*n)) {
        return Err(RuntimeError::NotCapturable { name: name.clone() });
    }
    let mut session = Session::from_model_with(&expose_outputs(model, names), options)?;
    let mut outputs = session.run(inputs)?;
    names
        .iter()
        .map(|name| {
            let at = outputs
                .iter()
                .position(|(n, _)| n == name)
                .ok_or_else(|| RuntimeError::NotCapturable { name: name.clone() })?;
            Ok(outputs.swap_remove(at))
        })
        .collect()
}
