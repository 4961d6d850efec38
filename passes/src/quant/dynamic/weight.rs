//! How a constant weight is quantized for the integer kernels: the scheme (after per-tensor
//! overrides), the channel axis, and the scale / zero-point tensors in the shapes ONNX
//! Runtime's CPU kernels accept.
//!
//! Measured with ONNX Runtime 1.31.1 on CPU (probe graphs of one MatMulInteger / ConvInteger,
//! outputs compared with numpy/torch integer references):
//! - MatMulInteger takes uint8 activations with int8 or uint8 weights, and a `b_zero_point`
//!   that is a scalar or, for a 2-D B, 1-D of N (one per column): all exact. For an N-D B
//!   it refuses a 1-D `[N]`, `[1, N]` or `[1, 1, N]` zero point ("B zero point is not
//!   valid") and takes only a scalar or the full `[batch…, 1, N]`.
//! - ConvInteger takes int8 as well as uint8 weights (exact), in 1-D, 2-D, 3-D and grouped
//!   convolutions, but refuses any `w_zero_point` of more than one element ("Non per-tensor
//!   quantization is not supported now"). Per-channel scales still work when every channel
//!   has the same zero point (always so for symmetric weights): the zero point is written
//!   as one scalar and the per-channel scales are applied in the float `Mul` after the
//!   kernel. ONNX Runtime's own `quantize_dynamic` always quantizes Conv weights per tensor.

use crate::ir::ValueRef;
use crate::quant::config::QuantConfig;
use crate::quant::scheme::{QuantScheme, QuantType};
use crate::quant::weights::{int_tensor, params_tensor_f32, quantize_weight, QuantizedWeight};
use crate::tensor::{DataType, Tensor};

/// Which kernel the weight feeds, which decides the axis and the parameter shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Layout {
    /// B of MatMulInteger, `[…, K, N]`: per channel along the last axis (the output column).
    MatMul,
    /// W of ConvInteger, `[M, C/group, k…]`: per channel along axis 0 (output channel).
    Conv,
    /// The data of a Gather (an embedding table): per tensor, uint8 asymmetric like
    /// ORT's `GatherQuant`, which quantizes it as an activation.
    Gather,
}

/// A weight quantized and laid out for its kernel, not yet in the graph.
#[derive(Debug, Clone)]
pub(super) struct PlannedWeight {
    /// The float constant it replaces.
    pub source: ValueRef,
    /// Name the new tensors derive from (`fc1.weight` → `fc1.weight_quantized`).
    pub base: String,
    /// The integer values, scales and zero points.
    pub q: QuantizedWeight,
    /// The scale tensor, shaped to broadcast against the kernel's output.
    pub scale: Tensor,
    /// The zero-point tensor, shaped as the kernel accepts it.
    pub zero_point: Tensor,
    /// The channel axis in the model's original weight (reported), if per channel.
    pub axis: Option<usize>,
}

/// The scheme for weight `name`: the configured one, or for Gather ORT's uint8 asymmetric;
/// a per-tensor override of type or symmetry applies when it names an 8-bit type.
pub(super) fn scheme_for(
    name: &str,
    layout: Layout,
    config: &QuantConfig,
) -> Result<QuantScheme, String> {
    let mut s = match layout {
        Layout::Gather => QuantScheme::new(QuantType::Uint8, false),
        Layout::MatMul | Layout::Conv => config.weights.scheme,
    };
    if let Some(o) = config.overrides.get(name) {
        if let Some(d) = o.dtype {
            s.dtype = d;
        }
        if let Some(sym) = o.symmetric {
            s.symmetric = sym;
        }
    }
    if !matches!(s.dtype, QuantType::Int8 | QuantType::Uint8) {
        return Err(format!(
            "weight '{name}' would be {}: the integer kernels take 8-bit weights only",
            s.dtype
        ));
    }
    Ok(s)
}

