//! Dense tensors: element type, shape and little-endian bytes held by reference.
//!
//! A [`Tensor`] is what Kiln passes between the graph, the constant evaluator, tensor files
//! and ONNX Runtime. Its bytes are a `bytes::Bytes`, so a weight decoded from a memory-mapped
//! model stays a view of the map until a pass changes it.

mod convert;
mod dtype;
mod element;
mod packed;
mod proto;

use bytes::Bytes;
use thiserror::Error;

pub use convert::raw_to_f64;
pub use dtype::{DataType, ALL_DATA_TYPES};
pub use element::Element;
pub use packed::{pack_nibbles, unpack_nibbles};

/// The most elements a tensor may declare (2^40); more is taken as a corrupt or hostile file.
pub const MAX_ELEMENTS: u64 = 1 << 40;

/// What is wrong with a tensor's declaration or data.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum TensorError {
    /// The `data_type` number is not an ONNX element type.
    #[error("unknown element type {0}")]
    UnknownType(i32),
    /// The tensor has no element type (UNDEFINED).
    #[error("element type is UNDEFINED")]
    Undefined,
    /// A dimension is negative.
    #[error("negative dimension in shape {0:?}")]
    NegativeDim(Vec<i64>),
    /// The dims multiply past [`MAX_ELEMENTS`].
    #[error("shape {dims:?} has more than {limit} elements (2^40), a fixed limit")]
    TooManyElements {
        /// The declared dims.
        dims: Vec<i64>,
        /// The cap that was exceeded.
        limit: u64,
    },
    /// The data holds a different number of bytes or values than the shape needs.
    #[error("{what} holds {got} {unit} but shape {dims:?} of {dtype} needs {expected}")]
    DataLength {
        /// Which field was read.
        what: &'static str,
        /// The unit counted (bytes or values).
        unit: &'static str,
        /// The declared dims.
        dims: Vec<i64>,
        /// The element type.
        dtype: DataType,
        /// How many the shape needs.
        expected: usize,
        /// How many there are.
        got: usize,
    },
    /// The tensor's data lives in an external file that was not resolved.
    #[error("data is external and was not loaded")]
    ExternalUnresolved,
    /// The tensor is a segment of a larger tensor, which Kiln does not reassemble.
    #[error("segmented tensors are not supported")]
    Segmented,
    /// The data was asked for as a type it is not.
    #[error("tensor is {actual}, not {requested}")]
    WrongType {
        /// The tensor's element type.
        actual: DataType,
        /// The type asked for.
        requested: DataType,
    },
}

/// A tensor's payload: packed little-endian bytes, or byte strings for `string` tensors.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// `raw_data` layout: row-major, little-endian, sub-byte types packed low bits first.
    Raw(Bytes),
    /// One byte string per element.
    Strings(Vec<Bytes>),
}

/// A dense tensor with a static shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    dtype: DataType,
    shape: Vec<usize>,
    data: TensorData,
}

/// Checks dims and returns the element count, refusing negatives and more than [`MAX_ELEMENTS`].
pub fn element_count(dims: &[i64]) -> Result<usize, TensorError> {
    let mut n: u64 = 1;
    for &d in dims {
        if d < 0 {
            return Err(TensorError::NegativeDim(dims.to_vec()));
        }
        n = n.saturating_mul(d as u64);
    }
    if n > MAX_ELEMENTS {
        return Err(TensorError::TooManyElements {
            dims: dims.to_vec(),
            limit: MAX_ELEMENTS,
        });
    }
    Ok(n as usize)
}

fn dims_of(shape: &[usize]) -> Vec<i64> {
    shape.iter().map(|&d| d as i64).collect()
}

