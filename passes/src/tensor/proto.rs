//! Conversion between [`Tensor`] and ONNX `TensorProto`, covering every storage field.

use bytes::Bytes;
use kiln_proto::onnx::{tensor_proto, TensorProto};

use super::{element_count, DataType, Tensor, TensorError};

impl Tensor {
    /// Decodes a `TensorProto` whose data is inline (`raw_data` or a typed field).
    ///
    /// External data must have been resolved by the loader first; `raw_data` then is a view
    /// of the mapped file and is not copied.
    pub fn from_proto(p: &TensorProto) -> Result<Tensor, TensorError> {
        let dtype = match p.data_type {
            0 => return Err(TensorError::Undefined),
            code => DataType::from_onnx(code).ok_or(TensorError::UnknownType(code))?,
        };
        if p.data_location == tensor_proto::DataLocation::External as i32 {
            return Err(TensorError::ExternalUnresolved);
        }
        if p.segment.is_some() {
            return Err(TensorError::Segmented);
        }
        let n = element_count(&p.dims)?;
        let shape: Vec<usize> = p.dims.iter().map(|&d| d as usize).collect();
        if dtype == DataType::String {
            return Tensor::from_strings(shape, p.string_data.clone()).map_err(|e| with_dims(e, p));
        }
        if !p.raw_data.is_empty() || typed_len(p, dtype) == 0 {
            return Tensor::from_raw(dtype, shape, p.raw_data.clone()).map_err(|e| with_dims(e, p));
        }
        let raw = typed_to_raw(p, dtype, n)?;
        Tensor::from_raw(dtype, shape, Bytes::from(raw))
    }

    /// Encodes as a `TensorProto` named `name`, numeric data in `raw_data` (shared, not copied).
    pub fn to_proto(&self, name: &str) -> TensorProto {
        let mut p = TensorProto {
            name: name.to_string(),
            dims: self.dims(),
            data_type: self.dtype().onnx(),
            ..Default::default()
        };
        match self.data() {
            super::TensorData::Raw(raw) => p.raw_data = raw.clone(),
            super::TensorData::Strings(s) => p.string_data = s.clone(),
        }
        p
    }
}

/// Puts the proto's own dims into a length error (negative-free dims are equal anyway).
fn with_dims(e: TensorError, p: &TensorProto) -> TensorError {
    match e {
        TensorError::DataLength {
            what,
            unit,
            dtype,
            expected,
            got,
            ..
        } => TensorError::DataLength {
            what,
            unit,
            dims: p.dims.clone(),
            dtype,
            expected,
            got,
        },
        other => other,
    }
}

/// How many values the typed field that holds `dtype` carries.
fn typed_len(p: &TensorProto, dtype: DataType) -> usize {
    use DataType::*;
    match dtype {
        Float | Complex64 => p.float_data.len(),
        Double | Complex128 => p.double_data.len(),
        Int64 => p.int64_data.len(),
        Uint32 | Uint64 => p.uint64_data.len(),
        String => p.string_data.len(),
        _ => p.int32_data.len(),
    }
}

/// Converts a typed field to `raw_data` layout, checking the count against `n` elements.
fn typed_to_raw(p: &TensorProto, dtype: DataType, n: usize) -> Result<Vec<u8>, TensorError> {
    use DataType::*;
    // Values the field must hold: complex types store two per element, packed sub-byte
    // types one byte (of several elements) per int32.
    let (field, expected) = match dtype {
        Complex64 | Complex128 => (typed_field_name(dtype), n * 2),
        Int4 | Uint4 | Float4E2M1 => (typed_field_name(dtype), n.div_ceil(2)),
        Int2 | Uint2 => (typed_field_name(dtype), n.div_ceil(4)),
        _ => (typed_field_name(dtype), n),
    };
    let got = typed_len(p, dtype);
    if got != expected {
        return Err(TensorError::DataLength {
            what: field,
            unit: "values",
            dims: p.dims.clone(),
            dtype,
            expected,
            got,
        });
    }
    let mut out = Vec::with_capacity(dtype.byte_len(n).unwrap_or(0));
    match dtype {
        Float | Complex64 => p
            .float_data
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        Double | Complex128 => p
            .double_data
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        Int64 => p
            .int64_data
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        Uint32 => p
            .uint64_data
            .iter()
            .for_each(|&v| out.extend_from_slice(&(v as u32).to_le_bytes())),
        Uint64 => p
            .uint64_data
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        Int32 => p
            .int32_data
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        // 16-bit types (integers, and float16/bfloat16 bit patterns) keep their low 16 bits.
        Int16 | Uint16 | Float16 | Bfloat16 => p
            .int32_data
            .iter()
            .for_each(|&v| out.extend_from_slice(&(v as u16).to_le_bytes())),
        // One byte per int32: 8-bit values, or already-packed sub-byte values.
        _ => p.int32_data.iter().for_each(|&v| out.push(v as u8)),
    }
    Ok(out)
}

