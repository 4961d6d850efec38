//! The graph edits and readings every legalization step shares: Q/DQ parameters, new
//! constants and operators, and replacing a node while keeping its output's name.

use crate::ir::{AttrValue, Attribute, Graph, NameSet, Node, NodeIndex, ValueRef};
use crate::quant::scheme::round_half_even;
use crate::tensor::{DataType, Tensor};

/// The scale and zero point of a `QuantizeLinear` / `DequantizeLinear`.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct QdqParams {
    /// One scale, or one per slice along `axis`.
    pub scale: Vec<f32>,
    /// The zero points (all 0 when the input is absent), as many as the scales.
    pub zero_point: Vec<i64>,
    /// The integer type: the zero point's, uint8 when it is absent.
    pub dtype: DataType,
    /// The `axis` attribute (default 1), not yet normalized against a rank.
    pub axis: i64,
}

impl QdqParams {
    /// Whether there is more than one scale.
    pub fn per_channel(&self) -> bool {
        self.scale.len() > 1
    }

    /// The axis for a tensor of `rank`, when per channel.
    pub fn channel_axis(&self, rank: usize) -> Option<usize> {
        if !self.per_channel() {
            return None;
        }
        let a = if self.axis < 0 {
            self.axis + rank as i64
        } else {
            self.axis
        };
        (0..rank as i64).contains(&a).then_some(a as usize)
    }

    /// Dequantizes the integer tensor `q` as `DequantizeLinear` does: `(q - zp) * scale`.
    pub fn dequantize(&self, q: &Tensor) -> Option<Vec<f32>> {
        let values = q.to_f64_vec()?;
        let shape = q.shape();
        let (channels, inner) = match self.channel_axis(shape.len()) {
            Some(a) => (shape[a], shape[a + 1..].iter().product::<usize>()),
            None if self.per_channel() => return None,
            None => (1, values.len().max(1)),
        };
        if channels != self.scale.len() || self.zero_point.len() != self.scale.len() {
            return None;
        }
        Some(
            values
                .iter()
                .enumerate()
                .map(|(i, &v)| {
                    let c = (i / inner) % channels;
                    (v as i64 - self.zero_point[c]) as f32 * self.scale[c]
                })
                .collect(),
        )
    }

    /// Quantizes float `x` as `QuantizeLinear` does (divide in float32, round half to even,
    /// saturate), into `dtype`'s full range.
    pub fn quantize(&self, x: &[f32], shape: &[usize]) -> Option<Vec<i64>> {
        let (channels, inner) = match self.channel_axis(shape.len()) {
            Some(a) => (shape[a], shape[a + 1..].iter().product::<usize>()),
            None if self.per_channel() => return None,
            None => (1, x.len().max(1)),
        };
        let (lo, hi) = int_range(self.dtype)?;
        if channels != self.scale.len() || self.zero_point.len() != self.scale.len() {
            return None;
        }
        Some(
            x.iter()
                .enumerate()
                .map(|(i, &v)| {
                    let c = (i / inner) % channels;
                    let q = round_half_even((v / self.scale[c]) as f64) as i64 + self.zero_point[c];
                    q.clamp(lo, hi)
                })
                .collect(),
        )
    }
}

/// The range of an integer element type Q/DQ use.
pub(super) fn int_range(dtype: DataType) -> Option<(i64, i64)> {
    Some(match dtype {
        DataType::Uint8 => (0, 255),
        DataType::Int8 => (-128, 127),
        DataType::Uint16 => (0, 65_535),
        DataType::Int16 => (-32_768, 32_767),
        DataType::Int32 => (i32::MIN as i64, i32::MAX as i64),
        _ => return None,
    })
}

/// The parameters of the Q/DQ node `n`, when its scale and zero point are constants.
pub(super) fn params(g: &Graph, n: NodeIndex) -> Option<QdqParams> {
    let scale: Vec<f32> = g
        .constant_input(n, 1)?
        .to_f64_vec()?
        .into_iter()
        .map(|v| v as f32)
        .collect();
    let (zero_point, dtype) = match g.input(n, 2) {
        Some(_) => {
            let z = g.constant_input(n, 2)?;
            let v: Vec<i64> = z.to_f64_vec()?.into_iter().map(|v| v as i64).collect();
            (v, z.dtype())
        }
        None => (vec![0; scale.len()], DataType::Uint8),
    };
    if scale.is_empty() || zero_point.len() != scale.len() {
        return None;
    }
    let axis = g[n].attr("axis").and_then(AttrValue::as_int).unwrap_or(1);
    Some(QdqParams {
        scale,
        zero_point,
        dtype,
        axis,
    })
}

