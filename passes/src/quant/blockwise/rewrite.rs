//! The graph edits the rules share: each weight quantized once per form and stored as new
//! initializers, `DequantizeLinear` nodes in front of consumers, a node turned into
//! MatMulNBits in place (so its output value, consumers and graph outputs stay as they were),
//! and the float weights dropped once nothing reads them.

use std::collections::{BTreeMap, BTreeSet};

use crate::ir::{AttrValue, Attribute, Graph, NameSet, Node, NodeIndex, NodeKind, ValueRef};
use crate::pipeline::Changes;
use crate::tensor::{DataType, Tensor};

use super::config::{BlockwiseConfig, WeightFormat};
use super::rtn::{BlockQuantized, BlockQuantizer};
use super::weight::matrix;
use super::{matmulnbits, qdq_form, BlockwiseWeight, WeightRole};

/// Which stored form of a weight: the same float constant read as `[K, N]` by a MatMul and
/// as `[N, K]` by a `transB` Gemm is two matrices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Key {
    /// The float constant.
    pub source: ValueRef,
    /// Its axis that is K.
    pub k_axis: usize,
    /// MatMulNBits layout (else QDQ).
    pub nbits: bool,
    /// Bits of the factor folded into the weight (Gemm's alpha in MatMulNBits form).
    pub alpha: u32,
}

/// A quantized weight in the graph.
#[derive(Debug, Clone, Copy)]
pub(super) struct Stored {
    /// The integers.
    pub values: ValueRef,
    /// The scales.
    pub scale: ValueRef,
    /// The zero points (asymmetric only).
    pub zero_point: Option<ValueRef>,
    /// Its `[K, N]` size.
    pub k: usize,
    /// Columns.
    pub n: usize,
}

/// The edits of one graph.
pub(super) struct Editor<'a> {
    /// The graph being rewritten.
    pub graph: &'a mut Graph,
    names: &'a mut NameSet,
    config: &'a BlockwiseConfig,
    quantizer: &'a dyn BlockQuantizer,
    stored: BTreeMap<Key, Stored>,
    released: BTreeSet<ValueRef>,
    /// What was done.
    pub changes: Changes,
    /// Every weight stored, in the order stored.
    pub weights: Vec<BlockwiseWeight>,
}

