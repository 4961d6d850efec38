//! The graph: a `StableDiGraph` of nodes plus the graph-level lists ONNX keeps, and the
//! small editing API passes use.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use kiln_proto::onnx::{StringStringEntryProto, TensorAnnotation, ValueInfoProto};
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::{EdgeRef, IntoEdgeReferences};
use petgraph::Direction;

use super::node::{Edge, InputSlot, Node, NodeKind};
use super::value::{ValueInfo, ValueRef};

/// One graph output: the value it names and its declared name/type.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphOutput {
    /// The value (a node output, graph input, initializer, or in a body an outer value).
    pub value: ValueRef,
    /// The declared type and annotations; saving takes the name from the value.
    pub info: ValueInfo,
}

/// One entry of `GraphProto.value_info`, in file order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ValueInfoEntry {
    /// Attached to the value of this name (its type lives in that value's [`ValueInfo`]).
    Attached(String),
    /// Naming nothing that can hold it (or a graph input, or a repeat): written back as is.
    Unattached(ValueInfoProto),
}

/// A graph (the main graph or a subgraph): operators, inputs and constants as nodes,
/// values flowing along edges. See the module documentation of [`crate::ir`].
#[derive(Debug, Clone, Default)]
pub struct Graph {
    /// The graph's name.
    pub name: String,
    /// Free-form documentation.
    pub doc_string: String,
    pub(crate) g: StableDiGraph<Node, Edge>,
    /// Graph inputs in order: `Input` nodes and initializers listed as inputs.
    pub graph_inputs: Vec<NodeIndex>,
    /// Graph outputs in order (a value may appear twice).
    pub outputs: Vec<GraphOutput>,
    /// Quantization annotations, kept verbatim (they name tensors by name).
    pub quantization_annotation: Vec<TensorAnnotation>,
    /// Key/value annotations.
    pub metadata_props: Vec<StringStringEntryProto>,
    pub(crate) value_info_layout: Vec<ValueInfoEntry>,
    pub(crate) next_seq: u64,
}

impl PartialEq for Graph {
    /// Structural equality: same node indices holding equal nodes, same edges, same lists.
    fn eq(&self, other: &Graph) -> bool {
        let mut edges_a: Vec<_> = edge_list(self);
        let mut edges_b: Vec<_> = edge_list(other);
        edges_a.sort_unstable();
        edges_b.sort_unstable();
        self.name == other.name
            && self.doc_string == other.doc_string
            && self.graph_inputs == other.graph_inputs
            && self.outputs == other.outputs
            && self.quantization_annotation == other.quantization_annotation
            && self.metadata_props == other.metadata_props
            && self.value_info_layout == other.value_info_layout
            && self.g.node_count() == other.g.node_count()
            && self
                .g
                .node_indices()
                .all(|i| other.g.node_weight(i) == self.g.node_weight(i))
            && edges_a == edges_b
    }
}

type EdgeKey = (usize, usize, usize, Option<usize>);

fn edge_list(g: &Graph) -> Vec<EdgeKey> {
    (&g.g)
        .edge_references()
        .map(|e| {
            let slot = match e.weight().dst {
                InputSlot::Operand(s) => Some(s),
                InputSlot::Captured => None,
            };
            (
                e.source().index(),
                e.target().index(),
                e.weight().src_slot,
                slot,
            )
        })
        .collect()
}

impl Graph {
    /// An empty graph named `name`.
    pub fn new(name: &str) -> Graph {
        Graph {
            name: name.to_string(),
            ..Graph::default()
        }
    }

    /// Adds a node; `Input` nodes and listed initializers are appended to [`Graph::graph_inputs`].
    pub fn add_node(&mut self, node: Node) -> NodeIndex {
        let listed = node.is_listed_input();
        let idx = self.push_node(node);
        if listed {
            self.graph_inputs.push(idx);
        }
        idx
    }

    /// Adds a node without touching the input list (loading builds that list itself).
    pub(crate) fn push_node(&mut self, mut node: Node) -> NodeIndex {
        node.seq = self.next_seq;
        self.next_seq += 1;
        self.g.add_node(node)
    }

    /// Removes a node and its edges (and its entry in [`Graph::graph_inputs`]).
    ///
    /// Graph outputs naming it are left for the caller to repoint; `verify` reports them.
    pub fn remove_node(&mut self, idx: NodeIndex) -> Option<Node> {
        self.graph_inputs.retain(|&i| i != idx);
        self.g.remove_node(idx)
    }

    /// The node at `idx`, if it exists.
    pub fn node(&self, idx: NodeIndex) -> Option<&Node> {
        self.g.node_weight(idx)
    }

