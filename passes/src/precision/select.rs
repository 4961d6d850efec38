//! Deciding whether one node can be pinned, and what its rewrite has to touch.

use crate::ir::{AttrValue, Graph, NodeIndex, ValueRef};
use crate::pipeline::PassError;
use crate::tensor::{DataType, Tensor};

use super::convert_constants::{converted_attributes, overflows, Conversion};
use super::types::{cast_readers, cast_to, elem_type, is_onnx_op};
use super::units::in_pinned_unit;

/// What pinning one node changes.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// Float32 inputs to convert, by slot.
    pub inputs: Vec<(usize, Input)>,
    /// Tensor attributes to replace, by attribute position.
    pub attributes: Vec<(usize, AttrValue)>,
    /// Read float32 outputs that get their Cast(s), by slot (a twin's output already rounded
    /// needs none).
    pub cast_outputs: Vec<usize>,
    /// Unused later outputs whose float32 type becomes the low float with the op.
    pub retype_outputs: Vec<usize>,
}

/// One float32 input of a pinned node.
#[derive(Debug, Clone)]
pub(crate) enum Input {
    /// Computed at run time: gets a Cast.
    Data(ValueRef),
    /// A constant: replaced by its converted tensor.
    Constant {
        /// The original constant.
        value: ValueRef,
        /// Its converted tensor.
        converted: Tensor,
    },
}

/// Pin the node as planned, or leave it alone for the reason given.
#[derive(Debug, Clone)]
pub(crate) enum Decision {
    Pin(Plan),
    Skip(String),
}

/// Inputs ONNX types apart from the op's computing type T (they have their own type
/// constraint, e.g. Resize's `scales` is always float32): they stay as they are.
fn own_type_inputs(op: &str) -> &'static [usize] {
    match op {
        "Resize" => &[1, 2],
        "Upsample" => &[1],
        "Dropout" => &[1],
        _ => &[],
    }
}

/// Outputs with their own type: LayerNormalization's Mean and InvStdDev are of `stash_type`,
/// not T (likewise ONNX Runtime's SimplifiedLayerNormalization's inv_std_var), so they keep their type (and their readers) when the op computes in the low float.
///
/// `stash_type` itself is kept as the model has it (default 1, float32): it is the precision
/// the kernel accumulates mean and variance in, and a sum of squares over a whole row is where
/// a 16-bit float would lose most; ONNX Runtime's float16/bfloat16 LayerNormalization computes
/// in it and returns Mean/InvStdDev as float32.
fn own_type_outputs(op: &str) -> &'static [usize] {
    match op {
        "LayerNormalization" => &[1, 2],
        // Its optional second output, inv_std_var, is of type U (float32 or double).
        "SimplifiedLayerNormalization" => &[1],
        _ => &[],
    }
}

