//! Hand-built graphs and profiles for the partition tests.

use kiln_passes::ir::{AttrValue, Dim, GraphOutput, Model, Node, ValueInfo, ValueRef};
use kiln_passes::tensor::{DataType, Tensor};

use crate::profile::Profile;

/// A profile from YAML text (the family and the rest as written).
pub fn profile(yaml: &str) -> Profile {
    match crate::profile::parse(yaml, "test.yaml") {
        Ok(p) => p.profile,
        Err(e) => panic!("test profile does not parse: {e}"),
    }
}

/// Builds a model node by node; operators are named `Op_<n>` in insertion order.
pub struct Builder {
    pub model: Model,
    n: usize,
}

impl Builder {
    pub fn new() -> Builder {
        Builder {
            model: Model::new(17),
            n: 0,
        }
    }

    /// A float32 graph input; a negative dim is symbolic.
    pub fn input(&mut self, name: &str, dims: &[i64]) -> ValueRef {
        let d: Vec<Dim> = dims
            .iter()
            .map(|&d| {
                if d < 0 {
                    Dim::Symbolic(format!("d{}", -d))
                } else {
                    Dim::Known(d)
                }
            })
            .collect();
        let node = Node::input(ValueInfo::tensor(name, DataType::Float, &d));
        ValueRef::new(self.model.graph.add_node(node), 0)
    }

    /// A float32 constant of `shape` filled with small values.
    pub fn weight(&mut self, shape: &[usize]) -> ValueRef {
        let len: usize = shape.iter().product();
        let v: Vec<f32> = (0..len).map(|i| (i % 7) as f32 * 0.1 - 0.3).collect();
        let t = Tensor::from_vec(shape.to_vec(), v).expect("weight shape");
        self.constant(t)
    }

    /// An int8 constant of `shape` behind a DequantizeLinear (a quantized weight).
    pub fn dq_weight(&mut self, shape: &[usize]) -> ValueRef {
        let len: usize = shape.iter().product();
        let q = Tensor::from_vec(shape.to_vec(), vec![1i8; len]).expect("weight shape");
        let q = self.constant(q);
        let s = self.constant(Tensor::scalar(0.05f32));
        let z = self.constant(Tensor::scalar(0i8));
        self.op("DequantizeLinear", &[q, s, z], vec![])
    }

    /// A constant.
    pub fn constant(&mut self, t: Tensor) -> ValueRef {
        self.n += 1;
        let node = Node::initializer(&format!("c{}", self.n), t);
        ValueRef::new(self.model.graph.add_node(node), 0)
    }

    /// An int64 1-D constant.
    pub fn ints(&mut self, v: &[i64]) -> ValueRef {
        let t = Tensor::from_vec(vec![v.len()], v.to_vec()).expect("ints");
        self.constant(t)
    }

    /// An operator with one output.
    pub fn op(&mut self, op: &str, inputs: &[ValueRef], attrs: Vec<(&str, AttrValue)>) -> ValueRef {
        self.n += 1;
        let name = format!("{op}_{}", self.n);
        let out = format!("{name}_out");
        let mut node = Node::op(op, &name, &[&out]);
        for (k, v) in attrs {
            node = node.with_attr(k, v);
        }
        let idx = self.model.graph.add_node(node);
        for (slot, v) in inputs.iter().enumerate() {
            self.model.graph.connect(*v, idx, slot);
        }
        ValueRef::new(idx, 0)
    }

    /// `v` quantized to uint8 and dequantized again: a tensor the device keeps quantized.
    pub fn qdq(&mut self, v: ValueRef) -> ValueRef {
        let s = self.constant(Tensor::scalar(0.1f32));
        let z = self.constant(Tensor::scalar(128u8));
        let q = self.op("QuantizeLinear", &[v, s, z], vec![]);
        self.op("DequantizeLinear", &[q, s, z], vec![])
    }

    /// Declares `v` a graph output (its type as inferred so far).
    pub fn output(&mut self, v: ValueRef) {
        let info = self.model.graph.value_info(v).clone();
        self.model
            .graph
            .outputs
            .push(GraphOutput { value: v, info });
    }

    /// The name of the node producing `v`.
    pub fn name(&self, v: ValueRef) -> String {
        self.model.graph[v.node].name.clone()
    }
}
