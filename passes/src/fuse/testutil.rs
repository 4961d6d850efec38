//! A small builder of hand-made models for the fusion tests, and a few checks.

use crate::ir::{AttrValue, Dim, GraphOutput, Model, Node, ValueInfo, ValueRef};
use crate::pipeline::{Changes, Pass};
use crate::tensor::{DataType, Tensor};

/// Builds a model node by node; values get generated names (`Op_3`).
pub struct Builder {
    pub model: Model,
    n: usize,
}

impl Builder {
    pub fn new(opset: i64) -> Builder {
        Builder {
            model: Model::new(opset),
            n: 0,
        }
    }

    /// A float32 graph input with known dims (negative = symbolic).
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

    pub fn constant(&mut self, name: &str, t: Tensor) -> ValueRef {
        ValueRef::new(self.model.graph.add_node(Node::initializer(name, t)), 0)
    }

    pub fn scalar(&mut self, v: f32) -> ValueRef {
        self.n += 1;
        let name = format!("c{}", self.n);
        self.constant(&name, Tensor::scalar(v))
    }

    pub fn floats(&mut self, name: &str, shape: &[usize], v: Vec<f32>) -> ValueRef {
        self.constant(name, Tensor::from_vec(shape.to_vec(), v).unwrap())
    }

    pub fn ints(&mut self, name: &str, v: Vec<i64>) -> ValueRef {
        self.constant(name, Tensor::from_vec(vec![v.len()], v).unwrap())
    }

    /// An operator with one output.
    pub fn op(&mut self, op: &str, inputs: &[ValueRef], attrs: Vec<(&str, AttrValue)>) -> ValueRef {
        self.op_n(op, inputs, attrs, 1)
    }

    /// An operator with `outputs` outputs; returns the first.
    pub fn op_n(
        &mut self,
        op: &str,
        inputs: &[ValueRef],
        attrs: Vec<(&str, AttrValue)>,
        outputs: usize,
    ) -> ValueRef {
        self.n += 1;
        let names: Vec<String> = (0..outputs)
            .map(|i| format!("{op}_{}_{i}", self.n))
            .collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut node = Node::op(op, &format!("{op}_{}", self.n), &refs);
        for (k, v) in attrs {
            node = node.with_attr(k, v);
        }
        let idx = self.model.graph.add_node(node);
        for (slot, v) in inputs.iter().enumerate() {
            self.model.graph.connect(*v, idx, slot);
        }
        ValueRef::new(idx, 0)
    }

    /// Declares a float32 shape on a value.
    pub fn shape(&mut self, v: ValueRef, dims: &[i64]) {
        let name = self.model.graph.value_name(v).to_string();
        let d: Vec<Dim> = dims.iter().map(|&d| Dim::Known(d)).collect();
        *self.model.graph.value_info_mut(v) = ValueInfo::tensor(name, DataType::Float, &d);
    }

    /// Replaces the value of the scalar constant holding `old` by `new`.
    pub fn set_scalar(&mut self, old: f32, new: f32) {
        let g = &mut self.model.graph;
        let idx: Vec<_> = g.node_indices().collect();
        for i in idx {
            if let crate::ir::NodeKind::Constant { value, .. } = &mut g[i].kind {
                if value.to_vec::<f32>().ok().as_deref() == Some(&[old]) {
                    *value = Tensor::scalar(new);
                    return;
                }
            }
        }
        panic!("no scalar {old}");
    }

    pub fn output(&mut self, v: ValueRef) {
        let info = self.model.graph.value_info(v).clone();
        self.model
            .graph
            .outputs
            .push(GraphOutput { value: v, info });
    }

    /// Runs a pass and verifies the graph.
    pub fn run(&mut self, pass: &dyn Pass) -> Changes {
        let c = pass.run(&mut self.model).unwrap();
        self.model.graph.verify().unwrap();
        c
    }

    /// How many operators of type `op` the main graph holds.
    pub fn count(&self, op: &str) -> usize {
        self.model
            .graph
            .nodes()
            .filter(|(_, n)| n.is_operator() && n.op_type() == op)
            .count()
    }
}

pub fn ints_attr(v: &[i64]) -> AttrValue {
    AttrValue::Ints(v.to_vec())
}

/// Deterministic pseudo-random floats in [-1, 1).
pub fn noise(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}
