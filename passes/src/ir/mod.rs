//! Kiln's graph IR and its lossless conversion from and to ONNX `ModelProto`.
//!
//! # Shape of the graph
//!
//! A [`Graph`] is a petgraph `StableDiGraph<Node, Edge>`. Every value has a producer node —
//! graph inputs are [`NodeKind::Input`] nodes, initializers and ONNX `Constant` operators are
//! [`NodeKind::Constant`] nodes, sparse initializers [`NodeKind::SparseConstant`] — so a value
//! is addressed as [`ValueRef`] `{ node, slot }` and its name lives in the producer's
//! `outputs[slot]`. An edge carries `src_slot → InputSlot::Operand(i)`. Absent optional
//! inputs (empty names in ONNX) have no edge; [`Node::input_arity`] remembers how many slots
//! the node has, trailing empty ones included.
//!
//! # Subgraphs
//!
//! GRAPH / GRAPHS attributes hold nested [`Graph`]s. A name a body reads without producing it
//! is resolved in the enclosing graphs (innermost first). Inside the body it becomes a
//! [`NodeKind::Outer`] node; in each enclosing graph down to the producer, the node owning
//! the (intermediate) body gets an [`InputSlot::Captured`] edge from the value, so dead-code
//! removal and topological order see the dependency. The link between a capture edge and
//! the `Outer` node is the value's name, as in ONNX; [`Graph::rename_value`] and
//! [`Graph::replace_all_uses`] keep bodies in step. A body name that shadows an enclosing one
//! resolves locally (ONNX forbids shadowing, but it is unambiguous, so loading accepts it).
//!
//! # Lossless round trip
//!
//! `Model::from_proto(p)?.to_proto() == p` for valid models, except that nodes out of
//! topological order come back sorted. What makes that hold:
//! - Operators are written in a Kahn order that prefers the earliest inserted node, so a
//!   sorted model keeps its order; inputs, outputs, initializers and value_info keep file
//!   order; new things go after.
//! - Constants remember their origin ([`ConstantOrigin`]): an initializer (and whether it
//!   was also a graph input), or a `Constant` operator and which `value*` attribute it used.
//!   Unusual `Constant` operators (`sparse_value`, stray fields) stay ordinary operators.
//! - Tensors remember the proto they were read from ([`TensorSource`]); it is written back
//!   while the decoded tensor is unchanged, so typed fields, doc strings and names survive.
//! - An attribute whose `type` was unset (old exporters) is saved unset again.
//! - value_info entries are attached to the value they name (its [`ValueInfo`] keeps the full
//!   `TypeProto`); entries naming nothing attachable (unknown names, graph inputs, repeats)
//!   are kept and written back in place.
//! - Functions, training info and device configurations are kept verbatim.

mod attribute;
mod error;
mod from_proto;
mod graph;
mod model;
mod names;
mod node;
mod query;
mod stats;
mod to_proto;
mod value;
mod verify;
mod walk;

#[cfg(test)]
mod tests;

pub use attribute::{AttrSource, AttrValue, Attribute};
pub use error::IrError;
pub use graph::{Graph, GraphOutput};
pub use model::Model;
pub use names::NameSet;
pub use node::{ConstantAttr, ConstantOrigin, Edge, InputSlot, Node, NodeKind, TensorSource};
pub use petgraph::stable_graph::NodeIndex;
pub use stats::GraphStats;
pub use value::{describe_type, Dim, ValueInfo, ValueRef};
