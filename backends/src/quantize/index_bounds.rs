//! Bounds for synthetic integer inputs, read from the model: an input that indexes a table
//! (token ids into an embedding) must stay below the table's length, or ORT refuses the run.

use std::collections::BTreeMap;

use kiln_passes::ir::{InputSlot, Model, NodeKind, ValueRef};
use kiln_passes::tensor::DataType;

/// Ops an index passes through unchanged on its way to a Gather.
const PASS_THROUGH: &[&str] = &[
    "Cast",
    "Unsqueeze",
    "Squeeze",
    "Reshape",
    "Flatten",
    "Identity",
    "Expand",
];

/// Exclusive upper bound of each integer graph input that reaches the indices of a Gather on a
/// constant table (the smallest table when several); masks (`*mask*`) get 2.
pub fn index_bounds(model: &Model) -> BTreeMap<String, u64> {
    let g = &model.graph;
    let mut out = BTreeMap::new();
    for (idx, node) in g.nodes() {
        if !matches!(node.kind, NodeKind::Input) {
            continue;
        }
        let value = ValueRef::new(idx, 0);
        let name = g.value_name(value).to_string();
        let integer = matches!(
            g.value_info(value).elem_type(),
            Some(DataType::Int64 | DataType::Int32 | DataType::Int16 | DataType::Int8)
                | Some(DataType::Uint64 | DataType::Uint32 | DataType::Uint16 | DataType::Uint8)
        );
        if !integer {
            continue;
        }
        if name.to_ascii_lowercase().contains("mask") {
            out.insert(name, 2);
            continue;
        }
        let mut bound: Option<u64> = None;
        let mut stack = vec![value];
        let mut seen = 0usize;
        while let Some(v) = stack.pop() {
            seen += 1;
            if seen > 64 {
                break;
            }
            for (consumer, slot) in g.consumers(v) {
                let Some(c) = g.node(consumer) else { continue };
                let op = c.op_type();
                if op == "Gather" && slot == InputSlot::Operand(1) {
                    let axis = c.attr("axis").and_then(|a| a.as_int()).unwrap_or(0);
                    // A quantized table sits behind its DequantizeLinear.
                    let table = g.constant_input(consumer, 0).or_else(|| {
                        let v = g.input(consumer, 0)?;
                        (g.node(v.node)?.op_type() == "DequantizeLinear")
                            .then(|| g.constant_input(v.node, 0))
                            .flatten()
                    });
                    if let Some(table) = table {
                        let rank = table.shape().len() as i64;
                        let axis = if axis < 0 { axis + rank } else { axis };
                        if let Some(&n) = usize::try_from(axis)
                            .ok()
                            .and_then(|a| table.shape().get(a))
                        {
                            bound = Some(bound.map_or(n as u64, |b| b.min(n as u64)));
                        }
                    }
                } else if PASS_THROUGH.contains(&op) && slot == InputSlot::Operand(0) {
                    stack.push(ValueRef::new(consumer, 0));
                }
            }
        }
        if let Some(b) = bound {
            out.insert(name, b.max(1));
        }
    }
    out
}
