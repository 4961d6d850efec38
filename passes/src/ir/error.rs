//! Errors raised while converting ONNX protobufs to the IR and while verifying a graph.

use thiserror::Error;

use crate::tensor::TensorError;

/// Everything that can be wrong with a model's graph.
///
/// Nodes are named `'name' (OpType)`, or `#index OpType` when the node has no name (the index
/// is the node's position in the file while loading, its graph index when verifying).
#[derive(Debug, Error, Clone, PartialEq)]
pub enum IrError {
    /// The model has no graph at all.
    #[error("the model has no graph")]
    MissingGraph,
    /// A node reads a name that nothing in scope produces.
    #[error("node {node} reads '{value}', which no node, graph input or initializer produces")]
    UnknownValue {
        /// The reading node.
        node: String,
        /// The name it reads.
        value: String,
    },
    /// Two producers give a value the same name.
    #[error("value '{value}' is produced twice: by {first} and by {second}")]
    Duplicate {
        /// The name.
        value: String,
        /// The first producer (e.g. `initializer`, `node 'a' (Add)`).
        first: String,
        /// The second producer.
        second: String,
    },
    /// The graph (with capture edges) is not acyclic.
    #[error("the graph has a cycle through node(s) {nodes}")]
    Cycle {
        /// The nodes left over by a topological sort, comma-separated.
        nodes: String,
    },
    /// A graph output names no value.
    #[error("graph output '{name}' names no node output, graph input or initializer")]
    UnknownOutput {
        /// The output's name.
        name: String,
    },
    /// A tensor's declaration or data is invalid.
    #[error("{what}: {source}")]
    Tensor {
        /// Which tensor (e.g. `initializer 'w'`).
        what: String,
        /// What is wrong with it.
        #[source]
        source: TensorError,
    },
    /// An attribute's `type` is not an ONNX attribute type (or is unset and nothing is set).
    #[error("node {node} attribute '{attribute}' has unknown type {ty}")]
    UnknownAttributeType {
        /// The node holding the attribute.
        node: String,
        /// The attribute's name.
        attribute: String,
        /// The `type` number found.
        ty: i32,
    },
    /// A message is structurally invalid in a way no other variant covers.
    #[error("{0}")]
    Malformed(String),
    /// An error inside a subgraph, with the node and attribute that own it.
    #[error("in attribute '{attribute}' of node {owner}: {source}")]
    InSubgraph {
        /// The node owning the subgraph.
        owner: String,
        /// The GRAPH or GRAPHS attribute.
        attribute: String,
        /// The error inside.
        #[source]
        source: Box<IrError>,
    },
    /// `Graph::verify` found a broken invariant.
    #[error("invalid graph '{graph}': {problem}")]
    Invalid {
        /// The graph's name.
        graph: String,
        /// What is broken.
        problem: String,
    },
}

/// How errors name a node: `'name' (OpType)`, or `#index OpType` when it has no name.
pub(crate) fn node_label(name: &str, op_type: &str, index: usize) -> String {
    if name.is_empty() {
        format!("#{index} {op_type}")
    } else {
        format!("'{name}' ({op_type})")
    }
}
