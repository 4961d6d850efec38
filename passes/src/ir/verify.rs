//! [`Graph::verify`]: the invariants every pass must leave intact.

use std::collections::{HashMap, HashSet};

use petgraph::visit::{EdgeRef, IntoEdgeReferences};

use super::error::IrError;
use super::from_proto::cycle_error;
use super::graph::Graph;
use super::node::{InputSlot, NodeKind};

impl Graph {
    /// Checks the graph and, recursively, its subgraphs.
    ///
    /// - acyclic (capture edges included);
    /// - every edge's source slot exists and its input slot is below the consumer's arity;
    /// - each input slot is fed at most once, and only by a value with a name;
    /// - value names are unique within each graph (empty names aside);
    /// - [`Graph::graph_inputs`] lists exactly the inputs and listed initializers, once each;
    /// - graph outputs name existing values;
    /// - `Outer` nodes appear only in subgraphs, and the owning node captures each of them.
    pub fn verify(&self) -> Result<(), IrError> {
        self.verify_at(&[])
    }

    /// `captured`: the names the node owning this body captures (none for the main graph,
    /// so an `Outer` node there is an error).
    fn verify_at(&self, captured: &[String]) -> Result<(), IrError> {
        let invalid = |problem: String| IrError::Invalid {
            graph: self.name.clone(),
            problem,
        };
        let (_, left) = self.kahn();
        if !left.is_empty() {
            return Err(cycle_error(self, &left));
        }

        let mut names: HashMap<&str, String> = HashMap::new();
        for (idx, node) in self.nodes() {
            for (slot, o) in node.outputs.iter().enumerate() {
                if o.name.is_empty() {
                    continue;
                }
                let here = format!("output {slot} of node {}", self.label(idx));
                if let Some(first) = names.insert(o.name.as_str(), here.clone()) {
                    return Err(invalid(format!(
                        "value '{}' is produced twice: by {first} and by {here}",
                        o.name
                    )));
                }
            }
            if matches!(node.kind, NodeKind::Outer) {
                let name = node.outputs.first().map_or("", |o| o.name.as_str());
                if node.outputs.len() != 1 || !captured.iter().any(|c| c == name) {
                    return Err(invalid(format!(
                        "outer value '{name}' is not captured by the node owning this graph"
                    )));
                }
            }
            if matches!(
                node.kind,
                NodeKind::Input | NodeKind::Constant { .. } | NodeKind::SparseConstant { .. }
            ) && node.outputs.len() != 1
            {
                return Err(invalid(format!(
                    "node {} must have exactly one output",
                    self.label(idx)
                )));
            }
        }

        let mut fed = HashSet::new();
        for e in (&self.g).edge_references() {
            let (src, dst) = (&self.g[e.source()], &self.g[e.target()]);
            let w = e.weight();
            let Some(out) = src.outputs.get(w.src_slot) else {
                return Err(invalid(format!(
                    "node {} reads output {} of node {}, which has {} output(s)",
                    self.label(e.target()),
                    w.src_slot,
                    self.label(e.source()),
                    src.outputs.len()
                )));
            };
            if out.name.is_empty() {
                return Err(invalid(format!(
                    "node {} reads output {} of node {}, which has no name",
                    self.label(e.target()),
                    w.src_slot,
                    self.label(e.source())
                )));
            }
            match w.dst {
                InputSlot::Operand(s) => {
                    if s >= dst.input_arity {
                        return Err(invalid(format!(
                            "node {} has {} input(s) but '{}' feeds input {s}",
                            self.label(e.target()),
                            dst.input_arity,
                            out.name
                        )));
                    }
                    if !fed.insert((e.target(), s)) {
                        return Err(invalid(format!(
                            "input {s} of node {} is fed twice",
                            self.label(e.target())
                        )));
                    }
                }
                InputSlot::Captured => {
                    if dst.subgraphs().next().is_none() {
                        return Err(invalid(format!(
                            "node {} captures '{}' but has no subgraph",
                            self.label(e.target()),
                            out.name
                        )));
                    }
                }
            }
        }

        let mut listed = HashSet::new();
        for &i in &self.graph_inputs {
            let ok = self.node(i).is_some_and(|n| n.is_listed_input());
            if !ok || !listed.insert(i) {
                return Err(invalid(format!(
                    "graph input list entry {} is not an input node, or is listed twice",
                    self.label(i)
                )));
            }
        }
        for (idx, node) in self.nodes() {
            if node.is_listed_input() && !listed.contains(&idx) {
                return Err(invalid(format!(
                    "input node {} is missing from the graph input list",
                    self.label(idx)
                )));
            }
        }
        for (i, o) in self.outputs.iter().enumerate() {
            let name = self
                .node(o.value.node)
                .and_then(|n| n.outputs.get(o.value.slot))
                .map(|v| v.name.as_str());
            if name.is_none_or(str::is_empty) {
                return Err(invalid(format!(
                    "graph output #{i} ('{}') names no value with a name",
                    o.info.name
                )));
            }
        }
        for (idx, node) in self.nodes() {
            let caps: Vec<String> = self
                .captures(idx)
                .into_iter()
                .map(|v| self.value_name(v).to_string())
                .collect();
            for a in &node.attributes {
                for body in a.value.graphs() {
                    body.verify_at(&caps).map_err(|e| IrError::InSubgraph {
                        owner: self.label(idx),
                        attribute: a.name.clone(),
                        source: Box::new(e),
                    })?;
                }
            }
        }
        Ok(())
    }
}
