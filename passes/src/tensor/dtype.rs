//! Element types of ONNX tensors, with their storage sizes.

use std::fmt;

/// An ONNX tensor element type (`TensorProto.DataType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DataType {
    Float,
    Uint8,
    Int8,
    Uint16,
    Int16,
    Int32,
    Int64,
    String,
    Bool,
    Float16,
    Double,
    Uint32,
    Uint64,
    Complex64,
    Complex128,
    Bfloat16,
    Float8E4M3Fn,
    Float8E4M3Fnuz,
    Float8E5M2,
    Float8E5M2Fnuz,
    Uint4,
    Int4,
    Float4E2M1,
    Float8E8M0,
    Uint2,
    Int2,
}

/// Every element type, in `TensorProto.DataType` order.
pub const ALL_DATA_TYPES: [DataType; 26] = [
    DataType::Float,
    DataType::Uint8,
    DataType::Int8,
    DataType::Uint16,
    DataType::Int16,
    DataType::Int32,
    DataType::Int64,
    DataType::String,
    DataType::Bool,
    DataType::Float16,
    DataType::Double,
    DataType::Uint32,
    DataType::Uint64,
    DataType::Complex64,
    DataType::Complex128,
    DataType::Bfloat16,
    DataType::Float8E4M3Fn,
    DataType::Float8E4M3Fnuz,
    DataType::Float8E5M2,
    DataType::Float8E5M2Fnuz,
    DataType::Uint4,
    DataType::Int4,
    DataType::Float4E2M1,
    DataType::Float8E8M0,
    DataType::Uint2,
    DataType::Int2,
];

impl DataType {
    /// The type for an ONNX `TensorProto.DataType` number, if it is one.
    pub fn from_onnx(code: i32) -> Option<DataType> {
        if code < 1 {
            return None;
        }
        ALL_DATA_TYPES.get(code as usize - 1).copied()
    }

    /// The ONNX `TensorProto.DataType` number.
    pub fn onnx(self) -> i32 {
        ALL_DATA_TYPES
            .iter()
            .position(|&t| t == self)
            .map_or(0, |i| i as i32 + 1)
    }

    /// Bits one element occupies in `raw_data` (sub-byte types are packed); 0 for strings.
    pub fn bits(self) -> usize {
        use DataType::*;
        match self {
            String => 0,
            Uint2 | Int2 => 2,
            Uint4 | Int4 | Float4E2M1 => 4,
            Uint8 | Int8 | Bool | Float8E4M3Fn | Float8E4M3Fnuz | Float8E5M2 | Float8E5M2Fnuz
            | Float8E8M0 => 8,
            Uint16 | Int16 | Float16 | Bfloat16 => 16,
            Float | Int32 | Uint32 => 32,
            Int64 | Uint64 | Double | Complex64 => 64,
            Complex128 => 128,
        }
    }

    /// Bytes that `n` elements occupy in `raw_data`; `None` for strings or on overflow.
    pub fn byte_len(self, n: usize) -> Option<usize> {
        match self.bits() {
            0 => None,
            bits => n.checked_mul(bits).map(|b| b.div_ceil(8)),
        }
    }

    /// True for float16, float, double, bfloat16 (the types arithmetic passes treat as real).
    pub fn is_float(self) -> bool {
        matches!(
            self,
            DataType::Float | DataType::Float16 | DataType::Double | DataType::Bfloat16
        )
    }

    /// The lower-case name ONNX Runtime and numpy users know (`float32`, `int8`, `bfloat16` …).
    pub fn name(self) -> &'static str {
        use DataType::*;
        match self {
            Float => "float32",
            Uint8 => "uint8",
            Int8 => "int8",
            Uint16 => "uint16",
            Int16 => "int16",
            Int32 => "int32",
            Int64 => "int64",
            String => "string",
            Bool => "bool",
            Float16 => "float16",
            Double => "float64",
            Uint32 => "uint32",
            Uint64 => "uint64",
            Complex64 => "complex64",
            Complex128 => "complex128",
            Bfloat16 => "bfloat16",
            Float8E4M3Fn => "float8e4m3fn",
            Float8E4M3Fnuz => "float8e4m3fnuz",
            Float8E5M2 => "float8e5m2",
            Float8E5M2Fnuz => "float8e5m2fnuz",
            Uint4 => "uint4",
            Int4 => "int4",
            Float4E2M1 => "float4e2m1",
            Float8E8M0 => "float8e8m0",
            Uint2 => "uint2",
            Int2 => "int2",
        }
    }

    /// Parses a name as printed by [`DataType::name`] (also accepts `float`, `double`, `half`).
    pub fn from_name(name: &str) -> Option<DataType> {
        match name {
            "float" => return Some(DataType::Float),
            "double" => return Some(DataType::Double),
            "half" => return Some(DataType::Float16),
            _ => {}
        }
        ALL_DATA_TYPES.iter().copied().find(|t| t.name() == name)
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn onnx_codes_round_trip() {
        for (i, t) in ALL_DATA_TYPES.iter().enumerate() {
            assert_eq!(t.onnx(), i as i32 + 1);
            assert_eq!(DataType::from_onnx(t.onnx()), Some(*t));
            assert_eq!(DataType::from_name(t.name()), Some(*t));
        }
        assert_eq!(DataType::from_onnx(0), None);
        assert_eq!(DataType::from_onnx(27), None);
        assert_eq!(DataType::Float.onnx(), 1);
        assert_eq!(DataType::Bfloat16.onnx(), 16);
        assert_eq!(DataType::Int4.onnx(), 22);
    }

    #[test]
    fn packed_sizes() {
        assert_eq!(DataType::Int4.byte_len(3), Some(2));
        assert_eq!(DataType::Uint2.byte_len(5), Some(2));
        assert_eq!(DataType::Float.byte_len(3), Some(12));
        assert_eq!(DataType::String.byte_len(3), None);
        assert_eq!(DataType::Complex128.byte_len(usize::MAX), None);
    }
}
