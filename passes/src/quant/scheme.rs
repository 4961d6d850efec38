//! Integer quantization schemes and the scale / zero-point arithmetic.
//!
//! The formulas follow ONNX Runtime's quantization tool (`compute_scale_zp`,
//! `get_qmin_qmax_for_qType`) so a range gives the same scale and zero point in both tools,
//! and the rounding is the one `QuantizeLinear` specifies: half to even, then saturate.

use std::fmt;
use std::str::FromStr;

use crate::tensor::DataType;

/// An integer element type a tensor can be quantized to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QuantType {
    /// 8-bit unsigned.
    Uint8,
    /// 8-bit signed.
    Int8,
    /// 16-bit unsigned.
    Uint16,
    /// 16-bit signed.
    Int16,
    /// 32-bit signed: biases only.
    Int32,
}

impl QuantType {
    /// The ONNX element type.
    pub fn data_type(self) -> DataType {
        match self {
            QuantType::Uint8 => DataType::Uint8,
            QuantType::Int8 => DataType::Int8,
            QuantType::Uint16 => DataType::Uint16,
            QuantType::Int16 => DataType::Int16,
            QuantType::Int32 => DataType::Int32,
        }
    }

    /// The quantized type of an ONNX element type, if it is one.
    pub fn from_data_type(dtype: DataType) -> Option<QuantType> {
        Some(match dtype {
            DataType::Uint8 => QuantType::Uint8,
            DataType::Int8 => QuantType::Int8,
            DataType::Uint16 => QuantType::Uint16,
            DataType::Int16 => QuantType::Int16,
            DataType::Int32 => QuantType::Int32,
            _ => return None,
        })
    }

    /// The name used on the command line and in files (`uint8`, `int16`, ...).
    pub fn name(self) -> &'static str {
        match self {
            QuantType::Uint8 => "uint8",
            QuantType::Int8 => "int8",
            QuantType::Uint16 => "uint16",
            QuantType::Int16 => "int16",
            QuantType::Int32 => "int32",
        }
    }

    /// Whether the type is signed.
    pub fn is_signed(self) -> bool {
        matches!(self, QuantType::Int8 | QuantType::Int16 | QuantType::Int32)
    }

    /// Bits per element.
    pub fn bits(self) -> u32 {
        match self {
            QuantType::Uint8 | QuantType::Int8 => 8,
            QuantType::Uint16 | QuantType::Int16 => 16,
            QuantType::Int32 => 32,
        }
    }

    /// The full range of the type.
    pub fn full_range(self) -> (i64, i64) {
        match self {
            QuantType::Uint8 => (0, 255),
            QuantType::Int8 => (-128, 127),
            QuantType::Uint16 => (0, 65_535),
            QuantType::Int16 => (-32_768, 32_767),
            QuantType::Int32 => (i32::MIN as i64, i32::MAX as i64),
        }
    }

    /// The integer range a scheme may use: reduced range (one bit less, for CPUs whose
    /// int8 dot products overflow 16-bit accumulators) takes precedence, then the symmetric
    /// range of signed types (-127..127, so zero sits in the middle), else the full range.
    pub fn qrange(self, symmetric: bool, reduce_range: bool) -> (i64, i64) {
        if reduce_range {
            return match self {
                QuantType::Uint8 => (0, 127),
                QuantType::Int8 => (-64, 64),
                QuantType::Uint16 => (0, 32_767),
                QuantType::Int16 => (-16_384, 16_384),
                QuantType::Int32 => self.full_range(),
            };
        }
        match (self, symmetric) {
            (QuantType::Int8, true) => (-127, 127),
            (QuantType::Int16, true) => (-32_767, 32_767),
            _ => self.full_range(),
        }
    }
}

