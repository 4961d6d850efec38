//! Element types of the main graph's values, from the model's declarations plus shape
//! inference on a copy (quantization must know which tensors are float32 even when the
//! exporter declared nothing in between).

use std::collections::HashMap;

use crate::infer::InferShapes;
use crate::ir::{Model, NodeKind, ValueRef};
use crate::pipeline::Pass;
use crate::tensor::DataType;

/// What is known of each value's element type.
#[derive(Debug, Clone, Default)]
pub(crate) struct Types {
    known: HashMap<ValueRef, DataType>,
}

impl Types {
    /// Types of every value of `model`'s main graph. Inference runs on a copy (node indices
    /// are kept), so the model itself is not annotated; where it fails, declarations stand.
    pub(crate) fn of(model: &Model) -> Types {
        let mut copy = model.clone();
        // An inference failure leaves what was declared: fewer nodes are quantized, no error.
        let _ = InferShapes.run(&mut copy);
        let g = &copy.graph;
        let mut known = HashMap::new();
        for (idx, node) in g.nodes() {
            if let NodeKind::Constant { value, .. } = &node.kind {
                known.insert(ValueRef::new(idx, 0), value.dtype());
                continue;
            }
            for (slot, out) in node.outputs.iter().enumerate() {
                if let Some(t) = out.elem_type() {
                    known.insert(ValueRef::new(idx, slot), t);
                }
            }
        }
        for o in &g.outputs {
            if let Some(t) = o.info.elem_type() {
                known.entry(o.value).or_insert(t);
            }
        }
        Types { known }
    }

    /// The element type of `value`, if known.
    pub(crate) fn get(&self, value: ValueRef) -> Option<DataType> {
        self.known.get(&value).copied()
    }
}
