//! Quantizing constant tensors: weights per tensor or per channel, and int32 biases.

use crate::tensor::{DataType, Tensor, TensorError};

use super::scheme::{QuantParams, QuantScheme, QuantType};

/// A weight stored as integers, with the scale(s) and zero point(s) that dequantize it.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedWeight {
    /// The integer tensor, same shape as the float one.
    pub values: Tensor,
    /// One entry per tensor, or one per channel along `axis`.
    pub params: Vec<QuantParams>,
    /// The channel axis when per channel.
    pub axis: Option<usize>,
    /// Element type of `values`.
    pub dtype: QuantType,
}

impl QuantizedWeight {
    /// The scale input of the `DequantizeLinear` in front: a scalar, or 1-D per channel.
    pub fn scale_tensor(&self) -> Tensor {
        let scales: Vec<f32> = self.params.iter().map(|p| p.scale).collect();
        params_tensor_f32(self.axis.is_some(), scales)
    }

    /// The zero-point input, in the weight's element type.
    pub fn zero_point_tensor(&self) -> Tensor {
        let zps: Vec<i64> = self.params.iter().map(|p| p.zero_point).collect();
        int_tensor(
            self.dtype,
            if self.axis.is_some() {
                vec![zps.len()]
            } else {
                vec![]
            },
            &zps,
        )
    }
}

/// Why a constant could not be quantized.
#[derive(Debug, thiserror::Error)]
pub enum WeightError {
    /// Only float32 constants are quantized.
    #[error("cannot quantize a {0:?} tensor (only float32)")]
    NotFloat(DataType),
    /// The channel axis is outside the tensor's rank.
    #[error("channel axis {axis} is out of range for a rank-{rank} tensor")]
    Axis {
        /// The axis asked for.
        axis: usize,
        /// The tensor's rank.
        rank: usize,
    },
    /// The tensor's bytes are malformed.
    #[error(transparent)]
    Tensor(#[from] TensorError),
}

/// Quantizes a float32 constant, with one scale per tensor (`axis: None`) or one per slice
/// along `axis`, each from the slice's own min/max (ORT's `quantize_data` per slice).
pub fn quantize_weight(
    weight: &Tensor,
    scheme: QuantScheme,
    axis: Option<usize>,
    min_real_range: Option<f32>,
) -> Result<QuantizedWeight, WeightError> {
    quantize_weight_by(weight, scheme, axis, &|lo: &[f32], hi: &[f32]| {
        lo.iter()
            .zip(hi)
            .map(|(&l, &h)| scheme.params(l, h, min_real_range))
            .collect()
    })
}

/// Quantizes a float32 constant with the given parameters (one, or one per slice along
/// `axis`): a weight whose scales were raised after the fact (so an int32 bias fits).
pub fn quantize_weight_with(
    weight: &Tensor,
    scheme: QuantScheme,
    axis: Option<usize>,
    params: &[QuantParams],
) -> Result<QuantizedWeight, WeightError> {
    quantize_weight_by(weight, scheme, axis, &|lo: &[f32], _: &[f32]| {
        (0..lo.len())
            .map(|c| params.get(c).or(params.first()).copied())
            .map(|p| {
                p.unwrap_or(QuantParams {
                    scale: 1.0,
                    zero_point: 0,
                })
            })
            .collect()
    })
}

/// Chooses each slice's parameters from the slices' minima and maxima.
type ParamsOf<'a> = &'a dyn Fn(&[f32], &[f32]) -> Vec<QuantParams>;

/// The parameters `params_of(min, max)` chooses from each slice's min/max, and the integers.
fn quantize_weight_by(
    weight: &Tensor,
    scheme: QuantScheme,
    axis: Option<usize>,
    params_of: ParamsOf<'_>,
) -> Result<QuantizedWeight, WeightError> {
    if weight.dtype() != DataType::Float {
        return Err(WeightError::NotFloat(weight.dtype()));
    }
    // Read once: a weight mapped from a model file gives its pages back as it is converted.
    let data: Vec<f32> = weight.read_once()?;
    let shape = weight.shape().to_vec();
    let (qmin, qmax) = scheme.qrange();
    let (channels, inner) = match axis {
        Some(a) if a >= shape.len() => {
            return Err(WeightError::Axis {
                axis: a,
                rank: shape.len(),
            })
        }
        Some(a) => (shape[a], shape[a + 1..].iter().product::<usize>()),
        None => (1, data.len().max(1)),
    };
    let channel_of = |i: usize| {
        if axis.is_some() {
            (i / inner.max(1)) % channels.max(1)
        } else {
            0
        }
    };
    let mut lo = vec![f32::INFINITY; channels];
    let mut hi = vec![f32::NEG_INFINITY; channels];
    for (i, &x) in data.iter().enumerate() {
        if x.is_finite() {
            let c = channel_of(i);
            lo[c] = lo[c].min(x);
            hi[c] = hi[c].max(x);
        }
    }
    let params = params_of(&lo, &hi);
    let q: Vec<i64> = data
        .iter()
        .enumerate()
        .map(|(i, &x)| params[channel_of(i)].quantize(x, qmin, qmax))
        .collect();
    Ok(QuantizedWeight {
        values: int_tensor(scheme.dtype, shape, &q),
        params,
        axis,
        dtype: scheme.dtype,
    })
}

/// The weight scales an int32 bias needs, ONNX Runtime's `_adjust_weight_scale_for_int32_bias`:
/// where `input_scale × weight_scale` is below `1.0001 · 2·|b| / (2³² − 2)` the bias would
/// saturate int32, so that weight scale is raised to it. `bias` holds one value per channel
/// when `weight_scales` does (per channel), else any number (its absolute max counts).
/// `None` when no scale changes.
pub fn bias_safe_weight_scales(
    bias: &[f32],
    input_scale: f32,
    weight_scales: &[f32],
) -> Option<Vec<f32>> {
    let qrange = i32::MAX as f64 - (i32::MIN as f64 + 1.0);
    let smallest = |absmax: f64| 1.0001 * 2.0 * absmax / qrange;
    let per_channel = weight_scales.len() > 1 || bias.len() == 1;
    let mut out = weight_scales.to_vec();
    let mut changed = false;
    for (c, w) in out.iter_mut().enumerate() {
        let absmax = if per_channel {
            bias.get(c).map_or(0.0, |b| f64::from(b.abs()))
        } else {
            bias.iter().fold(0.0f64, |m, b| m.max(f64::from(b.abs())))
        };
        let candidate = f64::from(input_scale) * f64::from(*w);
        let need = smallest(absmax);
        if candidate > 0.0 && candidate < need {
            *w = (f64::from(*w) * (need / candidate)) as f32;
            changed = true;
        }
    }
    changed.then_some(out)
}

/// Quantizes a bias to int32 with scale `input_scale × weight_scale[c]` and zero point 0, so
/// the integer accumulator of the op it feeds can add it directly. Values beyond int32
/// saturate; the count of saturated entries is returned beside the tensor.
pub fn quantize_bias(
    bias: &Tensor,
    input_scale: f32,
    weight_scales: &[f32],
) -> Result<(Tensor, Vec<f32>, usize), WeightError> {
    if bias.dtype() != DataType::Float {
        return Err(WeightError::NotFloat(bias.dtype()));
    }
    let data: Vec<f32> = bias.to_vec()?;
    let scales: Vec<f32> = if weight_scales.len() == 1 {
        vec![input_scale * weight_scales[0]; 1]
    } else {
        weight_scales.iter().map(|w| input_scale * w).collect()
    };
    let (qmin, qmax) = QuantType::Int32.full_range();
    let mut saturated = 0;
    let q: Vec<i64> = data
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            let s = scales[if scales.len() == 1 {
                0
            } else {
                i % scales.len()
            }];
            let p = QuantParams {
                scale: if s > 0.0 { s } else { 1.0 },
                zero_point: 0,
            };
            let v = p.quantize(x, qmin, qmax);
            if v == qmin || v == qmax {
                saturated += 1;
            }
            v
        })
        .collect();
    Ok((
        int_tensor(QuantType::Int32, bias.shape().to_vec(), &q),
        scales,
        saturated,
    ))
}