/// Quantizes `weight` (already transposed / scaled as the kernel needs) for `layout`.
/// `report_axis` maps the axis used here to the axis of the model's original weight.
pub(super) fn plan(
    source: ValueRef,
    base: &str,
    weight: &Tensor,
    layout: Layout,
    config: &QuantConfig,
    report_axis: impl Fn(usize) -> usize,
) -> Result<PlannedWeight, String> {
    match weight.dtype() {
        DataType::Float => {}
        DataType::Float16 => {
            return Err(
                "weight is float16: DynamicQuantizeLinear takes float32 activations only".into(),
            )
        }
        d => return Err(format!("weight is {}, not float32", d.name())),
    }
    if weight.is_empty() {
        return Err("weight has no elements".into());
    }
    let scheme = scheme_for(base, layout, config)?;
    let rank = weight.shape().len();
    let per_channel = config.weights.per_channel;
    let mrr = config.min_real_range;
    let quantize = |axis| quantize_weight(weight, scheme, axis, mrr).map_err(|e| e.to_string());
    let per_tensor = |q: QuantizedWeight| {
        let (scale, zero_point) = (q.scale_tensor(), q.zero_point_tensor());
        PlannedWeight {
            source,
            base: base.to_string(),
            q,
            scale,
            zero_point,
            axis: None,
        }
    };
    match layout {
        Layout::Gather => Ok(per_tensor(quantize(None)?)),
        Layout::MatMul if !per_channel || rank < 2 => Ok(per_tensor(quantize(None)?)),
        Layout::MatMul => {
            let axis = rank - 1;
            let q = quantize(Some(axis))?;
            let n = weight.shape()[axis];
            let zps: Vec<i64> = q.params.iter().map(|p| p.zero_point).collect();
            let zero_point = if rank == 2 {
                // ONNX Runtime's form: one zero point per column.
                q.zero_point_tensor()
            } else if zps.iter().all(|&z| z == zps[0]) {
                int_tensor(q.dtype, vec![], &zps[..1])
            } else {
                // An N-D B takes only the full [batch…, 1, N] zero point (measured).
                let mut shape = weight.shape().to_vec();
                shape[rank - 2] = 1;
                let batches: usize = shape[..rank - 2].iter().product();
                let tiled: Vec<i64> = (0..batches).flat_map(|_| zps.iter().copied()).collect();
                int_tensor(q.dtype, shape, &tiled)
            };
            let scales: Vec<f32> = q.params.iter().map(|p| p.scale).collect();
            debug_assert_eq!(scales.len(), n);
            Ok(PlannedWeight {
                source,
                base: base.to_string(),
                scale: params_tensor_f32(true, scales),
                zero_point,
                q,
                axis: Some(report_axis(axis)),
            })
        }
        Layout::Conv if !per_channel => Ok(per_tensor(quantize(None)?)),
        Layout::Conv => {
            let q = quantize(Some(0))?;
            let zps: Vec<i64> = q.params.iter().map(|p| p.zero_point).collect();
            if !zps.iter().all(|&z| z == zps[0]) {
                // ConvInteger takes one zero point only (measured): fall back to per tensor.
                return Ok(per_tensor(quantize(None)?));
            }
            let scales: Vec<f32> = q.params.iter().map(|p| p.scale).collect();
            // [M, 1, …] broadcasts against the output [N, M, spatial…].
            let mut shape = vec![1; rank.saturating_sub(1)];
            if let Some(first) = shape.first_mut() {
                *first = scales.len();
            }
            let scale = Tensor::from_vec(shape, scales).map_err(|e| e.to_string())?;
            Ok(PlannedWeight {
                source,
                base: base.to_string(),
                scale,
                zero_point: int_tensor(q.dtype, vec![], &zps[..1]),
                q,
                axis: Some(report_axis(0)),
            })
        }
    }
}

/// A 2-D float32 tensor transposed and multiplied by `alpha` (Gemm's `transB` and `alpha`
/// folded into the weight, so the kernel sees `A × B'`).
pub(super) fn gemm_weight(w: &Tensor, transpose: bool, alpha: f32) -> Result<Tensor, String> {
    let [rows, cols] = *w.shape() else {
        return Err(format!("B has rank {}, Gemm needs 2", w.shape().len()));
    };
    let data: Vec<f32> = w.to_vec().map_err(|e| e.to_string())?;
    let (shape, out): (Vec<usize>, Vec<f32>) = if transpose {
        let mut t = vec![0.0f32; data.len()];
        for r in 0..rows {
            for c in 0..cols {
                t[c * rows + r] = data[r * cols + c] * alpha;
            }
        }
        (vec![cols, rows], t)
    } else {
        (vec![rows, cols], data.iter().map(|&x| x * alpha).collect())
    };
    Tensor::from_vec(shape, out).map_err(|e| e.to_string())
}
