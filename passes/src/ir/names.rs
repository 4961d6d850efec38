//! Fresh names that are unique across a whole model, so a name added in one graph never
//! shadows a value of an enclosing or nested graph. Collected once: asking
//! [`Graph::fresh_name`](super::Graph::fresh_name) for every new value of a large rewrite
//! would scan the graph each time.

use std::collections::HashSet;

use super::Graph;

/// The value and node names of a graph and all its bodies, plus those handed out since.
#[derive(Debug, Default)]
pub struct NameSet {
    values: HashSet<String>,
    nodes: HashSet<String>,
}

impl NameSet {
    /// The names used in `graph` and its subgraphs, at every depth.
    pub fn of(graph: &Graph) -> NameSet {
        let mut set = NameSet::default();
        set.collect(graph);
        set
    }

    fn collect(&mut self, graph: &Graph) {
        for (_, node) in graph.nodes() {
            self.values.extend(
                node.outputs
                    .iter()
                    .filter(|o| !o.name.is_empty())
                    .map(|o| o.name.clone()),
            );
            if !node.name.is_empty() {
                self.nodes.insert(node.name.clone());
            }
            for sub in node.subgraphs() {
                self.collect(sub);
            }
        }
    }

    /// A value name: `base`, else `base_1`, `base_2`, … whichever is free; taken from then on.
    pub fn fresh(&mut self, base: &str) -> String {
        take(&mut self.values, base)
    }

    /// A node name, by the same rule.
    pub fn fresh_node(&mut self, base: &str) -> String {
        take(&mut self.nodes, base)
    }
}

fn take(taken: &mut HashSet<String>, base: &str) -> String {
    let name = if !base.is_empty() && !taken.contains(base) {
        base.to_string()
    } else {
        (1..)
            .map(|i| format!("{base}_{i}"))
            .find(|n| !taken.contains(n))
            .unwrap_or_default()
    };
    taken.insert(name.clone());
    name
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Node;

    #[test]
    fn fresh_names_skip_taken_ones_at_every_depth() {
        let mut g = Graph::new("g");
        g.add_node(Node::op("Relu", "relu", &["x"]));
        let mut names = NameSet::of(&g);
        assert_eq!(names.fresh("x"), "x_1");
        assert_eq!(names.fresh("x"), "x_2");
        assert_eq!(names.fresh("y"), "y");
        assert_eq!(names.fresh_node("relu"), "relu_1");
        assert_eq!(names.fresh(""), "_1");
    }
}
