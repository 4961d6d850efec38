//! Google Coral Edge TPU: every op the TPU runs is quantized (uint8 activations, int8
//! per-channel weights, int32 bias), and the model's inputs and outputs become uint8 when the
//! profile says `io: quantize`, as a TFLite full-integer converter writes them. The partition
//! (static shapes, 3 innermost dims, op limits) and the parameter-cache estimate are in the
//! driver's report; they read the profile's data.

use kiln_passes::ir::{Model, ValueInfo, ValueRef};
use kiln_passes::tensor::DataType;

use super::super::error::CompileError;
use super::super::report::QuantizedIo;
use super::super::Context;
use super::{quantized, Emitted};
use crate::profile::IoHandling;

/// Builds the pipeline, quantizes, makes the I/O integer, emits.
pub fn compile(mut model: Model, cx: &Context) -> Result<Emitted, CompileError> {
    let mut config = cx.profile.quant_config();
    // The TPU has no float units: quantize every op it runs, pin nothing.
    config.op_types = quantized::device_ops(cx);
    config.pin_ops.clear();
    let report = quantized::run(&mut model, config, cx)?;
    let io = integer_io(&mut model, cx)?;
    Ok(Emitted {
        model,
        sim: None,
        validate_instead: io.validate_instead,
        partition_view: None,
        quantize: Some(report),
        legalized: io.legalized,
        integer_only: true,
        quantized_io: io.io,
    })
}

/// What making the graph's inputs and outputs integer did.
pub(super) struct IntegerIo {
    /// One line, when anything changed.
    pub legalized: Vec<String>,
    /// The inputs/outputs made integer.
    pub io: Vec<QuantizedIo>,
    /// The model before, which validation runs with float inputs.
    pub validate_instead: Option<(Model, String)>,
}

/// Makes the model's inputs and outputs integer where the profile says `io: quantize`, as a
/// TFLite full-integer converter writes them.
pub(super) fn integer_io(model: &mut Model, cx: &Context) -> Result<IntegerIo, CompileError> {
    let float_io = model.clone();
    let mut legalized = Vec::new();
    let mut io = Vec::new();
    if cx.profile.io.inputs == IoHandling::Quantize {
        io.extend(quantize_inputs(model));
    }
    if cx.profile.io.outputs == IoHandling::Quantize {
        io.extend(quantize_outputs(model));
    }
    if !io.is_empty() {
        legalized.push(format!(
            "{} graph input(s)/output(s) made integer (their edge QuantizeLinear/DequantizeLinear removed)",
            io.len()
        ));
    }
    model
        .graph
        .verify()
        .map_err(kiln_passes::pipeline::PassError::from)?;
    let validate_instead = (!io.is_empty()).then(|| {
        (
            float_io,
            "the emitted graph with its integer inputs/outputs written back as the exact \
             QuantizeLinear/DequantizeLinear it removed (float I/O)"
                .to_string(),
        )
    });
    Ok(IntegerIo {
        legalized,
        io,
        validate_instead,
    })
}

/// The scale and zero point of a Q/DQ node (per-tensor only).
fn params(model: &Model, node: petgraph::stable_graph::NodeIndex) -> Option<(f64, i64, DataType)> {
    let g = &model.graph;
    let scale = g.constant_input(node, 1)?.to_f64_vec()?;
    let zp = g.constant_input(node, 2)?;
    let dtype = zp.dtype();
    let zp = zp.to_f64_vec()?;
    (scale.len() == 1 && zp.len() == 1).then(|| (scale[0], zp[0] as i64, dtype))
}

/// Graph inputs read only by one per-tensor QuantizeLinear take its integer type.
fn quantize_inputs(model: &mut Model) -> Vec<QuantizedIo> {
    let mut out = Vec::new();
    for inp in model.graph.graph_inputs.clone() {
        let v = ValueRef::new(inp, 0);
        let consumers = model.graph.consumers(v);
        let [(q, _)] = consumers.as_slice() else {
            continue;
        };
        let q = *q;
        if model.graph[q].op_type() != "QuantizeLinear" {
            continue;
        }
        let Some((scale, zero_point, dtype)) = params(model, q) else {
            continue;
        };
        let info = &model.graph[inp].outputs[0];
        let name = info.name.clone();
        let Some(shape) = info.shape() else {
            continue;
        };
        model.graph.replace_all_uses(ValueRef::new(q, 0), v);
        let feeds: Vec<_> = model.graph.inputs(q).into_iter().flatten().collect();
        model.graph.remove_node(q);
        drop_unused(model, &feeds);
        model.graph[inp].outputs[0] = ValueInfo::tensor(name.clone(), dtype, &shape);
        out.push(QuantizedIo {
            name,
            kind: "input".into(),
            dtype: dtype.name().to_string(),
            scale,
            zero_point,
        });
    }
    out
}

/// Graph outputs produced by a per-tensor DequantizeLinear (read by nothing else) become its
/// integer input, under the output's name.
fn quantize_outputs(model: &mut Model) -> Vec<QuantizedIo> {
    let mut out = Vec::new();
    for i in 0..model.graph.outputs.len() {
        let v = model.graph.outputs[i].value;
        let dq = v.node;
        if model.graph[dq].op_type() != "DequantizeLinear"
            || !model.graph.consumers(v).is_empty()
            || model.graph.outputs.iter().filter(|o| o.value == v).count() != 1
        {
            continue;
        }
        let Some((scale, zero_point, dtype)) = params(model, dq) else {
            continue;
        };
        let Some(src) = model.graph.input(dq, 0) else {
            continue;
        };
        let name = model.graph.outputs[i].info.name.clone();
        let shape = model.graph.outputs[i].info.shape().unwrap_or_default();
        let feeds: Vec<_> = model.graph.inputs(dq).into_iter().flatten().collect();
        model.graph.remove_node(dq);
        drop_unused(model, &feeds[1..]);
        model.graph.rename_value(src, &name);
        model.graph.outputs[i].value = src;
        model.graph.outputs[i].info = ValueInfo::tensor(name.clone(), dtype, &shape);
        out.push(QuantizedIo {
            name,
            kind: "output".into(),
            dtype: dtype.name().to_string(),
            scale,
            zero_point,
        });
    }
    out
}

/// Removes constants that nothing reads any more.
fn drop_unused(model: &mut Model, values: &[ValueRef]) {
    for &v in values {
        let node = &model.graph[v.node];
        if !node.is_operator()
            && !node.is_listed_input()
            && model.graph.consumers(v).is_empty()
            && model.graph.constant(v).is_some()
            && !model.graph.outputs.iter().any(|o| o.value == v)
        {
            model.graph.remove_node(v.node);
        }
    }
}
