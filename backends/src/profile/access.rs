//! What the compile step asks a profile: the quantizer's config, per-op weight granularity,
//! fixed output ranges, op support, validation thresholds.

use kiln_passes::quant::blockwise::{self, Bits, BlockwiseConfig};
use kiln_passes::quant::{
    PinFloat, QdqDomainRule, QuantConfig, QuantScheme, QuantType, Range, WeightConfig,
};

use super::schema::{
    CalibrationMethod, Dtype, FixedParams, FloatType, Granularity, OpConstraints, Profile,
    QdqDomain, WeightFormat, WeightMethod,
};
use crate::validate::{Limits, Thresholds};

/// The percentile `calibration.method: percentile` keeps when the profile gives none.
pub const DEFAULT_PERCENTILE: f64 = 99.999;

/// The block size of per-block weights when the profile gives none (what ONNX Runtime's
/// `matmul_nbits_quantizer` and coremltools' `per_block` default to).
pub const DEFAULT_BLOCK_SIZE: u32 = 32;

/// Constraints of an op the device runs with no listed limits.
static NO_CONSTRAINTS: OpConstraints = OpConstraints {
    dtypes: None,
    min_rank: None,
    max_rank: None,
    static_shapes: None,
    max_kernel: None,
    strides: None,
    fused_activation: None,
    max_elements: None,
    spatial_only: None,
    note: None,
};

/// The quantizer's type for a profile type. Types the quantizer lacks (4-bit, floats, int32)
/// never reach here from a checked profile; they map to the nearest 8-bit type of the same
/// signedness so this stays total.
pub fn quant_type(d: Dtype) -> QuantType {
    match d {
        Dtype::Uint8 | Dtype::Uint4 => QuantType::Uint8,
        Dtype::Int8 | Dtype::Int4 => QuantType::Int8,
        Dtype::Uint16 => QuantType::Uint16,
        Dtype::Int16 => QuantType::Int16,
        Dtype::Int32 => QuantType::Int32,
        Dtype::Float16 | Dtype::Bfloat16 | Dtype::Float32 => QuantType::Uint8,
    }
}

/// The profile type for a quantizer type.
pub fn dtype_of(q: QuantType) -> Dtype {
    match q {
        QuantType::Uint8 => Dtype::Uint8,
        QuantType::Int8 => Dtype::Int8,
        QuantType::Uint16 => Dtype::Uint16,
        QuantType::Int16 => Dtype::Int16,
        QuantType::Int32 => Dtype::Int32,
    }
}

impl FixedParams {
    /// The real range whose asymmetric scale and zero point over `dtype`'s full integer range
    /// are exactly these (what the quantizer's fixed-range override takes).
    pub fn range(&self, dtype: QuantType) -> Range {
        let (qmin, qmax) = dtype.full_range();
        Range::new(
            ((qmin - self.zero_point) as f64 * self.scale) as f32,
            ((qmax - self.zero_point) as f64 * self.scale) as f32,
        )
    }
}

impl Profile {
    /// The quantizer's configuration: activation and weight schemes, op selection, pinning,
    /// minimum real range. Weight granularity is the profile's default; ops with their own
    /// (`quantization.weights.per_op`) are answered by [`Profile::weight_per_channel`], and
    /// fixed output ranges by [`Profile::fixed_output`], since both depend on the graph.
    pub fn quant_config(&self) -> QuantConfig {
        let q = &self.quantization;
        let a = &q.activations;
        let w = &q.weights;
        let set = |v: &[String]| v.iter().cloned().collect();
        QuantConfig {
            activations: QuantScheme {
                dtype: quant_type(a.dtype),
                symmetric: a.symmetric,
                reduce_range: a.reduce_range,
            },
            weights: WeightConfig {
                scheme: QuantScheme {
                    dtype: quant_type(w.dtype),
                    symmetric: w.symmetric,
                    reduce_range: w.reduce_range,
                },
                per_channel: w.granularity == Granularity::PerChannel,
                per_op: w
                    .per_op
                    .iter()
                    .filter_map(|(op, o)| {
                        Some((op.clone(), o.granularity? == Granularity::PerChannel))
                    })
                    .collect(),
            },
            op_types: q.op_types.as_deref().map(set),
            only_nodes: None,
            exclude_nodes: Default::default(),
            exclude_op_types: set(&q.exclude_op_types),
            overrides: Default::default(),
            pin_ops: set(&self.precision.pin_ops),
            pin_float: match self.precision.pin_float {
                FloatType::Bfloat16 => PinFloat::Bfloat16,
                // float32 is refused by the check; float16 is the only other 16-bit float.
                FloatType::Float16 | FloatType::Float32 => PinFloat::Float16,
            },
            min_real_range: q.min_real_range.map(|m| m as f32),
            qdq_domain: match q.qdq_domain {
                QdqDomain::Onnx => QdqDomainRule::Standard,
                QdqDomain::Auto => QdqDomainRule::Auto,
                QdqDomain::Microsoft => QdqDomainRule::Microsoft,
            },
        }
    }