/// A float32 tensor of scales: 1-D when per channel, else a scalar.
pub fn params_tensor_f32(per_channel: bool, values: Vec<f32>) -> Tensor {
    let shape = if per_channel {
        vec![values.len()]
    } else {
        vec![]
    };
    let first = values.first().copied().unwrap_or(1.0);
    Tensor::from_vec(shape, values).unwrap_or_else(|_| Tensor::scalar(first))
}

/// An integer tensor of `dtype` from i64 values already in the type's range.
pub fn int_tensor(dtype: QuantType, shape: Vec<usize>, values: &[i64]) -> Tensor {
    let built = match dtype {
        QuantType::Uint8 => Tensor::from_vec(shape, values.iter().map(|&v| v as u8).collect()),
        QuantType::Int8 => Tensor::from_vec(shape, values.iter().map(|&v| v as i8).collect()),
        QuantType::Uint16 => Tensor::from_vec(shape, values.iter().map(|&v| v as u16).collect()),
        QuantType::Int16 => Tensor::from_vec(shape, values.iter().map(|&v| v as i16).collect()),
        QuantType::Int32 => Tensor::from_vec(shape, values.iter().map(|&v| v as i32).collect()),
    };
    // Shapes come from a valid tensor and the value count matches them.
    built.unwrap_or_else(|_| Tensor::scalar(0u8))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_tensor_symmetric_int8() {
        let w = Tensor::from_vec(vec![2, 2], vec![-1.0f32, 0.5, 0.25, 1.27]).unwrap();
        let q = quantize_weight(&w, QuantScheme::new(QuantType::Int8, true), None, None).unwrap();
        assert_eq!(q.params.len(), 1);
        assert!((q.params[0].scale - 0.01).abs() < 1e-7);
        assert_eq!(q.values.to_vec::<i8>().unwrap(), vec![-100, 50, 25, 127]);
        assert_eq!(q.scale_tensor().shape(), &[] as &[usize]);
        assert_eq!(q.zero_point_tensor().to_vec::<i8>().unwrap(), vec![0]);
    }

    #[test]
    fn per_channel_axes() {
        // Shape [2, 3]: axis 0 has rows, axis 1 columns.
        let w = Tensor::from_vec(vec![2, 3], vec![1.0f32, -2.0, 0.5, 4.0, 1.0, -8.0]).unwrap();
        let s = QuantScheme::new(QuantType::Int8, true);
        let rows = quantize_weight(&w, s, Some(0), None).unwrap();
        let r: Vec<f32> = rows.params.iter().map(|p| p.scale).collect();
        assert_eq!(r, vec![2.0 / 127.0, 8.0 / 127.0]);
        let cols = quantize_weight(&w, s, Some(1), None).unwrap();
        let c: Vec<f32> = cols.params.iter().map(|p| p.scale).collect();
        assert_eq!(c, vec![4.0 / 127.0, 2.0 / 127.0, 8.0 / 127.0]);
        assert_eq!(cols.values.to_vec::<i8>().unwrap()[5], -127);
        assert_eq!(cols.scale_tensor().shape(), &[3]);
        assert!(matches!(
            quantize_weight(&w, s, Some(2), None),
            Err(WeightError::Axis { axis: 2, rank: 2 })
        ));
    }

    #[test]
    fn given_parameters_are_used_as_they_are() {
        let w = Tensor::from_vec(vec![2, 2], vec![-1.0f32, 0.5, 0.25, 1.27]).unwrap();
        let s = QuantScheme::new(QuantType::Int8, true);
        let p = |scale| QuantParams {
            scale,
            zero_point: 0,
        };
        let q = quantize_weight_with(&w, s, Some(0), &[p(0.1), p(0.01)]).unwrap();
        assert_eq!(q.values.to_vec::<i8>().unwrap(), vec![-10, 5, 25, 127]);
        assert_eq!(q.params, vec![p(0.1), p(0.01)]);
        // The same as quantize_weight when they are its parameters.
        let auto = quantize_weight(&w, s, None, None).unwrap();
        assert_eq!(
            quantize_weight_with(&w, s, None, &auto.params).unwrap(),
            auto
        );
    }

    #[test]
    fn weight_scales_rise_only_where_the_bias_would_saturate() {
        // 2^31 · 1e-9 ≈ 2.1: a bias of 5 does not fit scale 1e-9, 1 does.
        let need = 1.0001 * 2.0 * 5.0 / (i32::MAX as f64 - (i32::MIN as f64 + 1.0));
        let s = bias_safe_weight_scales(&[1.0, 5.0], 1e-4, &[1e-5, 1e-5]).unwrap();
        assert_eq!(s[0], 1e-5);
        assert!(
            ((1e-4 * f64::from(s[1])) / need - 1.0).abs() < 1e-6,
            "{s:?}"
        );
        let (q, _, sat) = quantize_bias(
            &Tensor::from_vec(vec![2], vec![1.0f32, 5.0]).unwrap(),
            1e-4,
            &s,
        )
        .unwrap();
        assert_eq!(sat, 0, "{:?}", q.to_vec::<i32>());
        // Per tensor: the largest magnitude decides.
        let s = bias_safe_weight_scales(&[1.0, -5.0], 1e-4, &[1e-5]).unwrap();
        assert!(s[0] > 1e-5);
        // Nothing to raise, or nothing to raise from (a zero scale).
        assert_eq!(bias_safe_weight_scales(&[1.0, 5.0], 1.0, &[1.0, 1.0]), None);
        assert_eq!(bias_safe_weight_scales(&[5.0], 0.0, &[1e-9]), None);
    }

    #[test]
    fn bias_scale_is_input_times_weight_scale() {
        let b = Tensor::from_vec(vec![2], vec![0.3f32, -1.0]).unwrap();
        let (q, scales, sat) = quantize_bias(&b, 0.1, &[0.01, 0.5]).unwrap();
        assert!((scales[0] - 0.001).abs() < 1e-9 && (scales[1] - 0.05).abs() < 1e-9);
        assert_eq!(q.to_vec::<i32>().unwrap(), vec![300, -20]);
        assert_eq!(sat, 0);
        let big = Tensor::from_vec(vec![1], vec![1e30f32]).unwrap();
        let (q, _, sat) = quantize_bias(&big, 1e-6, &[1e-6]).unwrap();
        assert_eq!(q.to_vec::<i32>().unwrap(), vec![i32::MAX]);
        assert_eq!(sat, 1);
    }
}
