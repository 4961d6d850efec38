//! A `Relu` (or `Clip`) whose result goes only into a `QuantizeLinear` that already clamps to
//! the same range is redundant: with the zero point at the type's minimum, the quantizer maps
//! every negative value to the code for 0, exactly what the Relu would give it. QAT exports
//! keep the Relu between the op and its output's Q; ONNX Runtime's quantizer drops it the same
//! way. Dropping it makes the producer and its quantization one unit, as QNN and the TFLite
//! converters need.

use crate::ir::{AttrValue, Graph, InputSlot, Model, NodeIndex, ValueRef};
use crate::pipeline::PassError;

use super::edit::{self, int_range, params};
use super::Outcome;

/// Removes every `Relu`/`Clip` of the main graph that its `QuantizeLinear` makes redundant.
pub fn drop_redundant_relu(model: &mut Model) -> Result<Outcome, PassError> {
    let g = &mut model.graph;
    let mut out = Outcome::default();
    let todo: Vec<NodeIndex> = g
        .topo_order()
        .into_iter()
        .filter(|&n| edit::is(g, n, "Relu") || edit::is(g, n, "Clip"))
        .collect();
    for n in todo {
        if !redundant(g, n) {
            continue;
        }
        let Some(x) = g.input(n, 0) else {
            continue;
        };
        let feeds = edit::feeds(g, n);
        g.replace_all_uses(ValueRef::new(n, 0), x);
        g.remove_node(n);
        edit::drop_unused(g, &feeds[1..]);
        out.changed += 1;
    }
    g.verify()?;
    if out.changed > 0 {
        out.notes.push(format!(
            "{} Relu/Clip dropped: the QuantizeLinear after each clamps to the same range",
            out.changed
        ));
    }
    Ok(out)
}

/// Whether the `Relu`/`Clip` `n` feeds only a per-tensor `QuantizeLinear` whose representable
/// range lies inside the clamp.
fn redundant(g: &Graph, n: NodeIndex) -> bool {
    let v = ValueRef::new(n, 0);
    if g.outputs.iter().any(|o| o.value == v) {
        return false;
    }
    let consumers = g.consumers(v);
    let [(q, InputSlot::Operand(0))] = consumers.as_slice() else {
        return false;
    };
    if !edit::is(g, *q, "QuantizeLinear") {
        return false;
    }
    let Some(p) = params(g, *q) else {
        return false;
    };
    let Some((qmin, qmax)) = int_range(p.dtype) else {
        return false;
    };
    if p.per_channel() || p.scale[0] <= 0.0 {
        return false;
    }
    // The real range the quantizer can represent.
    let lo = (qmin - p.zero_point[0]) as f64 * p.scale[0] as f64;
    let hi = (qmax - p.zero_point[0]) as f64 * p.scale[0] as f64;
    let (min, max) = match clamp(g, n) {
        Some(c) => c,
        None => return false,
    };
    // Below `min` the quantizer must already give the code of `min`: true when its lowest
    // representable value is `min` itself (0 for Relu: the zero point at the minimum).
    lo == min && max.is_none_or(|m| hi <= m)
}

/// The clamp of a `Relu` (0, none) or a `Clip` with constant bounds.
fn clamp(g: &Graph, n: NodeIndex) -> Option<(f64, Option<f64>)> {
    if g[n].op_type() == "Relu" {
        return Some((0.0, None));
    }
    // Clip-11+: bounds as inputs; Clip-6: as attributes.
    let bound = |slot: usize, attr: &str| -> Option<Option<f64>> {
        match g.input(n, slot) {
            Some(_) => Some(Some(
                g.constant_input(n, slot)?.to_f64_vec()?.first().copied()?,
            )),
            None => Some(g[n].attr(attr).and_then(AttrValue::as_float).map(f64::from)),
        }
    };
    let min = bound(1, "min")??;
    let max = bound(2, "max")?;
    Some((min, max))
}
