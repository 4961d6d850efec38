//! Fresh value names, unique across the whole model (every graph and subgraph), so a name
//! added inside a body never shadows one of an enclosing scope.

use std::collections::HashSet;

use crate::ir::Graph;

/// Every value name in use, and a way to take new ones.
#[derive(Debug, Default)]
pub(super) struct Names {
    taken: HashSet<String>,
}

impl Names {
    /// The names of every value in `graph` and its subgraphs, at every depth.
    pub(super) fn of(graph: &Graph) -> Names {
        let mut names = Names::default();
        names.collect(graph);
        names
    }

    fn collect(&mut self, graph: &Graph) {
        for (_, node) in graph.nodes() {
            for o in &node.outputs {
                if !o.name.is_empty() {
                    self.taken.insert(o.name.clone());
                }
            }
            for body in node.subgraphs() {
                self.collect(body);
            }
        }
    }

    /// `base` if no value has it yet, else `base_1`, `base_2`, …; the name is taken.
    pub(super) fn fresh(&mut self, base: &str) -> String {
        let name = if !base.is_empty() && !self.taken.contains(base) {
            base.to_string()
        } else {
            (1..)
                .map(|i| format!("{base}_{i}"))
                .find(|n| !self.taken.contains(n))
                .unwrap_or_default()
        };
        self.taken.insert(name.clone());
        name
    }
}