impl Tensor {
    /// A numeric tensor from packed little-endian bytes; checks the length against the shape.
    pub fn from_raw(dtype: DataType, shape: Vec<usize>, raw: Bytes) -> Result<Tensor, TensorError> {
        let dims = dims_of(&shape);
        let n = element_count(&dims)?;
        let expected = dtype.byte_len(n).ok_or(TensorError::WrongType {
            actual: DataType::String,
            requested: dtype,
        })?;
        if raw.len() != expected {
            return Err(TensorError::DataLength {
                what: "raw_data",
                unit: "bytes",
                dims,
                dtype,
                expected,
                got: raw.len(),
            });
        }
        Ok(Tensor {
            dtype,
            shape,
            data: TensorData::Raw(raw),
        })
    }

    /// A string tensor; checks the count against the shape.
    pub fn from_strings(shape: Vec<usize>, strings: Vec<Bytes>) -> Result<Tensor, TensorError> {
        let dims = dims_of(&shape);
        let n = element_count(&dims)?;
        if strings.len() != n {
            return Err(TensorError::DataLength {
                what: "string_data",
                unit: "values",
                dims,
                dtype: DataType::String,
                expected: n,
                got: strings.len(),
            });
        }
        Ok(Tensor {
            dtype: DataType::String,
            shape,
            data: TensorData::Strings(strings),
        })
    }

    /// A tensor from a vector of elements; the caller guarantees `values.len()` fits `shape`.
    pub fn from_vec<T: Element>(shape: Vec<usize>, values: Vec<T>) -> Result<Tensor, TensorError> {
        let mut raw = Vec::with_capacity(values.len() * T::SIZE);
        for v in values {
            v.write_le(&mut raw);
        }
        Tensor::from_raw(T::DTYPE, shape, Bytes::from(raw))
    }

    /// A scalar (rank 0) tensor.
    pub fn scalar<T: Element>(value: T) -> Tensor {
        let mut raw = Vec::with_capacity(T::SIZE);
        value.write_le(&mut raw);
        Tensor {
            dtype: T::DTYPE,
            shape: Vec::new(),
            data: TensorData::Raw(Bytes::from(raw)),
        }
    }

    /// The element type.
    pub fn dtype(&self) -> DataType {
        self.dtype
    }

