//! The layout of a quantization: every tensor that gets a Q/DQ pair and where its parameters
//! come from, every weight and bias, every removed activation, every skipped node. Built from
//! the graph and the configuration alone (no ranges), so `plan` can tell calibration what to
//! measure and `insert_qdq` rewrites exactly what was planned.

use std::collections::{HashMap, HashSet};

use crate::ir::{Graph, Model, NodeIndex, ValueRef};
use crate::quant::config::QuantConfig;
use crate::quant::ranges::Range;
use crate::quant::scheme::{QuantScheme, QuantType};
use crate::tensor::DataType;

use super::activation::{clamp_min, removal, Removal};
use super::groups::Groups;
use super::rules::{gemm_alpha_beta, resize_stays_in_range, weight_axis, Rule};
use super::select::{node_id, select, wanted_type, Selection};
use super::types::Types;
use super::Skipped;

/// Where an activation tensor's parameters come from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Source {
    /// Its calibrated range.
    Calibrated,
    /// A range fixed by the op (Sigmoid) or by an override.
    Fixed(Range),
    /// Its group's other members (it adds nothing to the group's range).
    Shared,
    /// The parameters of weight `n` (a Gather from a quantized embedding table).
    FromWeight(usize),
}

/// An activation tensor that gets a QuantizeLinear/DequantizeLinear pair.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Act {
    /// The value, as it is once removed activations are gone.
    pub value: ValueRef,
    /// The tensor's name (for a removed Relu's producer: the Relu output's name).
    pub name: String,
    /// Where its parameters come from.
    pub source: Source,
    /// Its scheme (for a shared tensor, its group's contributors' scheme is used).
    pub scheme: QuantScheme,
    /// The configuration has an override for it: it never shares.
    pub overridden: bool,
    /// Non-negative by construction (a Relu output).
    pub nonneg: bool,
    /// Produced by a producer whose Relu/Clip is removed.
    pub removed: bool,
    /// Graph-order key: (position of the producer, output slot).
    pub key: (usize, usize),
    /// Calibrated with another tensor's range: a kept Relu's input takes the Relu output's
    /// range (what it loses below 0 the Relu would zero anyway), as ORT's tool does.
    pub range_of: Option<String>,
}

impl Act {
    /// The name its calibrated range is looked up under.
    pub(crate) fn range_name(&self) -> &str {
        self.range_of.as_deref().unwrap_or(&self.name)
    }

    /// Whether the act contributes a range to its group.
    pub(crate) fn contributes(&self) -> bool {
        !matches!(self.source, Source::Shared)
    }

    /// Whether every value it can take is ≥ 0.
    fn is_nonneg(&self) -> bool {
        self.nonneg || matches!(self.source, Source::Fixed(r) if r.min >= 0.0)
    }
}

/// What a constant input is quantized as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConstKind {
    /// A weight (weight scheme, maybe per channel).
    Weight,
    /// A constant operand of an elementwise op (activation scheme, from its own min/max).
    Operand,
}

/// A constant stored quantized behind a DequantizeLinear.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct WeightSpec {
    /// The constant.
    pub value: ValueRef,
    /// Its name.
    pub name: String,
    /// Per-channel axis.
    pub axis: Option<usize>,
    /// Scheme.
    pub scheme: QuantScheme,
    /// Weight or constant operand.
    pub kind: ConstKind,
    /// The (node, input slot) pairs that read the dequantized weight.
    pub uses: Vec<(NodeIndex, usize)>,
}

/// A bias quantized to int32 with scale input scale × weight scale.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BiasUse {
    /// The Conv / Gemm.
    pub node: NodeIndex,
    /// The float bias constant.
    pub value: ValueRef,
    /// Its name.
    pub name: String,
    /// The act of the node's input 0.
    pub input: usize,
    /// The weight spec of its input 1.
    pub weight: usize,
    /// Gemm's beta, folded into the bias (then set to 1).
    pub beta: f32,
}

/// The whole layout.
#[derive(Debug, Clone, Default)]
pub(crate) struct Layout {
    /// Activation tensors (index = group id).
    pub acts: Vec<Act>,
    /// Groups of acts sharing parameters.
    pub groups: Groups,
    /// Quantized constants.
    pub weights: Vec<WeightSpec>,
    /// Quantized biases.
    pub biases: Vec<BiasUse>,
    /// Removed activations.
    pub removals: Vec<Removal>,
    /// Quantized nodes, in graph order.
    pub nodes: Vec<NodeIndex>,
    /// Nodes left in float, with why, in graph order.
    pub skipped: Vec<Skipped>,
    by_value: HashMap<ValueRef, usize>,
    weight_index: HashMap<(ValueRef, Option<usize>, QuantType, bool, bool), usize>,
    alias: HashMap<ValueRef, ValueRef>,
    renamed: HashMap<ValueRef, String>,
    order: HashMap<NodeIndex, usize>,
    skipped_keys: Vec<usize>,
}

