//! Rewrites the graph as the layout says: removed activations go, constants are stored
//! quantized behind a DequantizeLinear, activations get one QuantizeLinear/DequantizeLinear
//! pair each (shared by all readers), biases become int32.

use crate::ir::{AttrValue, Graph, InputSlot, Model, NameSet, Node, NodeIndex, NodeKind, ValueRef};
use crate::pipeline::Changes;
use crate::quant::config::QuantConfig;
use crate::quant::ranges::{Range, Ranges};
use crate::quant::scheme::{QuantParams, QuantScheme, QuantType};
use crate::quant::weights::{
    bias_safe_weight_scales, int_tensor, params_tensor_f32, quantize_bias, quantize_weight,
    quantize_weight_with,
};
use crate::tensor::Tensor;

use super::plan::{BiasUse, Layout, Source};
use super::select::node_id;
use super::{QdqError, QdqSummary, QuantizedTensor, TensorKind};

/// Adds an initializer; returns its value.
fn initializer(g: &mut Graph, names: &mut NameSet, base: &str, t: Tensor) -> ValueRef {
    let name = names.fresh(base);
    ValueRef::new(g.add_node(Node::initializer(&name, t)), 0)
}

/// Adds a QuantizeLinear or DequantizeLinear reading `inputs`, writing a value named `out`.
fn qdq_node(
    g: &mut Graph,
    names: &mut NameSet,
    op: &str,
    tensor: &str,
    out: &str,
    inputs: [ValueRef; 3],
    axis: Option<usize>,
) -> ValueRef {
    let node_name = names.fresh_node(&format!("{tensor}_{op}"));
    let mut node = Node::op(op, &node_name, &[out]);
    if let Some(a) = axis {
        node = node.with_attr("axis", AttrValue::Int(a as i64));
    }
    let idx = g.add_node(node);
    for (slot, v) in inputs.into_iter().enumerate() {
        g.connect(v, idx, slot);
    }
    ValueRef::new(idx, 0)
}

/// Removes `v`'s constant node if nothing reads it any more.
fn drop_if_unused(g: &mut Graph, v: ValueRef) {
    if g.node(v.node).is_some() && g.constant(v).is_some() && !g.is_used(v) {
        g.remove_node(v.node);
    }
}

/// A weight once stored: its parameters and the scale / zero-point values.
struct StoredWeight {
    params: Vec<QuantParams>,
    values: ValueRef,
    scale: ValueRef,
    zero_point: ValueRef,
}

/// One group's parameters.
struct GroupParams {
    root: usize,
    scheme: QuantScheme,
    params: QuantParams,
    range: Option<Range>,
    shared_with_weight: Option<String>,
    values: Option<(ValueRef, ValueRef)>,
}

