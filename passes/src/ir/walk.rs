//! Visiting a graph together with every subgraph nested in it.

use super::graph::Graph;
use super::NodeIndex;

impl Graph {
    /// Calls `f` on every subgraph (innermost first), then on this graph, stopping at the
    /// first error. Bodies come first so that a rewrite there (a body that stops reading an
    /// outer value) is visible when the enclosing graph is processed.
    pub fn try_for_each_graph_mut<E>(
        &mut self,
        f: &mut dyn FnMut(&mut Graph) -> Result<(), E>,
    ) -> Result<(), E> {
        let owners: Vec<NodeIndex> = self
            .nodes()
            .filter(|(_, n)| n.subgraphs().next().is_some())
            .map(|(i, _)| i)
            .collect();
        for owner in owners {
            if let Some(node) = self.node_mut(owner) {
                for body in node.subgraphs_mut() {
                    body.try_for_each_graph_mut(f)?;
                }
            }
        }
        f(self)
    }
}

#[cfg(test)]
mod tests {
    use crate::ir::{AttrValue, Graph, Node};

    #[test]
    fn bodies_come_before_their_owner() {
        let mut inner = Graph::new("inner");
        inner.add_node(Node::op("Relu", "", &["r"]));
        let mut outer = Graph::new("outer");
        outer.add_node(
            Node::op("If", "if", &["o"])
                .with_attr("then_branch", AttrValue::Graph(Box::new(inner))),
        );
        let mut seen = Vec::new();
        outer
            .try_for_each_graph_mut(&mut |g| {
                seen.push(g.name.clone());
                Ok::<(), ()>(())
            })
            .unwrap();
        assert_eq!(seen, ["inner", "outer"]);
        let stopped = outer.try_for_each_graph_mut(&mut |g| {
            if g.name == "inner" {
                Err("stop")
            } else {
                Ok(())
            }
        });
        assert_eq!(stopped, Err("stop"));
    }
}