fn typed_field_name(dtype: DataType) -> &'static str {
    use DataType::*;
    match dtype {
        Float | Complex64 => "float_data",
        Double | Complex128 => "double_data",
        Int64 => "int64_data",
        Uint32 | Uint64 => "uint64_data",
        String => "string_data",
        _ => "int32_data",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proto(dtype: DataType, dims: &[i64]) -> TensorProto {
        TensorProto {
            dims: dims.to_vec(),
            data_type: dtype.onnx(),
            ..Default::default()
        }
    }

    #[test]
    fn typed_fields_decode_like_raw_data() {
        let mut p = proto(DataType::Float16, &[2]);
        p.int32_data = vec![15360, 16384]; // 1.0, 2.0 as onnx.helper writes them
        let t = Tensor::from_proto(&p).unwrap();
        assert_eq!(t.to_f64_vec().unwrap(), vec![1.0, 2.0]);

        let mut p = proto(DataType::Int4, &[3]);
        p.int32_data = vec![225, 3];
        assert_eq!(
            Tensor::from_proto(&p).unwrap().to_f64_vec().unwrap(),
            vec![1.0, -2.0, 3.0]
        );

        let mut p = proto(DataType::Uint32, &[2]);
        p.uint64_data = vec![1, 4_000_000_000];
        assert_eq!(
            Tensor::from_proto(&p).unwrap().to_vec::<u32>().unwrap(),
            vec![1, 4_000_000_000]
        );

        let mut p = proto(DataType::Complex64, &[1]);
        p.float_data = vec![1.0, 2.0];
        assert_eq!(
            Tensor::from_proto(&p).unwrap().to_f64_vec().unwrap(),
            vec![1.0, 2.0]
        );
    }

    #[test]
    fn short_raw_data_is_an_error() {
        let mut p = proto(DataType::Float, &[4, 4]);
        p.raw_data = Bytes::from(vec![0u8; 60]);
        let err = Tensor::from_proto(&p).unwrap_err();
        assert_eq!(
            err.to_string(),
            "raw_data holds 60 bytes but shape [4, 4] of float32 needs 64"
        );
    }

    #[test]
    fn typed_field_count_mismatch_is_an_error() {
        let mut p = proto(DataType::Int64, &[3]);
        p.int64_data = vec![1, 2];
        assert!(matches!(
            Tensor::from_proto(&p),
            Err(TensorError::DataLength {
                what: "int64_data",
                ..
            })
        ));
    }

    #[test]
    fn empty_and_scalar_tensors() {
        let p = proto(DataType::Float, &[0, 3]);
        assert_eq!(Tensor::from_proto(&p).unwrap().len(), 0);
        let mut p = proto(DataType::Int64, &[]);
        p.int64_data = vec![7];
        assert_eq!(
            Tensor::from_proto(&p).unwrap().to_vec::<i64>().unwrap(),
            vec![7]
        );
    }

    #[test]
    fn proto_round_trip_shares_bytes() {
        let t = Tensor::from_vec(vec![2], vec![3i32, 4]).unwrap();
        let p = t.to_proto("x");
        assert_eq!(p.name, "x");
        let back = Tensor::from_proto(&p).unwrap();
        assert_eq!(back, t);
        assert_eq!(back.raw().unwrap().as_ptr(), t.raw().unwrap().as_ptr());
    }

    #[test]
    fn strings() {
        let mut p = proto(DataType::String, &[2]);
        p.string_data = vec![Bytes::from_static(b"a"), Bytes::from_static(b"bc")];
        let t = Tensor::from_proto(&p).unwrap();
        assert_eq!(t.strings().unwrap().len(), 2);
        assert_eq!(t.to_proto("s").string_data, p.string_data);
    }
}