/// Rewrites `model` by `layout` with `ranges`.
pub(crate) fn rewrite(
    model: &mut Model,
    config: &QuantConfig,
    layout: &Layout,
    ranges: &Ranges,
    nodes: Vec<String>,
) -> Result<QdqSummary, QdqError> {
    let acts = &layout.acts;
    let mut order: Vec<usize> = (0..acts.len()).collect();
    order.sort_by_key(|&i| acts[i].key);
    for &i in &order {
        let name = acts[i].range_name();
        if acts[i].source == Source::Calibrated && ranges.get(name).is_none() {
            return Err(QdqError::MissingRange(name.to_string()));
        }
    }

    let g = &mut model.graph;
    let mut names = NameSet::of(g);
    let mut changes = Changes::none();
    let mut tensors = Vec::new();
    let mut removed_activations = Vec::new();

    for r in &layout.removals {
        removed_activations.push(node_id(g, r.node));
        let bounds: Vec<ValueRef> = g.inputs(r.node).into_iter().skip(1).flatten().collect();
        g.replace_all_uses(r.output, r.input);
        g.remove_node(r.node);
        for b in bounds {
            drop_if_unused(g, b);
        }
        g.rename_value(r.input, &r.output_name);
    }
    changes.add("removed activations", layout.removals.len());

    let mut stored = Vec::with_capacity(layout.weights.len());
    for spec in &layout.weights {
        let t = g
            .constant(spec.value)
            .cloned()
            .ok_or_else(|| QdqError::Internal(format!("weight '{}' is gone", spec.name)))?;
        let q = quantize_weight(&t, spec.scheme, spec.axis, config.min_real_range).map_err(
            |source| QdqError::Weight {
                name: spec.name.clone(),
                source,
            },
        )?;
        let values = initializer(
            g,
            &mut names,
            &format!("{}_quantized", spec.name),
            q.values.clone(),
        );
        let scale = initializer(
            g,
            &mut names,
            &format!("{}_scale", spec.name),
            q.scale_tensor(),
        );
        let zero_point = initializer(
            g,
            &mut names,
            &format!("{}_zero_point", spec.name),
            q.zero_point_tensor(),
        );
        let out = names.fresh(&format!("{}_dequantized", spec.name));
        let dq = qdq_node(
            g,
            &mut names,
            "DequantizeLinear",
            &spec.name,
            &out,
            [values, scale, zero_point],
            q.axis,
        );
        for &(node, slot) in &spec.uses {
            g.connect(dq, node, slot);
        }
        tensors.push(QuantizedTensor {
            name: spec.name.clone(),
            kind: TensorKind::Weight,
            dtype: spec.scheme.dtype,
            symmetric: spec.scheme.symmetric,
            axis: q.axis,
            scales: q.params.iter().map(|p| p.scale).collect(),
            zero_points: q.params.iter().map(|p| p.zero_point).collect(),
            range: None,
            shared_with: None,
        });
        stored.push(StoredWeight {
            params: q.params,
            values,
            scale,
            zero_point,
        });
    }
    changes.add("weights", layout.weights.len());

    // One parameter set per group, from its contributors' ranges.
    let mut group_of = vec![0; acts.len()];
    let mut groups: Vec<GroupParams> = Vec::new();
    for members in layout.groups.all().into_values() {
        let root = members
            .iter()
            .copied()
            .min_by_key(|&m| acts[m].key)
            .ok_or_else(|| QdqError::Internal("an empty group".into()))?;
        let contributors: Vec<usize> = members
            .iter()
            .copied()
            .filter(|&m| acts[m].contributes())
            .collect();
        let first = *contributors.first().ok_or_else(|| {
            QdqError::Internal(format!(
                "tensor '{}' shares parameters with nothing",
                acts[root].name
            ))
        })?;
        let gp = if let Source::FromWeight(w) = acts[first].source {
            let params = *stored[w]
                .params
                .first()
                .ok_or_else(|| QdqError::Internal("a weight without parameters".into()))?;
            GroupParams {
                root,
                scheme: layout.weights[w].scheme,
                params,
                range: None,
                shared_with_weight: Some(layout.weights[w].name.clone()),
                values: Some((stored[w].scale, stored[w].zero_point)),
            }
        } else {
            let mut range: Option<Range> = None;
            for &m in &contributors {
                let r = match acts[m].source {
                    Source::Fixed(r) => r,
                    _ => ranges
                        .get(acts[m].range_name())
                        .ok_or_else(|| QdqError::MissingRange(acts[m].range_name().to_string()))?,
                };
                range = Some(range.map_or(r, |u| u.union(r)));
            }
            let range = range.unwrap_or(Range::new(0.0, 0.0));
            let scheme = acts[first].scheme;
            GroupParams {
                root,
                scheme,
                params: scheme.params(range.min, range.max, config.min_real_range),
                range: Some(range),
                shared_with_weight: None,
                values: None,
            }
        };
        for &m in &members {
            group_of[m] = groups.len();
        }
        groups.push(gp);
    }

    let (mut n_q, mut n_dq) = (0, layout.weights.len());
    for &i in &order {
        let act = &acts[i];
        let v = act.value;
        if g.node(v.node).is_none() || !g.is_used(v) {
            continue;
        }
        let gp = &mut groups[group_of[i]];
        let (scale, zero_point) = match gp.values {
            Some(sz) => sz,
            None => {
                let root = &acts[gp.root].name;
                let s = initializer(
                    g,
                    &mut names,
                    &format!("{root}_scale"),
                    Tensor::scalar(gp.params.scale),
                );
                let z = initializer(
                    g,
                    &mut names,
                    &format!("{root}_zero_point"),
                    int_tensor(gp.scheme.dtype, vec![], &[gp.params.zero_point]),
                );
                gp.values = Some((s, z));
                (s, z)
            }
        };
        let readers: Vec<(NodeIndex, usize)> = g
            .consumers(v)
            .into_iter()
            .filter_map(|(n, s)| match s {
                InputSlot::Operand(k) => Some((n, k)),
                InputSlot::Captured => None,
            })
            .collect();
        // A graph output keeps its name: the producer's value is renamed and the
        // DequantizeLinear writes the name (inputs cannot be renamed, so they stay float).
        let output_moves =
            g.outputs.iter().any(|o| o.value == v) && matches!(g[v.node].kind, NodeKind::Op { .. });
        let dq_name = if output_moves {
            let renamed = names.fresh(&format!("{}_QuantizeLinear_Input", act.name));
            g.rename_value(v, &renamed);
            act.name.clone()
        } else {
            names.fresh(&format!("{}_dequantized", act.name))
        };
        let q_name = names.fresh(&format!("{}_quantized", act.name));
        let q = qdq_node(
            g,
            &mut names,
            "QuantizeLinear",
            &act.name,
            &q_name,
            [v, scale, zero_point],
            None,
        );
        let dq = qdq_node(
            g,
            &mut names,
            "DequantizeLinear",
            &act.name,
            &dq_name,
            [q, scale, zero_point],
            None,
        );
        n_q += 1;
        n_dq += 1;
        for (n, k) in readers {
            g.connect(dq, n, k);
        }
        if output_moves {
            for o in g.outputs.iter_mut().filter(|o| o.value == v) {
                o.value = dq;
            }
        }
        let gp = &groups[group_of[i]];
        tensors.push(QuantizedTensor {
            name: act.name.clone(),
            kind: TensorKind::Activation,
            dtype: gp.scheme.dtype,
            symmetric: gp.scheme.symmetric,
            axis: None,
            scales: vec![gp.params.scale],
            zero_points: vec![gp.params.zero_point],
            range: gp.range,
            shared_with: gp
                .shared_with_weight
                .clone()
                .or_else(|| (gp.root != i).then(|| acts[gp.root].name.clone())),
        });
    }
    changes.add("activations", n_q);

    raise_scales_for_bias(g, layout, &groups, &group_of, &mut stored, &mut tensors)?;
    // The float weights go only now: a scale raised for a bias requantizes from them.
    for spec in &layout.weights {
        drop_if_unused(g, spec.value);
    }

    let mut saturated_bias = 0;
    for b in &layout.biases {
        let t = bias_values(g, b)?;
        let x_scale = groups[group_of[b.input]].params.scale;
        let w_scales: Vec<f32> = stored[b.weight].params.iter().map(|p| p.scale).collect();
        let (q, scales, saturated) =
            quantize_bias(&t, x_scale, &w_scales).map_err(|source| QdqError::Weight {
                name: b.name.clone(),
                source,
            })?;
        saturated_bias += saturated;
        let per_channel = layout.weights[b.weight].axis.is_some();
        let scale_t = params_tensor_f32(per_channel, scales.clone());
        let zeros = vec![0; scales.len()];
        let zp_shape = scale_t.shape().to_vec();
        let values = initializer(g, &mut names, &format!("{}_quantized", b.name), q);
        let scale = initializer(g, &mut names, &format!("{}_scale", b.name), scale_t);
        let zero_point = initializer(
            g,
            &mut names,
            &format!("{}_zero_point", b.name),
            int_tensor(QuantType::Int32, zp_shape, &zeros),
        );
        let out = names.fresh(&format!("{}_dequantized", b.name));
        let dq = qdq_node(
            g,
            &mut names,
            "DequantizeLinear",
            &b.name,
            &out,
            [values, scale, zero_point],
            per_channel.then_some(0),
        );
        n_dq += 1;
        g.connect(dq, b.node, 2);
        if b.beta != 1.0 {
            set_float_attr(g, b.node, "beta", 1.0);
        }
        tensors.push(QuantizedTensor {
            name: b.name.clone(),
            kind: TensorKind::Bias,
            dtype: QuantType::Int32,
            symmetric: true,
            axis: per_channel.then_some(0),
            scales,
            zero_points: zeros,
            range: None,
            shared_with: None,
        });
    }
    for b in &layout.biases {
        drop_if_unused(g, b.value);
    }
    changes.add("biases", layout.biases.len());
    changes.add("QuantizeLinear", n_q);
    changes.add("DequantizeLinear", n_dq);

    Ok(QdqSummary {
        tensors,
        nodes,
        removed_activations,
        skipped: layout.skipped.clone(),
        saturated_bias,
        changes,
    })
}

