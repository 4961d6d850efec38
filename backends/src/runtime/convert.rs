//! Kiln [`Value`]s to ONNX Runtime `OrtValue`s and back, bytes copied as they are.

use std::ffi::CString;

use bytes::Bytes;
use kiln_passes::tensor::{DataType, Tensor};
use ort::sys::{ONNXTensorElementDataType, ONNXType};
use ort::value::TensorElementType;

use super::ffi::{self, OwnedValue};
use super::session::IoKind;
use super::RuntimeError;
use crate::value::Value;

/// The `ort` element type for a Kiln element type; `None` where ORT has none.
pub fn data_type_to_ort(dtype: DataType) -> Option<TensorElementType> {
    use DataType as D;
    use TensorElementType as T;
    Some(match dtype {
        D::Float => T::Float32,
        D::Uint8 => T::Uint8,
        D::Int8 => T::Int8,
        D::Uint16 => T::Uint16,
        D::Int16 => T::Int16,
        D::Int32 => T::Int32,
        D::Int64 => T::Int64,
        D::String => T::String,
        D::Bool => T::Bool,
        D::Float16 => T::Float16,
        D::Double => T::Float64,
        D::Uint32 => T::Uint32,
        D::Uint64 => T::Uint64,
        D::Complex64 => T::Complex64,
        D::Complex128 => T::Complex128,
        D::Bfloat16 => T::Bfloat16,
        D::Float8E4M3Fn => T::Float8E4M3FN,
        D::Float8E4M3Fnuz => T::Float8E4M3FNUZ,
        D::Float8E5M2 => T::Float8E5M2,
        D::Float8E5M2Fnuz => T::Float8E5M2FNUZ,
        D::Uint4 => T::Uint4,
        D::Int4 => T::Int4,
        D::Float4E2M1 => T::Float4E2M1,
        D::Float8E8M0 => T::Float8E8M0,
        D::Uint2 => T::Uint2,
        D::Int2 => T::Int2,
    })
}

/// The Kiln element type for an `ort` element type; `None` for `Undefined`.
///
/// Mapped by name, not by number: ORT's C enum and ONNX's `TensorProto.DataType` disagree
/// after `FLOAT4E2M1` (ORT puts `UINT2`, `INT2` before `FLOAT8E8M0`).
pub fn data_type_from_ort(ty: TensorElementType) -> Option<DataType> {
    use DataType as D;
    use TensorElementType as T;
    Some(match ty {
        T::Float32 => D::Float,
        T::Uint8 => D::Uint8,
        T::Int8 => D::Int8,
        T::Uint16 => D::Uint16,
        T::Int16 => D::Int16,
        T::Int32 => D::Int32,
        T::Int64 => D::Int64,
        T::String => D::String,
        T::Bool => D::Bool,
        T::Float16 => D::Float16,
        T::Float64 => D::Double,
        T::Uint32 => D::Uint32,
        T::Uint64 => D::Uint64,
        T::Bfloat16 => D::Bfloat16,
        T::Complex64 => D::Complex64,
        T::Complex128 => D::Complex128,
        T::Float8E4M3FN => D::Float8E4M3Fn,
        T::Float8E4M3FNUZ => D::Float8E4M3Fnuz,
        T::Float8E5M2 => D::Float8E5M2,
        T::Float8E5M2FNUZ => D::Float8E5M2Fnuz,
        T::Uint4 => D::Uint4,
        T::Int4 => D::Int4,
        T::Float4E2M1 => D::Float4E2M1,
        T::Uint2 => D::Uint2,
        T::Int2 => D::Int2,
        T::Float8E8M0 => D::Float8E8M0,
        // `TensorElementType` is non-exhaustive: types a later `ort` adds are unknown here.
        _ => return None,
    })
}

fn sys_type(dtype: DataType) -> Result<ONNXTensorElementDataType, RuntimeError> {
    data_type_to_ort(dtype)
        .map(Into::into)
        .ok_or(RuntimeError::UnsupportedType(dtype))
}

/// Converts an input value; `None` for an absent optional (the input is then left out).
pub(crate) fn to_ort(name: &str, value: &Value) -> Result<Option<OwnedValue>, RuntimeError> {
    let fail = |message: String| RuntimeError::InputValue {
        name: name.to_string(),
        message,
    };
    match value {
        Value::Tensor(t) => tensor_to_ort(name, t).map(Some),
        Value::Optional(None) => Ok(None),
        // ORT's C API has no way to build an optional value; a present optional is passed as
        // the value it holds, which ORT accepts for optional-typed inputs.
        Value::Optional(Some(inner)) => to_ort(name, inner),
        Value::Sequence { items, .. } => {
            if items.is_empty() {
                // CreateValue refuses zero items, and there is no other way to make one.
                return Err(RuntimeError::Unsupported(format!(
                    "input {name:?}: ONNX Runtime's C API cannot build an empty sequence"
                )));
            }
            let mut values = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    Value::Tensor(t) => values.push(tensor_to_ort(name, t)?),
                    other => {
                        return Err(RuntimeError::Unsupported(format!(
                            "input {name:?}: sequences of {} cannot be passed to ONNX Runtime",
                            other.describe()
                        )))
                    }
                }
            }
            ffi::create_sequence(&values).map(Some).map_err(fail)
        }
    }
}

