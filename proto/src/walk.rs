//! Visiting every `TensorProto` of a model, wherever ONNX lets one live.
//!
//! Tensors hide in many places besides `graph.initializer`: Constant nodes (paddle2onnx puts
//! every weight there), any node attribute (`t`, `tensors`, sparse ones), sparse initializers,
//! the bodies of If/Loop/Scan (graph attributes, recursively), local functions (nodes and
//! attribute defaults) and training graphs. Loading, saving and passes that touch weights must
//! all see the same set, so the walk lives in one place.

use crate::onnx::{
    AttributeProto, FunctionProto, GraphProto, ModelProto, NodeProto, SparseTensorProto,
    TensorProto,
};

/// Which part of a sparse tensor a visited tensor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SparsePart {
    /// `SparseTensorProto.values`.
    Values,
    /// `SparseTensorProto.indices`.
    Indices,
}

/// Where a visited tensor sits, so messages can name tensors that have no name of their own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TensorSite<'a> {
    /// The node whose attribute holds the tensor: its name, or its first output if unnamed.
    pub node: Option<&'a str>,
    /// The attribute holding the tensor.
    pub attribute: Option<&'a str>,
    /// Set when the tensor is part of a sparse tensor.
    pub sparse: Option<SparsePart>,
}

impl TensorSite<'_> {
    /// A name for messages: the tensor's own name, else where it sits.
    pub fn describe(&self, tensor: &TensorProto) -> String {
        let mut text = if !tensor.name.is_empty() {
            tensor.name.clone()
        } else {
            match (self.node, self.attribute) {
                (Some(node), Some(attr)) => format!("<node '{node}' attribute '{attr}'>"),
                (None, Some(attr)) => format!("<attribute '{attr}'>"),
                (Some(node), None) => format!("<node '{node}'>"),
                (None, None) => "<unnamed>".to_string(),
            }
        };
        match self.sparse {
            Some(SparsePart::Values) => text.push_str(" (sparse values)"),
            Some(SparsePart::Indices) => text.push_str(" (sparse indices)"),
            None => {}
        }
        text
    }
}

