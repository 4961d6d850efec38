//! Rewriting the pinned nodes of one graph: Casts on inputs (one per tensor), converted
//! constants, and a Cast back to float32 that takes over the output's name.

use std::collections::HashMap;

use crate::ir::{Graph, Node, NodeIndex, NodeKind, ValueInfo, ValueRef};
use crate::pipeline::{Changes, PassError};
use crate::tensor::{DataType, Tensor};

use super::convert_constants::{overflows, Conversion};
use super::select::{decide, is_rounded, Decision, Input, Plan};
use super::types::{add_cast, cast_readers, elem_type, info_of, retyped, set_elem_type};
use super::units::{in_pinned_unit, mark_unit, pins_rmsnorm};
use super::{low_dtype, PinPrecision, PinReport, PinnedNode, SkippedNode};
use crate::fuse::{decomposed_rmsnorms, RmsNormUnit};
use crate::ir::NameSet;

/// What one graph's rewrite shares between its pinned nodes.
struct Rewriter<'a> {
    low: DataType,
    names: &'a mut NameSet,
    changes: Changes,
    /// Tensor → its Cast to the low float.
    low_casts: HashMap<ValueRef, ValueRef>,
    /// Tensor → the same rounded through the low float (float32).
    rounded: HashMap<ValueRef, ValueRef>,
    /// (original constant, conversion) → converted constant.
    constants: HashMap<(ValueRef, bool), ValueRef>,
    /// Original constants that may have lost their last reader.
    maybe_dead: Vec<ValueRef>,
}

/// Element types of the values enclosing graphs offer a body, by name.
pub(crate) type OuterTypes = HashMap<String, DataType>;

/// Pins `graph` and every body in it, bodies first (as [`Graph::try_for_each_graph_mut`]
/// does), telling each body the types of the outer values it reads: shape inference types
/// those for itself but does not record them on a body's `Outer` nodes.
pub(crate) fn pin_all(
    graph: &mut Graph,
    outer: &OuterTypes,
    pin: &PinPrecision,
    blocked: Option<&str>,
    names: &mut NameSet,
    report: &mut PinReport,
) -> Result<(), PassError> {
    let owners: Vec<NodeIndex> = graph
        .nodes()
        .filter(|(_, n)| n.subgraphs().next().is_some())
        .map(|(i, _)| i)
        .collect();
    if !owners.is_empty() {
        let mut scope = outer.clone();
        for (idx, node) in graph.nodes() {
            for slot in 0..node.outputs.len() {
                let v = ValueRef::new(idx, slot);
                if let Some(t) = elem_type(graph, v) {
                    scope.insert(graph.value_name(v).to_string(), t);
                }
            }
        }
        for owner in owners {
            for body in graph[owner].subgraphs_mut() {
                let declared = type_outer_values(body, &scope);
                let pinned = pin_all(body, &scope, pin, blocked, names, report);
                // Saving writes every typed value's value_info, an Outer node's included.
                for (idx, info) in declared {
                    if let Some(o) = body.node_mut(idx).and_then(|n| n.outputs.first_mut()) {
                        *o = info;
                    }
                }
                pinned?;
            }
        }
    }
    pin_graph(graph, pin, blocked, names, report)
}

/// Gives the `Outer` nodes of `body` that declare no element type the one `scope` knows, and
/// returns what they declared before, for the caller to put back.
fn type_outer_values(body: &mut Graph, scope: &OuterTypes) -> Vec<(NodeIndex, ValueInfo)> {
    let outer: Vec<NodeIndex> = body
        .nodes()
        .filter(|(_, n)| matches!(n.kind, NodeKind::Outer) && n.outputs.len() == 1)
        .map(|(i, _)| i)
        .collect();
    let mut declared = Vec::new();
    for idx in outer {
        if let Some(info) = body.node_mut(idx).and_then(|n| n.outputs.first_mut()) {
            if info.elem_type().is_none() {
                if let Some(&t) = scope.get(&info.name) {
                    declared.push((idx, info.clone()));
                    set_elem_type(info, t);
                }
            }
        }
    }
    declared
}