impl<'a> Editor<'a> {
    /// An editor of `graph`.
    pub(super) fn new(
        graph: &'a mut Graph,
        names: &'a mut NameSet,
        config: &'a BlockwiseConfig,
        quantizer: &'a dyn BlockQuantizer,
    ) -> Editor<'a> {
        Editor {
            graph,
            names,
            config,
            quantizer,
            stored: BTreeMap::new(),
            released: BTreeSet::new(),
            changes: Changes::none(),
            weights: Vec::new(),
        }
    }

    /// The form weights are written in.
    pub(super) fn format(&self) -> WeightFormat {
        self.config.format
    }

    /// The name of `v`.
    pub(super) fn name(&self, v: ValueRef) -> String {
        self.graph.value_name(v).to_string()
    }

    /// The weight behind `key` quantized and stored (once), or why it cannot be.
    pub(super) fn weight(&mut self, key: Key, role: WeightRole) -> Result<Stored, String> {
        if let Some(s) = self.stored.get(&key) {
            return Ok(*s);
        }
        let t = self
            .graph
            .constant(key.source)
            .cloned()
            .ok_or("weight is not a constant")?;
        let m = matrix(&t, key.k_axis, f32::from_bits(key.alpha))?;
        let base = self.name(key.source);
        let q = self
            .quantizer
            .quantize(&base, &m.data, m.k, m.n, self.config.params())?;
        let (values, scale, zero_point, dtype) = if key.nbits {
            let e = matmulnbits::encode(&q).map_err(|e| e.to_string())?;
            (e.b, e.scales, e.zero_points, DataType::Uint8)
        } else {
            let e = qdq_form::encode(&q, key.k_axis).map_err(|e| e.to_string())?;
            let dtype = e.values.dtype();
            (e.values, e.scale, e.zero_point, dtype)
        };
        let quantized_bytes = values.byte_size()
            + scale.byte_size()
            + zero_point.as_ref().map_or(0, Tensor::byte_size);
        let stored = Stored {
            values: self.constant(&format!("{base}_quantized"), values),
            scale: self.constant(&format!("{base}_scale"), scale),
            zero_point: zero_point.map(|z| self.constant(&format!("{base}_zero_point"), z)),
            k: m.k,
            n: m.n,
        };
        self.report(&base, &t, &q, dtype, role, quantized_bytes);
        self.stored.insert(key, stored);
        self.released.insert(key.source);
        self.changes.add("weights quantized", 1);
        Ok(stored)
    }

    fn report(
        &mut self,
        name: &str,
        float: &Tensor,
        q: &BlockQuantized,
        dtype: DataType,
        role: WeightRole,
        quantized_bytes: usize,
    ) {
        self.weights.push(BlockwiseWeight {
            name: name.to_string(),
            shape: float.shape().to_vec(),
            dtype,
            role,
            blocks: q.scales.len(),
            float_bytes: float.byte_size(),
            quantized_bytes,
        });
    }

    /// A new initializer named after `base`.
    pub(super) fn constant(&mut self, base: &str, value: Tensor) -> ValueRef {
        let name = self.names.fresh(base);
        ValueRef::new(self.graph.add_node(Node::initializer(&name, value)), 0)
    }

    /// A `DequantizeLinear` of `w` (blocked along `k_axis`), named after `base`; its output.
    pub(super) fn dequantize(&mut self, w: Stored, k_axis: usize, base: &str) -> ValueRef {
        let out = self.names.fresh(&format!("{base}_dequantized"));
        let name = self.names.fresh_node(&format!("{base}_DequantizeLinear"));
        let node = Node::op("DequantizeLinear", &name, &[out.as_str()])
            .with_attr("axis", AttrValue::Int(k_axis as i64))
            .with_attr("block_size", AttrValue::Int(self.config.block_size as i64));
        let idx = self.graph.add_node(node);
        self.graph.connect(w.values, idx, 0);
        self.graph.connect(w.scale, idx, 1);
        if let Some(z) = w.zero_point {
            self.graph.connect(z, idx, 2);
        }
        self.changes.add("DequantizeLinear added", 1);
        ValueRef::new(idx, 0)
    }

    /// Turns `node` into `com.microsoft.MatMulNBits(a, w, bias)`; its outputs stay.
    pub(super) fn become_nbits(
        &mut self,
        node: NodeIndex,
        a: ValueRef,
        w: Stored,
        bias: Option<ValueRef>,
    ) {
        let arity = self.graph.node(node).map_or(0, |n| n.input_arity);
        for slot in 0..arity {
            self.graph.disconnect(node, slot);
        }
        let int = |name: &str, v: usize| Attribute::new(name, AttrValue::Int(v as i64));
        if let Some(n) = self.graph.node_mut(node) {
            n.kind = NodeKind::Op {
                op_type: "MatMulNBits".to_string(),
                domain: "com.microsoft".to_string(),
                overload: String::new(),
            };
            n.attributes = vec![
                int("K", w.k),
                int("N", w.n),
                int("bits", self.config.bits.count() as usize),
                int("block_size", self.config.block_size),
            ];
            n.input_arity = 0;
        }
        self.graph.connect(a, node, 0);
        self.graph.connect(w.values, node, 1);
        self.graph.connect(w.scale, node, 2);
        if let Some(z) = w.zero_point {
            self.graph.connect(z, node, 3);
        }
        if let Some(b) = bias {
            self.graph.connect(b, node, 5);
        }
    }

    /// Notes that a rule stopped reading the float constant `v` (removed later if unused).
    pub(super) fn release(&mut self, v: ValueRef) {
        self.released.insert(v);
    }

    /// Removes the float constants the rewrites let go of that nothing reads any more.
    pub(super) fn drop_dead_constants(&mut self) {
        let released = std::mem::take(&mut self.released);
        let mut removed = 0;
        for v in released {
            let dead = matches!(
                self.graph.node(v.node).map(|n| &n.kind),
                Some(NodeKind::Constant { .. })
            ) && !self.graph.is_used(v);
            if dead {
                self.graph.remove_node(v.node);
                removed += 1;
            }
        }
        self.changes.add("float weights removed", removed);
    }
}
