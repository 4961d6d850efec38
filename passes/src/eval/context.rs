//! [`Ctx`]: one operator call — attributes, inputs, opset and limits — with typed accessors.

use super::array::Arr;
use super::{EvalError, EvalOptions, Out};
use crate::ir::{AttrValue, Attribute};
use crate::tensor::{DataType, Tensor};

/// One operator call.
pub(crate) struct Ctx<'a> {
    pub op: &'a str,
    pub opset: i64,
    pub attrs: &'a [Attribute],
    pub inputs: &'a [Option<&'a Tensor>],
    pub options: EvalOptions,
}

/// `Err(Invalid)` with a formatted message.
macro_rules! invalid {
    ($($arg:tt)*) => { $crate::eval::EvalError::Invalid(format!($($arg)*)) };
}
pub(crate) use invalid;

impl<'a> Ctx<'a> {
    /// The attribute `name`, if present.
    pub fn attr(&self, name: &str) -> Option<&'a AttrValue> {
        self.attrs.iter().find(|a| a.name == name).map(|a| &a.value)
    }

    /// An INT attribute, or `default` when absent.
    pub fn int(&self, name: &str, default: i64) -> Result<i64, EvalError> {
        match self.attr(name) {
            None => Ok(default),
            Some(v) => v
                .as_int()
                .ok_or_else(|| invalid!("{}: attribute '{name}' is not an int", self.op)),
        }
    }

    /// A FLOAT attribute, or `default` when absent.
    pub fn float(&self, name: &str, default: f32) -> Result<f32, EvalError> {
        match self.attr(name) {
            None => Ok(default),
            Some(v) => v
                .as_float()
                .ok_or_else(|| invalid!("{}: attribute '{name}' is not a float", self.op)),
        }
    }

    /// An INTS attribute, if present.
    pub fn ints(&self, name: &str) -> Result<Option<Vec<i64>>, EvalError> {
        match self.attr(name) {
            None => Ok(None),
            Some(v) => v
                .as_ints()
                .map(|v| Some(v.to_vec()))
                .ok_or_else(|| invalid!("{}: attribute '{name}' is not ints", self.op)),
        }
    }

    /// Input `i`, if present.
    pub fn input(&self, i: usize) -> Option<&'a Tensor> {
        self.inputs.get(i).copied().flatten()
    }

    /// Input `i`, which the operator requires.
    pub fn required(&self, i: usize) -> Result<&'a Tensor, EvalError> {
        self.input(i)
            .ok_or_else(|| invalid!("{}: required input {i} is missing", self.op))
    }

    /// Input `i` decoded; `Ok(None)` when its element type is not one the evaluator computes on.
    pub fn arr(&self, i: usize) -> Result<Option<Arr>, EvalError> {
        Arr::from_tensor(self.required(i)?)
    }

    /// An integer input (int64 or int32) read as `i64`s; absent gives `None`.
    pub fn int_input(&self, i: usize) -> Result<Option<Vec<i64>>, EvalError> {
        self.input(i).map(|t| int_values(t, self.op)).transpose()
    }

    /// Refuses a result shape over the size cap.
    pub fn check(&self, shape: &[usize]) -> Result<(), EvalError> {
        // ndarray panics on a shape whose non-zero lengths multiply past isize::MAX even
        // when another axis is zero (an empty result), so that is refused here first.
        // Saturating: a few lengths near usize::MAX overflow even u128.
        let nonzero = shape
            .iter()
            .filter(|&&d| d != 0)
            .fold(1u128, |acc, &d| acc.saturating_mul(d as u128));
        if nonzero > isize::MAX as u128 {
            return Err(invalid!(
                "{}: result shape {shape:?} is too large to index",
                self.op
            ));
        }
        self.check_count(if shape.contains(&0) { 0 } else { nonzero })
    }

    /// Refuses a result of `elements` elements over the size cap.
    pub fn check_count(&self, elements: u128) -> Result<(), EvalError> {
        if elements > self.options.max_elements as u128 {
            return Err(EvalError::TooLarge {
                elements,
                limit: self.options.max_elements,
            });
        }
        Ok(())
    }
}

/// The values of an int64 / int32 tensor.
pub(crate) fn int_values(t: &Tensor, op: &str) -> Result<Vec<i64>, EvalError> {
    match t.dtype() {
        DataType::Int64 => Ok(t.to_vec::<i64>()?),
        DataType::Int32 => Ok(t.to_vec::<i32>()?.into_iter().map(i64::from).collect()),
        other => Err(invalid!("{op}: expected an int64 tensor, got {other}")),
    }
}

/// Normalizes a possibly negative `axis` for a tensor of rank `rank`.
pub(crate) fn norm_axis(axis: i64, rank: usize, op: &str) -> Result<usize, EvalError> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if (0..r).contains(&a) {
        Ok(a as usize)
    } else {
        Err(invalid!("{op}: axis {axis} out of range for rank {rank}"))
    }
}

/// Normalizes a list of axes, refusing repeats.
pub(crate) fn norm_axes(axes: &[i64], rank: usize, op: &str) -> Result<Vec<usize>, EvalError> {
    let mut out = Vec::with_capacity(axes.len());
    for &a in axes {
        let a = norm_axis(a, rank, op)?;
        if out.contains(&a) {
            return Err(invalid!("{op}: axis {a} repeated"));
        }
        out.push(a);
    }
    Ok(out)
}

/// One result.
pub(crate) fn one(a: Arr) -> Out {
    Ok(Some(vec![a.to_tensor()?]))
}