    /// Whether activations are quantized (false: they stay in `precision.compute`, as on the
    /// ANE, and only weights are compressed): not with `weight_only` or a float dtype.
    pub fn quantizes_activations(&self) -> bool {
        !self.quantization.weight_only && !self.quantization.activations.dtype.is_float()
    }

    /// The block-wise weight-only settings, when weights are per-block (a checked profile has
    /// float activations then). Nodes to leave in float (`min_elements`) depend on the graph
    /// and are the caller's to add.
    pub fn blockwise_config(&self) -> Option<BlockwiseConfig> {
        let w = &self.quantization.weights;
        if w.granularity != Granularity::PerBlock {
            return None;
        }
        let bits = match w.dtype {
            Dtype::Int4 | Dtype::Uint4 => Bits::Four,
            Dtype::Int8 | Dtype::Uint8 => Bits::Eight,
            _ => return None,
        };
        Some(BlockwiseConfig {
            bits,
            block_size: w.block_size.unwrap_or(DEFAULT_BLOCK_SIZE) as usize,
            // Signed types are symmetric (zero point 0), unsigned ones carry a zero point per
            // block: the check keeps `symmetric` in step with the type.
            symmetric: matches!(w.dtype, Dtype::Int4 | Dtype::Int8),
            format: match w.format {
                WeightFormat::Qdq => blockwise::WeightFormat::Qdq,
                WeightFormat::Matmulnbits => blockwise::WeightFormat::MatMulNBits,
            },
            method: match w.method {
                WeightMethod::Rtn => blockwise::WeightMethod::Rtn,
                WeightMethod::Awq => blockwise::WeightMethod::Awq,
                WeightMethod::Gptq => blockwise::WeightMethod::Gptq,
            },
            exclude_nodes: Default::default(),
            lm_head: w.lm_head,
            embeddings: w.embeddings,
            // The clip search is what measured best with GPTQ (README, weight-only section).
            gptq: blockwise::GptqOptions {
                clip: true,
                ..Default::default()
            },
            awq: Default::default(),
            sequential: w.sequential,
            float_target: w.float_target,
        })
    }

    /// Whether weights are quantized.
    pub fn quantizes_weights(&self) -> bool {
        !self.quantization.weights.dtype.is_float()
    }

    /// Whether the weights of an `op_type` node are quantized per channel.
    pub fn weight_per_channel(&self, op_type: &str) -> bool {
        let w = &self.quantization.weights;
        w.per_op
            .get(op_type)
            .and_then(|o| o.granularity)
            .unwrap_or(w.granularity)
            == Granularity::PerChannel
    }

    /// The fixed output scale and zero point of an `op_type` node whose output is `dtype`.
    pub fn fixed_output(&self, op_type: &str, dtype: QuantType) -> Option<FixedParams> {
        self.quantization
            .fixed_outputs
            .get(op_type)?
            .get(&dtype_of(dtype))
            .copied()
    }

