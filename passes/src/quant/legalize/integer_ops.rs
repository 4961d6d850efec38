//! ONNX Runtime's dynamic form back to float ops on dequantized weights:
//! `DynamicQuantizeLinear(x)` → `MatMulInteger`/`ConvInteger`(x_q, W_q, x_zp, W_zp) → `Cast`
//! → `Mul` by (x_scale × W_scale) becomes `MatMul`/`Conv`(x, `DequantizeLinear`(W_q, W_scale,
//! W_zp)). The weights keep their integers and scales; the activations, which this form
//! quantizes anew on every run, become float for the target to quantize with its own ranges.
//! `Gather` of an integer table followed by a per-tensor `DequantizeLinear` (the quantized
//! embedding) becomes `Gather` of the dequantized table.

use crate::ir::{AttrValue, Attribute, Graph, InputSlot, Model, NameSet, NodeIndex, ValueRef};
use crate::pipeline::PassError;
use crate::tensor::DataType;

use super::edit;
use super::Outcome;

/// Rewrites every dynamic chain of the main graph it recognizes.
pub fn integer_to_float_ops(model: &mut Model) -> Result<Outcome, PassError> {
    let mut names = NameSet::of(&model.graph);
    let g = &mut model.graph;
    let mut out = Outcome::default();
    let (mut chains, mut gathers) = (0, 0);
    for n in g.topo_order() {
        if g.node(n).is_none() {
            continue;
        }
        let op = g[n].op_type().to_string();
        if edit::is(g, n, "MatMulInteger") || edit::is(g, n, "ConvInteger") {
            let label = g[n].label(n.index());
            match match_chain(g, n) {
                Ok(chain) => {
                    rewrite_chain(g, &mut names, n, &chain);
                    chains += 1;
                }
                Err(why) => out.kept.push(format!("{label} ({op}) kept: {why}")),
            }
        } else if edit::is(g, n, "DequantizeLinear") && gather_table(g, n).is_some() {
            rewrite_gather(g, &mut names, n);
            gathers += 1;
        }
    }
    // DynamicQuantizeLinear nodes nothing reads any more.
    for n in g.node_indices().collect::<Vec<_>>() {
        if edit::is(g, n, "DynamicQuantizeLinear")
            && (0..3).all(|s| !g.is_used(ValueRef::new(n, s)))
        {
            let feeds = edit::feeds(g, n);
            g.remove_node(n);
            edit::drop_unused(g, &feeds);
        }
    }
    g.verify()?;
    out.changed = chains + gathers;
    if chains > 0 {
        out.notes.push(format!(
            "{chains} MatMulInteger/ConvInteger chain(s) → float op on DequantizeLinear weights \
             (weight scales kept; activations float)"
        ));
    }
    if gathers > 0 {
        out.notes.push(format!(
            "{gathers} quantized Gather table(s) moved behind their DequantizeLinear"
        ));
    }
    Ok(out)
}

/// The parts of one recognized chain.
struct Chain {
    /// The float activation the `DynamicQuantizeLinear` read.
    x: ValueRef,
    /// The integer weight, its scale and zero point.
    w: ValueRef,
    w_scale: ValueRef,
    w_zp: Option<ValueRef>,
    /// The final `Mul`, whose output the float op takes over.
    mul: NodeIndex,
    /// The `Cast` and scale `Mul` nodes to remove.
    dead: Vec<NodeIndex>,
}

/// The only reader of output 0 of `n`, when there is exactly one and it is `op`.
fn only_reader(g: &Graph, n: NodeIndex, op: &str) -> Option<NodeIndex> {
    let v = ValueRef::new(n, 0);
    if g.outputs.iter().any(|o| o.value == v) {
        return None;
    }
    match g.consumers(v).as_slice() {
        [(c, InputSlot::Operand(_))] if edit::is(g, *c, op) => Some(*c),
        _ => None,
    }
}