/// The unit interval Sigmoid and Softmax outputs live in.
const UNIT: Range = Range { min: 0.0, max: 1.0 };

impl Layout {
    /// Plans the quantization of `model`'s main graph.
    pub(crate) fn build(model: &Model, config: &QuantConfig) -> Layout {
        let g = &model.graph;
        let types = Types::of(model);
        let topo = g.topo_order();
        let mut l = Layout {
            order: topo.iter().enumerate().map(|(i, &n)| (n, i)).collect(),
            ..Layout::default()
        };

        // Decomposed RMSNorms pinned as units (pin_ops names a fused RMSNorm) stay float.
        let units = crate::precision::unit_nodes(g, &config.pin_ops);
        let mut selected: Vec<(NodeIndex, Rule)> = Vec::new();
        for &idx in &topo {
            match select(g, idx, config, &types) {
                Selection::Quantize(_) if units.contains(&idx) => l.skip(
                    g,
                    idx,
                    "part of a decomposed RMSNorm pinned as a unit (pin_ops)".into(),
                ),
                Selection::Quantize(rule) => selected.push((idx, rule)),
                Selection::Skip(reason) => l.skip(g, idx, reason),
                Selection::Ignore => {}
            }
            for body in g[idx].subgraphs() {
                l.skip_body(g, idx, body, config);
            }
        }
        let rules: HashMap<NodeIndex, Rule> = selected.iter().copied().collect();

        for &(idx, rule) in &selected {
            if rule == Rule::Activation {
                if let Some(r) = removal(g, idx, &rules, config) {
                    l.alias.insert(r.output, r.input);
                    l.renamed.insert(r.input, r.output_name.clone());
                    l.removals.push(r);
                }
            }
        }
        let removed: HashSet<NodeIndex> = l.removals.iter().map(|r| r.node).collect();

        // Anchors first (they mark every tensor they touch), then in graph order the nodes
        // that are quantized only when their input already is.
        for &(idx, rule) in &selected {
            if !is_conditional(g, idx, rule) {
                l.anchor(g, idx, rule, config);
                l.nodes.push(idx);
            }
        }
        for &(idx, rule) in &selected {
            if is_conditional(g, idx, rule) && !removed.contains(&idx) {
                l.conditional(g, idx, rule, config, &types);
            }
        }
        for &(idx, rule) in &selected {
            if rule == Rule::Concat {
                l.unify_concat(g, idx);
            }
        }
        l.nodes.sort_by_key(|n| l.order[n]);
        let mut keyed: Vec<(usize, Skipped)> =
            l.skipped_keys.drain(..).zip(l.skipped.drain(..)).collect();
        keyed.sort_by_key(|(k, _)| *k);
        l.skipped = keyed.into_iter().map(|(_, s)| s).collect();
        l
    }

    fn skip(&mut self, g: &Graph, idx: NodeIndex, reason: String) {
        self.skipped_keys.push(self.order[&idx]);
        self.skipped.push(Skipped {
            node: node_id(g, idx),
            op_type: g[idx].op_type().to_string(),
            reason,
        });
    }

    /// Reports the quantizable nodes of a body (at any depth) as left in float.
    fn skip_body(&mut self, g: &Graph, owner: NodeIndex, body: &Graph, config: &QuantConfig) {
        for idx in body.topo_order() {
            let node = &body[idx];
            if node.is_operator() && wanted_type(config, node.op_type()) {
                self.skipped_keys.push(self.order[&owner]);
                self.skipped.push(Skipped {
                    node: node_id(body, idx),
                    op_type: node.op_type().to_string(),
                    reason: format!(
                        "inside a subgraph of '{}' ({}): If/Loop/Scan bodies stay float",
                        node_id(g, owner),
                        g[owner].op_type()
                    ),
                });
            }
            for inner in node.subgraphs() {
                self.skip_body(g, owner, inner, config);
            }
        }
    }

    /// The value as it is once removed activations are gone.
    fn canon(&self, v: ValueRef) -> ValueRef {
        self.alias.get(&v).copied().unwrap_or(v)
    }

