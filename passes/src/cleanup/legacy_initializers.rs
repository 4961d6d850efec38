//! `unlist-initializers`: IR < 4 models list every initializer as a graph input too; ONNX
//! Runtime treats those as constants (a caller cannot override them), so Kiln does the same,
//! explicitly: it unlists them and raises the IR version to 4.
//!
//! Until this runs, an initializer listed as an input is an overridable default to every
//! pass (`Graph::constant` says no), so nothing folds into it; afterwards Conv+BatchNorm and
//! the other weight rewrites see the constants the runtime has always seen. The old zoo models
//! (Caffe2, CNTK exports) are the ones this helps.

use crate::ir::{ConstantOrigin, Graph, Model, NodeKind};
use crate::pipeline::{Changes, Pass, PassError};

/// The first IR version in which an initializer need not be a graph input.
const IR_INITIALIZERS_APART: i64 = 4;

/// Unlists initializers that IR < 4 models also list as inputs.
#[derive(Debug, Clone, Copy, Default)]
pub struct UnlistInitializers;

impl Pass for UnlistInitializers {
    fn name(&self) -> &'static str {
        "unlist-initializers"
    }

    fn run(&self, model: &mut Model) -> Result<Changes, PassError> {
        let mut changes = Changes::none();
        if model.ir_version >= IR_INITIALIZERS_APART {
            return Ok(changes);
        }
        model.graph.try_for_each_graph_mut::<PassError>(&mut |g| {
            changes.add("unlisted", unlist(g));
            Ok(())
        })?;
        model.ir_version = IR_INITIALIZERS_APART;
        changes.add("ir version raised", 1);
        Ok(changes)
    }
}

fn unlist(graph: &mut Graph) -> usize {
    let listed: Vec<_> = graph
        .graph_inputs
        .iter()
        .copied()
        .filter(|&i| {
            matches!(
                graph.node(i).map(|n| &n.kind),
                Some(NodeKind::Constant {
                    origin: ConstantOrigin::Initializer {
                        listed_as_input: true,
                        ..
                    },
                    ..
                })
            )
        })
        .collect();
    for &idx in &listed {
        if let Some(NodeKind::Constant {
            origin: ConstantOrigin::Initializer {
                listed_as_input, ..
            },
            ..
        }) = graph.node_mut(idx).map(|n| &mut n.kind)
        {
            *listed_as_input = false;
        }
    }
    graph.graph_inputs.retain(|i| !listed.contains(i));
    listed.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{GraphOutput, Node, ValueInfo, ValueRef};
    use crate::tensor::{DataType, Tensor};

    fn model(ir: i64) -> Model {
        let mut m = Model::new(9);
        m.ir_version = ir;
        let g = &mut m.graph;
        let x = g.add_node(Node::input(ValueInfo::tensor("x", DataType::Float, &[])));
        let mut w = Node::initializer("w", Tensor::scalar(2.0f32));
        if let NodeKind::Constant {
            origin: ConstantOrigin::Initializer {
                listed_as_input, ..
            },
            ..
        } = &mut w.kind
        {
            *listed_as_input = true;
        }
        let w = g.add_node(w);
        let mul = g.add_node(Node::op("Mul", "m", &["y"]));
        g.connect(ValueRef::new(x, 0), mul, 0);
        g.connect(ValueRef::new(w, 0), mul, 1);
        g.outputs.push(GraphOutput {
            value: ValueRef::new(mul, 0),
            info: ValueInfo::new("y"),
        });
        m
    }

    #[test]
    fn ir3_listed_initializers_become_constants() {
        let mut m = model(3);
        assert_eq!(m.graph.graph_inputs.len(), 2);
        assert!(m
            .graph
            .constant_input(m.graph.outputs[0].value.node, 1)
            .is_none());
        let c = UnlistInitializers.run(&mut m).unwrap();
        m.graph.verify().unwrap();
        assert_eq!(c.get("unlisted"), 1);
        assert_eq!(m.ir_version, 4);
        assert_eq!(m.graph.graph_inputs.len(), 1);
        assert!(m
            .graph
            .constant_input(m.graph.outputs[0].value.node, 1)
            .is_some());
        let p = m.to_proto();
        let g = p.graph.unwrap();
        assert_eq!(g.input.len(), 1);
        assert_eq!(g.initializer.len(), 1);
    }

    #[test]
    fn ir4_overridable_defaults_stay_inputs() {
        let mut m = model(7);
        let c = UnlistInitializers.run(&mut m).unwrap();
        assert!(c.is_empty());
        assert_eq!(m.graph.graph_inputs.len(), 2);
        assert_eq!(m.ir_version, 7);
    }
}