/// Decides for node `idx`: `conv` says whether it would compute in the low float
/// ([`Conversion::ToLow`]) or be simulated ([`Conversion::RoundedThrough`]).
pub(crate) fn decide(
    graph: &Graph,
    idx: NodeIndex,
    conv: Conversion,
) -> Result<Decision, PassError> {
    let skip = |why: String| Ok(Decision::Skip(why));
    let Some(node) = graph.node(idx) else {
        return skip("node vanished".into());
    };
    if in_pinned_unit(node) {
        return skip("part of a decomposed RMSNorm pinned as a unit".into());
    }
    if !is_onnx_op(node) {
        return skip(format!(
            "domain '{}' is not the default ONNX domain",
            node.domain()
        ));
    }
    let low = conv.low();
    let op = node.op_type().to_string();
    let simulate = matches!(conv, Conversion::RoundedThrough(_));
    let out = ValueRef::new(idx, 0);
    let out_name = graph.value_name(out).to_string();
    if node.outputs.is_empty() || out_name.is_empty() {
        return skip("it has no output".into());
    }
    match elem_type(graph, out) {
        None => return skip(format!("type of output '{out_name}' is unknown")),
        Some(DataType::Float) => {}
        Some(t) if t == low => return skip(format!("already computes in {low}")),
        Some(t) => return skip(format!("output '{out_name}' is {t}, not float32")),
    }
    if !(0..node.outputs.len()).any(|s| graph.is_used(ValueRef::new(idx, s))) {
        return skip("no output is read".into());
    }
    // Float32 outputs are of the computing type T (bar the op's own-typed ones): read ones
    // get their Cast(s), unread ones change type with the op. Other types (indices, masks)
    // are not T and stay.
    let mut cast_outputs = Vec::new();
    let mut retype_outputs = Vec::new();
    for slot in 0..node.outputs.len() {
        let v = ValueRef::new(idx, slot);
        if own_type_outputs(&op).contains(&slot) || graph.value_name(v).is_empty() {
            continue;
        }
        let used = graph.is_used(v);
        match elem_type(graph, v) {
            // A twin's output already rounded (a second run) needs nothing.
            Some(DataType::Float) if used && !(simulate && output_is_rounded(graph, v, low)) => {
                cast_outputs.push(slot)
            }
            Some(DataType::Float) if !simulate => retype_outputs.push(slot),
            None if used => {
                return skip(format!(
                    "type of output {slot} '{}' is unknown",
                    graph.value_name(v)
                ))
            }
            _ => {}
        }
    }

    let mut inputs = Vec::new();
    let mut float_inputs = 0;
    for (slot, v) in graph.inputs(idx).into_iter().enumerate() {
        let Some(v) = v else { continue };
        if own_type_inputs(&op).contains(&slot) {
            continue;
        }
        match elem_type(graph, v) {
            None => {
                return skip(format!(
                    "type of input {slot} '{}' is unknown",
                    graph.value_name(v)
                ))
            }
            Some(DataType::Float) => float_inputs += 1,
            Some(_) => continue,
        }
        if let Some(t) = graph.constant(v) {
            let converted = conv.apply(t)?;
            if overflows(t, &converted) {
                return skip(format!(
                    "constant '{}' has values beyond {low}'s range",
                    graph.value_name(v)
                ));
            }
            // A twin's constant already representable in the low float needs nothing.
            if !(simulate && &converted == t) {
                inputs.push((
                    slot,
                    Input::Constant {
                        value: v,
                        converted,
                    },
                ));
            }
        } else if !(simulate && is_rounded(graph, v, low)) {
            inputs.push((slot, Input::Data(v)));
        }
    }
    if float_inputs == 0 {
        return skip("no float32 input".into());
    }
    let attributes = match converted_attributes(node, conv)? {
        Ok(a) => a,
        Err(name) => {
            return skip(format!(
                "attribute '{name}' has values beyond {low}'s range"
            ))
        }
    };
    if inputs.is_empty() && attributes.is_empty() && cast_outputs.is_empty() {
        return skip(format!("already simulated in {low}"));
    }
    Ok(Decision::Pin(Plan {
        inputs,
        attributes,
        cast_outputs,
        retype_outputs,
    }))
}

/// `v` is `Cast(float32)` of a low-float value: already rounded to the low float.
pub(crate) fn is_rounded(graph: &Graph, v: ValueRef, low: DataType) -> bool {
    let Some(node) = graph.node(v.node) else {
        return false;
    };
    cast_to(node) == Some(DataType::Float)
        && graph
            .input(v.node, 0)
            .is_some_and(|x| elem_type(graph, x) == Some(low))
}

/// Every reader of `out` rounds it to the low float (and it is no graph output).
fn output_is_rounded(graph: &Graph, out: ValueRef, low: DataType) -> bool {
    let readers = graph.consumers(out);
    let casts = cast_readers(graph, out);
    !graph.outputs.iter().any(|o| o.value == out)
        && readers.len() == casts.len()
        && casts.iter().all(|&(_, to)| to == low)
}
