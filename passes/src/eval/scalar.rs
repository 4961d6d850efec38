//! Element arithmetic with ONNX Runtime's semantics: integers wrap, integer division
//! truncates toward zero, float16 / bfloat16 compute in float32 and round back once.

use half::{bf16, f16};

use super::EvalError;
use crate::tensor::Element;

/// Every element type: conversions with ONNX Runtime's `static_cast` semantics.
pub(crate) trait Elem: Copy + PartialOrd + Send + Sync + 'static {
    /// The value as f64 (bool: 0 or 1).
    fn to_f64(self) -> f64;
    /// The exact value of an integer or bool; `None` for floats.
    fn to_i128(self) -> Option<i128>;
    /// From f64: integers saturate (NaN → 0), float16/bfloat16 go through float32, bool is `!= 0`.
    fn from_f64(v: f64) -> Self;
    /// From an exact integer: integers wrap, floats round to nearest (float16 through float32).
    fn from_i128(v: i128) -> Self;
    /// The (min, max) of an integer type; `None` for floats and bool.
    fn int_range() -> Option<(i128, i128)> {
        None
    }
}

impl Elem for bool {
    fn to_f64(self) -> f64 {
        self as u8 as f64
    }
    fn to_i128(self) -> Option<i128> {
        Some(self as i128)
    }
    fn from_f64(v: f64) -> bool {
        v != 0.0
    }
    fn from_i128(v: i128) -> bool {
        v != 0
    }
}

/// Numeric elements (every type but bool).
pub(crate) trait Num: Elem + Element + Default {
    /// True for the floating-point types.
    const FLOAT: bool;
    fn add(self, b: Self) -> Self;
    fn sub(self, b: Self) -> Self;
    fn mul(self, b: Self) -> Self;
    /// Division; integers truncate toward zero and refuse a zero divisor.
    fn div(self, b: Self) -> Result<Self, EvalError>;
    /// `Mod`: `fmod` takes the dividend's sign, otherwise the divisor's (integers only).
    fn rem(self, b: Self, fmod: bool) -> Result<Self, EvalError>;
    fn neg(self) -> Self;
    fn abs(self) -> Self;
    fn is_nan(self) -> bool;
    fn zero() -> Self;
    fn one() -> Self;
    /// The lowest and highest values (−∞/+∞ for floats).
    fn lowest() -> Self;
    fn highest() -> Self;
}

/// Division by zero in integer arithmetic (undefined in ONNX Runtime): never folded.
fn div_by_zero() -> EvalError {
    EvalError::Invalid("integer division by zero".into())
}

macro_rules! int_num {
    ($($t:ty),*) => {$(
        impl Num for $t {
            const FLOAT: bool = false;
            fn add(self, b: Self) -> Self { self.wrapping_add(b) }
            fn sub(self, b: Self) -> Self { self.wrapping_sub(b) }
            fn mul(self, b: Self) -> Self { self.wrapping_mul(b) }
            fn div(self, b: Self) -> Result<Self, EvalError> {
                if b == 0 { return Err(div_by_zero()); }
                Ok(self.wrapping_div(b))
            }
            fn rem(self, b: Self, fmod: bool) -> Result<Self, EvalError> {
                if b == 0 { return Err(div_by_zero()); }
                let r = self.wrapping_rem(b);
                // Python-style: a non-zero remainder takes the divisor's sign.
                #[allow(unused_comparisons)]
                let differ = (r < 0) != (b < 0);
                Ok(if !fmod && r != 0 && differ { r.wrapping_add(b) } else { r })
            }
            #[allow(unused_comparisons)]
            fn neg(self) -> Self { (0 as $t).wrapping_sub(self) }
            #[allow(unused_comparisons)]
            fn abs(self) -> Self { if self < 0 { self.neg() } else { self } }
            fn is_nan(self) -> bool { false }
            fn zero() -> Self { 0 }
            fn one() -> Self { 1 }
            fn lowest() -> Self { <$t>::MIN }
            fn highest() -> Self { <$t>::MAX }
        }
    )*};
}
macro_rules! int_elem {
    ($($t:ty),*) => {$(
        impl Elem for $t {
            fn to_f64(self) -> f64 { self as f64 }
            fn to_i128(self) -> Option<i128> { Some(self as i128) }
            fn from_f64(v: f64) -> Self { v as $t }
            fn from_i128(v: i128) -> Self { v as $t }
            fn int_range() -> Option<(i128, i128)> { Some((<$t>::MIN as i128, <$t>::MAX as i128)) }
        }
    )*};
}
int_elem!(u8, i8, u16, i16, u32, i32, u64, i64);
int_num!(u8, i8, u16, i16, u32, i32, u64, i64);