    /// The act of `v`, created (calibrated, or fixed by an override) if new.
    fn act(&mut self, g: &Graph, v: ValueRef, config: &QuantConfig) -> usize {
        let v = self.canon(v);
        if let Some(&id) = self.by_value.get(&v) {
            return id;
        }
        let name = self
            .renamed
            .get(&v)
            .cloned()
            .unwrap_or_else(|| g.value_name(v).to_string());
        let ov = config.overrides.get(&name);
        let removed = self.renamed.contains_key(&v);
        let id = self.groups.add();
        self.acts.push(Act {
            value: v,
            source: ov
                .and_then(|o| o.range)
                .map_or(Source::Calibrated, Source::Fixed),
            scheme: config.activation_scheme(&name),
            overridden: ov.is_some(),
            nonneg: removed,
            removed,
            key: (self.order.get(&v.node).copied().unwrap_or(0), v.slot),
            range_of: None,
            name,
        });
        self.by_value.insert(v, id);
        id
    }

    /// Sets where the parameters of output `v` come from; overrides win over the op's wish.
    fn designate(&mut self, g: &Graph, v: ValueRef, source: Source, config: &QuantConfig) -> usize {
        let id = self.act(g, v, config);
        let ov_range = config
            .overrides
            .get(&self.acts[id].name)
            .and_then(|o| o.range);
        match source {
            Source::Calibrated => {}
            Source::Fixed(r) => {
                if ov_range.is_none() {
                    self.acts[id].source = Source::Fixed(r);
                }
            }
            Source::Shared | Source::FromWeight(_) if self.acts[id].overridden => {}
            Source::Shared => self.acts[id].source = Source::Shared,
            Source::FromWeight(w) => self.acts[id].source = Source::FromWeight(w),
        }
        id
    }

    /// Quantizes a constant input of `node` at `slot`; `None` if it is empty or not float32.
    #[allow(clippy::too_many_arguments)]
    fn constant(
        &mut self,
        g: &Graph,
        v: ValueRef,
        node: NodeIndex,
        slot: usize,
        kind: ConstKind,
        per_channel: bool,
        config: &QuantConfig,
    ) -> Option<usize> {
        let t = g.constant(v)?;
        if t.dtype() != DataType::Float || t.is_empty() {
            return None;
        }
        let name = g.value_name(v).to_string();
        let mut scheme = match kind {
            ConstKind::Weight => config.weights.scheme,
            ConstKind::Operand => config.activation_scheme(&name),
        };
        if let (ConstKind::Weight, Some(o)) = (kind, config.overrides.get(&name)) {
            scheme.dtype = o.dtype.unwrap_or(scheme.dtype);
            scheme.symmetric = o.symmetric.unwrap_or(scheme.symmetric);
        }
        let axis = if per_channel
            && kind == ConstKind::Weight
            && config.weights.per_channel_for(g[node].op_type())
        {
            weight_axis(&g[node], slot, t.shape().len())
        } else {
            None
        };
        let key = (v, axis, scheme.dtype, scheme.symmetric, scheme.reduce_range);
        let id = match self.weight_index.get(&key) {
            Some(&id) => id,
            None => {
                self.weights.push(WeightSpec {
                    value: v,
                    name,
                    axis,
                    scheme,
                    kind,
                    uses: Vec::new(),
                });
                self.weight_index.insert(key, self.weights.len() - 1);
                self.weights.len() - 1
            }
        };
        self.weights[id].uses.push((node, slot));
        Some(id)
    }

    /// Marks input `slot` of `node`: a constant is stored quantized, anything else gets a
    /// calibrated Q/DQ pair. Returns (act, weight).
    fn input(
        &mut self,
        g: &Graph,
        node: NodeIndex,
        slot: usize,
        kind: ConstKind,
        per_channel: bool,
        config: &QuantConfig,
    ) -> (Option<usize>, Option<usize>) {
        let Some(v) = g.input(node, slot) else {
            return (None, None);
        };
        if g.constant(v).is_some() {
            return (
                None,
                self.constant(g, v, node, slot, kind, per_channel, config),
            );
        }
        (Some(self.act(g, v, config)), None)
    }

    /// The used outputs of `node` (a value nobody reads needs no Q/DQ pair).
    fn used_outputs(g: &Graph, node: NodeIndex, types: Option<&Types>) -> Vec<ValueRef> {
        (0..g[node].outputs.len())
            .map(|s| ValueRef::new(node, s))
            .filter(|&v| !g.value_name(v).is_empty() && g.is_used(v))
            .filter(|&v| types.is_none_or(|t| t.get(v).is_none_or(|d| d == DataType::Float)))
            .collect()
    }

