//! Decoding of every numeric element type to `f64`, for comparisons and metrics.
//!
//! The 8-, 4- and 2-bit float formats are decoded bit by bit following the ONNX
//! specification of each (finite-only `fn`, `fnuz` with a single NaN at 0x80, E8M0 scales).

use half::{bf16, f16};

use super::DataType;

/// Decodes `n` elements of `dtype` from little-endian `raw` into `f64`
/// (complex types yield real and imaginary parts interleaved, `2n` values).
pub fn raw_to_f64(dtype: DataType, raw: &[u8], n: usize) -> Option<Vec<f64>> {
    use DataType::*;
    let fixed = |size: usize, f: &dyn Fn(&[u8]) -> f64| -> Vec<f64> {
        raw.chunks_exact(size).take(n).map(f).collect()
    };
    let v = match dtype {
        Float => fixed(4, &|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64),
        Complex64 => raw
            .chunks_exact(4)
            .take(2 * n)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64)
            .collect(),
        Double => fixed(8, &|b| f64::from_le_bytes(to8(b))),
        Complex128 => raw
            .chunks_exact(8)
            .take(2 * n)
            .map(|b| f64::from_le_bytes(to8(b)))
            .collect(),
        Float16 => fixed(2, &|b| f16::from_le_bytes([b[0], b[1]]).to_f64()),
        Bfloat16 => fixed(2, &|b| bf16::from_le_bytes([b[0], b[1]]).to_f64()),
        Int8 => fixed(1, &|b| b[0] as i8 as f64),
        Uint8 => fixed(1, &|b| b[0] as f64),
        Bool => fixed(1, &|b| (b[0] != 0) as u8 as f64),
        Int16 => fixed(2, &|b| i16::from_le_bytes([b[0], b[1]]) as f64),
        Uint16 => fixed(2, &|b| u16::from_le_bytes([b[0], b[1]]) as f64),
        Int32 => fixed(4, &|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64),
        Uint32 => fixed(4, &|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64),
        Int64 => fixed(8, &|b| i64::from_le_bytes(to8(b)) as f64),
        Uint64 => fixed(8, &|b| u64::from_le_bytes(to8(b)) as f64),
        Float8E4M3Fn => fixed(1, &|b| f8_e4m3fn(b[0])),
        Float8E4M3Fnuz => fixed(1, &|b| f8_e4m3fnuz(b[0])),
        Float8E5M2 => fixed(1, &|b| f8_e5m2(b[0])),
        Float8E5M2Fnuz => fixed(1, &|b| f8_e5m2fnuz(b[0])),
        Float8E8M0 => fixed(1, &|b| f8_e8m0(b[0])),
        Int4 | Uint4 | Float4E2M1 => (0..n)
            .map(|i| {
                let byte = raw[i / 2];
                let nib = if i % 2 == 0 { byte & 0x0F } else { byte >> 4 };
                match dtype {
                    Int4 => ((nib << 4) as i8 >> 4) as f64,
                    Uint4 => nib as f64,
                    _ => f4_e2m1(nib),
                }
            })
            .collect(),
        Int2 | Uint2 => (0..n)
            .map(|i| {
                let bits = (raw[i / 4] >> (2 * (i % 4))) & 0b11;
                if dtype == Int2 {
                    ((bits << 6) as i8 >> 6) as f64
                } else {
                    bits as f64
                }
            })
            .collect(),
        String => return None,
    };
    Some(v)
}

fn to8(b: &[u8]) -> [u8; 8] {
    [b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]
}

/// Decodes a minifloat with the given exponent/mantissa widths and bias (no special values).
fn minifloat(sign: bool, exp: u32, man: u32, man_bits: u32, bias: i32) -> f64 {
    let s = if sign { -1.0 } else { 1.0 };
    let frac = man as f64 / (1u32 << man_bits) as f64;
    if exp == 0 {
        s * frac * 2f64.powi(1 - bias)
    } else {
        s * (1.0 + frac) * 2f64.powi(exp as i32 - bias)
    }
}

fn f8_e4m3fn(b: u8) -> f64 {
    if b & 0x7F == 0x7F {
        return f64::NAN;
    }
    minifloat(
        b & 0x80 != 0,
        ((b >> 3) & 0xF) as u32,
        (b & 0x7) as u32,
        3,
        7,
    )
}

fn f8_e4m3fnuz(b: u8) -> f64 {
    if b == 0x80 {
        return f64::NAN;
    }
    minifloat(
        b & 0x80 != 0,
        ((b >> 3) & 0xF) as u32,
        (b & 0x7) as u32,
        3,
        8,
    )
}

fn f8_e5m2(b: u8) -> f64 {
    let exp = ((b >> 2) & 0x1F) as u32;
    let man = (b & 0x3) as u32;
    if exp == 0x1F {
        return match (man, b & 0x80 != 0) {
            (0, false) => f64::INFINITY,
            (0, true) => f64::NEG_INFINITY,
            _ => f64::NAN,
        };
    }
    minifloat(b & 0x80 != 0, exp, man, 2, 15)
}

fn f8_e5m2fnuz(b: u8) -> f64 {
    if b == 0x80 {
        return f64::NAN;
    }
    minifloat(
        b & 0x80 != 0,
        ((b >> 2) & 0x1F) as u32,
        (b & 0x3) as u32,
        2,
        16,
    )
}

fn f8_e8m0(b: u8) -> f64 {
    if b == 0xFF {
        return f64::NAN;
    }
    2f64.powi(b as i32 - 127)
}

fn f4_e2m1(nib: u8) -> f64 {
    minifloat(
        nib & 0x8 != 0,
        ((nib >> 1) & 0x3) as u32,
        (nib & 0x1) as u32,
        1,
        1,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float8_values_match_the_spec_tables() {
        assert_eq!(f8_e4m3fn(0x38), 1.0);
        assert_eq!(f8_e4m3fn(0x7E), 448.0);
        assert!(f8_e4m3fn(0xFF).is_nan());
        assert_eq!(f8_e4m3fnuz(0x7F), 240.0);
        assert!(f8_e4m3fnuz(0x80).is_nan());
        assert_eq!(f8_e5m2(0x7B), 57344.0);
        assert_eq!(f8_e5m2(0x7C), f64::INFINITY);
        assert_eq!(f8_e5m2fnuz(0x7F), 57344.0);
        assert_eq!(f8_e8m0(127), 1.0);
        assert_eq!(f4_e2m1(0x7), 6.0);
        assert_eq!(f4_e2m1(0x9), -0.5);
    }

    #[test]
    fn packed_integers_unpack_low_nibble_first() {
        // onnx.helper.make_tensor(INT4, [3], [1, -2, 3]) packs to bytes [225, 3].
        assert_eq!(
            raw_to_f64(DataType::Int4, &[225, 3], 3),
            Some(vec![1.0, -2.0, 3.0])
        );
        // UINT2 [1, 2, 3, 0, 1] packs to [57, 1].
        assert_eq!(
            raw_to_f64(DataType::Uint2, &[57, 1], 5),
            Some(vec![1.0, 2.0, 3.0, 0.0, 1.0])
        );
    }
}