/// Pins the nodes of `graph` (not its bodies) whose op type `pin` names; `blocked` is a
/// reason no node can be pinned.
fn pin_graph(
    graph: &mut Graph,
    pin: &PinPrecision,
    blocked: Option<&str>,
    names: &mut NameSet,
    report: &mut PinReport,
) -> Result<(), PassError> {
    let low = low_dtype(pin.float);
    let label_of = |graph: &Graph, idx: NodeIndex| {
        let node = &graph[idx];
        if node.name.is_empty() {
            format!("#{}", idx.index())
        } else {
            node.name.clone()
        }
    };
    let mut rw = Rewriter {
        low,
        names,
        changes: Changes::none(),
        low_casts: HashMap::new(),
        rounded: HashMap::new(),
        constants: HashMap::new(),
        maybe_dead: Vec::new(),
    };
    if pins_rmsnorm(&pin.ops) {
        for unit in decomposed_rmsnorms(graph) {
            let Some(&last) = unit.nodes.last() else {
                continue;
            };
            let label = label_of(graph, last);
            let why = match blocked {
                Some(why) => Err(why.to_string()),
                None => rw.pin_unit(graph, &unit)?,
            };
            match why {
                Ok(()) => {
                    rw.changes.add("rmsnorm units", 1);
                    report.pinned.push(PinnedNode {
                        graph: graph.name.clone(),
                        node: label,
                        op_type: UNIT_OP.into(),
                        simulated: false,
                    });
                }
                Err(reason) => report.skipped.push(SkippedNode {
                    graph: graph.name.clone(),
                    node: label,
                    op_type: UNIT_OP.into(),
                    reason,
                }),
            }
        }
    }
    let candidates: Vec<NodeIndex> = graph
        .topo_order()
        .into_iter()
        .filter(|&i| matches!(&graph[i].kind, NodeKind::Op { op_type, .. } if pin.ops.contains(op_type)))
        .collect();
    for idx in candidates {
        let op_type = graph[idx].op_type().to_string();
        let label = label_of(graph, idx);
        let simulated = pin.simulate.contains(&op_type);
        let conv = if simulated {
            Conversion::RoundedThrough(low)
        } else {
            Conversion::ToLow(low)
        };
        let decision = match blocked {
            Some(why) => Decision::Skip(why.to_string()),
            None => decide(graph, idx, conv)?,
        };
        match decision {
            Decision::Skip(reason) => report.skipped.push(SkippedNode {
                graph: graph.name.clone(),
                node: label,
                op_type,
                reason,
            }),
            Decision::Pin(plan) => {
                rw.apply(graph, idx, plan, simulated);
                rw.changes
                    .add(if simulated { "simulated" } else { "pinned" }, 1);
                report.pinned.push(PinnedNode {
                    graph: graph.name.clone(),
                    node: label,
                    op_type,
                    simulated,
                });
            }
        }
    }
    rw.remove_dead_constants(graph);
    report.changes.merge(&rw.changes);
    Ok(())
}

/// How reports name a decomposed RMSNorm pinned as a unit.
const UNIT_OP: &str = "RMSNorm (decomposed)";

