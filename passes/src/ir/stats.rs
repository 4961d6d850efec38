//! Summary numbers about a graph, for `kiln inspect` and reports.

use std::collections::BTreeMap;

use super::graph::Graph;
use super::node::NodeKind;

/// Counts over a graph and all its subgraphs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GraphStats {
    /// Operators (`Op` nodes), not inputs or constants.
    pub nodes: usize,
    /// Operators by type; non-default domains prefix the type (`com.microsoft.FusedConv`).
    pub op_histogram: BTreeMap<String, usize>,
    /// Dense constants (initializers and `Constant` operators).
    pub constants: usize,
    /// Elements in all dense constants.
    pub parameters: u64,
    /// Payload bytes of all dense constants.
    pub parameter_bytes: u64,
    /// Subgraphs, at every depth.
    pub subgraphs: usize,
}

impl Graph {
    /// Counts operators, constants and subgraphs, nested bodies included.
    ///
    /// Sparse initializers are not counted as parameters (Kiln keeps them opaque).
    pub fn stats(&self) -> GraphStats {
        let mut s = GraphStats::default();
        self.add_stats(&mut s);
        s
    }

    fn add_stats(&self, s: &mut GraphStats) {
        for (_, node) in self.nodes() {
            match &node.kind {
                NodeKind::Op {
                    op_type, domain, ..
                } => {
                    s.nodes += 1;
                    let key = if domain.is_empty() || domain == "ai.onnx" {
                        op_type.clone()
                    } else {
                        format!("{domain}.{op_type}")
                    };
                    *s.op_histogram.entry(key).or_default() += 1;
                }
                NodeKind::Constant { value, .. } => {
                    s.constants += 1;
                    s.parameters += value.len() as u64;
                    s.parameter_bytes += value.byte_size() as u64;
                }
                _ => {}
            }
            for body in node.subgraphs() {
                s.subgraphs += 1;
                body.add_stats(s);
            }
        }
    }
}