    /// A node quantized whatever its input: inputs, weights, bias, outputs.
    fn anchor(&mut self, g: &Graph, idx: NodeIndex, rule: Rule, config: &QuantConfig) {
        let out = ValueRef::new(idx, 0);
        let used = g.is_used(out);
        match rule {
            Rule::Weighted | Rule::MatMul => {
                let (x, _) = self.input(g, idx, 0, ConstKind::Weight, false, config);
                let (_, w) = self.input(g, idx, 1, ConstKind::Weight, true, config);
                if rule == Rule::Weighted {
                    self.bias(g, idx, x, w);
                }
            }
            Rule::LayerNorm => {
                self.input(g, idx, 0, ConstKind::Operand, false, config);
                if let Some(v) = g.input(idx, 1) {
                    self.constant(g, v, idx, 1, ConstKind::Weight, false, config);
                }
            }
            Rule::Gather => {
                let w = g
                    .input(idx, 0)
                    .and_then(|v| self.constant(g, v, idx, 0, ConstKind::Weight, false, config));
                if let (Some(w), true) = (w, used) {
                    self.designate(g, out, Source::FromWeight(w), config);
                }
                return;
            }
            _ => {
                for slot in rule.data_slots(g[idx].input_arity) {
                    self.input(g, idx, slot, ConstKind::Operand, false, config);
                }
            }
        }
        let input_act = g
            .input(idx, 0)
            .and_then(|v| self.by_value.get(&self.canon(v)).copied());
        match rule {
            Rule::UnitOutput if used => {
                self.designate(g, out, Source::Fixed(UNIT), config);
            }
            Rule::Split => {
                for v in Self::used_outputs(g, idx, None) {
                    self.share_or_own(g, v, input_act, config);
                }
            }
            Rule::Pad if used => {
                let share = if pad_keeps_range(g, idx) {
                    input_act
                } else {
                    None
                };
                self.share_or_own(g, out, share, config);
            }
            _ if used => {
                self.designate(g, out, Source::Calibrated, config);
            }
            _ => {}
        }
    }

    /// Output `v` shares `from`'s parameters when there is a `from`, else has its own range.
    fn share_or_own(&mut self, g: &Graph, v: ValueRef, from: Option<usize>, config: &QuantConfig) {
        match from {
            Some(from) => {
                let id = self.designate(g, v, Source::Shared, config);
                if self.acts[id].source == Source::Shared {
                    self.groups.union(id, from);
                }
            }
            None => {
                self.designate(g, v, Source::Calibrated, config);
            }
        }
    }

    /// Registers the int32 bias of a Conv/ConvTranspose/Gemm when it can be quantized:
    /// a float constant, the input an activation, the weight quantized, shapes that match.
    fn bias(&mut self, g: &Graph, idx: NodeIndex, x: Option<usize>, w: Option<usize>) {
        let (Some(x), Some(w), Some(v)) = (x, w, g.input(idx, 2)) else {
            return;
        };
        let Some(b) = g.constant(v) else {
            return;
        };
        if b.dtype() != DataType::Float || b.is_empty() {
            return;
        }
        let node = &g[idx];
        let (alpha, beta) = if node.op_type() == "Gemm" {
            gemm_alpha_beta(node)
        } else {
            (1.0, 1.0)
        };
        // The int32 bias joins the accumulator of x·w; alpha would scale that accumulator.
        if alpha != 1.0 {
            return;
        }
        let spec = &self.weights[w];
        if let Some(axis) = spec.axis {
            let channels = g
                .constant(spec.value)
                .and_then(|t| t.shape().get(axis).copied());
            if b.shape().len() != 1 || Some(b.shape()[0]) != channels {
                return;
            }
        } else if node.op_type() != "Gemm" && b.shape().len() != 1 {
            return;
        }
        self.biases.push(BiasUse {
            node: idx,
            value: v,
            name: g.value_name(v).to_string(),
            input: x,
            weight: w,
            beta,
        });
    }

    /// A node quantized only when its input is: outputs share the input's parameters
    /// (PassThrough, Gather) or get their own range (Relu/Clip, cubic Resize).
    fn conditional(
        &mut self,
        g: &Graph,
        idx: NodeIndex,
        rule: Rule,
        config: &QuantConfig,
        types: &Types,
    ) {
        let Some(v) = g.input(idx, 0) else {
            return self.skip(g, idx, "input 0 is absent".into());
        };
        let v = self.canon(v);
        if g.constant(v).is_some() {
            return self.skip(g, idx, "its input is a constant".into());
        }
        let Some(&from) = self.by_value.get(&v) else {
            let name = self.renamed.get(&v).map_or(g.value_name(v), |s| s.as_str());
            return self.skip(
                g,
                idx,
                format!(
                    "input '{name}' is not quantized ({} only reuses its input's parameters)",
                    g[idx].op_type()
                ),
            );
        };
        self.nodes.push(idx);
        let out = ValueRef::new(idx, 0);
        if !Self::used_outputs(g, idx, Some(types)).contains(&out) {
            return;
        }
        let own = rule == Rule::Activation
            || (g[idx].op_type() == "Resize" && !resize_stays_in_range(&g[idx]));
        if own {
            let id = self.designate(g, out, Source::Calibrated, config);
            if clamp_min(g, idx).is_some_and(|m| m >= 0.0) {
                self.acts[id].nonneg = true;
            }
            if rule == Rule::Activation {
                self.borrow_output_range(g, idx, from, id);
            }
        } else {
            self.share_or_own(g, out, Some(from), config);
        }
    }

