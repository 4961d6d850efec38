//! Read-only questions passes ask of a graph: is this value a constant, what does it hold.

use super::graph::Graph;
use super::node::{ConstantOrigin, NodeKind};
use super::value::ValueRef;
use super::NodeIndex;
use crate::tensor::Tensor;

impl Graph {
    /// The tensor a value always holds, if it is produced by a constant that a caller cannot
    /// override (an initializer also listed as a graph input is a default, not a constant).
    pub fn constant(&self, value: ValueRef) -> Option<&Tensor> {
        match &self.node(value.node)?.kind {
            NodeKind::Constant {
                value: tensor,
                origin,
            } => {
                let overridable = matches!(
                    origin,
                    ConstantOrigin::Initializer {
                        listed_as_input: true,
                        ..
                    }
                );
                (!overridable && value.slot == 0).then_some(tensor)
            }
            _ => None,
        }
    }

    /// The constant feeding input `slot` of `node`, if that input is present and constant.
    pub fn constant_input(&self, node: NodeIndex, slot: usize) -> Option<&Tensor> {
        self.constant(self.input(node, slot)?)
    }
}

#[cfg(test)]
mod tests {
    use crate::ir::{Graph, Node, ValueInfo, ValueRef};
    use crate::tensor::{DataType, Tensor};

    #[test]
    fn constants_are_found_and_inputs_are_not() {
        let mut g = Graph::new("g");
        let w = g.add_node(Node::initializer("w", Tensor::scalar(2.0f32)));
        let x = g.add_node(Node::input(ValueInfo::tensor("x", DataType::Float, &[])));
        let mul = g.add_node(Node::op("Mul", "m", &["y"]));
        g.connect(ValueRef::new(x, 0), mul, 0);
        g.connect(ValueRef::new(w, 0), mul, 1);
        assert!(g.constant_input(mul, 0).is_none());
        assert_eq!(
            g.constant_input(mul, 1).map(|t| t.to_vec::<f32>().unwrap()),
            Some(vec![2.0])
        );
        assert!(g.constant_input(mul, 2).is_none());
    }
}