    /// Whether 16-bit Q/DQ nodes must be `com.microsoft` ones in a model of this default-domain
    /// opset.
    pub fn contrib_qdq(&self, opset: i64) -> bool {
        match self.quantization.qdq_domain {
            QdqDomain::Onnx => false,
            QdqDomain::Auto => opset < 21,
            QdqDomain::Microsoft => true,
        }
    }

    /// Whether the device runs `op_type`, and within which limits (`None`: it falls back).
    pub fn supports(&self, op_type: &str) -> Option<&OpConstraints> {
        match self.ops.supported.get(op_type) {
            Some(c) => Some(c),
            None if self.ops.all => Some(&NO_CONSTRAINTS),
            None => None,
        }
    }

    /// The calibration method, with the percentile for `percentile`.
    pub fn calibration_percentile(&self) -> Option<f64> {
        (self.calibration.method == CalibrationMethod::Percentile)
            .then(|| self.calibration.percentile.unwrap_or(DEFAULT_PERCENTILE))
    }

    /// The validation limits on every output. Only the profile's metrics judge: the
    /// element-wise `allclose` share is not limited (quantized outputs are never all close).
    pub fn thresholds(&self) -> Thresholds {
        let v = &self.validation;
        Thresholds {
            default: Limits {
                max_outside_share: Some(1.0),
                max_abs: v.max_abs,
                min_sqnr: v.min_sqnr,
                min_cosine: v.min_cosine,
                min_top1: v.min_top1,
                ..Limits::default()
            },
            outputs: Default::default(),
        }
    }

