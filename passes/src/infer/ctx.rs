//! What a rule sees of one node: its attributes, the opset, and for each input its type,
//! its value if constant, and its contents as dims if they are shape arithmetic.

use crate::ir::{AttrValue, Dim, Node};
use crate::tensor::{DataType, Tensor};

use super::ty::Ty;

/// The contents of a small integer tensor (rank 0 or 1) as dims: what shape arithmetic
/// (`Shape → Gather → Concat → Reshape`) computes, with names kept where a dim is named.
#[derive(Debug, Clone, PartialEq)]
pub struct SymValue {
    /// Rank 0 (one item) rather than rank 1.
    pub scalar: bool,
    /// The elements.
    pub items: Vec<Dim>,
}

/// The most elements a [`SymValue`] is built for (shape vectors are short).
pub const MAX_SYM_ITEMS: usize = 64;

impl SymValue {
    /// The contents of a constant integer tensor of rank 0 or 1.
    pub fn of_tensor(t: &Tensor) -> Option<SymValue> {
        if t.shape().len() > 1 || t.len() > MAX_SYM_ITEMS || !is_integer(t.dtype()) {
            return None;
        }
        let items = t
            .to_f64_vec()?
            .into_iter()
            .map(|v| Dim::Known(v as i64))
            .collect();
        Some(SymValue {
            scalar: t.shape().is_empty(),
            items,
        })
    }

    /// Every element, if all are fixed numbers.
    pub fn ints(&self) -> Option<Vec<i64>> {
        self.items
            .iter()
            .map(|d| match d {
                Dim::Known(n) => Some(*n),
                _ => None,
            })
            .collect()
    }
}

/// True for the integer element types.
pub fn is_integer(t: DataType) -> bool {
    use DataType::*;
    matches!(
        t,
        Int8 | Int16 | Int32 | Int64 | Uint8 | Uint16 | Uint32 | Uint64
    )
}

/// One present input of a node.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// What is known of its type.
    pub ty: &'a Ty,
    /// Its value, if it is a constant of this graph.
    pub constant: Option<&'a Tensor>,
    /// Its contents as dims, if known.
    pub sym: Option<&'a SymValue>,
}

/// An integer list given either as an attribute or (in later opsets) as an input.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    /// Not given (the operator's default applies).
    Absent,
    /// Given, with these values.
    Known(Vec<i64>),
    /// Given, but computed at run time.
    Unknown,
}

/// The view of one node a rule gets.
#[derive(Debug, Clone)]
pub struct Ctx<'a> {
    /// The node.
    pub node: &'a Node,
    /// The imported version of the node's domain.
    pub opset: i64,
    /// Its inputs by slot (`None` for absent optional inputs).
    pub inputs: Vec<Option<Input<'a>>>,
}

static UNKNOWN: Ty = Ty::Unknown;

impl<'a> Ctx<'a> {
    /// The type of input `i` (`Unknown` if absent).
    pub fn ty(&self, i: usize) -> &'a Ty {
        self.input(i).map_or(&UNKNOWN, |x| x.ty)
    }

    /// Input `i`, if present.
    pub fn input(&self, i: usize) -> Option<Input<'a>> {
        self.inputs.get(i).copied().flatten()
    }

    /// True when input `i` is present.
    pub fn has(&self, i: usize) -> bool {
        self.input(i).is_some()
    }

    /// How many input slots the node has (absent ones included).
    pub fn n_inputs(&self) -> usize {
        self.inputs.len()
    }

    /// How many outputs the node has.
    pub fn n_outputs(&self) -> usize {
        self.node.outputs.len()
    }

    /// The element type of input `i`.
    pub fn elem(&self, i: usize) -> Option<DataType> {
        self.ty(i).elem()
    }

    /// The dims of input `i`, if its rank is known.
    pub fn shape(&self, i: usize) -> Option<&'a [Dim]> {
        self.ty(i).shape()
    }

    /// The rank of input `i`, if known.
    pub fn rank(&self, i: usize) -> Option<usize> {
        self.shape(i).map(<[Dim]>::len)
    }

    /// The constant value of input `i`.
    pub fn constant(&self, i: usize) -> Option<&'a Tensor> {
        self.input(i)?.constant
    }

    /// The contents of input `i` as dims.
    pub fn sym(&self, i: usize) -> Option<&'a SymValue> {
        self.input(i)?.sym
    }

    /// The contents of input `i` as integers, if all are known.
    pub fn ints(&self, i: usize) -> Option<Vec<i64>> {
        let input = self.input(i)?;
        if let Some(s) = input.sym {
            return s.ints();
        }
        let t = input.constant?;
        if !is_integer(t.dtype()) {
            return None;
        }
        Some(t.to_f64_vec()?.into_iter().map(|v| v as i64).collect())
    }

    /// The contents of constant input `i` widened to `f64`.
    pub fn floats(&self, i: usize) -> Option<Vec<f64>> {
        self.constant(i)?.to_f64_vec()
    }

    /// The attribute `name`.
    pub fn attr(&self, name: &str) -> Option<&'a AttrValue> {
        self.node.attr(name)
    }

    /// An INT attribute.
    pub fn attr_int(&self, name: &str) -> Option<i64> {
        self.attr(name)?.as_int()
    }

    /// An INT attribute, or `default` when absent.
    pub fn attr_int_or(&self, name: &str, default: i64) -> i64 {
        self.attr_int(name).unwrap_or(default)
    }

    /// An INTS attribute.
    pub fn attr_ints(&self, name: &str) -> Option<&'a [i64]> {
        self.attr(name)?.as_ints()
    }

    /// A FLOATS attribute.
    pub fn attr_floats(&self, name: &str) -> Option<&'a [f32]> {
        match self.attr(name)? {
            AttrValue::Floats(v) => Some(v),
            _ => None,
        }
    }

    /// A STRING attribute.
    pub fn attr_str(&self, name: &str) -> Option<&'a str> {
        self.attr(name)?.as_str()
    }

    /// An integer list that is attribute `name` before opset `input_since` and input `slot`
    /// from it on.
    pub fn param(&self, name: &str, slot: usize, input_since: i64) -> Param {
        if self.opset >= input_since {
            if !self.has(slot) {
                return Param::Absent;
            }
            return self.ints(slot).map_or(Param::Unknown, Param::Known);
        }
        match self.attr(name) {
            None => Param::Absent,
            Some(a) => a
                .as_ints()
                .map_or(Param::Unknown, |v| Param::Known(v.to_vec())),
        }
    }

    /// The data type named by INT attribute `name` (an ONNX element type code).
    pub fn attr_dtype(&self, name: &str) -> Option<DataType> {
        DataType::from_onnx(i32::try_from(self.attr_int(name)?).ok()?)
    }
}
