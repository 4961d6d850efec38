//! Fresh value names that are unique across the whole model, so a name made in one graph
//! never shadows a value of an enclosing or nested graph.

use std::collections::HashSet;

use crate::ir::Graph;

/// Every value name of a model, at every depth, plus the names handed out since.
#[derive(Debug, Default)]
pub(crate) struct NameSet(HashSet<String>);

impl NameSet {
    /// The names of `graph` and all its subgraphs.
    pub(crate) fn of(graph: &Graph) -> NameSet {
        let mut set = NameSet::default();
        set.collect(graph);
        set
    }

    fn collect(&mut self, graph: &Graph) {
        for (_, node) in graph.nodes() {
            self.0.extend(node.outputs.iter().map(|o| o.name.clone()));
            for sub in node.subgraphs() {
                self.collect(sub);
            }
        }
    }

    /// `base` or `base_1`, `base_2`, … whichever is free; the name is taken from then on.
    pub(crate) fn fresh(&mut self, base: &str) -> String {
        let name = if !self.0.contains(base) {
            base.to_string()
        } else {
            (1..)
                .map(|i| format!("{base}_{i}"))
                .find(|n| !self.0.contains(n))
                .unwrap_or_default()
        };
        self.0.insert(name.clone());
        name
    }
}