fn match_chain(g: &Graph, n: NodeIndex) -> Result<Chain, String> {
    let a = g.input(n, 0).ok_or("no input")?;
    let dql = a.node;
    if !edit::is(g, dql, "DynamicQuantizeLinear") || a.slot != 0 {
        return Err("its input is not a DynamicQuantizeLinear".into());
    }
    if g.input(n, 2).is_some_and(|z| z != ValueRef::new(dql, 2)) {
        return Err("its input zero point is not the DynamicQuantizeLinear's".into());
    }
    let x = g
        .input(dql, 0)
        .ok_or("DynamicQuantizeLinear has no input")?;
    let w = g.input(n, 1).ok_or("no weight")?;
    g.constant(w).ok_or("the weight is not a constant")?;
    let w_zp = g.input(n, 3);
    if w_zp.is_some() && g.constant_input(n, 3).is_none() {
        return Err("the weight zero point is not a constant".into());
    }
    let cast = only_reader(g, n, "Cast").ok_or("not read by one Cast only")?;
    if g[cast].attr("to").and_then(AttrValue::as_int) != Some(DataType::Float.onnx() as i64) {
        return Err("its Cast is not to float".into());
    }
    let mul = only_reader(g, cast, "Mul").ok_or("its Cast is not read by one Mul only")?;
    let cast_out = ValueRef::new(cast, 0);
    let other = match (g.input(mul, 0), g.input(mul, 1)) {
        (Some(l), Some(r)) if l == cast_out => r,
        (Some(l), Some(r)) if r == cast_out => l,
        _ => return Err("its Mul is not (result × scale)".into()),
    };
    let x_scale = ValueRef::new(dql, 1);
    let scale_mul = other.node;
    if !edit::is(g, scale_mul, "Mul") || g.consumers(other).len() != 1 {
        return Err("its scale is not one Mul of the two scales".into());
    }
    let w_scale = match (g.input(scale_mul, 0), g.input(scale_mul, 1)) {
        (Some(l), Some(r)) if l == x_scale => r,
        (Some(l), Some(r)) if r == x_scale => l,
        _ => return Err("its scale Mul does not read the activation scale".into()),
    };
    g.constant(w_scale)
        .ok_or("the weight scale is not a constant")?;
    Ok(Chain {
        x,
        w,
        w_scale,
        w_zp,
        mul,
        dead: vec![cast, scale_mul],
    })
}

/// The channel axis of a per-channel weight scale: MatMul's columns (last axis), Conv's
/// output channels (axis 0).
fn weight_axis(g: &Graph, n: NodeIndex, chain: &Chain) -> Option<usize> {
    let per_channel = g.constant(chain.w_scale).is_some_and(|t| t.len() > 1);
    if !per_channel {
        return None;
    }
    if g[n].op_type() == "ConvInteger" {
        Some(0)
    } else {
        g.constant(chain.w)
            .map(|t| t.shape().len().saturating_sub(1))
    }
}

fn rewrite_chain(g: &mut Graph, names: &mut NameSet, n: NodeIndex, chain: &Chain) {
    let axis = weight_axis(g, n, chain);
    let w = edit::dequantize_linear(g, names, chain.w, chain.w_scale, chain.w_zp, axis);
    let float_op = if g[n].op_type() == "ConvInteger" {
        "Conv"
    } else {
        "MatMul"
    };
    let attrs: Vec<Attribute> = g[n].attributes.clone();
    let base = g.value_name(ValueRef::new(chain.mul, 0)).to_string();
    let float = edit::op(
        g,
        names,
        float_op,
        &format!("{base}_float"),
        &[chain.x, w],
        attrs,
    );
    let mut feeds = edit::feeds(g, n);
    for &d in &chain.dead {
        feeds.extend(edit::feeds(g, d));
        g.remove_node(d);
    }
    g.remove_node(n);
    edit::replace_node(g, chain.mul, float);
    edit::drop_unused(g, &feeds);
}

/// For `DequantizeLinear(Gather(table, ids))` with a constant integer table and per-tensor
/// parameters: the `Gather`.
fn gather_table(g: &Graph, dq: NodeIndex) -> Option<NodeIndex> {
    let v = g.input(dq, 0)?;
    let gather = v.node;
    if !edit::is(g, gather, "Gather") || g.consumers(v).len() != 1 {
        return None;
    }
    if g.outputs.iter().any(|o| o.value == v) {
        return None;
    }
    g.constant_input(gather, 0)?;
    let p = edit::params(g, dq)?;
    (!p.per_channel()).then_some(gather)
}

fn rewrite_gather(g: &mut Graph, names: &mut NameSet, dq: NodeIndex) {
    let Some(gather) = gather_table(g, dq) else {
        return;
    };
    let (Some(table), Some(scale)) = (g.input(gather, 0), g.input(dq, 1)) else {
        return;
    };
    let zp = g.input(dq, 2);
    let deq = edit::dequantize_linear(g, names, table, scale, zp, None);
    g.connect(deq, gather, 0);
    let gather_out = ValueRef::new(gather, 0);
    // The Gather now yields float: give it the DequantizeLinear's name and type.
    edit::replace_node(g, dq, gather_out);
}
