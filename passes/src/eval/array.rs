//! [`Arr`]: a tensor decoded into an ndarray of its own element type, so kernels compute in
//! the tensor's type (integer arithmetic wraps exactly as ONNX Runtime's does).

use half::{bf16, f16};
use ndarray::{ArrayD, IxDyn};

use super::EvalError;
use crate::tensor::{DataType, Element, Tensor};

/// A decoded tensor, one variant per element type the evaluator computes on.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Arr {
    Bool(ArrayD<bool>),
    U8(ArrayD<u8>),
    I8(ArrayD<i8>),
    U16(ArrayD<u16>),
    I16(ArrayD<i16>),
    U32(ArrayD<u32>),
    I32(ArrayD<i32>),
    U64(ArrayD<u64>),
    I64(ArrayD<i64>),
    F16(ArrayD<f16>),
    Bf16(ArrayD<bf16>),
    F32(ArrayD<f32>),
    F64(ArrayD<f64>),
}

/// Applies a fallible `$body` (`Result<ArrayD<T>, EvalError>`) to the array inside any
/// variant and wraps the result in the same variant.
macro_rules! try_map_same {
    ($arr:expr, $a:ident => $body:expr) => {
        match $arr {
            Arr::Bool($a) => Arr::Bool($body?),
            Arr::U8($a) => Arr::U8($body?),
            Arr::I8($a) => Arr::I8($body?),
            Arr::U16($a) => Arr::U16($body?),
            Arr::I16($a) => Arr::I16($body?),
            Arr::U32($a) => Arr::U32($body?),
            Arr::I32($a) => Arr::I32($body?),
            Arr::U64($a) => Arr::U64($body?),
            Arr::I64($a) => Arr::I64($body?),
            Arr::F16($a) => Arr::F16($body?),
            Arr::Bf16($a) => Arr::Bf16($body?),
            Arr::F32($a) => Arr::F32($body?),
            Arr::F64($a) => Arr::F64($body?),
        }
    };
}

/// Evaluates `$body` with the array inside any variant bound to `$a` (any result type).
macro_rules! with_arr {
    ($arr:expr, $a:ident => $body:expr) => {
        match $arr {
            Arr::Bool($a) => $body,
            Arr::U8($a) => $body,
            Arr::I8($a) => $body,
            Arr::U16($a) => $body,
            Arr::I16($a) => $body,
            Arr::U32($a) => $body,
            Arr::I32($a) => $body,
            Arr::U64($a) => $body,
            Arr::I64($a) => $body,
            Arr::F16($a) => $body,
            Arr::Bf16($a) => $body,
            Arr::F32($a) => $body,
            Arr::F64($a) => $body,
        }
    };
}

pub(crate) use {try_map_same, with_arr};

fn decode<T: Element>(t: &Tensor) -> Result<ArrayD<T>, EvalError> {
    let v = t.to_vec::<T>()?;
    ArrayD::from_shape_vec(IxDyn(t.shape()), v)
        .map_err(|e| EvalError::Invalid(format!("tensor data does not fit its shape: {e}")))
}

fn encode<T: Element>(a: &ArrayD<T>) -> Result<Tensor, EvalError> {
    Ok(Tensor::from_vec(
        a.shape().to_vec(),
        a.iter().copied().collect(),
    )?)
}

impl Arr {
    /// Decodes a tensor; `None` for element types the evaluator does not compute on.
    pub(crate) fn from_tensor(t: &Tensor) -> Result<Option<Arr>, EvalError> {
        Ok(Some(match t.dtype() {
            DataType::Bool => Arr::Bool(decode(t)?),
            DataType::Uint8 => Arr::U8(decode(t)?),
            DataType::Int8 => Arr::I8(decode(t)?),
            DataType::Uint16 => Arr::U16(decode(t)?),
            DataType::Int16 => Arr::I16(decode(t)?),
            DataType::Uint32 => Arr::U32(decode(t)?),
            DataType::Int32 => Arr::I32(decode(t)?),
            DataType::Uint64 => Arr::U64(decode(t)?),
            DataType::Int64 => Arr::I64(decode(t)?),
            DataType::Float16 => Arr::F16(decode(t)?),
            DataType::Bfloat16 => Arr::Bf16(decode(t)?),
            DataType::Float => Arr::F32(decode(t)?),
            DataType::Double => Arr::F64(decode(t)?),
            _ => return Ok(None),
        }))
    }

    /// Encodes back into a tensor (row-major, little-endian).
    pub(crate) fn to_tensor(&self) -> Result<Tensor, EvalError> {
        with_arr!(self, a => encode(a))
    }

    /// The element type.
    pub(crate) fn dtype(&self) -> DataType {
        match self {
            Arr::Bool(_) => DataType::Bool,
            Arr::U8(_) => DataType::Uint8,
            Arr::I8(_) => DataType::Int8,
            Arr::U16(_) => DataType::Uint16,
            Arr::I16(_) => DataType::Int16,
            Arr::U32(_) => DataType::Uint32,
            Arr::I32(_) => DataType::Int32,
            Arr::U64(_) => DataType::Uint64,
            Arr::I64(_) => DataType::Int64,
            Arr::F16(_) => DataType::Float16,
            Arr::Bf16(_) => DataType::Bfloat16,
            Arr::F32(_) => DataType::Float,
            Arr::F64(_) => DataType::Double,
        }
    }

    /// The shape.
    pub(crate) fn shape(&self) -> &[usize] {
        with_arr!(self, a => a.shape())
    }
}
