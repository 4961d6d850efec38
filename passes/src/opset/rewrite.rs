//! The editing context adapters work in: one graph, the model-wide set of taken names, and
//! the opset the conversion ends at.

use crate::ir::{AttrValue, Attribute, Graph, NameSet, Node, NodeIndex, NodeKind, ValueRef};
use crate::pipeline::PassError;
use crate::tensor::{DataType, Tensor};

/// What an adapter edits.
pub(crate) struct Cx<'a> {
    /// The graph holding the node being adapted.
    pub g: &'a mut Graph,
    /// Names taken anywhere in the model.
    pub names: &'a mut NameSet,
    /// The opset the conversion ends at (new nodes must exist there).
    pub target: i64,
}

impl Cx<'_> {
    /// The stem new names of `node` start with: its name, else its first output's name.
    pub(crate) fn stem(&self, node: NodeIndex) -> String {
        let n = &self.g[node];
        if !n.name.is_empty() {
            n.name.clone()
        } else {
            n.outputs
                .first()
                .map(|o| o.name.clone())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| n.op_type().to_lowercase())
        }
    }

    /// A human-readable label of `node` for error messages.
    pub(crate) fn label(&self, node: NodeIndex) -> String {
        self.g.label(node)
    }

    /// Adds an initializer `<node>_<suffix>` holding `value`.
    pub(crate) fn constant(&mut self, node: NodeIndex, suffix: &str, value: Tensor) -> ValueRef {
        let name = self.names.fresh(&format!("{}_{suffix}", self.stem(node)));
        ValueRef::new(self.g.add_node(Node::initializer(&name, value)), 0)
    }

    /// Adds a 1-D int64 initializer `<node>_<suffix>`.
    pub(crate) fn ints(
        &mut self,
        node: NodeIndex,
        suffix: &str,
        values: &[i64],
    ) -> Result<ValueRef, PassError> {
        let t = Tensor::from_vec(vec![values.len()], values.to_vec())?;
        Ok(self.constant(node, suffix, t))
    }

    /// Adds a default-domain operator named `<node>_<suffix>` with `outputs` fresh outputs.
    pub(crate) fn op(
        &mut self,
        node: NodeIndex,
        op_type: &str,
        suffix: &str,
        outputs: usize,
    ) -> NodeIndex {
        let stem = format!("{}_{suffix}", self.stem(node));
        let outs: Vec<String> = (0..outputs)
            .map(|i| match i {
                0 => self.names.fresh(&stem),
                _ => self.names.fresh(&format!("{stem}_{i}")),
            })
            .collect();
        let refs: Vec<&str> = outs.iter().map(String::as_str).collect();
        self.g.add_node(Node::op(op_type, &stem, &refs))
    }

    /// Removes attribute `name` from `node` and returns its value.
    pub(crate) fn take_attr(&mut self, node: NodeIndex, name: &str) -> Option<AttrValue> {
        let attrs = &mut self.g[node].attributes;
        let pos = attrs.iter().position(|a| a.name == name)?;
        Some(attrs.remove(pos).value)
    }

    /// Sets attribute `name` of `node`, replacing any value it had.
    pub(crate) fn set_attr(&mut self, node: NodeIndex, name: &str, value: AttrValue) {
        let attrs = &mut self.g[node].attributes;
        match attrs.iter_mut().find(|a| a.name == name) {
            Some(a) => a.value = value,
            None => attrs.push(Attribute::new(name, value)),
        }
    }

    /// Takes an INTS attribute; an attribute of another type is a malformed node.
    pub(crate) fn take_ints(
        &mut self,
        node: NodeIndex,
        name: &str,
    ) -> Result<Option<Vec<i64>>, PassError> {
        match self.take_attr(node, name) {
            None => Ok(None),
            Some(AttrValue::Ints(v)) => Ok(Some(v)),
            Some(other) => Err(self.malformed(node, name, &other)),
        }
    }

    /// Takes an INT attribute.
    pub(crate) fn take_int(
        &mut self,
        node: NodeIndex,
        name: &str,
    ) -> Result<Option<i64>, PassError> {
        match self.take_attr(node, name) {
            None => Ok(None),
            Some(AttrValue::Int(v)) => Ok(Some(v)),
            Some(other) => Err(self.malformed(node, name, &other)),
        }
    }

    /// Takes a FLOAT attribute.
    pub(crate) fn take_float(
        &mut self,
        node: NodeIndex,
        name: &str,
    ) -> Result<Option<f32>, PassError> {
        match self.take_attr(node, name) {
            None => Ok(None),
            Some(AttrValue::Float(v)) => Ok(Some(v)),
            Some(other) => Err(self.malformed(node, name, &other)),
        }
    }

    /// A STRING attribute's value, if present and UTF-8.
    pub(crate) fn str_attr(&self, node: NodeIndex, name: &str) -> Option<String> {
        self.g[node]
            .attr(name)
            .and_then(|v| v.as_str())
            .map(str::to_string)
    }

    /// An INT attribute's value, if present.
    pub(crate) fn int_attr(&self, node: NodeIndex, name: &str) -> Option<i64> {
        self.g[node].attr(name).and_then(|v| v.as_int())
    }

    fn malformed(&self, node: NodeIndex, name: &str, value: &AttrValue) -> PassError {
        PassError::Unsupported(format!(
            "node {}: attribute '{name}' has type {:?}",
            self.label(node),
            value.attr_type()
        ))
    }

    /// An error naming `node` at conversion step `step`.
    pub(crate) fn unsupported(&self, node: NodeIndex, step: i64, why: &str) -> PassError {
        PassError::Unsupported(format!(
            "cannot upgrade node {} to opset {step}: {why}",
            self.label(node)
        ))
    }

    /// True when `value` is read by a node or is a graph output.
    pub(crate) fn is_used(&self, value: ValueRef) -> bool {
        self.g.is_used(value)
    }

    /// The element type of `value`: declared, a constant's, or followed back through
    /// operators whose output has the type of their first input.
    pub(crate) fn elem_type(&self, value: ValueRef) -> Option<DataType> {
        let mut v = value;
        for _ in 0..256 {
            let node = self.g.node(v.node)?;
            if let Some(t) = node.outputs.get(v.slot).and_then(|o| o.elem_type()) {
                return Some(t);
            }
            match &node.kind {
                NodeKind::Constant { value, .. } => return Some(value.dtype()),
                NodeKind::Op {
                    op_type, domain, ..
                } if domain.is_empty() || domain == "ai.onnx" => {
                    if op_type == "Cast" {
                        let to = node.attr("to")?.as_int()?;
                        return DataType::from_onnx(i32::try_from(to).ok()?);
                    }
                    if v.slot != 0 || !SAME_TYPE_AS_FIRST_INPUT.contains(&op_type.as_str()) {
                        return None;
                    }
                    v = self.g.input(v.node, 0)?;
                }
                _ => return None,
            }
        }
        None
    }

    /// A scalar of `value`'s element type (for inputs typed like the data, e.g. Pad's
    /// `constant_value`, Clip's bounds). When the type cannot be found, a float scalar
    /// through `CastLike` (opset 15 and later).
    pub(crate) fn scalar_like(
        &mut self,
        node: NodeIndex,
        suffix: &str,
        value: f64,
        like: ValueRef,
        step: i64,
    ) -> Result<ValueRef, PassError> {
        let typed = match self.elem_type(like) {
            Some(DataType::Float) => Some(Tensor::scalar(value as f32)),
            Some(DataType::Double) => Some(Tensor::scalar(value)),
            Some(DataType::Float16) => Some(Tensor::scalar(half::f16::from_f64(value))),
            Some(DataType::Bfloat16) => Some(Tensor::scalar(half::bf16::from_f64(value))),
            Some(DataType::Int64) => Some(Tensor::scalar(value as i64)),
            Some(DataType::Int32) => Some(Tensor::scalar(value as i32)),
            Some(DataType::Int8) => Some(Tensor::scalar(value as i8)),
            Some(DataType::Uint8) => Some(Tensor::scalar(value as u8)),
            Some(t) => {
                return Err(self.unsupported(node, step, &format!("cannot make a {t} scalar")))
            }
            None => None,
        };
        if let Some(t) = typed {
            return Ok(self.constant(node, suffix, t));
        }
        if self.target < 15 {
            return Err(self.unsupported(
                node,
                step,
                "the element type of its input is unknown (and CastLike needs opset 15)",
            ));
        }
        let raw = self.constant(node, &format!("{suffix}_f32"), Tensor::scalar(value as f32));
        let cast = self.op(node, "CastLike", suffix, 1);
        self.g.connect(raw, cast, 0);
        self.g.connect(like, cast, 1);
        Ok(ValueRef::new(cast, 0))
    }

    /// Makes every reader of `old` read `new` instead, `new` taking over `old`'s name and
    /// declared type (graph outputs keep their names); `old` gets a fresh name.
    pub(crate) fn take_over(&mut self, old: ValueRef, new: ValueRef) {
        let name = self.g.value_name(old).to_string();
        let renamed = self.names.fresh(&format!("{name}_inner"));
        self.g.replace_all_uses(old, new);
        self.g.rename_value(old, &renamed);
        self.g.rename_value(new, &name);
        let ty = self.g.value_info_mut(old).ty.take();
        self.g.value_info_mut(new).ty = ty;
    }

    /// Removes `value`'s producer if it is a constant nobody reads any more.
    pub(crate) fn drop_if_dead_constant(&mut self, value: ValueRef) {
        let dead = matches!(
            self.g.node(value.node).map(|n| &n.kind),
            Some(NodeKind::Constant { .. })
        ) && !self.g.is_used(value)
            && !self.g[value.node].is_listed_input();
        if dead {
            self.g.remove_node(value.node);
        }
    }
}