    /// The profile as YAML (what `kiln profile show` prints after its header); parsing it
    /// gives this profile back.
    pub fn to_yaml(&self) -> String {
        serde_yaml_ng::to_string(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::resolve::{resolve, Layer};

    fn builtin(name: &str) -> Profile {
        resolve(Layer::builtin(name).unwrap().unwrap()).unwrap().0
    }

    #[test]
    fn hexagon_config_and_per_op_granularity() {
        let p = builtin("hexagon");
        let c = p.quant_config();
        assert_eq!(c.activations, QuantScheme::new(QuantType::Uint8, false));
        assert_eq!(c.weights.scheme, QuantScheme::new(QuantType::Int8, true));
        assert!(!c.weights.per_channel);
        assert!(p.weight_per_channel("Conv"));
        assert!(p.weight_per_channel("ConvTranspose"));
        assert!(!p.weight_per_channel("MatMul"));
        assert_eq!(c.min_real_range, Some(1e-4));
        assert!(c.pin_ops.is_empty());
        assert!(c.exclude_op_types.contains("Cast"));
        assert!(p.contrib_qdq(17) && !p.contrib_qdq(21));
        assert!(p.supports("Conv").is_some());
        assert!(p.supports("Loop").is_none() && p.supports("If").is_none());
    }

    #[test]
    fn fixed_outputs_give_back_their_scale_and_zero_point() {
        let p = builtin("hexagon");
        for (op, t, scale, zp) in [
            ("Sigmoid", QuantType::Uint16, 1.0 / 65536.0, 0),
            ("Sigmoid", QuantType::Int16, 1.0 / 32768.0, 0),
            ("Tanh", QuantType::Uint16, 1.0 / 32768.0, 32768),
            ("Tanh", QuantType::Int16, 1.0 / 32768.0, 0),
        ] {
            let f = p.fixed_output(op, t).unwrap();
            assert_eq!((f.scale, f.zero_point), (scale, zp), "{op} {t}");
            let r = f.range(t);
            let params = QuantScheme::new(t, false).params(r.min, r.max, None);
            assert_eq!(params.scale, scale as f32, "{op} {t}");
            assert_eq!(params.zero_point, zp, "{op} {t}");
        }
        assert!(p.fixed_output("Sigmoid", QuantType::Uint8).is_none());
        assert!(p.fixed_output("Relu", QuantType::Uint16).is_none());
    }

    #[test]
    fn edgetpu_neon_and_ane_configs() {
        let e = builtin("edgetpu").quant_config();
        assert_eq!(e.activations, QuantScheme::new(QuantType::Uint8, false));
        assert!(e.weights.per_channel);
        assert!(e.pin_ops.is_empty());
        let n = builtin("neon");
        assert!(n.supports("Loop").is_some());
        assert_eq!(n.quant_config().pin_float, PinFloat::Float16);
        let a = builtin("ane");
        assert!(!a.quantizes_activations() && a.quantizes_weights());
        assert_eq!(a.precision.compute, FloatType::Bfloat16);
        assert_eq!(a.quant_config().pin_float, PinFloat::Float16);
        let f = builtin("ane-fp16");
        assert_eq!(f.precision.compute, FloatType::Float16);
        assert_eq!(f.quantization.weights, a.quantization.weights);
    }

    #[test]
    fn thresholds_judge_only_the_profile_metrics() {
        let t = builtin("edgetpu").thresholds();
        let l = t.for_output("anything");
        assert_eq!(l.min_sqnr, Some(20.0));
        assert_eq!(l.max_outside_share, Some(1.0));
        assert_eq!(l.max_rmse, None);
    }

    #[test]
    fn int4_builtins_are_block_wise_weight_only() {
        use kiln_passes::quant::blockwise::{WeightFormat as Form, WeightMethod as Method};
        let n = builtin("neon-int4");
        assert!(!n.quantizes_activations() && n.quantizes_weights());
        let c = n.blockwise_config().unwrap();
        assert_eq!(
            (c.bits, c.block_size, c.symmetric, c.format, c.method),
            (Bits::Four, 32, true, Form::MatMulNBits, Method::Rtn)
        );
        assert!(c.lm_head && !c.embeddings && c.exclude_nodes.is_empty());
        let mut awq = n.clone();
        awq.quantization.weights.method = WeightMethod::Awq;
        let c = awq.blockwise_config().unwrap();
        assert_eq!(c.method, Method::Awq);
        assert_eq!(c.awq, Default::default());
        let mut gptq = n.clone();
        gptq.quantization.weights.method = WeightMethod::Gptq;
        let c = gptq.blockwise_config().unwrap();
        assert_eq!(c.method, Method::Gptq);
        assert!(c.gptq.clip && !c.gptq.act_order);
        assert_eq!(
            n.quant_config().pin_ops,
            builtin("neon").quant_config().pin_ops
        );
        let a = builtin("ane-int4");
        let c = a.blockwise_config().unwrap();
        assert_eq!(
            (c.bits, c.block_size, c.format),
            (Bits::Four, 32, Form::Qdq)
        );
        assert_eq!(a.quantization.weights.min_elements, Some(2049));
        assert_eq!(a.precision, builtin("ane").precision);
        // Per-channel profiles have no block-wise settings.
        for name in ["neon", "ane", "hexagon", "edgetpu", "ane-fp16"] {
            assert!(builtin(name).blockwise_config().is_none(), "{name}");
        }
    }

    #[test]
    fn block_wise_settings_map_to_the_quantizer() {
        let mut p = builtin("neon-int4");
        let w = &mut p.quantization.weights;
        w.dtype = Dtype::Uint8;
        w.symmetric = false;
        w.block_size = None;
        w.lm_head = false;
        w.embeddings = true;
        let c = p.blockwise_config().unwrap();
        assert_eq!((c.bits, c.symmetric), (Bits::Eight, false));
        assert_eq!(c.block_size, DEFAULT_BLOCK_SIZE as usize);
        assert!(!c.lm_head && c.embeddings);
        p.quantization.weight_only = true;
        p.quantization.activations.dtype = Dtype::Uint8;
        assert!(!p.quantizes_activations());
        p.quantization.weight_only = false;
        assert!(p.quantizes_activations());
    }

    #[test]
    fn percentile_default() {
        let mut p = builtin("neon");
        assert_eq!(p.calibration_percentile(), None);
        p.calibration.method = CalibrationMethod::Percentile;
        assert_eq!(p.calibration_percentile(), Some(DEFAULT_PERCENTILE));
    }
}