impl Rewriter<'_> {
    /// Pins a decomposed RMSNorm as a unit (see [`super::units`]): its input and weight rounded
    /// to the low float, its output rounded, the ops between left in float32; or why not.
    fn pin_unit(
        &mut self,
        g: &mut Graph,
        unit: &RmsNormUnit,
    ) -> Result<Result<(), String>, PassError> {
        let Some(&last) = unit.nodes.last() else {
            return Ok(Err("empty pattern".into()));
        };
        if unit
            .nodes
            .iter()
            .any(|&n| g.node(n).is_some_and(in_pinned_unit))
        {
            return Ok(Err("already pinned as a unit".into()));
        }
        let out = ValueRef::new(last, 0);
        for (what, v) in [("input", unit.x), ("output", out)] {
            match elem_type(g, v) {
                Some(DataType::Float) => {}
                Some(t) => return Ok(Err(format!("its {what} is {t}, not float32"))),
                None => return Ok(Err(format!("the type of its {what} is unknown"))),
            }
        }
        let conv = Conversion::RoundedThrough(self.low);
        let weight = match unit.weight {
            Some(w) => {
                let Some(t) = g.constant(w) else {
                    return Ok(Err("its weight is not a constant".into()));
                };
                let rounded = conv.apply(t)?;
                if overflows(t, &rounded) {
                    return Ok(Err(format!(
                        "weight '{}' has values beyond {}'s range",
                        g.value_name(w),
                        self.low
                    )));
                }
                (&rounded != t).then_some((w, rounded))
            }
            None => None,
        };
        let x = if is_rounded(g, unit.x, self.low) {
            unit.x
        } else {
            self.rounded(g, unit.x)
        };
        for &n in &unit.nodes {
            for (slot, v) in g.inputs(n).into_iter().enumerate() {
                if v == Some(unit.x) && x != unit.x {
                    g.connect(x, n, slot);
                }
                if let Some((w, t)) = weight.as_ref().filter(|(w, _)| v == Some(*w)) {
                    let c = self.rounded_constant(g, *w, t.clone());
                    g.connect(c, n, slot);
                    self.maybe_dead.push(*w);
                }
            }
        }
        self.round_output(g, out);
        let mark = format!("{}, float32 inside", self.low);
        for &n in &unit.nodes {
            if let Some(node) = g.node_mut(n) {
                mark_unit(node, &mark);
            }
        }
        Ok(Ok(()))
    }

    /// The rounded copy of constant `value` (made once per constant).
    fn rounded_constant(&mut self, g: &mut Graph, value: ValueRef, rounded: Tensor) -> ValueRef {
        let key = (value, true);
        if let Some(&c) = self.constants.get(&key) {
            return c;
        }
        let name = self
            .names
            .fresh(&format!("{}_{}_rounded", g.value_name(value), self.low));
        let c = ValueRef::new(g.add_node(Node::initializer(&name, rounded)), 0);
        self.constants.insert(key, c);
        self.changes.add("constants converted", 1);
        c
    }

    fn apply(&mut self, g: &mut Graph, idx: NodeIndex, plan: Plan, simulate: bool) {
        for (slot, input) in plan.inputs {
            let new = match input {
                Input::Data(v) if simulate => self.rounded(g, v),
                Input::Data(v) => self.low_cast(g, v),
                Input::Constant { value, converted } => {
                    let key = (value, simulate);
                    match self.constants.get(&key) {
                        Some(&c) => c,
                        None => {
                            let suffix = if simulate { "_rounded" } else { "" };
                            let name = self.names.fresh(&format!(
                                "{}_{}{suffix}",
                                g.value_name(value),
                                self.low
                            ));
                            let c =
                                ValueRef::new(g.add_node(Node::initializer(&name, converted)), 0);
                            self.constants.insert(key, c);
                            self.changes.add("constants converted", 1);
                            c
                        }
                    }
                }
            };
            let old = g.input(idx, slot);
            g.connect(new, idx, slot);
            if let Some(old) = old {
                self.maybe_dead.push(old);
            }
        }
        if let Some(node) = g.node_mut(idx) {
            for (pos, value) in plan.attributes {
                if let Some(a) = node.attributes.get_mut(pos) {
                    a.value = value;
                    self.changes.add("attributes converted", 1);
                }
            }
            for slot in plan.retype_outputs {
                if let Some(info) = node.outputs.get_mut(slot) {
                    set_elem_type(info, self.low);
                }
            }
        }
        for slot in plan.cast_outputs {
            if simulate {
                self.round_output(g, ValueRef::new(idx, slot));
            } else {
                self.cast_output(g, ValueRef::new(idx, slot));
            }
        }
    }

    /// `v` cast to the low float: the Cast made earlier, an existing one, or a new one.
    fn low_cast(&mut self, g: &mut Graph, v: ValueRef) -> ValueRef {
        if let Some(&c) = self.low_casts.get(&v) {
            return c;
        }
        let c = match cast_readers(g, v)
            .into_iter()
            .find(|&(_, to)| to == self.low)
        {
            Some((n, _)) => ValueRef::new(n, 0),
            None => {
                let name = self
                    .names
                    .fresh(&format!("{}_{}", g.value_name(v), self.low));
                let info = info_of(g, v).unwrap_or_default();
                let c = add_cast(g, self.low, &name, &info);
                g.connect(v, c.node, 0);
                self.changes.add("input casts", 1);
                c
            }
        };
        self.low_casts.insert(v, c);
        c
    }

    /// `v` rounded through the low float, as float32 (Cast to low, Cast back).
    fn rounded(&mut self, g: &mut Graph, v: ValueRef) -> ValueRef {
        if let Some(&r) = self.rounded.get(&v) {
            return r;
        }
        let l = self.low_cast(g, v);
        let name = self
            .names
            .fresh(&format!("{}_{}_rounded", g.value_name(v), self.low));
        let info = info_of(g, v).unwrap_or_default();
        let r = add_cast(g, DataType::Float, &name, &info);
        g.connect(l, r.node, 0);
        self.changes.add("input casts", 1);
        self.rounded.insert(v, r);
        r
    }

    /// The pinned node's output `v` becomes low-float under a new name; a Cast to float32
    /// takes its old name and its readers (graph outputs included).
    fn cast_output(&mut self, g: &mut Graph, v: ValueRef) {
        let name = g.value_name(v).to_string();
        let declared = g.value_info(v).clone();
        let known = info_of(g, v).unwrap_or_default();
        let low_name = self.names.fresh(&format!("{name}_{}", self.low));
        g.rename_value(v, &low_name);
        *g.value_info_mut(v) = retyped(&known, &low_name, self.low);
        // The Cast's output is the old value: it keeps the declaration as the file had it.
        let back = add_cast(g, DataType::Float, &name, &known);
        *g.value_info_mut(back) = declared;
        g.replace_all_uses(v, back);
        g.connect(v, back.node, 0);
        self.changes.add("output casts", 1);
    }

    /// The twin's float32 output `v` is rounded through the low float: Cast to low, Cast
    /// back, the last taking `v`'s name and readers.
    fn round_output(&mut self, g: &mut Graph, v: ValueRef) {
        let name = g.value_name(v).to_string();
        let declared = g.value_info(v).clone();
        let known = info_of(g, v).unwrap_or_default();
        let raw_name = self.names.fresh(&format!("{name}_unrounded"));
        g.rename_value(v, &raw_name);
        *g.value_info_mut(v) = retyped(&known, &raw_name, DataType::Float);
        let low_name = self.names.fresh(&format!("{name}_{}", self.low));
        let l = add_cast(g, self.low, &low_name, &known);
        let back = add_cast(g, DataType::Float, &name, &known);
        *g.value_info_mut(back) = declared;
        g.replace_all_uses(v, back);
        g.connect(v, l.node, 0);
        g.connect(l, back.node, 0);
        self.changes.add("output casts", 2);
    }

    /// Removes the original constants no reader is left for (graph inputs stay).
    fn remove_dead_constants(&mut self, g: &mut Graph) {
        for v in std::mem::take(&mut self.maybe_dead) {
            let dead = g.node(v.node).is_some_and(|n| {
                matches!(n.kind, NodeKind::Constant { .. }) && !n.is_listed_input()
            }) && !g.is_used(v);
            if dead {
                g.remove_node(v.node);
            }
        }
    }
}
