//! Small builders for hand-written ONNX protos in tests: seeded noise, float value infos and
//! attributes.

use kiln_passes::tensor::DataType;
use kiln_proto::onnx::attribute_proto::AttributeType;
use kiln_proto::onnx::tensor_shape_proto::{dimension, Dimension};
use kiln_proto::onnx::{type_proto, AttributeProto, TensorShapeProto, TypeProto, ValueInfoProto};

/// Deterministic pseudo-random floats in [-1, 1).
pub fn noise(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// A float32 value info with fixed dims.
pub fn float_vi(name: &str, dims: &[usize]) -> ValueInfoProto {
    ValueInfoProto {
        name: name.to_string(),
        r#type: Some(TypeProto {
            denotation: String::new(),
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: DataType::Float.onnx(),
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| Dimension {
                            denotation: String::new(),
                            value: Some(dimension::Value::DimValue(d as i64)),
                        })
                        .collect(),
                }),
            })),
        }),
        ..ValueInfoProto::default()
    }
}

/// An INT attribute.
pub fn attr_int(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i: Some(i),
        ..AttributeProto::default()
    }
}

/// An INTS attribute.
pub fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: v.to_vec(),
        ..AttributeProto::default()
    }
}