/// Calls `f` on every tensor of `model`, mutably, stopping at the first error.
pub fn try_for_each_tensor_mut<E, F>(model: &mut ModelProto, mut f: F) -> Result<(), E>
where
    F: FnMut(&mut TensorProto, &TensorSite<'_>) -> Result<(), E>,
{
    if let Some(graph) = model.graph.as_mut() {
        graph_mut(graph, &mut f)?;
    }
    for info in &mut model.training_info {
        if let Some(graph) = info.initialization.as_mut() {
            graph_mut(graph, &mut f)?;
        }
        if let Some(graph) = info.algorithm.as_mut() {
            graph_mut(graph, &mut f)?;
        }
    }
    for function in &mut model.functions {
        function_mut(function, &mut f)?;
    }
    Ok(())
}

/// Calls `f` on every tensor of `model`, mutably.
pub fn for_each_tensor_mut<F>(model: &mut ModelProto, mut f: F)
where
    F: FnMut(&mut TensorProto, &TensorSite<'_>),
{
    let _ = try_for_each_tensor_mut::<std::convert::Infallible, _>(model, |t, site| {
        f(t, site);
        Ok(())
    });
}

/// Calls `f` on every tensor of one graph (and its subgraphs), mutably, stopping at the first error.
pub fn try_for_each_graph_tensor_mut<E, F>(graph: &mut GraphProto, mut f: F) -> Result<(), E>
where
    F: FnMut(&mut TensorProto, &TensorSite<'_>) -> Result<(), E>,
{
    graph_mut(graph, &mut f)
}

/// Calls `f` on every tensor of `model`, read-only, stopping at the first error.
pub fn try_for_each_tensor<E, F>(model: &ModelProto, mut f: F) -> Result<(), E>
where
    F: FnMut(&TensorProto, &TensorSite<'_>) -> Result<(), E>,
{
    if let Some(graph) = model.graph.as_ref() {
        graph_ref(graph, &mut f)?;
    }
    for info in &model.training_info {
        if let Some(graph) = info.initialization.as_ref() {
            graph_ref(graph, &mut f)?;
        }
        if let Some(graph) = info.algorithm.as_ref() {
            graph_ref(graph, &mut f)?;
        }
    }
    for function in &model.functions {
        function_ref(function, &mut f)?;
    }
    Ok(())
}

/// Calls `f` on every tensor of `model`, read-only.
pub fn for_each_tensor<F>(model: &ModelProto, mut f: F)
where
    F: FnMut(&TensorProto, &TensorSite<'_>),
{
    let _ = try_for_each_tensor::<std::convert::Infallible, _>(model, |t, site| {
        f(t, site);
        Ok(())
    });
}

/// A node's name for messages; exporters often leave names empty, the first output is unique.
fn node_label(node: &NodeProto) -> &str {
    if node.name.is_empty() {
        node.output.first().map(String::as_str).unwrap_or("")
    } else {
        &node.name
    }
}

fn graph_mut<E, F>(graph: &mut GraphProto, f: &mut F) -> Result<(), E>
where
    F: FnMut(&mut TensorProto, &TensorSite<'_>) -> Result<(), E>,
{
    let top = TensorSite::default();
    for tensor in &mut graph.initializer {
        f(tensor, &top)?;
    }
    for sparse in &mut graph.sparse_initializer {
        sparse_mut(sparse, top, f)?;
    }
    for node in &mut graph.node {
        nodes_attributes_mut(node, f)?;
    }
    Ok(())
}

fn function_mut<E, F>(function: &mut FunctionProto, f: &mut F) -> Result<(), E>
where
    F: FnMut(&mut TensorProto, &TensorSite<'_>) -> Result<(), E>,
{
    // Attribute defaults of a function can be tensors or graphs too.
    for attr in &mut function.attribute_proto {
        attribute_mut(attr, None, f)?;
    }
    for node in &mut function.node {
        nodes_attributes_mut(node, f)?;
    }
    Ok(())
}

fn nodes_attributes_mut<E, F>(node: &mut NodeProto, f: &mut F) -> Result<(), E>
where
    F: FnMut(&mut TensorProto, &TensorSite<'_>) -> Result<(), E>,
{
    let label = if node.name.is_empty() {
        node.output.first().map(String::as_str).unwrap_or("")
    } else {
        node.name.as_str()
    };
    for attr in &mut node.attribute {
        attribute_mut(attr, Some(label), f)?;
    }
    Ok(())
}

fn attribute_mut<E, F>(attr: &mut AttributeProto, node: Option<&str>, f: &mut F) -> Result<(), E>
where
    F: FnMut(&mut TensorProto, &TensorSite<'_>) -> Result<(), E>,
{
    let site = TensorSite {
        node,
        attribute: Some(attr.name.as_str()),
        sparse: None,
    };
    if let Some(tensor) = attr.t.as_mut() {
        f(tensor, &site)?;
    }
    for tensor in &mut attr.tensors {
        f(tensor, &site)?;
    }
    if let Some(sparse) = attr.sparse_tensor.as_mut() {
        sparse_mut(sparse, site, f)?;
    }
    for sparse in &mut attr.sparse_tensors {
        sparse_mut(sparse, site, f)?;
    }
    if let Some(graph) = attr.g.as_mut() {
        graph_mut(graph, f)?;
    }
    for graph in &mut attr.graphs {
        graph_mut(graph, f)?;
    }
    Ok(())
}

fn sparse_mut<E, F>(
    sparse: &mut SparseTensorProto,
    site: TensorSite<'_>,
    f: &mut F,
) -> Result<(), E>
where
    F: FnMut(&mut TensorProto, &TensorSite<'_>) -> Result<(), E>,
{
    if let Some(values) = sparse.values.as_mut() {
        let site = TensorSite {
            sparse: Some(SparsePart::Values),
            ..site
        };
        f(values, &site)?;
    }
    if let Some(indices) = sparse.indices.as_mut() {
        let site = TensorSite {
            sparse: Some(SparsePart::Indices),
            ..site
        };
        f(indices, &site)?;
    }
    Ok(())
}

fn graph_ref<E, F>(graph: &GraphProto, f: &mut F) -> Result<(), E>
where
    F: FnMut(&TensorProto, &TensorSite<'_>) -> Result<(), E>,
{
    let top = TensorSite::default();
    for tensor in &graph.initializer {
        f(tensor, &top)?;
    }
    for sparse in &graph.sparse_initializer {
        sparse_ref(sparse, top, f)?;
    }
    for node in &graph.node {
        for attr in &node.attribute {
            attribute_ref(attr, Some(node_label(node)), f)?;
        }
    }
    Ok(())
}

fn function_ref<E, F>(function: &FunctionProto, f: &mut F) -> Result<(), E>
where
    F: FnMut(&TensorProto, &TensorSite<'_>) -> Result<(), E>,
{
    for attr in &function.attribute_proto {
        attribute_ref(attr, None, f)?;
    }
    for node in &function.node {
        for attr in &node.attribute {
            attribute_ref(attr, Some(node_label(node)), f)?;
        }
    }
    Ok(())
}

fn attribute_ref<E, F>(attr: &AttributeProto, node: Option<&str>, f: &mut F) -> Result<(), E>
where
    F: FnMut(&TensorProto, &TensorSite<'_>) -> Result<(), E>,
{
    let site = TensorSite {
        node,
        attribute: Some(attr.name.as_str()),
        sparse: None,
    };
    if let Some(tensor) = attr.t.as_ref() {
        f(tensor, &site)?;
    }
    for tensor in &attr.tensors {
        f(tensor, &site)?;
    }
    if let Some(sparse) = attr.sparse_tensor.as_ref() {
        sparse_ref(sparse, site, f)?;
    }
    for sparse in &attr.sparse_tensors {
        sparse_ref(sparse, site, f)?;
    }
    if let Some(graph) = attr.g.as_ref() {
        graph_ref(graph, f)?;
    }
    for graph in &attr.graphs {
        graph_ref(graph, f)?;
    }
    Ok(())
}

fn sparse_ref<E, F>(sparse: &SparseTensorProto, site: TensorSite<'_>, f: &mut F) -> Result<(), E>
where
    F: FnMut(&TensorProto, &TensorSite<'_>) -> Result<(), E>,
{
    if let Some(values) = sparse.values.as_ref() {
        let site = TensorSite {
            sparse: Some(SparsePart::Values),
            ..site
        };
        f(values, &site)?;
    }
    if let Some(indices) = sparse.indices.as_ref() {
        let site = TensorSite {
            sparse: Some(SparsePart::Indices),
            ..site
        };
        f(indices, &site)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::TrainingInfoProto;

    fn tensor(name: &str) -> TensorProto {
        TensorProto {
            name: name.to_string(),
            ..Default::default()
        }
    }

    fn attr_t(name: &str, t: TensorProto) -> AttributeProto {
        AttributeProto {
            name: name.to_string(),
            t: Some(t),
            ..Default::default()
        }
    }

    /// A model with a tensor in every place the walk must reach.
    pub(crate) fn everywhere() -> ModelProto {
        let then_branch = GraphProto {
            initializer: vec![tensor("then_init")],
            node: vec![NodeProto {
                op_type: "Constant".into(),
                output: vec!["then_c".into()],
                attribute: vec![attr_t("value", tensor(""))],
                ..Default::default()
            }],
            ..Default::default()
        };
        let loop_body = GraphProto {
            initializer: vec![tensor("loop_init")],
            ..Default::default()
        };
        let graph = GraphProto {
            initializer: vec![tensor("init")],
            sparse_initializer: vec![SparseTensorProto {
                values: Some(tensor("sp_values")),
                indices: Some(tensor("sp_indices")),
                dims: vec![4],
            }],
            node: vec![
                NodeProto {
                    name: "if".into(),
                    op_type: "If".into(),
                    attribute: vec![AttributeProto {
                        name: "then_branch".into(),
                        g: Some(then_branch),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
                NodeProto {
                    op_type: "Loop".into(),
                    attribute: vec![AttributeProto {
                        name: "bodies".into(),
                        graphs: vec![loop_body],
                        tensors: vec![tensor("attr_tensors")],
                        sparse_tensor: Some(SparseTensorProto {
                            values: Some(tensor("attr_sp")),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        ModelProto {
            ir_version: 10,
            graph: Some(graph),
            training_info: vec![TrainingInfoProto {
                initialization: Some(GraphProto {
                    initializer: vec![tensor("train_init")],
                    ..Default::default()
                }),
                algorithm: Some(GraphProto {
                    initializer: vec![tensor("train_algo")],
                    ..Default::default()
                }),
                ..Default::default()
            }],
            functions: vec![FunctionProto {
                attribute_proto: vec![attr_t("default", tensor("fn_default"))],
                node: vec![NodeProto {
                    name: "fn_const".into(),
                    attribute: vec![attr_t("value", tensor("fn_node"))],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    const ALL: [&str; 12] = [
        "init",
        "sp_values (sparse values)",
        "sp_indices (sparse indices)",
        "then_init",
        "<node 'then_c' attribute 'value'>",
        "attr_tensors",
        "attr_sp (sparse values)",
        "loop_init",
        "train_init",
        "train_algo",
        "fn_default",
        "fn_node",
    ];

    #[test]
    fn visits_every_place_mutably_and_read_only() {
        let mut model = everywhere();
        let mut seen = Vec::new();
        for_each_tensor(&model, |t, site| seen.push(site.describe(t)));
        assert_eq!(seen, ALL);

        let mut seen_mut = Vec::new();
        for_each_tensor_mut(&mut model, |t, site| {
            seen_mut.push(site.describe(t));
            t.doc_string = "visited".into();
        });
        assert_eq!(seen_mut, ALL);
        for_each_tensor(&model, |t, _| assert_eq!(t.doc_string, "visited"));
    }

    #[test]
    fn try_walk_stops_at_first_error() {
        let mut model = everywhere();
        let mut count = 0;
        let result = try_for_each_tensor_mut(&mut model, |t, _| {
            count += 1;
            if t.name == "then_init" {
                Err(t.name.clone())
            } else {
                Ok(())
            }
        });
        assert_eq!(result, Err("then_init".to_string()));
        assert_eq!(count, 4);
    }
}