fn tensor_to_ort(name: &str, t: &Tensor) -> Result<OwnedValue, RuntimeError> {
    let fail = |message: String| RuntimeError::InputValue {
        name: name.to_string(),
        message,
    };
    let ty = sys_type(t.dtype())?;
    let value =
        ffi::create_tensor(ty, &t.dims()).map_err(|e| fail(format!("{}: {e}", t.dtype())))?;
    if let Some(strings) = t.strings() {
        // FillStringTensor takes C strings: an element with a NUL byte cannot be passed.
        let cstrings = strings
            .iter()
            .enumerate()
            .map(|(i, s)| {
                CString::new(s.as_ref())
                    .map_err(|_| fail(format!("string element {i} contains a NUL byte, which ONNX Runtime's C API cannot take")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let refs: Vec<&std::ffi::CStr> = cstrings.iter().map(|c| c.as_c_str()).collect();
        ffi::fill_strings(&value, &refs).map_err(fail)?;
        return Ok(value);
    }
    let raw = t.raw().map(Bytes::as_ref).unwrap_or_default();
    if !raw.is_empty() {
        let dst = value.tensor_data().map_err(fail)?;
        if dst.is_null() {
            return Err(fail("ONNX Runtime gave a tensor without a buffer".into()));
        }
        // SAFETY: ORT allocated the buffer for this element type and shape, which is exactly
        // `raw.len()` bytes (Tensor::from_raw checked the length; sub-byte types are packed
        // the same way in both); the regions cannot overlap.
        unsafe { std::ptr::copy_nonoverlapping(raw.as_ptr(), dst.cast::<u8>(), raw.len()) };
    }
    Ok(value)
}

/// Reads an output value back; `declared` is the model's type for it, which says whether an
/// absent value is an absent optional and what an empty sequence holds.
pub(crate) fn from_ort(
    name: &str,
    value: Option<OwnedValue>,
    declared: &IoKind,
) -> Result<Value, RuntimeError> {
    let fail = |message: String| RuntimeError::Output {
        name: name.to_string(),
        message,
    };
    let (inner_kind, optional) = match declared {
        IoKind::Optional(inner) => (inner.as_ref(), true),
        other => (other, false),
    };
    let value = match value {
        Some(v) if v.has_value().map_err(fail)? => v,
        _ if optional => return Ok(Value::Optional(None)),
        _ => return Err(fail("ONNX Runtime produced no value".into())),
    };
    let read = read_value(name, &value, inner_kind)?;
    Ok(if optional {
        Value::Optional(Some(Box::new(read)))
    } else {
        read
    })
}

fn read_value(name: &str, value: &OwnedValue, declared: &IoKind) -> Result<Value, RuntimeError> {
    let fail = |message: String| RuntimeError::Output {
        name: name.to_string(),
        message,
    };
    match value.onnx_type().map_err(fail)? {
        ONNXType::ONNX_TYPE_TENSOR => read_tensor(name, value).map(Value::Tensor),
        ONNXType::ONNX_TYPE_SEQUENCE => {
            let n = value.count().map_err(fail)?;
            let item_kind = match declared {
                IoKind::Sequence(k) => k.as_ref().clone(),
                _ => IoKind::Unknown,
            };
            let mut items = Vec::with_capacity(n);
            for i in 0..n {
                let item = value.item(i).map_err(fail)?;
                items.push(read_value(name, &item, &item_kind)?);
            }
            let elem_type = match &item_kind {
                IoKind::Tensor { dtype, .. } => *dtype,
                _ => None,
            }
            .or_else(|| items.first().and_then(Value::as_tensor).map(Tensor::dtype));
            Ok(Value::Sequence { elem_type, items })
        }
        ONNXType::ONNX_TYPE_MAP => Err(RuntimeError::Unsupported(format!(
            "output {name:?} is a map, which Kiln values cannot hold"
        ))),
        other => Err(RuntimeError::Unsupported(format!(
            "output {name:?} has ONNX value type {other:?}, which Kiln cannot read"
        ))),
    }
}

fn read_tensor(name: &str, value: &OwnedValue) -> Result<Tensor, RuntimeError> {
    let fail = |message: String| RuntimeError::Output {
        name: name.to_string(),
        message,
    };
    let (ty, dims) = value.tensor_type_and_shape().map_err(fail)?;
    let dtype = data_type_from_ort(ty.into())
        .ok_or_else(|| fail(format!("element type {ty:?} is not an ONNX element type")))?;
    let shape = dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| fail(format!("negative dimension in {dims:?}"))))
        .collect::<Result<Vec<usize>, _>>()?;
    let n = kiln_passes::tensor::element_count(&dims).map_err(|e| fail(e.to_string()))?;
    if dtype == DataType::String {
        let strings = value.strings(n).map_err(fail)?;
        return Tensor::from_strings(shape, strings.into_iter().map(Bytes::from).collect())
            .map_err(|e| fail(e.to_string()));
    }
    let len = dtype
        .byte_len(n)
        .ok_or_else(|| fail(format!("{dtype} tensor of {n} elements is too large")))?;
    let mut raw = Vec::new();
    if len > 0 {
        let src = value.tensor_data().map_err(fail)?;
        if src.is_null() {
            return Err(fail(
                "ONNX Runtime returned a tensor without a buffer".into(),
            ));
        }
        // SAFETY: ORT's buffer for this CPU tensor holds `byte_len(n)` bytes of this element
        // type (packed for sub-byte types, as Kiln stores them), alive while `value` is.
        // Copied straight into a new vector: zeroing it first costs as much as the copy.
        raw = unsafe { std::slice::from_raw_parts(src.cast::<u8>(), len) }.to_vec();
    }
    Tensor::from_raw(dtype, shape, Bytes::from(raw)).map_err(|e| fail(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_passes::tensor::ALL_DATA_TYPES;

    #[test]
    fn every_type_maps_both_ways() {
        for t in ALL_DATA_TYPES {
            let ort = data_type_to_ort(t).unwrap();
            assert_eq!(data_type_from_ort(ort), Some(t), "{t}");
        }
        assert_eq!(data_type_from_ort(TensorElementType::Undefined), None);
    }
}