macro_rules! float_num {
    ($($t:ty),*) => {$(
        impl Num for $t {
            const FLOAT: bool = true;
            fn add(self, b: Self) -> Self { self + b }
            fn sub(self, b: Self) -> Self { self - b }
            fn mul(self, b: Self) -> Self { self * b }
            fn div(self, b: Self) -> Result<Self, EvalError> { Ok(self / b) }
            fn rem(self, b: Self, _fmod: bool) -> Result<Self, EvalError> { Ok(self % b) }
            fn neg(self) -> Self { -self }
            fn abs(self) -> Self { self.abs() }
            fn is_nan(self) -> bool { self.is_nan() }
            fn zero() -> Self { 0.0 }
            fn one() -> Self { 1.0 }
            fn lowest() -> Self { <$t>::NEG_INFINITY }
            fn highest() -> Self { <$t>::INFINITY }
        }
    )*};
}
float_num!(f32, f64);

impl Elem for f32 {
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn to_i128(self) -> Option<i128> {
        None
    }
    fn from_f64(v: f64) -> f32 {
        v as f32
    }
    fn from_i128(v: i128) -> f32 {
        v as f32
    }
}

impl Elem for f64 {
    fn to_f64(self) -> f64 {
        self
    }
    fn to_i128(self) -> Option<i128> {
        None
    }
    fn from_f64(v: f64) -> f64 {
        v
    }
    fn from_i128(v: i128) -> f64 {
        v as f64
    }
}

macro_rules! half_num {
    ($($t:ty),*) => {$(
        impl Num for $t {
            const FLOAT: bool = true;
            fn add(self, b: Self) -> Self { <$t>::from_f32(self.to_f32() + b.to_f32()) }
            fn sub(self, b: Self) -> Self { <$t>::from_f32(self.to_f32() - b.to_f32()) }
            fn mul(self, b: Self) -> Self { <$t>::from_f32(self.to_f32() * b.to_f32()) }
            fn div(self, b: Self) -> Result<Self, EvalError> {
                Ok(<$t>::from_f32(self.to_f32() / b.to_f32()))
            }
            fn rem(self, b: Self, _fmod: bool) -> Result<Self, EvalError> {
                Ok(<$t>::from_f32(self.to_f32() % b.to_f32()))
            }
            fn neg(self) -> Self { -self }
            fn abs(self) -> Self { <$t>::from_f32(self.to_f32().abs()) }
            fn is_nan(self) -> bool { self.is_nan() }
            fn zero() -> Self { <$t>::ZERO }
            fn one() -> Self { <$t>::ONE }
            fn lowest() -> Self { <$t>::NEG_INFINITY }
            fn highest() -> Self { <$t>::INFINITY }
        }
    )*};
}
half_num!(f16, bf16);

macro_rules! half_elem {
    ($($t:ty),*) => {$(
        impl Elem for $t {
            fn to_f64(self) -> f64 { <$t>::to_f64(self) }
            fn to_i128(self) -> Option<i128> { None }
            // Through float32, as ONNX Runtime narrows double → float → half.
            fn from_f64(v: f64) -> Self { <$t>::from_f32(v as f32) }
            fn from_i128(v: i128) -> Self { <$t>::from_f32(v as f32) }
        }
    )*};
}
half_elem!(f16, bf16);

/// Floating-point elements: transcendental functions computed in float32 for float32,
/// float16 and bfloat16 (rounded back once), in float64 for float64.
pub(crate) trait Real: Num {
    fn map_real(self, f32f: fn(f32) -> f32, f64f: fn(f64) -> f64) -> Self;
}

impl Real for f32 {
    fn map_real(self, f: fn(f32) -> f32, _: fn(f64) -> f64) -> f32 {
        f(self)
    }
}

impl Real for f64 {
    fn map_real(self, _: fn(f32) -> f32, f: fn(f64) -> f64) -> f64 {
        f(self)
    }
}

impl Real for f16 {
    fn map_real(self, f: fn(f32) -> f32, _: fn(f64) -> f64) -> f16 {
        f16::from_f32(f(self.to_f32()))
    }
}

impl Real for bf16 {
    fn map_real(self, f: fn(f32) -> f32, _: fn(f64) -> f64) -> bf16 {
        bf16::from_f32(f(self.to_f32()))
    }
}

