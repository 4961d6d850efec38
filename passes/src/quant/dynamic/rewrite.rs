//! The graph edits every dynamic rule shares: one `DynamicQuantizeLinear` per activation,
//! each quantized weight stored once, and the integer chain ONNX Runtime's
//! `quantize_dynamic` writes (`…Integer` → `Cast` → `Mul` by the product of scales → bias
//! `Add`).
//!
//! The rewritten node itself becomes the last node of its chain, so its output value (name,
//! type, consumers, graph outputs, subgraph captures) stays exactly as it was.

use std::collections::{BTreeMap, BTreeSet};

use crate::ir::{AttrValue, Attribute, Graph, Node, NodeIndex, NodeKind, ValueRef};
use crate::pipeline::Changes;
use crate::tensor::{DataType, Tensor};

use super::weight::PlannedWeight;
use super::DynamicWeight;
use crate::ir::NameSet as Names;

/// An activation quantized at run time: the outputs of its `DynamicQuantizeLinear`.
#[derive(Debug, Clone, Copy)]
pub(super) struct DynAct {
    /// The uint8 tensor.
    pub q: ValueRef,
    /// Its float scale (a scalar).
    pub scale: ValueRef,
    /// Its uint8 zero point (a scalar).
    pub zero_point: ValueRef,
}

/// A quantized weight in the graph.
#[derive(Debug, Clone, Copy)]
pub(super) struct Stored {
    /// The integer constant.
    pub q: ValueRef,
    /// The scale constant.
    pub scale: ValueRef,
    /// The zero-point constant.
    pub zero_point: ValueRef,
}

/// The edits of one graph, with what they share (quantized activations and weights).
pub(super) struct Rewriter<'a> {
    /// The graph being rewritten.
    pub graph: &'a mut Graph,
    names: &'a mut Names,
    acts: BTreeMap<ValueRef, DynAct>,
    weights: BTreeMap<(ValueRef, String), Stored>,
    released: BTreeSet<ValueRef>,
    /// What was done, for the report.
    pub changes: Changes,
    /// Every weight stored, in the order stored.
    pub stored: Vec<DynamicWeight>,
}