impl fmt::Display for QuantType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for QuantType {
    type Err = String;
    fn from_str(s: &str) -> Result<QuantType, String> {
        match s {
            "uint8" => Ok(QuantType::Uint8),
            "int8" => Ok(QuantType::Int8),
            "uint16" => Ok(QuantType::Uint16),
            "int16" => Ok(QuantType::Int16),
            _ => Err(format!(
                "unknown quantized type '{s}' (expected uint8, int8, uint16 or int16)"
            )),
        }
    }
}

/// How one tensor is quantized: element type, symmetry and range reduction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuantScheme {
    /// Element type.
    pub dtype: QuantType,
    /// Zero point in the middle of the range (real zero maps to it exactly, ranges are ±absmax).
    pub symmetric: bool,
    /// Use one bit less of range.
    pub reduce_range: bool,
}

impl QuantScheme {
    /// A scheme with no range reduction.
    pub fn new(dtype: QuantType, symmetric: bool) -> QuantScheme {
        QuantScheme {
            dtype,
            symmetric,
            reduce_range: false,
        }
    }

    /// The integer range this scheme uses.
    pub fn qrange(&self) -> (i64, i64) {
        self.dtype.qrange(self.symmetric, self.reduce_range)
    }

    /// Scale and zero point for real values in `[rmin, rmax]` (ORT's `compute_scale_zp`):
    /// the range is widened to include 0 (so zero is exact, as padding needs), widened to at
    /// least `min_real_range` when given, made ±absmax when symmetric; a degenerate range
    /// gives scale 1, zero point 0.
    pub fn params(&self, rmin: f32, rmax: f32, min_real_range: Option<f32>) -> QuantParams {
        let (qmin, qmax) = self.qrange();
        let mut rmin = if rmin.is_finite() { rmin.min(0.0) } else { 0.0 };
        let mut rmax = if rmax.is_finite() { rmax.max(0.0) } else { 0.0 };
        if let Some(m) = min_real_range {
            rmax = rmax.max(rmin + m);
        }
        if self.symmetric {
            let absmax = rmin.abs().max(rmax.abs());
            rmin = -absmax;
            rmax = absmax;
        }
        let scale = (rmax as f64 - rmin as f64) / (qmax as f64 - qmin as f64);
        if scale < f32::MIN_POSITIVE as f64 {
            return QuantParams {
                scale: 1.0,
                zero_point: 0,
            };
        }
        let zero_point = if self.symmetric {
            round_half_even((qmax + qmin) as f64 / 2.0) as i64
        } else {
            // ORT computes `rmin / scale` with the float32 rmin and float64 scale.
            round_half_even(qmin as f64 - rmin as f64 / scale) as i64
        };
        QuantParams {
            scale: scale as f32,
            zero_point: zero_point.clamp(qmin, qmax),
        }
    }
}

/// A scale and zero point: `real = (q - zero_point) * scale`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuantParams {
    /// Real value of one integer step.
    pub scale: f32,
    /// The integer that represents real zero.
    pub zero_point: i64,
}

impl QuantParams {
    /// Quantizes one value as `QuantizeLinear` does: `x / scale` in float32, rounded half to
    /// even, plus the zero point, saturated to `[qmin, qmax]`.
    pub fn quantize(&self, x: f32, qmin: i64, qmax: i64) -> i64 {
        let q = round_half_even((x / self.scale) as f64);
        if q.is_nan() {
            return self.zero_point.clamp(qmin, qmax);
        }
        let q = q.clamp(i64::MIN as f64 / 2.0, i64::MAX as f64 / 2.0) as i64;
        q.saturating_add(self.zero_point).clamp(qmin, qmax)
    }

    /// The real value an integer stands for.
    pub fn dequantize(&self, q: i64) -> f32 {
        ((q - self.zero_point) as f32) * self.scale
    }

    /// The real interval `[lo, hi]` the integer range `[qmin, qmax]` covers; values outside
    /// it saturate.
    pub fn representable(&self, qmin: i64, qmax: i64) -> (f32, f32) {
        (self.dequantize(qmin), self.dequantize(qmax))
    }
}