    /// A kept Relu/Clip whose input only it reads: the input is quantized with the output's
    /// range, so the producer's quantization spends no levels on what the clamp removes.
    fn borrow_output_range(&mut self, g: &Graph, idx: NodeIndex, input: usize, output: usize) {
        let (i, o) = (&self.acts[input], &self.acts[output]);
        let free =
            |a: &Act| a.source == Source::Calibrated && !a.overridden && a.range_of.is_none();
        if free(i)
            && free(o)
            && g.consumers(i.value) == [(idx, crate::ir::InputSlot::Operand(0))]
            && !g.outputs.iter().any(|out| out.value == i.value)
        {
            self.acts[input].range_of = Some(o.name.clone());
        }
    }

    /// Gives a Concat's inputs and output one scale (the union of the inputs' ranges) when
    /// they are all activations with the same scheme and no override, and when no removed
    /// Relu would lose its clamping to a negative member.
    fn unify_concat(&mut self, g: &Graph, idx: NodeIndex) {
        let mut ids = Vec::new();
        for v in g.inputs(idx) {
            let Some(v) = v else { continue };
            match self.by_value.get(&self.canon(v)) {
                Some(&id) => ids.push(id),
                None => return,
            }
        }
        let Some(&out) = self.by_value.get(&ValueRef::new(idx, 0)) else {
            return;
        };
        if ids.is_empty() {
            return;
        }
        let mut members: Vec<usize> = ids
            .iter()
            .chain([&out])
            .flat_map(|&id| self.groups.members_of(id))
            .collect();
        members.sort_unstable();
        members.dedup();
        let acts = &self.acts;
        // Every direct member must be free to share (an override gives a tensor its own).
        if ids.iter().chain([&out]).any(|&id| acts[id].overridden) {
            return;
        }
        if members
            .iter()
            .any(|&m| matches!(acts[m].source, Source::FromWeight(_)))
        {
            return;
        }
        let contributors: Vec<&Act> = members
            .iter()
            .filter(|&&m| m != out)
            .map(|&m| &acts[m])
            .filter(|a| a.contributes())
            .collect();
        let Some(first) = contributors.first() else {
            return;
        };
        if contributors.iter().any(|a| a.scheme != first.scheme) {
            return;
        }
        if members.iter().any(|&m| acts[m].removed) && contributors.iter().any(|a| !a.is_nonneg()) {
            return;
        }
        if self.acts[out].source == Source::Calibrated {
            self.acts[out].source = Source::Shared;
        }
        for &id in &ids {
            self.groups.union(id, out);
        }
    }
}

/// Whether `node` is quantized only when its input already is: Relu/Clip, data movement,
/// and a Gather from computed data (a Gather from a constant table quantizes the table).
fn is_conditional(g: &Graph, idx: NodeIndex, rule: Rule) -> bool {
    rule.is_conditional()
        || (rule == Rule::Gather && g.input(idx, 0).is_some_and(|v| g.constant(v).is_none()))
}

/// Whether a Pad only writes values its input has, or 0 (which every range holds):
/// reflect/edge/wrap modes, or constant mode padding with 0.
fn pad_keeps_range(g: &Graph, idx: NodeIndex) -> bool {
    let node = &g[idx];
    let mode = node
        .attr("mode")
        .and_then(crate::ir::AttrValue::as_str)
        .unwrap_or("constant");
    if mode != "constant" {
        return true;
    }
    // Opset < 11 keeps the value in an attribute; later ones in input 2 (absent = 0).
    if let Some(v) = node.attr("value").and_then(crate::ir::AttrValue::as_float) {
        return v == 0.0;
    }
    match g.input(idx, 2) {
        None => true,
        Some(v) => g
            .constant(v)
            .and_then(|t| t.to_f64_vec())
            .is_some_and(|vals| vals.iter().all(|&x| x == 0.0)),
    }
}