impl<'a> Rewriter<'a> {
    /// A rewriter of `graph` taking new names from `names`.
    pub(super) fn new(graph: &'a mut Graph, names: &'a mut Names) -> Rewriter<'a> {
        Rewriter {
            graph,
            names,
            acts: BTreeMap::new(),
            weights: BTreeMap::new(),
            released: BTreeSet::new(),
            changes: Changes::none(),
            stored: Vec::new(),
        }
    }

    /// The name of `v`.
    pub(super) fn name(&self, v: ValueRef) -> String {
        self.graph.value_name(v).to_string()
    }

    /// The quantized form of `x`, adding its `DynamicQuantizeLinear` the first time: every
    /// consumer of one activation shares one (as ORT's `{x}_QuantizeLinear`).
    pub(super) fn activation(&mut self, x: ValueRef) -> DynAct {
        if let Some(a) = self.acts.get(&x) {
            return *a;
        }
        let base = self.name(x);
        let outs = [
            self.names.fresh(&format!("{base}_dynamic_quantized")),
            self.names.fresh(&format!("{base}_dynamic_scale")),
            self.names.fresh(&format!("{base}_dynamic_zero_point")),
        ];
        let refs: Vec<&str> = outs.iter().map(String::as_str).collect();
        let node = Node::op(
            "DynamicQuantizeLinear",
            &format!("{base}_QuantizeLinear"),
            &refs,
        );
        let idx = self.graph.add_node(node);
        self.graph.connect(x, idx, 0);
        let a = DynAct {
            q: ValueRef::new(idx, 0),
            scale: ValueRef::new(idx, 1),
            zero_point: ValueRef::new(idx, 2),
        };
        self.acts.insert(x, a);
        self.changes.add("DynamicQuantizeLinear added", 1);
        a
    }

    /// The stored form of `source` quantized as `form`, if a rule stored it already.
    pub(super) fn stored_weight(&self, source: ValueRef, form: &str) -> Option<Stored> {
        self.weights.get(&(source, form.to_string())).copied()
    }

    /// Adds a planned weight's constants (once per source and form) and lets the float
    /// source go if nothing else reads it.
    pub(super) fn store_weight(&mut self, form: &str, w: PlannedWeight) -> Stored {
        if let Some(s) = self.stored_weight(w.source, form) {
            return s;
        }
        let s = Stored {
            q: self.constant(&format!("{}_quantized", w.base), w.q.values.clone()),
            scale: self.constant(&format!("{}_scale", w.base), w.scale.clone()),
            zero_point: self.constant(&format!("{}_zero_point", w.base), w.zero_point.clone()),
        };
        self.weights.insert((w.source, form.to_string()), s);
        self.released.insert(w.source);
        self.stored.push(DynamicWeight {
            name: w.base.clone(),
            dtype: w.q.dtype,
            axis: w.axis,
            scales: w.q.params.iter().map(|p| p.scale).collect(),
        });
        self.changes.add("weights quantized", 1);
        s
    }

    /// Notes that a rule stopped reading the float constant `v` (removed later if unused).
    pub(super) fn release(&mut self, v: ValueRef) {
        self.released.insert(v);
    }

    /// A new initializer named after `base`.
    pub(super) fn constant(&mut self, base: &str, value: Tensor) -> ValueRef {
        let name = self.names.fresh(base);
        ValueRef::new(self.graph.add_node(Node::initializer(&name, value)), 0)
    }

    /// A new one-output operator reading `inputs`, its output named after `out`.
    pub(super) fn op(
        &mut self,
        op_type: &str,
        node_name: &str,
        inputs: &[ValueRef],
        attrs: Vec<Attribute>,
        out: &str,
    ) -> ValueRef {
        let out = self.names.fresh(out);
        let mut node = Node::op(op_type, node_name, &[out.as_str()]);
        node.attributes = attrs;
        let idx = self.graph.add_node(node);
        for (slot, v) in inputs.iter().enumerate() {
            self.graph.connect(*v, idx, slot);
        }
        ValueRef::new(idx, 0)
    }

    /// Turns `node` into a default-domain `op_type` named `name` reading `inputs`, with no
    /// attributes; its outputs (and so every reader of them) are untouched.
    pub(super) fn become_op(
        &mut self,
        node: NodeIndex,
        op_type: &str,
        name: &str,
        inputs: &[ValueRef],
    ) {
        let arity = self.graph.node(node).map_or(0, |n| n.input_arity);
        for slot in 0..arity {
            self.graph.disconnect(node, slot);
        }
        if let Some(n) = self.graph.node_mut(node) {
            n.kind = NodeKind::Op {
                op_type: op_type.to_string(),
                domain: String::new(),
                overload: String::new(),
            };
            n.name = name.to_string();
            n.attributes.clear();
            n.input_arity = 0;
        }
        for (slot, v) in inputs.iter().enumerate() {
            self.graph.connect(*v, node, slot);
        }
    }

    /// Rewrites `node` (output `y`) into ORT's integer form:
    /// `int_op(x_q, w_q, x_zp, w_zp)` → `Cast(float)` → `Mul` by `x_scale × w_scale`
    /// → `Add` of `bias` when given. `attrs` go on the integer op.
    pub(super) fn integer_chain(
        &mut self,
        node: NodeIndex,
        int_op: &str,
        attrs: Vec<Attribute>,
        x: DynAct,
        w: Stored,
        bias: Option<ValueRef>,
    ) {
        let y = self.name(ValueRef::new(node, 0));
        let node_name = self.graph.node(node).map_or("", |n| n.name.as_str());
        let base = if node_name.is_empty() {
            y.clone()
        } else {
            node_name.to_string()
        };
        let int_out = self.op(
            int_op,
            &format!("{base}_quant"),
            &[x.q, w.q, x.zero_point, w.zero_point],
            attrs,
            &format!("{y}_output_quantized"),
        );
        let cast_out = self.op(
            "Cast",
            &format!("{y}_output_quantized_cast"),
            &[int_out],
            vec![Attribute::new(
                "to",
                AttrValue::Int(i64::from(DataType::Float.onnx())),
            )],
            &format!("{y}_output_quantized_cast_output"),
        );
        let scales = self.op(
            "Mul",
            &format!("{base}_quant_scales_mul"),
            &[x.scale, w.scale],
            vec![],
            &format!("{y}_scales_mul"),
        );
        let mul_name = format!("{base}_quant_output_scale_mul");
        match bias {
            None => self.become_op(node, "Mul", &mul_name, &[cast_out, scales]),
            Some(b) => {
                let scaled = self.op(
                    "Mul",
                    &mul_name,
                    &[cast_out, scales],
                    vec![],
                    &format!("{y}_quant_scaled_output"),
                );
                self.become_op(node, "Add", &format!("{y}_bias_add"), &[scaled, b]);
            }
        }
    }

    /// Removes the float constants the rewrites let go of that nothing reads any more.
    pub(super) fn drop_dead_constants(&mut self) {
        let released = std::mem::take(&mut self.released);
        let removed = crate::quant::bodies::remove_dead_constants(self.graph, released);
        self.changes.add("float weights removed", removed);
    }
}