/// Rounds half to even, as `QuantizeLinear` and numpy's `round` do.
pub fn round_half_even(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 {
        2.0 * (x / 2.0).round()
    } else {
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_half_to_even() {
        assert_eq!(round_half_even(0.5), 0.0);
        assert_eq!(round_half_even(1.5), 2.0);
        assert_eq!(round_half_even(2.5), 2.0);
        assert_eq!(round_half_even(-0.5), -0.0);
        assert_eq!(round_half_even(-1.5), -2.0);
        assert_eq!(round_half_even(-2.5), -2.0);
        assert_eq!(round_half_even(2.4), 2.0);
        assert_eq!(round_half_even(-2.6), -3.0);
    }

    #[test]
    fn qranges_match_ort() {
        assert_eq!(QuantType::Uint8.qrange(false, false), (0, 255));
        assert_eq!(QuantType::Int8.qrange(true, false), (-127, 127));
        assert_eq!(QuantType::Int8.qrange(false, false), (-128, 127));
        assert_eq!(QuantType::Int8.qrange(true, true), (-64, 64));
        assert_eq!(QuantType::Uint8.qrange(false, true), (0, 127));
        assert_eq!(QuantType::Int16.qrange(true, false), (-32_767, 32_767));
        assert_eq!(QuantType::Uint16.qrange(true, false), (0, 65_535));
    }

    #[test]
    fn asymmetric_uint8_params() {
        let s = QuantScheme::new(QuantType::Uint8, false);
        let p = s.params(-1.0, 3.0, None);
        assert!((p.scale - 4.0 / 255.0).abs() < 1e-9);
        // 0 - (-1)/(4/255) = 63.75 -> 64
        assert_eq!(p.zero_point, 64);
        // A range that excludes zero is widened to include it.
        let p = s.params(2.0, 4.0, None);
        assert_eq!(p.zero_point, 0);
        assert!((p.scale - 4.0 / 255.0).abs() < 1e-9);
        let p = s.params(-4.0, -2.0, None);
        assert_eq!(p.zero_point, 255);
    }

    #[test]
    fn symmetric_params() {
        let s = QuantScheme::new(QuantType::Int8, true);
        let p = s.params(-0.5, 2.54, None);
        assert_eq!(p.zero_point, 0);
        assert!((p.scale - 2.54 * 2.0 / 254.0).abs() < 1e-7);
        // Symmetric uint8 puts zero at round(127.5) = 128 (half to even).
        let s = QuantScheme::new(QuantType::Uint8, true);
        assert_eq!(s.params(-1.0, 1.0, None).zero_point, 128);
    }

    #[test]
    fn degenerate_and_min_real_range() {
        let s = QuantScheme::new(QuantType::Uint8, false);
        assert_eq!(
            s.params(0.0, 0.0, None),
            QuantParams {
                scale: 1.0,
                zero_point: 0
            }
        );
        let p = s.params(0.0, 0.0, Some(1e-4));
        assert!((p.scale - 1e-4 / 255.0).abs() < 1e-12);
        assert_eq!(s.params(f32::NAN, f32::INFINITY, None).scale, 1.0);
    }

    #[test]
    fn quantize_rounds_and_saturates() {
        let p = QuantParams {
            scale: 0.5,
            zero_point: 10,
        };
        assert_eq!(p.quantize(0.25, 0, 255), 10); // 0.5 -> 0 (even)
        assert_eq!(p.quantize(0.75, 0, 255), 12); // 1.5 -> 2
        assert_eq!(p.quantize(1000.0, 0, 255), 255);
        assert_eq!(p.quantize(-1000.0, 0, 255), 0);
        assert_eq!(p.quantize(f32::NAN, 0, 255), 10);
        assert_eq!(p.dequantize(12), 1.0);
        assert_eq!(p.representable(0, 255), (-5.0, 122.5));
    }
}
