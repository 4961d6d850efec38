//! Values that cross the boundary to ONNX Runtime and tensor files.

use kiln_passes::tensor::{DataType, Tensor};

/// A model input or output: a tensor, a sequence of values, or an optional value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A dense tensor.
    Tensor(Tensor),
    /// A sequence of values (ONNX `seq(...)`); `elem_type` says what an empty one holds.
    Sequence {
        /// Element type of the tensors in the sequence, when known.
        elem_type: Option<DataType>,
        /// The items.
        items: Vec<Value>,
    },
    /// An optional value (ONNX `optional(...)`): `None` when absent.
    Optional(Option<Box<Value>>),
}

impl Value {
    /// The tensor, if this value is one.
    pub fn as_tensor(&self) -> Option<&Tensor> {
        match self {
            Value::Tensor(t) => Some(t),
            _ => None,
        }
    }

    /// A short description for messages: `float32[1,3,224,224]`, `seq(float32)[4]`, `optional(none)`.
    pub fn describe(&self) -> String {
        match self {
            Value::Tensor(t) => {
                let dims: Vec<String> = t.shape().iter().map(|d| d.to_string()).collect();
                format!("{}[{}]", t.dtype(), dims.join(","))
            }
            Value::Sequence { elem_type, items } => format!(
                "seq({})[{}]",
                elem_type.map_or("?".to_string(), |t| t.to_string()),
                items.len()
            ),
            Value::Optional(None) => "optional(none)".to_string(),
            Value::Optional(Some(v)) => format!("optional({})", v.describe()),
        }
    }
}

/// Named values in a fixed order (model inputs or outputs).
pub type NamedValues = Vec<(String, Value)>;
