//! ONNX `.pb` value files: one serialized `TensorProto`, `SequenceProto` or `OptionalProto`.
//!
//! The file does not say which message it holds, and protobuf decodes one message's bytes
//! as another without complaint, so the caller says what to expect ([`ValueKind`]), as
//! ONNX's own test runner does from the model input's type.

use std::io::Write;
use std::path::Path;

use bytes::Bytes;
use kiln_passes::tensor::{DataType, Tensor};
use kiln_proto::onnx::{optional_proto, sequence_proto, OptionalProto, SequenceProto, TensorProto};
use prost::Message;

use super::error::{label, Result, TensorFileError};
use super::folder::ValueKind;
use super::write_atomic;
use crate::value::Value;

/// Reads a `.pb` file holding a value of `kind`; returns the name stored in it (often empty)
/// and the value.
pub fn read_pb(path: &Path, kind: ValueKind) -> Result<(String, Value)> {
    let bytes = std::fs::read(path).map_err(|e| TensorFileError::io(path, e))?;
    decode_pb(Bytes::from(bytes), kind, &label(path))
}

/// Decodes the bytes of a `.pb` value file; `file` names it in messages.
pub fn decode_pb(bytes: Bytes, kind: ValueKind, file: &str) -> Result<(String, Value)> {
    let decode_err = |message| {
        move |source| TensorFileError::Decode {
            file: file.to_string(),
            message,
            source,
        }
    };
    match kind {
        ValueKind::Tensor => {
            let p = TensorProto::decode(bytes).map_err(decode_err("TensorProto"))?;
            Ok((p.name.clone(), Value::Tensor(tensor(&p, file)?)))
        }
        ValueKind::Sequence => {
            let p = SequenceProto::decode(bytes).map_err(decode_err("SequenceProto"))?;
            Ok((p.name.clone(), sequence(&p, file)?))
        }
        ValueKind::Optional => {
            let p = OptionalProto::decode(bytes).map_err(decode_err("OptionalProto"))?;
            Ok((p.name.clone(), optional(&p, file)?))
        }
        ValueKind::Map => Err(map_unsupported(file)),
    }
}

fn map_unsupported(file: &str) -> TensorFileError {
    TensorFileError::unsupported(file, "map values (MapProto) are not supported by Kiln")
}

fn tensor(p: &TensorProto, file: &str) -> Result<Tensor> {
    Tensor::from_proto(p).map_err(|e| TensorFileError::tensor(file, e))
}

/// The element type of the tensors inside a value, looking through sequences and optionals.
fn leaf_type(v: &Value) -> Option<DataType> {
    match v {
        Value::Tensor(t) => Some(t.dtype()),
        Value::Sequence { elem_type, items } => {
            elem_type.or_else(|| items.first().and_then(leaf_type))
        }
        Value::Optional(inner) => inner.as_deref().and_then(leaf_type),
    }
}

fn sequence(p: &SequenceProto, file: &str) -> Result<Value> {
    use sequence_proto::DataType as K;
    let elem = K::try_from(p.elem_type).ok();
    let has = [
        !p.tensor_values.is_empty(),
        !p.sparse_tensor_values.is_empty(),
        !p.sequence_values.is_empty(),
        !p.map_values.is_empty(),
        !p.optional_values.is_empty(),
    ];
    // An UNDEFINED elem_type is taken from whichever list is filled (old writers left it 0).
    let kind = match elem {
        Some(K::Undefined) | None if has.iter().filter(|&&h| h).count() <= 1 => {
            match has.iter().position(|&h| h) {
                Some(0) | None => K::Tensor,
                Some(1) => K::SparseTensor,
                Some(2) => K::Sequence,
                Some(3) => K::Map,
                _ => K::Optional,
            }
        }
        Some(k) if k != K::Undefined => k,
        _ => {
            return Err(TensorFileError::corrupt(
                file,
                format!(
                    "SequenceProto has elem_type {} and mixed element lists",
                    p.elem_type
                ),
            ))
        }
    };
    let items: Vec<Value> = match kind {
        K::Tensor => p
            .tensor_values
            .iter()
            .map(|t| tensor(t, file).map(Value::Tensor))
            .collect::<Result<_>>()?,
        K::Sequence => p
            .sequence_values
            .iter()
            .map(|s| sequence(s, file))
            .collect::<Result<_>>()?,
        K::Optional => p
            .optional_values
            .iter()
            .map(|o| optional(o, file))
            .collect::<Result<_>>()?,
        K::Map => return Err(map_unsupported(file)),
        K::SparseTensor => {
            return Err(TensorFileError::unsupported(
                file,
                "sequences of sparse tensors are not supported by Kiln",
            ))
        }
        K::Undefined => Vec::new(),
    };
    let elem_type = items.first().and_then(leaf_type);
    // ONNX sequences are homogeneous; a mixed one would fail later in stranger ways.
    if let Some(bad) = items
        .iter()
        .find(|v| leaf_type(v).is_some_and(|t| Some(t) != elem_type))
    {
        return Err(TensorFileError::corrupt(
            file,
            format!(
                "sequence mixes element types ({} and {})",
                elem_type.map_or("?", |t| t.name()),
                bad.describe()
            ),
        ));
    }
    Ok(Value::Sequence { elem_type, items })
}

