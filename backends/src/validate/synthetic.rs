//! Seeded synthetic inputs, so two models can be compared without data files: floats uniform
//! in [0, 1), integers in [0, 10) by default (small enough to be valid token ids and indices;
//! bounds can be set per input), bools fair coins. Free dims are 1 unless given by name.
//! An attention mask (`attention_mask`, `encoder_attention_mask`, TF's `input_mask`) is all
//! ones unless a bound is given for it by name: random zeros would mask whole rows, which no
//! tokenizer produces and which makes a quantized decoder's logits meaningless to compare
//! (measured: 4.4 dB on a dynamo-exported Llama whose all-ones SQNR is 16.9 dB).

use std::collections::BTreeMap;

use half::{bf16, f16};
use kiln_passes::tensor::{DataType, Tensor};
use thiserror::Error;

use crate::runtime::{Dim, IoInfo, IoKind};
use crate::value::{NamedValues, Value};

/// Why synthetic inputs cannot be made for a model.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum SyntheticError {
    /// The input's type has no synthetic generator (strings, sequences, maps, …).
    #[error("input '{input}' is {kind}, for which Kiln makes no synthetic data; give --inputs")]
    Unsupported {
        /// The input.
        input: String,
        /// Its kind, described.
        kind: String,
    },
}

/// A small, fast, seeded generator (xorshift64*, seeded through splitmix64 so that seeds 0, 1,
/// 2 … give unrelated streams).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // xorshift's state must not be zero.
        Rng(if z == 0 { 1 } else { z })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1) with 24 bits, exactly representable in float32.
    pub fn next_unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in [0, n).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// How synthetic inputs are shaped and bounded.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticSpec {
    /// Sizes of free dims by name; others are 1.
    pub dims: BTreeMap<String, usize>,
    /// Exclusive upper bound of integer inputs by input name (a BERT `token_type_ids` needs 2).
    pub int_high: BTreeMap<String, u64>,
    /// Exclusive upper bound of other integer inputs.
    pub default_int_high: u64,
}

impl Default for SyntheticSpec {
    fn default() -> SyntheticSpec {
        SyntheticSpec {
            dims: BTreeMap::new(),
            int_high: BTreeMap::new(),
            default_int_high: 10,
        }
    }
}

/// One sample of inputs for `inputs` (a session's), shaped and bounded by `spec`.
pub fn synthetic_inputs(
    inputs: &[IoInfo],
    spec: &SyntheticSpec,
    rng: &mut Rng,
) -> Result<NamedValues, SyntheticError> {
    inputs
        .iter()
        .map(|info| Ok((info.name.clone(), Value::Tensor(tensor(info, spec, rng)?))))
        .collect()
}

/// The size of a free dim: given by name, else a sum such as Optimum's
/// `past_sequence_length + sequence_length` (each term given, a number, or 1), else 1. A sum
/// must agree with its terms, or the model's own shapes contradict each other.
fn symbolic_size(name: &str, dims: &BTreeMap<String, usize>) -> usize {
    if let Some(&n) = dims.get(name) {
        return n;
    }
    if !name.contains('+') {
        return 1;
    }
    name.split('+')
        .map(str::trim)
        .map(|t| {
            t.parse::<usize>()
                .ok()
                .or_else(|| dims.get(t).copied())
                .unwrap_or(1)
        })
        .sum()
}