/// The error function (W. J. Cody's rational approximations, double precision).
#[allow(clippy::excessive_precision)]
pub(crate) fn erf(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let ax = x.abs();
    let r = if ax < 0.5 {
        const P: [f64; 5] = [
            3.209_377_589_138_469_4e3,
            3.774_852_376_853_020_2e2,
            1.138_641_541_510_501_6e2,
            3.161_123_743_870_565_6,
            1.857_777_061_846_031_5e-1,
        ];
        const Q: [f64; 4] = [
            2.844_236_833_439_170_6e3,
            1.282_616_526_077_372_3e3,
            2.440_246_379_344_441_7e2,
            2.360_129_095_234_412_1e1,
        ];
        let z = x * x;
        let num = (((P[4] * z + P[3]) * z + P[2]) * z + P[1]) * z + P[0];
        let den = (((z + Q[3]) * z + Q[2]) * z + Q[1]) * z + Q[0];
        return x * num / den;
    } else if ax < 4.0 {
        const P: [f64; 9] = [
            1.230_339_354_797_997_2e3,
            2.051_078_377_826_071_5e3,
            1.712_047_612_634_070_6e3,
            8.819_522_212_417_690_9e2,
            2.986_351_381_974_001_3e2,
            6.611_919_063_714_163e1,
            8.883_149_794_388_376,
            5.641_884_969_886_700_9e-1,
            2.153_115_354_744_038_5e-8,
        ];
        const Q: [f64; 8] = [
            1.230_339_354_803_749_4e3,
            3.439_367_674_143_721_6e3,
            4.362_619_090_143_247e3,
            3.290_799_235_733_459_7e3,
            1.621_389_574_566_690_2e3,
            5.371_811_018_620_098_6e2,
            1.176_939_508_913_124_9e2,
            1.574_492_611_070_983_5e1,
        ];
        let mut num = P[8];
        for p in P[..8].iter().rev() {
            num = num * ax + p;
        }
        let mut den = 1.0;
        for q in Q.iter().rev() {
            den = den * ax + q;
        }
        (-ax * ax).exp() * num / den
    } else {
        const P: [f64; 6] = [
            -6.587_491_615_298_378e-4,
            -1.608_378_514_874_227_5e-2,
            -1.257_817_261_112_292_6e-1,
            -3.603_448_999_498_044_4e-1,
            -3.053_266_349_612_323_4e-1,
            -1.631_538_713_730_709_6e-2,
        ];
        const Q: [f64; 5] = [
            2.335_204_976_268_691_8e-3,
            6.051_834_131_244_132e-2,
            5.279_051_029_514_284e-1,
            1.872_952_849_923_460_4,
            2.568_520_192_289_822_4,
        ];
        let z = 1.0 / (ax * ax);
        let mut num = P[5];
        for p in P[..5].iter().rev() {
            num = num * z + p;
        }
        let mut den = 1.0;
        for q in Q.iter().rev() {
            den = den * z + q;
        }
        let frac_1_sqrt_pi = 0.564_189_583_547_756_3;
        (-ax * ax).exp() / ax * (frac_1_sqrt_pi + z * num / den)
    };
    // r is erfc(|x|) for |x| ≥ 0.5.
    if x < 0.0 {
        r - 1.0
    } else {
        1.0 - r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_division_and_mod_follow_onnx() {
        assert_eq!(Num::div(-7i32, 2).unwrap(), -3);
        assert_eq!(Num::rem(-7i32, 2, false).unwrap(), 1);
        assert_eq!(Num::rem(7i32, -2, false).unwrap(), -1);
        assert_eq!(Num::rem(-7i32, 2, true).unwrap(), -1);
        assert_eq!(Num::rem(6i64, -3, false).unwrap(), 0);
        assert!(Num::div(1i64, 0).is_err());
        assert_eq!(Num::add(i8::MAX, 1), i8::MIN);
        assert_eq!(Num::div(i32::MIN, -1).unwrap(), i32::MIN);
        assert_eq!(Num::rem(5u8, 3, false).unwrap(), 2);
    }

    #[test]
    fn erf_matches_known_values() {
        let cases = [
            (0.0, 0.0),
            (0.3, 0.328_626_759_459_127_4),
            (1.0, 0.842_700_792_949_714_9),
            (-2.0, -0.995_322_265_018_952_7),
            (5.0, 0.999_999_999_998_462_5),
        ];
        for (x, want) in cases {
            assert!((erf(x) - want).abs() < 1e-13, "erf({x}) = {}", erf(x));
        }
    }

    #[test]
    fn half_arithmetic_rounds_once() {
        let a = f16::from_f32(1.0);
        let b = f16::from_f32(0.0004);
        // 1.0004 is closest to 1.0 in float16.
        assert_eq!(Num::add(a, b), f16::from_f32(1.0));
        assert_eq!(<f16 as Elem>::from_f64(65520.0), f16::INFINITY);
    }
}