fn optional(p: &OptionalProto, file: &str) -> Result<Value> {
    use optional_proto::DataType as K;
    let inner = match K::try_from(p.elem_type).unwrap_or(K::Undefined) {
        // An absent optional carries its type but no value; any value present decides.
        K::Tensor | K::Undefined if p.tensor_value.is_some() => p
            .tensor_value
            .as_ref()
            .map(|t| tensor(t, file).map(Value::Tensor)),
        K::Sequence | K::Undefined if p.sequence_value.is_some() => {
            p.sequence_value.as_ref().map(|s| sequence(s, file))
        }
        K::Optional | K::Undefined if p.optional_value.is_some() => {
            p.optional_value.as_ref().map(|o| optional(o, file))
        }
        K::Map | K::Undefined if p.map_value.is_some() => return Err(map_unsupported(file)),
        K::SparseTensor | K::Undefined if p.sparse_tensor_value.is_some() => {
            return Err(TensorFileError::unsupported(
                file,
                "optional sparse tensors are not supported by Kiln",
            ))
        }
        _ => None,
    };
    Ok(Value::Optional(match inner {
        Some(v) => Some(Box::new(v?)),
        None => None,
    }))
}

/// Writes `value` named `name` as a `.pb` file (the proto for its kind), atomically.
pub fn write_pb(path: &Path, name: &str, value: &Value) -> Result<()> {
    let bytes = encode_pb(name, value, &label(path))?;
    write_atomic(path, |w| w.write_all(&bytes))
}

/// The serialized proto of `value`: a `TensorProto`, `SequenceProto` or `OptionalProto`.
pub fn encode_pb(name: &str, value: &Value, file: &str) -> Result<Vec<u8>> {
    Ok(match value {
        Value::Tensor(t) => t.to_proto(name).encode_to_vec(),
        Value::Sequence { .. } => sequence_proto(name, value, file)?.encode_to_vec(),
        Value::Optional(_) => optional_proto(name, value, file)?.encode_to_vec(),
    })
}

fn sequence_proto(name: &str, value: &Value, file: &str) -> Result<SequenceProto> {
    use sequence_proto::DataType as K;
    let Value::Sequence { items, .. } = value else {
        return Err(TensorFileError::unsupported(file, "not a sequence"));
    };
    let mut p = SequenceProto {
        name: name.to_string(),
        // As onnx.numpy_helper.from_list: an empty sequence is one of tensors.
        elem_type: K::Tensor as i32,
        ..Default::default()
    };
    let mixed =
        || TensorFileError::unsupported(file, format!("sequence '{name}' mixes kinds of values"));
    match items.first() {
        None | Some(Value::Tensor(_)) => {
            for item in items {
                let Value::Tensor(t) = item else {
                    return Err(mixed());
                };
                p.tensor_values.push(t.to_proto(""));
            }
        }
        Some(Value::Sequence { .. }) => {
            p.elem_type = K::Sequence as i32;
            for item in items {
                if !matches!(item, Value::Sequence { .. }) {
                    return Err(mixed());
                }
                p.sequence_values.push(sequence_proto("", item, file)?);
            }
        }
        Some(Value::Optional(_)) => {
            p.elem_type = K::Optional as i32;
            for item in items {
                if !matches!(item, Value::Optional(_)) {
                    return Err(mixed());
                }
                p.optional_values.push(optional_proto("", item, file)?);
            }
        }
    }
    Ok(p)
}