fn tensor(info: &IoInfo, spec: &SyntheticSpec, rng: &mut Rng) -> Result<Tensor, SyntheticError> {
    let dims = &spec.dims;
    let high = spec
        .int_high
        .get(&info.name)
        .copied()
        .unwrap_or(spec.default_int_high)
        .max(1);
    let unsupported = || SyntheticError::Unsupported {
        input: info.name.clone(),
        kind: info.kind.to_string(),
    };
    let IoKind::Tensor {
        dtype: Some(dtype),
        dims: declared,
    } = &info.kind
    else {
        return Err(unsupported());
    };
    let shape: Vec<usize> = declared
        .iter()
        .map(|d| match d {
            Dim::Fixed(n) => *n,
            Dim::Symbolic(s) => symbolic_size(s, dims),
            Dim::Unknown => 1,
        })
        .collect();
    let n: usize = shape.iter().product();
    let ones = is_attention_mask(&info.name) && !spec.int_high.contains_key(&info.name);
    let small = |rng: &mut Rng| if ones { 1 } else { rng.below(high) };
    // Shapes come from the model and are within what ORT accepted, so from_vec cannot fail on
    // length; an error here would be a bug, reported as unsupported rather than a panic.
    let t = match dtype {
        DataType::Float => Tensor::from_vec(shape, (0..n).map(|_| rng.next_unit()).collect()),
        DataType::Double => {
            Tensor::from_vec(shape, (0..n).map(|_| f64::from(rng.next_unit())).collect())
        }
        DataType::Float16 => Tensor::from_vec(
            shape,
            (0..n).map(|_| f16::from_f32(rng.next_unit())).collect(),
        ),
        DataType::Bfloat16 => Tensor::from_vec(
            shape,
            (0..n).map(|_| bf16::from_f32(rng.next_unit())).collect(),
        ),
        DataType::Int64 => Tensor::from_vec(shape, (0..n).map(|_| small(rng) as i64).collect()),
        DataType::Int32 => Tensor::from_vec(shape, (0..n).map(|_| small(rng) as i32).collect()),
        DataType::Int16 => Tensor::from_vec(shape, (0..n).map(|_| small(rng) as i16).collect()),
        DataType::Int8 => Tensor::from_vec(shape, (0..n).map(|_| small(rng) as i8).collect()),
        DataType::Uint64 => Tensor::from_vec(shape, (0..n).map(|_| small(rng)).collect()),
        DataType::Uint32 => Tensor::from_vec(shape, (0..n).map(|_| small(rng) as u32).collect()),
        DataType::Uint16 => Tensor::from_vec(shape, (0..n).map(|_| small(rng) as u16).collect()),
        DataType::Uint8 => Tensor::from_vec(shape, (0..n).map(|_| small(rng) as u8).collect()),
        DataType::Bool => {
            Tensor::from_vec(shape, (0..n).map(|_| ones || rng.below(2) == 1).collect())
        }
        _ => return Err(unsupported()),
    };
    t.map_err(|_| unsupported())
}

/// Whether an input is a tokenizer's attention mask, by the names exporters give it.
fn is_attention_mask(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name.ends_with("attention_mask") || name == "input_mask"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_and_in_range() {
        let info = IoInfo {
            name: "ids".into(),
            kind: IoKind::Tensor {
                dtype: Some(DataType::Int64),
                dims: vec![Dim::Symbolic("batch".into()), Dim::Fixed(8)],
            },
        };
        let mut dims = SyntheticSpec::default();
        dims.dims.insert("batch".to_string(), 3);
        let a = synthetic_inputs(std::slice::from_ref(&info), &dims, &mut Rng::new(7)).unwrap();
        let b = synthetic_inputs(std::slice::from_ref(&info), &dims, &mut Rng::new(7)).unwrap();
        assert_eq!(a, b);
        let t = a[0].1.as_tensor().unwrap();
        assert_eq!(t.shape(), [3, 8]);
        assert!(t
            .to_vec::<i64>()
            .unwrap()
            .iter()
            .all(|v| (0..10).contains(v)));
        let mut r = Rng::new(0);
        assert!((0..1000)
            .map(|_| r.next_unit())
            .all(|u| (0.0..1.0).contains(&u)));
        let s = IoInfo {
            name: "s".into(),
            kind: IoKind::Tensor {
                dtype: Some(DataType::String),
                dims: vec![],
            },
        };
        assert!(synthetic_inputs(&[s], &dims, &mut Rng::new(0)).is_err());
    }

    #[test]
    fn attention_masks_are_ones_unless_bounded_by_name() {
        let mask = |name: &str, dtype| IoInfo {
            name: name.into(),
            kind: IoKind::Tensor {
                dtype: Some(dtype),
                dims: vec![Dim::Fixed(64)],
            },
        };
        let inputs = [
            mask("attention_mask", DataType::Int64),
            mask("encoder_attention_mask", DataType::Bool),
            mask("input_ids", DataType::Int64),
        ];
        let mut spec = SyntheticSpec::default();
        let got = synthetic_inputs(&inputs, &spec, &mut Rng::new(3)).unwrap();
        let ints =
            |i: usize, got: &NamedValues| got[i].1.as_tensor().unwrap().to_vec::<i64>().unwrap();
        assert!(ints(0, &got).iter().all(|&v| v == 1));
        let bools = got[1].1.as_tensor().unwrap().to_vec::<bool>().unwrap();
        assert!(bools.iter().all(|&b| b));
        assert!(ints(2, &got).iter().any(|&v| v != 1));
        // A bound given by name brings the random values back (padding tests).
        spec.int_high.insert("attention_mask".into(), 2);
        let got = synthetic_inputs(&inputs, &spec, &mut Rng::new(3)).unwrap();
        assert!(ints(0, &got).contains(&0));
    }

    #[test]
    fn a_sum_of_dims_is_the_sum_of_its_terms() {
        let dims: BTreeMap<String, usize> = [("past".to_string(), 3)].into_iter().collect();
        assert_eq!(symbolic_size("past + sequence", &dims), 4);
        assert_eq!(symbolic_size("past+2", &dims), 5);
        assert_eq!(symbolic_size("past", &dims), 3);
        assert_eq!(symbolic_size("other", &dims), 1);
    }
}