    /// The dimensions.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The dimensions as ONNX `dims` (int64).
    pub fn dims(&self) -> Vec<i64> {
        dims_of(&self.shape)
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// True when the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The payload.
    pub fn data(&self) -> &TensorData {
        &self.data
    }

    /// The packed bytes of a numeric tensor (`None` for strings).
    pub fn raw(&self) -> Option<&Bytes> {
        match &self.data {
            TensorData::Raw(b) => Some(b),
            TensorData::Strings(_) => None,
        }
    }

    /// The byte strings of a string tensor (`None` for numeric tensors).
    pub fn strings(&self) -> Option<&[Bytes]> {
        match &self.data {
            TensorData::Strings(s) => Some(s),
            TensorData::Raw(_) => None,
        }
    }

    /// Bytes of payload (for strings, the sum of their lengths).
    pub fn byte_size(&self) -> usize {
        match &self.data {
            TensorData::Raw(b) => b.len(),
            TensorData::Strings(s) => s.iter().map(Bytes::len).sum(),
        }
    }

    /// The elements as `T`, which must be exactly this tensor's element type.
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>, TensorError> {
        match &self.data {
            TensorData::Raw(raw) if T::DTYPE == self.dtype => {
                Ok(raw.chunks_exact(T::SIZE).map(T::read_le).collect())
            }
            _ => Err(TensorError::WrongType {
                actual: self.dtype,
                requested: T::DTYPE,
            }),
        }
    }

    /// [`Tensor::to_vec`] for a large weight read once: converted chunk by chunk, each chunk's
    /// pages given back after it is read when the bytes are a memory-mapped model file's (see
    /// `kiln_proto::release_pages`), so reading a mapped model weight by weight does not leave
    /// the whole file resident. The tensor itself is unchanged and can be read again.
    pub fn read_once<T: Element>(&self) -> Result<Vec<T>, TensorError> {
        /// Bytes converted between releases: big enough that madvise calls cost nothing.
        const CHUNK: usize = 4 << 20;
        match &self.data {
            TensorData::Raw(raw) if T::DTYPE == self.dtype => {
                let mut out = Vec::with_capacity(raw.len() / T::SIZE);
                // A multiple of the element size, so no element straddles two chunks.
                for chunk in raw.chunks(CHUNK / T::SIZE * T::SIZE) {
                    out.extend(chunk.chunks_exact(T::SIZE).map(T::read_le));
                    kiln_proto::release_pages(chunk);
                }
                Ok(out)
            }
            _ => Err(TensorError::WrongType {
                actual: self.dtype,
                requested: T::DTYPE,
            }),
        }
    }

    /// Every element widened to `f64` (complex: real and imaginary interleaved); `None` for strings.
    pub fn to_f64_vec(&self) -> Option<Vec<f64>> {
        raw_to_f64(self.dtype, self.raw()?, self.len())
    }

    /// The same data with another shape of equal element count.
    pub fn reshaped(&self, shape: Vec<usize>) -> Result<Tensor, TensorError> {
        let n = element_count(&dims_of(&shape))?;
        if n != self.len() {
            return Err(TensorError::DataLength {
                what: "reshape",
                unit: "elements",
                dims: dims_of(&shape),
                dtype: self.dtype,
                expected: n,
                got: self.len(),
            });
        }
        Ok(Tensor {
            dtype: self.dtype,
            shape,
            data: self.data.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_raw_checks_length() {
        let err = Tensor::from_raw(DataType::Float, vec![2, 2], Bytes::from(vec![0u8; 12]));
        assert!(matches!(
            err,
            Err(TensorError::DataLength {
                expected: 16,
                got: 12,
                ..
            })
        ));
    }

    #[test]
    fn read_once_reads_what_to_vec_reads() {
        // Over two chunks, heap-backed (nothing to release) and from a mapped model file.
        let values: Vec<f32> = (0..(3 << 20)).map(|i| i as f32 * 0.5 - 7.0).collect();
        let t = Tensor::from_vec(vec![3, 1 << 20], values.clone()).unwrap();
        assert_eq!(t.read_once::<f32>().unwrap(), values);
        assert!(t.read_once::<i32>().is_err());

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.onnx");
        let model = kiln_proto::onnx::ModelProto {
            ir_version: 8,
            graph: Some(kiln_proto::onnx::GraphProto {
                initializer: vec![t.to_proto("w")],
                ..Default::default()
            }),
            ..Default::default()
        };
        kiln_proto::save_model(&model, &path, &Default::default()).unwrap();
        let loaded = kiln_proto::load_model(&path).unwrap();
        let graph = loaded.model.graph.as_ref().unwrap();
        let mapped = Tensor::from_proto(&graph.initializer[0]).unwrap();
        assert!(loaded.sources().locate(mapped.raw().unwrap()).is_some());
        assert_eq!(mapped.read_once::<f32>().unwrap(), values);
        // Released pages read back the same.
        assert_eq!(mapped.to_vec::<f32>().unwrap(), values);
    }

    #[test]
    fn huge_shapes_are_refused_before_allocating() {
        let err = element_count(&[1 << 20, 1 << 20, 2]);
        assert!(matches!(err, Err(TensorError::TooManyElements { .. })));
        let err = element_count(&[i64::MAX, i64::MAX]);
        assert!(matches!(err, Err(TensorError::TooManyElements { .. })));
        assert!(matches!(
            element_count(&[3, -1]),
            Err(TensorError::NegativeDim(_))
        ));
        assert_eq!(element_count(&[]), Ok(1));
        assert_eq!(element_count(&[0, 1 << 50]), Ok(0));
    }

    #[test]
    fn vec_round_trip() {
        let t = Tensor::from_vec(vec![3], vec![1.5f32, -2.0, 0.25]).unwrap();
        assert_eq!(t.to_vec::<f32>().unwrap(), vec![1.5, -2.0, 0.25]);
        assert_eq!(t.to_f64_vec().unwrap(), vec![1.5, -2.0, 0.25]);
        assert!(t.to_vec::<i32>().is_err());
    }
}