/// The float bias of `b`, with Gemm's beta folded in.
fn bias_values(g: &Graph, b: &BiasUse) -> Result<Tensor, QdqError> {
    let t = g
        .constant(b.value)
        .cloned()
        .ok_or_else(|| QdqError::Internal(format!("bias '{}' is gone", b.name)))?;
    if b.beta == 1.0 {
        return Ok(t);
    }
    let scaled: Vec<f32> = t.to_vec::<f32>()?.iter().map(|x| x * b.beta).collect();
    Ok(Tensor::from_vec(t.shape().to_vec(), scaled)?)
}

/// ONNX Runtime's weight adjustment for int32 biases: where input scale × weight scale is too
/// small for a bias to fit int32 (16-bit activations with int16 weights), the symmetric weight
/// is requantized with the scale raised just enough, rather than the bias saturating.
fn raise_scales_for_bias(
    g: &mut Graph,
    layout: &Layout,
    groups: &[GroupParams],
    group_of: &[usize],
    stored: &mut [StoredWeight],
    tensors: &mut [QuantizedTensor],
) -> Result<(), QdqError> {
    for b in &layout.biases {
        let spec = &layout.weights[b.weight];
        let w = &stored[b.weight];
        let symmetric_int = matches!(spec.scheme.dtype, QuantType::Int8 | QuantType::Int16)
            && w.params.iter().all(|p| p.zero_point == 0);
        // A Gather output takes its table's parameters: those stay as they are.
        let shared = layout
            .acts
            .iter()
            .any(|a| a.source == Source::FromWeight(b.weight));
        if !symmetric_int || shared {
            continue;
        }
        let bias = bias_values(g, b)?.to_vec::<f32>()?;
        let x_scale = groups[group_of[b.input]].params.scale;
        let scales: Vec<f32> = w.params.iter().map(|p| p.scale).collect();
        let Some(raised) = bias_safe_weight_scales(&bias, x_scale, &scales) else {
            continue;
        };
        let params: Vec<QuantParams> = raised
            .iter()
            .map(|&scale| QuantParams {
                scale,
                zero_point: 0,
            })
            .collect();
        let t = g
            .constant(spec.value)
            .cloned()
            .ok_or_else(|| QdqError::Internal(format!("weight '{}' is gone", spec.name)))?;
        let q = quantize_weight_with(&t, spec.scheme, spec.axis, &params).map_err(|source| {
            QdqError::Weight {
                name: spec.name.clone(),
                source,
            }
        })?;
        set_constant(g, w.values, q.values.clone());
        set_constant(g, w.scale, q.scale_tensor());
        tensors[b.weight].scales = raised;
        stored[b.weight].params = q.params;
    }
    Ok(())
}

/// Replaces the tensor of the constant producing `v`.
fn set_constant(g: &mut Graph, v: ValueRef, t: Tensor) {
    if let Some(NodeKind::Constant { value, .. }) = g.node_mut(v.node).map(|n| &mut n.kind) {
        *value = t;
    }
}

/// Sets (or adds) a FLOAT attribute.
fn set_float_attr(g: &mut Graph, node: NodeIndex, name: &str, value: f32) {
    let n = &mut g[node];
    match n.attributes.iter_mut().find(|a| a.name == name) {
        Some(a) => a.value = AttrValue::Float(value),
        None => n
            .attributes
            .push(crate::ir::Attribute::new(name, AttrValue::Float(value))),
    }
}