fn optional_proto(name: &str, value: &Value, file: &str) -> Result<OptionalProto> {
    use optional_proto::DataType as K;
    let Value::Optional(inner) = value else {
        return Err(TensorFileError::unsupported(file, "not an optional"));
    };
    let mut p = OptionalProto {
        name: name.to_string(),
        // As onnx.numpy_helper.from_optional: an absent value has an UNDEFINED type.
        elem_type: K::Undefined as i32,
        ..Default::default()
    };
    match inner.as_deref() {
        None => {}
        Some(Value::Tensor(t)) => {
            p.elem_type = K::Tensor as i32;
            p.tensor_value = Some(t.to_proto(""));
        }
        Some(v @ Value::Sequence { .. }) => {
            p.elem_type = K::Sequence as i32;
            p.sequence_value = Some(sequence_proto("", v, file)?);
        }
        Some(v @ Value::Optional(_)) => {
            p.elem_type = K::Optional as i32;
            p.optional_value = Some(Box::new(optional_proto("", v, file)?));
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_passes::tensor::ALL_DATA_TYPES;

    fn sample(dtype: DataType, shape: Vec<usize>) -> Tensor {
        let n: usize = shape.iter().product();
        if dtype == DataType::String {
            let s = (0..n)
                .map(|i| Bytes::from(vec![b'a' + i as u8, 0]))
                .collect();
            return Tensor::from_strings(shape, s).unwrap();
        }
        let len = dtype.byte_len(n).unwrap();
        let raw: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
        Tensor::from_raw(dtype, shape, Bytes::from(raw)).unwrap()
    }

    fn round_trip(name: &str, v: &Value, kind: ValueKind) -> (String, Value) {
        let bytes = encode_pb(name, v, "x.pb").unwrap();
        decode_pb(Bytes::from(bytes), kind, "x.pb").unwrap()
    }

    #[test]
    fn every_type_round_trips_as_tensor_proto() {
        for dtype in ALL_DATA_TYPES {
            for shape in [vec![], vec![5], vec![2, 0], vec![3, 3]] {
                let v = Value::Tensor(sample(dtype, shape));
                assert_eq!(
                    round_trip("in:0", &v, ValueKind::Tensor),
                    ("in:0".into(), v)
                );
            }
        }
    }

    #[test]
    fn sequences_and_optionals_round_trip() {
        let t = |d| Value::Tensor(sample(d, vec![2]));
        let seq = Value::Sequence {
            elem_type: Some(DataType::Float),
            items: vec![t(DataType::Float), t(DataType::Float)],
        };
        assert_eq!(
            round_trip("s", &seq, ValueKind::Sequence),
            ("s".into(), seq.clone())
        );
        let nested = Value::Sequence {
            elem_type: Some(DataType::Float),
            items: vec![
                seq.clone(),
                Value::Sequence {
                    elem_type: None,
                    items: vec![],
                },
            ],
        };
        assert_eq!(round_trip("n", &nested, ValueKind::Sequence).1, nested);
        let empty = Value::Sequence {
            elem_type: None,
            items: vec![],
        };
        assert_eq!(round_trip("e", &empty, ValueKind::Sequence).1, empty);
        for opt in [
            Value::Optional(None),
            Value::Optional(Some(Box::new(t(DataType::Int4)))),
            Value::Optional(Some(Box::new(seq.clone()))),
            Value::Optional(Some(Box::new(Value::Optional(None)))),
        ] {
            assert_eq!(round_trip("o", &opt, ValueKind::Optional).1, opt);
        }
        let opts = Value::Sequence {
            elem_type: Some(DataType::Int8),
            items: vec![
                Value::Optional(Some(Box::new(t(DataType::Int8)))),
                Value::Optional(None),
            ],
        };
        assert_eq!(round_trip("so", &opts, ValueKind::Sequence).1, opts);
    }

    #[test]
    fn mixed_sequences_and_maps_are_refused() {
        let mixed = Value::Sequence {
            elem_type: None,
            items: vec![
                Value::Tensor(sample(DataType::Float, vec![1])),
                Value::Optional(None),
            ],
        };
        assert!(encode_pb("m", &mixed, "x.pb").is_err());
        let two_types = SequenceProto {
            elem_type: 1,
            tensor_values: vec![
                sample(DataType::Float, vec![1]).to_proto(""),
                sample(DataType::Int8, vec![1]).to_proto(""),
            ],
            ..Default::default()
        };
        let e = decode_pb(
            two_types.encode_to_vec().into(),
            ValueKind::Sequence,
            "x.pb",
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("x.pb: sequence mixes element types"),
            "{e}"
        );
        let e = decode_pb(Bytes::new(), ValueKind::Map, "x.pb").unwrap_err();
        assert_eq!(
            e.to_string(),
            "x.pb: map values (MapProto) are not supported by Kiln"
        );
        let map_seq = SequenceProto {
            elem_type: 4,
            ..Default::default()
        };
        let e = decode_pb(map_seq.encode_to_vec().into(), ValueKind::Sequence, "x.pb").unwrap_err();
        assert!(matches!(e, TensorFileError::Unsupported { .. }));
    }

    #[test]
    fn damaged_files_are_errors() {
        let e = decode_pb(
            Bytes::from_static(b"\xff\xff\xff"),
            ValueKind::Tensor,
            "x.pb",
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("x.pb: does not decode as an ONNX TensorProto"),
            "{e}"
        );
        let mut p = sample(DataType::Float, vec![4]).to_proto("x");
        p.raw_data = p.raw_data.slice(..6);
        let e = decode_pb(p.encode_to_vec().into(), ValueKind::Tensor, "x.pb").unwrap_err();
        assert_eq!(
            e.to_string(),
            "x.pb: raw_data holds 6 bytes but shape [4] of float32 needs 16"
        );
        let bytes = sample(DataType::Float, vec![64])
            .to_proto("x")
            .encode_to_vec();
        for len in 0..bytes.len() {
            // Truncations either fail to decode or fail the length check; never panic.
            assert!(decode_pb(
                Bytes::copy_from_slice(&bytes[..len]),
                ValueKind::Tensor,
                "x.pb"
            )
            .is_err());
        }
    }

    #[test]
    fn write_pb_is_atomic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("input_0.pb");
        let v = Value::Tensor(sample(DataType::Bfloat16, vec![2, 2]));
        write_pb(&path, "x", &v).unwrap();
        assert_eq!(read_pb(&path, ValueKind::Tensor).unwrap(), ("x".into(), v));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