/// Default-domain operators whose first output has the element type of their first input,
/// for finding the type of a value nothing declares.
const SAME_TYPE_AS_FIRST_INPUT: &[&str] = &[
    "Abs",
    "Add",
    "AveragePool",
    "BatchNormalization",
    "Ceil",
    "Celu",
    "Clip",
    "Concat",
    "Conv",
    "ConvTranspose",
    "DepthToSpace",
    "Div",
    "Dropout",
    "Elu",
    "Erf",
    "Exp",
    "Expand",
    "Flatten",
    "Floor",
    "Gather",
    "GatherElements",
    "GatherND",
    "Gemm",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "HardSigmoid",
    "HardSwish",
    "Hardmax",
    "Identity",
    "InstanceNormalization",
    "LRN",
    "LayerNormalization",
    "LeakyRelu",
    "Log",
    "LogSoftmax",
    "LpNormalization",
    "MatMul",
    "Max",
    "MaxPool",
    "Mean",
    "Min",
    "Mish",
    "Mul",
    "Neg",
    "Pad",
    "PRelu",
    "Pow",
    "Reciprocal",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceMax",
    "ReduceMean",
    "ReduceMin",
    "ReduceProd",
    "ReduceSum",
    "ReduceSumSquare",
    "Relu",
    "Reshape",
    "Resize",
    "Round",
    "Selu",
    "Sigmoid",
    "Sign",
    "Slice",
    "Softmax",
    "Softplus",
    "Softsign",
    "SpaceToDepth",
    "Split",
    "Sqrt",
    "Squeeze",
    "Sub",
    "Sum",
    "Tanh",
    "Tile",
    "TopK",
    "Transpose",
    "Unsqueeze",
    "Upsample",
];
