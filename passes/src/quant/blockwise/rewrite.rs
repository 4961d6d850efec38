//! The graph edits the rules share: each weight quantized once per form and stored as new
//! initializers, `DequantizeLinear` nodes in front of consumers, a node turned into
//! MatMulNBits in place (so its output value, consumers and graph outputs stay as they were),
//! and the float weights dropped once nothing reads them.

use std::collections::{BTreeMap, BTreeSet};

use rayon::prelude::*;

use crate::ir::{AttrValue, Attribute, Graph, NameSet, Node, NodeIndex, NodeKind, ValueRef};
use crate::pipeline::Changes;
use crate::tensor::{DataType, Tensor};

use super::config::{BlockwiseConfig, WeightFormat};
use super::rtn::BlockParams;
use super::rtn::BlockQuantizer;
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
    quantizer: &'a (dyn BlockQuantizer + Sync),
    stored: BTreeMap<Key, Stored>,
    released: BTreeSet<ValueRef>,
    /// While planning: the weights the rules asked for, in order (nothing is edited).
    plan: Option<Vec<Key>>,
    /// Weights quantized ahead of the edits by [`Editor::prepare`].
    ready: BTreeMap<Key, Result<Encoded, String>>,
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
        quantizer: &'a (dyn BlockQuantizer + Sync),
    ) -> Editor<'a> {
        Editor {
            graph,
            names,
            config,
            quantizer,
            stored: BTreeMap::new(),
            released: BTreeSet::new(),
            plan: None,
            ready: BTreeMap::new(),
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
    ///
    /// While planning, records `key` and fails with [`PLANNED`] instead: rules call this
    /// before any edit, so a planned rule leaves no trace.
    pub(super) fn weight(&mut self, key: Key, role: WeightRole) -> Result<Stored, String> {
        if let Some(s) = self.stored.get(&key) {
            return Ok(*s);
        }
        if let Some(plan) = &mut self.plan {
            plan.push(key);
            return Err(PLANNED.into());
        }
        let t = self
            .graph
            .constant(key.source)
            .cloned()
            .ok_or("weight is not a constant")?;
        let base = self.name(key.source);
        let e = match self.ready.remove(&key) {
            Some(ready) => ready?,
            None => encode_weight(&t, key, &base, self.config.params(), self.quantizer)?,
        };
        let stored = Stored {
            values: self.constant(&format!("{base}_quantized"), e.values),
            scale: self.constant(&format!("{base}_scale"), e.scale),
            zero_point: e
                .zero_point
                .map(|z| self.constant(&format!("{base}_zero_point"), z)),
            k: e.k,
            n: e.n,
        };
        self.weights.push(BlockwiseWeight {
            name: base,
            shape: t.shape().to_vec(),
            dtype: e.dtype,
            role,
            blocks: e.blocks,
            float_bytes: t.byte_size(),
            quantized_bytes: e.quantized_bytes,
        });
        self.stored.insert(key, stored);
        self.released.insert(key.source);
        self.changes.add("weights quantized", 1);
        Ok(stored)
    }

    /// Starts a dry run of the rules: [`Editor::weight`] only records what is asked for.
    pub(super) fn start_plan(&mut self) {
        self.plan = Some(Vec::new());
    }

    /// Ends the dry run and quantizes every weight it asked for, in parallel across cores
    /// (each weight is read, rounded and encoded on its own), ready for the edits.
    pub(super) fn prepare(&mut self) {
        let Some(plan) = self.plan.take() else {
            return;
        };
        let mut seen = BTreeSet::new();
        let jobs: Vec<(Key, Tensor, String)> = plan
            .into_iter()
            .filter(|k| !self.stored.contains_key(k) && seen.insert(*k))
            .filter_map(|k| {
                let t = self.graph.constant(k.source)?.clone();
                Some((k, t, self.name(k.source)))
            })
            .collect();
        let (params, quantizer) = (self.config.params(), self.quantizer);
        let done: Vec<(Key, Result<Encoded, String>)> = jobs
            .into_par_iter()
            .map(|(key, t, name)| {
                let e = encode_weight(&t, key, &name, params, quantizer);
                (key, e)
            })
            .collect();
        self.ready.extend(done);
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
        let removed = crate::quant::bodies::remove_dead_constants(self.graph, released);
        self.changes.add("float weights removed", removed);
    }
}

/// What [`Editor::weight`] fails with during a dry run.
pub(super) const PLANNED: &str = "planned";

/// One weight quantized and written in its form, not yet in the graph.
#[derive(Debug)]
pub(super) struct Encoded {
    values: Tensor,
    scale: Tensor,
    zero_point: Option<Tensor>,
    /// The element type the integers are stored in.
    dtype: DataType,
    k: usize,
    n: usize,
    /// Scales stored.
    blocks: usize,
    /// Bytes of the integers, scales and zero points.
    quantized_bytes: usize,
}

/// Quantizes the float weight `t` (named `name`) as `key` says and writes it in its form;
/// reads nothing but `t`, so weights can be encoded on several threads at once.
fn encode_weight(
    t: &Tensor,
    key: Key,
    name: &str,
    params: BlockParams,
    quantizer: &(dyn BlockQuantizer + Sync),
) -> Result<Encoded, String> {
    let m = matrix(t, key.k_axis, f32::from_bits(key.alpha))?;
    let q = quantizer.quantize(name, &m.data, m.k, m.n, params)?;
    // The float copy goes before the integers are written: one weight's worth less at peak.
    drop(m);
    // Read in place from a mapped file, the weight's pages are resident now; give them back.
    if let Some(raw) = t.raw() {
        kiln_proto::release_pages(raw);
    }
    let (values, scale, zero_point, dtype) = if key.nbits {
        let e = matmulnbits::encode(&q).map_err(|e| e.to_string())?;
        (e.b, e.scales, e.zero_points, DataType::Uint8)
    } else {
        let e = qdq_form::encode(&q, key.k_axis).map_err(|e| e.to_string())?;
        let dtype = e.values.dtype();
        (e.values, e.scale, e.zero_point, dtype)
    };
    let quantized_bytes =
        values.byte_size() + scale.byte_size() + zero_point.as_ref().map_or(0, Tensor::byte_size);
    Ok(Encoded {
        values,
        scale,
        zero_point,
        dtype,
        k: q.k,
        n: q.n,
        blocks: q.scales.len(),
        quantized_bytes,
    })
}