    /// The node at `idx`, mutably, if it exists.
    pub fn node_mut(&mut self, idx: NodeIndex) -> Option<&mut Node> {
        self.g.node_weight_mut(idx)
    }

    /// Every node index, in index order.
    pub fn node_indices(&self) -> impl Iterator<Item = NodeIndex> + '_ {
        self.g.node_indices()
    }

    /// Every node with its index, in index order.
    pub fn nodes(&self) -> impl Iterator<Item = (NodeIndex, &Node)> + '_ {
        self.g
            .node_indices()
            .filter_map(move |i| self.g.node_weight(i).map(|n| (i, n)))
    }

    /// How many nodes (of every kind) the graph holds, not counting subgraphs.
    pub fn node_count(&self) -> usize {
        self.g.node_count()
    }

    /// The underlying petgraph, for algorithms this API does not offer.
    pub fn petgraph(&self) -> &StableDiGraph<Node, Edge> {
        &self.g
    }

    /// Feeds `src` into input `dst_slot` of `dst`, replacing what fed that slot before and
    /// growing the node's input arity if needed.
    pub fn connect(&mut self, src: ValueRef, dst: NodeIndex, dst_slot: usize) {
        self.disconnect(dst, dst_slot);
        if let Some(node) = self.g.node_weight_mut(dst) {
            node.input_arity = node.input_arity.max(dst_slot + 1);
        }
        self.g.add_edge(
            src.node,
            dst,
            Edge {
                src_slot: src.slot,
                dst: InputSlot::Operand(dst_slot),
            },
        );
    }

    /// Leaves input `slot` of `dst` absent; returns what fed it.
    pub fn disconnect(&mut self, dst: NodeIndex, slot: usize) -> Option<ValueRef> {
        let edge = self
            .g
            .edges_directed(dst, Direction::Incoming)
            .find(|e| e.weight().dst == InputSlot::Operand(slot))?;
        let (id, v) = (
            edge.id(),
            ValueRef::new(edge.source(), edge.weight().src_slot),
        );
        self.g.remove_edge(id);
        Some(v)
    }

    /// Records that a subgraph of `owner` reads `src` (by its name, through an `Outer` node).
    pub fn capture(&mut self, src: ValueRef, owner: NodeIndex) {
        if !self.captures(owner).contains(&src) {
            self.g.add_edge(
                src.node,
                owner,
                Edge {
                    src_slot: src.slot,
                    dst: InputSlot::Captured,
                },
            );
        }
    }

    /// Drops the record that `owner`'s subgraphs read `src` (once no body reads it any more).
    pub fn uncapture(&mut self, src: ValueRef, owner: NodeIndex) {
        let stale: Vec<_> = self
            .g
            .edges_directed(owner, Direction::Incoming)
            .filter(|e| {
                e.weight().dst == InputSlot::Captured
                    && e.source() == src.node
                    && e.weight().src_slot == src.slot
            })
            .map(|e| e.id())
            .collect();
        for id in stale {
            self.g.remove_edge(id);
        }
    }

    /// What feeds each input slot of `node`, in slot order (`None` for absent inputs).
    pub fn inputs(&self, node: NodeIndex) -> Vec<Option<ValueRef>> {
        let arity = self.g.node_weight(node).map_or(0, |n| n.input_arity);
        let mut slots = vec![None; arity];
        for e in self.g.edges_directed(node, Direction::Incoming) {
            if let InputSlot::Operand(s) = e.weight().dst {
                if let Some(slot) = slots.get_mut(s) {
                    *slot = Some(ValueRef::new(e.source(), e.weight().src_slot));
                }
            }
        }
        slots
    }

    /// What feeds input `slot` of `node`.
    pub fn input(&self, node: NodeIndex, slot: usize) -> Option<ValueRef> {
        self.g
            .edges_directed(node, Direction::Incoming)
            .find(|e| e.weight().dst == InputSlot::Operand(slot))
            .map(|e| ValueRef::new(e.source(), e.weight().src_slot))
    }

    /// The values of this graph that `node`'s subgraphs read, sorted.
    pub fn captures(&self, node: NodeIndex) -> Vec<ValueRef> {
        let mut v: Vec<ValueRef> = self
            .g
            .edges_directed(node, Direction::Incoming)
            .filter(|e| e.weight().dst == InputSlot::Captured)
            .map(|e| ValueRef::new(e.source(), e.weight().src_slot))
            .collect();
        v.sort_unstable();
        v
    }

    /// Every node reading `value`, with where it reads it, sorted (captures included).
    pub fn consumers(&self, value: ValueRef) -> Vec<(NodeIndex, InputSlot)> {
        let mut v: Vec<(NodeIndex, InputSlot)> = self
            .g
            .edges_directed(value.node, Direction::Outgoing)
            .filter(|e| e.weight().src_slot == value.slot)
            .map(|e| (e.target(), e.weight().dst))
            .collect();
        v.sort_unstable_by_key(|&(n, s)| {
            (
                n,
                match s {
                    InputSlot::Operand(i) => i,
                    InputSlot::Captured => usize::MAX,
                },
            )
        });
        v
    }

    /// True when `value` is a graph output or has a consumer.
    pub fn is_used(&self, value: ValueRef) -> bool {
        self.outputs.iter().any(|o| o.value == value) || !self.consumers(value).is_empty()
    }

    /// What is known about `value`.
    ///
    /// # Panics
    /// If `value` does not exist in this graph (a bug in the caller, like a bad index).
    pub fn value_info(&self, value: ValueRef) -> &ValueInfo {
        self.g
            .node_weight(value.node)
            .and_then(|n| n.outputs.get(value.slot))
            .unwrap_or_else(|| panic!("no value {value:?} in graph '{}'", self.name))
    }

    /// What is known about `value`, mutably.
    ///
    /// # Panics
    /// If `value` does not exist in this graph.
    pub fn value_info_mut(&mut self, value: ValueRef) -> &mut ValueInfo {
        let name = self.name.clone();
        self.g
            .node_weight_mut(value.node)
            .and_then(|n| n.outputs.get_mut(value.slot))
            .unwrap_or_else(|| panic!("no value {value:?} in graph '{name}'"))
    }

    /// The value named `name` in this graph (not enclosing scopes); `None` for `""`.
    pub fn find_value(&self, name: &str) -> Option<ValueRef> {
        if name.is_empty() {
            return None;
        }
        self.nodes().find_map(|(i, n)| {
            n.outputs
                .iter()
                .position(|o| o.name == name)
                .map(|slot| ValueRef::new(i, slot))
        })
    }

    /// A name no value of this graph has: `base` itself, or `base_1`, `base_2`, …
    pub fn fresh_name(&self, base: &str) -> String {
        let taken: std::collections::HashSet<&str> = self
            .g
            .node_weights()
            .flat_map(|n| n.outputs.iter().map(|o| o.name.as_str()))
            .collect();
        if !base.is_empty() && !taken.contains(base) {
            return base.to_string();
        }
        (1..)
            .map(|i| format!("{base}_{i}"))
            .find(|n| !taken.contains(n.as_str()))
            .unwrap_or_default()
    }

    /// Makes every reader of `old` (inputs, captures, graph outputs) read `new` instead.
    ///
    /// Subgraphs that captured `old` by name are rewritten to read `new`'s name.
    pub fn replace_all_uses(&mut self, old: ValueRef, new: ValueRef) {
        if old == new {
            return;
        }
        let uses: Vec<_> = self
            .g
            .edges_directed(old.node, Direction::Outgoing)
            .filter(|e| e.weight().src_slot == old.slot)
            .map(|e| (e.id(), e.target(), e.weight().dst))
            .collect();
        let old_name = self.value_name(old).to_string();
        let new_name = self.value_name(new).to_string();
        for (id, target, dst) in uses {
            self.g.remove_edge(id);
            match dst {
                InputSlot::Operand(_) => {
                    self.g.add_edge(
                        new.node,
                        target,
                        Edge {
                            src_slot: new.slot,
                            dst,
                        },
                    );
                }
                InputSlot::Captured => {
                    self.capture(new, target);
                    if let Some(owner) = self.g.node_weight_mut(target) {
                        for body in owner.subgraphs_mut() {
                            body.rename_outer(&old_name, &new_name);
                        }
                    }
                }
            }
        }
        for o in &mut self.outputs {
            if o.value == old {
                o.value = new;
            }
        }
    }

    /// Renames a value, and the subgraphs that capture it by name.
    pub fn rename_value(&mut self, value: ValueRef, new_name: &str) {
        let Some(info) = self
            .g
            .node_weight_mut(value.node)
            .and_then(|n| n.outputs.get_mut(value.slot))
        else {
            return;
        };
        let old_name = std::mem::replace(&mut info.name, new_name.to_string());
        let owners: Vec<NodeIndex> = self
            .consumers(value)
            .into_iter()
            .filter(|&(_, s)| s == InputSlot::Captured)
            .map(|(n, _)| n)
            .collect();
        for owner in owners {
            if let Some(owner) = self.g.node_weight_mut(owner) {
                for body in owner.subgraphs_mut() {
                    body.rename_outer(&old_name, new_name);
                }
            }
        }
    }

    /// Inside a body: the `Outer` node for `old` now stands for `new` (merged with an
    /// existing `Outer` node for `new`, if there is one).
    fn rename_outer(&mut self, old: &str, new: &str) {
        let find = |g: &Graph, name: &str| {
            g.nodes()
                .find(|(_, n)| {
                    matches!(n.kind, NodeKind::Outer)
                        && n.outputs.first().is_some_and(|o| o.name == name)
                })
                .map(|(i, _)| i)
        };
        let Some(old_idx) = find(self, old) else {
            return;
        };
        match find(self, new) {
            Some(new_idx) => {
                self.replace_all_uses(ValueRef::new(old_idx, 0), ValueRef::new(new_idx, 0));
                self.remove_node(old_idx);
            }
            None => self.rename_value(ValueRef::new(old_idx, 0), new),
        }
    }

    /// The name of `value` (empty if it has none or does not exist).
    pub fn value_name(&self, value: ValueRef) -> &str {
        self.g
            .node_weight(value.node)
            .and_then(|n| n.outputs.get(value.slot))
            .map_or("", |o| o.name.as_str())
    }

    /// Every node in a deterministic topological order (captures count as dependencies).
    ///
    /// Among ready nodes the one added earliest goes first, so a model that was already sorted
    /// keeps its order. Nodes on a cycle (which `verify` rejects) come last, in insertion order.
    pub fn topo_order(&self) -> Vec<NodeIndex> {
        let (mut order, mut rest) = self.kahn();
        rest.sort_unstable_by_key(|&i| self.g[i].seq);
        order.extend(rest);
        order
    }

    /// Kahn's algorithm: (sorted, nodes left over).
    ///
    /// Among ready nodes, inputs, initializers and outer values go first (they are not written
    /// as nodes, and taking them first frees every operator that only waits for them); then the
    /// operator inserted earliest.
    pub(crate) fn kahn(&self) -> (Vec<NodeIndex>, Vec<NodeIndex>) {
        let key = |i: NodeIndex| Reverse((self.g[i].is_operator(), self.g[i].seq, i));
        let mut indegree: HashMap<NodeIndex, usize> = HashMap::new();
        let mut ready = BinaryHeap::new();
        for i in self.g.node_indices() {
            let d = self.g.edges_directed(i, Direction::Incoming).count();
            if d == 0 {
                ready.push(key(i));
            } else {
                indegree.insert(i, d);
            }
        }
        let mut order = Vec::with_capacity(self.g.node_count());
        while let Some(Reverse((_, _, i))) = ready.pop() {
            order.push(i);
            for e in self.g.edges_directed(i, Direction::Outgoing) {
                if let Some(d) = indegree.get_mut(&e.target()) {
                    *d -= 1;
                    if *d == 0 {
                        indegree.remove(&e.target());
                        ready.push(key(e.target()));
                    }
                }
            }
        }
        (order, indegree.into_keys().collect())
    }

    /// How many subgraphs this graph holds, at every depth.
    pub fn subgraph_count(&self) -> usize {
        self.g
            .node_weights()
            .flat_map(|n| n.subgraphs())
            .map(|s| 1 + s.subgraph_count())
            .sum()
    }

    /// The value_info entries that name nothing they could annotate, as read.
    pub fn unattached_value_info(&self) -> impl Iterator<Item = &ValueInfoProto> {
        self.value_info_layout.iter().filter_map(|e| match e {
            ValueInfoEntry::Unattached(p) => Some(p),
            ValueInfoEntry::Attached(_) => None,
        })
    }

    /// How errors name node `idx`.
    pub(crate) fn label(&self, idx: NodeIndex) -> String {
        self.g
            .node_weight(idx)
            .map_or_else(|| format!("#{}", idx.index()), |n| n.label(idx.index()))
    }
}

impl std::ops::Index<NodeIndex> for Graph {
    type Output = Node;

    /// The node at `idx`; panics if it does not exist (like petgraph's indexing).
    fn index(&self, idx: NodeIndex) -> &Node {
        &self.g[idx]
    }
}

impl std::ops::IndexMut<NodeIndex> for Graph {
    /// The node at `idx`, mutably; panics if it does not exist.
    fn index_mut(&mut self, idx: NodeIndex) -> &mut Node {
        &mut self.g[idx]
    }
}