/// Whether `n` is a standard-domain operator of type `op`.
pub(super) fn is(g: &Graph, n: NodeIndex, op: &str) -> bool {
    g[n].is_operator() && g[n].domain().is_empty() && g[n].op_type() == op
}

/// A new initializer holding `value`, named after `base`.
pub(super) fn constant(g: &mut Graph, names: &mut NameSet, base: &str, value: Tensor) -> ValueRef {
    let name = names.fresh(base);
    ValueRef::new(g.add_node(Node::initializer(&name, value)), 0)
}

/// A new standard-domain operator reading `inputs` in order, with one output named after
/// `base` and the given attributes.
pub(super) fn op(
    g: &mut Graph,
    names: &mut NameSet,
    op_type: &str,
    base: &str,
    inputs: &[ValueRef],
    attributes: Vec<Attribute>,
) -> ValueRef {
    let out = names.fresh(base);
    let mut node = Node::op(op_type, &names.fresh_node(&format!("{out}_node")), &[&out]);
    node.attributes = attributes;
    let idx = g.add_node(node);
    for (slot, &v) in inputs.iter().enumerate() {
        g.connect(v, idx, slot);
    }
    ValueRef::new(idx, 0)
}

/// A `DequantizeLinear` of `x` with the given scale and (optional) zero point values, and an
/// `axis` when per channel.
pub(super) fn dequantize_linear(
    g: &mut Graph,
    names: &mut NameSet,
    x: ValueRef,
    scale: ValueRef,
    zero_point: Option<ValueRef>,
    axis: Option<usize>,
) -> ValueRef {
    let base = format!("{}_DequantizeLinear_Output", g.value_name(x));
    let mut inputs = vec![x, scale];
    inputs.extend(zero_point);
    let attrs = axis
        .map(|a| vec![Attribute::new("axis", AttrValue::Int(a as i64))])
        .unwrap_or_default();
    op(g, names, "DequantizeLinear", &base, &inputs, attrs)
}

/// Makes every reader of output 0 of `old` read `new` instead, removes `old`, and gives
/// `new` the old value's name and declared type (names are interface: graph outputs and
/// subgraph captures refer to them).
pub(super) fn replace_node(g: &mut Graph, old: NodeIndex, new: ValueRef) {
    let old_v = ValueRef::new(old, 0);
    let info = g.value_info(old_v).clone();
    g.replace_all_uses(old_v, new);
    g.remove_node(old);
    g.rename_value(new, &info.name);
    let slot = g.value_info_mut(new);
    slot.ty = info.ty;
}

/// Replaces operator `n` by a constant holding `value` under its output's name, and drops the
/// constants it read that nothing else reads.
pub(super) fn replace_by_constant(g: &mut Graph, n: NodeIndex, value: Tensor) {
    let name = g.value_name(ValueRef::new(n, 0)).to_string();
    // A temporary name: `replace_node` gives the constant the old one once `n` is gone.
    let c = g.add_node(Node::initializer(&format!("{name}~"), value));
    let feeds = feeds(g, n);
    replace_node(g, n, ValueRef::new(c, 0));
    drop_unused(g, &feeds);
}

/// Sets the declared element type of `v`, where one is declared.
pub(super) fn set_elem_type(g: &mut Graph, v: ValueRef, dtype: DataType) {
    use kiln_proto::onnx::type_proto;
    let retype = |ty: &mut Option<kiln_proto::onnx::TypeProto>| {
        if let Some(type_proto::Value::TensorType(t)) = ty.as_mut().and_then(|t| t.value.as_mut()) {
            t.elem_type = dtype.onnx();
        }
    };
    retype(&mut g.value_info_mut(v).ty);
    for o in g.outputs.iter_mut().filter(|o| o.value == v) {
        retype(&mut o.info.ty);
    }
}

/// Removes the constants among `values` that nothing reads any more.
pub(super) fn drop_unused(g: &mut Graph, values: &[ValueRef]) {
    for &v in values {
        let Some(node) = g.node(v.node) else {
            continue;
        };
        if !node.is_operator()
            && !node.is_listed_input()
            && g.constant(v).is_some()
            && g.consumers(v).is_empty()
            && !g.outputs.iter().any(|o| o.value == v)
        {
            g.remove_node(v.node);
        }
    }
}

/// Every value feeding `n` (for `drop_unused` after removing it).
pub(super) fn feeds(g: &Graph, n: NodeIndex) -> Vec<ValueRef> {
    g.inputs(n).into_iter().flatten().collect()
}
