//! What a profile may say: operator and fusion names that exist, element types each family
//! can run, consistent combinations, values in range. The first problem is the error (with the
//! place of the key that causes it); oddities that still work are warnings.

use super::error::{ProfileError, ProfileWarning};
use super::locate::KeyPath;
use super::names::{closest, closest_op, did_you_mean, fusion_names, is_known_op};
use super::resolve::Sources;
use super::schema::{
    CpuFeature, Dtype, Family, FloatType, Granularity, IoHandling, MixedPrecision, OpConstraints,
    Profile, QdqDomain, WeightFormat, WeightQuant,
};
use kiln_passes::quant::blockwise::BLOCK_SIZES;

/// Checks a resolved profile; `sources` locates keys in the files that set them.
pub fn check(p: &Profile, sources: &Sources) -> Result<Vec<ProfileWarning>, ProfileError> {
    let mut c = Checker {
        p,
        sources,
        warnings: Vec::new(),
    };
    c.names()?;
    c.precision()?;
    c.activations()?;
    c.weights()?;
    c.bias()?;
    c.quantization_values()?;
    c.calibration()?;
    c.ops()?;
    c.io()?;
    c.shapes()?;
    c.memory()?;
    c.validation()?;
    c.cpu()?;
    Ok(c.warnings)
}

struct Checker<'a> {
    p: &'a Profile,
    sources: &'a Sources,
    warnings: Vec<ProfileWarning>,
}

type Checked = Result<(), ProfileError>;

fn path(keys: &[&str]) -> KeyPath {
    KeyPath::keys(keys)
}

impl Checker<'_> {
    fn err(&self, at: &KeyPath, message: impl Into<String>) -> ProfileError {
        ProfileError::invalid(self.sources.at(at), at.to_string(), message)
    }

    fn warn(&mut self, at: &KeyPath, message: impl Into<String>) {
        self.warnings.push(ProfileWarning {
            at: self.sources.at(at),
            key: at.to_string(),
            message: message.into(),
        });
    }

    fn family(&self) -> &'static str {
        self.p.family.name()
    }

    /// Every operator name is a real operator; every fusion a real pass.
    fn names(&self) -> Checked {
        let q = &self.p.quantization;
        let op = |at: KeyPath, name: &str| -> Checked {
            if is_known_op(name) {
                Ok(())
            } else {
                Err(self.err(
                    &at,
                    format!(
                        "unknown operator '{name}'{}",
                        did_you_mean(closest_op(name))
                    ),
                ))
            }
        };
        for name in self.p.ops.supported.keys() {
            op(path(&["ops", "supported", name]), name)?;
        }
        let lists = [
            (path(&["quantization", "op_types"]), q.op_types.as_deref()),
            (
                path(&["quantization", "exclude_op_types"]),
                Some(q.exclude_op_types.as_slice()),
            ),
            (
                path(&["precision", "pin_ops"]),
                Some(self.p.precision.pin_ops.as_slice()),
            ),
        ];
        for (at, list) in lists {
            for (i, name) in list.unwrap_or_default().iter().enumerate() {
                op(at.index(i), name)?;
            }
        }
        for name in q.weights.per_op.keys() {
            op(path(&["quantization", "weights", "per_op", name]), name)?;
        }
        for name in q.fixed_outputs.keys() {
            op(path(&["quantization", "fixed_outputs", name]), name)?;
        }
        let known = fusion_names();
        let fusions = &self.p.optimize.fusions;
        for (i, name) in fusions.iter().enumerate() {
            let at = path(&["optimize", "fusions"]).index(i);
            if !known.contains(name) {
                return Err(self.err(
                    &at,
                    format!(
                        "unknown fusion '{name}'{} (known: {})",
                        did_you_mean(closest(name, known.iter().map(String::as_str))),
                        known.join(", ")
                    ),
                ));
            }
            if fusions[..i].contains(name) {
                return Err(self.err(&at, format!("'{name}' is listed twice")));
            }
        }
        Ok(())
    }

    /// Activation types each family can run.
    fn activations(&mut self) -> Checked {
        let at = path(&["quantization", "activations", "dtype"]);
        let d = self.p.quantization.activations.dtype;
        let fam = self.family();
        if d == Dtype::Int32 {
            return Err(self.err(&at, "int32 is a bias type, not an activation type"));
        }
        let refusal: Option<String> = match (self.p.family, d) {
            (Family::Edgetpu, Dtype::Uint8 | Dtype::Int8) => None,
            (Family::Edgetpu, _) => Some(format!(
                "{d} activations on {fam}: the Edge TPU runs 8-bit integers only (uint8 or int8); \
                 it has no float units"
            )),
            (_, Dtype::Int4 | Dtype::Uint4) => Some(format!(
                "{d} activations on {fam}: no target runs 4-bit activations (4-bit is for weights)"
            )),
            (Family::Hexagon, Dtype::Bfloat16 | Dtype::Float32) => Some(format!(
                "{d} activations on {fam}: the HTP computes in float only in float16 (its fp16 \
                 mode); quantized types are uint8, uint16, int8, int16"
            )),
            (Family::Ane, Dtype::Uint8 | Dtype::Uint16 | Dtype::Int16) => Some(format!(
                "{d} activations on {fam}: the Neural Engine computes in 16-bit float (int8 \
                 activations on newer chips)"
            )),
            (Family::Ane, Dtype::Float32) => Some(format!(
                "float32 activations on {fam}: the Neural Engine has no float32 datapath; use \
                 float16 or bfloat16"
            )),
            _ => None,
        };
        if let Some(why) = refusal {
            return Err(self.err(&at, why));
        }
        let compute = self.p.precision.compute;
        if d.is_float() && float_dtype(compute) != d {
            // Blame whichever of the two keys the more derived file set.
            let compute_at = path(&["precision", "compute"]);
            let newer = |p: &KeyPath| self.sources.depth(p).unwrap_or(usize::MAX);
            let (at, msg) = if newer(&compute_at) < newer(&at) {
                (
                    compute_at,
                    format!(
                        "{} differs from quantization.activations.dtype ({d})",
                        compute.name()
                    ),
                )
            } else {
                (
                    at,
                    format!("{d} differs from precision.compute ({})", compute.name()),
                )
            };
            return Err(self.err(
                &at,
                format!("{msg}: activations that are not quantized are in the compute type"),
            ));
        }
        if self.p.family == Family::Neon && d.bits() == 16 && !d.is_float() {
            self.warn(
                &at,
                "MLAS has no 16-bit integer kernels: 16-bit QDQ runs as float on the CPU",
            );
        }
        Ok(())
    }

    /// Of two keys that together make a problem, the one the more derived file set (`a` on
    /// a tie).
    fn newer(&self, a: KeyPath, b: KeyPath) -> KeyPath {
        let depth = |p: &KeyPath| self.sources.depth(p).unwrap_or(usize::MAX);
        if depth(&b) < depth(&a) {
            b
        } else {
            a
        }
    }

    /// Weight types each family can run, and consistency with activations.
    fn weights(&mut self) -> Checked {
        let q = &self.p.quantization;
        let w = &q.weights;
        let at = path(&["quantization", "weights", "dtype"]);
        let granularity_at = path(&["quantization", "weights", "granularity"]);
        let d = w.dtype;
        let fam = self.family();
        let acts_quantized = self.p.quantizes_activations();
        let per_block = w.granularity == Granularity::PerBlock;
        if d == Dtype::Int32 {
            return Err(self.err(&at, "int32 is a bias type, not a weight type"));
        }
        if q.weight_only && matches!(self.p.family, Family::Edgetpu | Family::Hexagon) {
            return Err(self.err(
                &path(&["quantization", "weight_only"]),
                format!(
                    "weight-only on {fam}: the device runs quantized ops, so activations are \
                     quantized too"
                ),
            ));
        }
        if matches!(d, Dtype::Int4 | Dtype::Uint4) && !per_block {
            return Err(self.err(
                &self.newer(at, granularity_at),
                format!(
                    "{d} weights are per-block only (one scale per block_size weights; one \
                     scale per channel loses too much at 4 bits): set granularity: per-block"
                ),
            ));
        }
        let refusal: Option<String> = match (self.p.family, d) {
            (Family::Edgetpu, Dtype::Int8 | Dtype::Uint8) => None,
            (Family::Edgetpu, _) => Some(format!(
                "{d} weights on {fam}: the Edge TPU runs 8-bit integer weights only"
            )),
            (Family::Hexagon, Dtype::Float16)
                if self.p.quantization.activations.dtype == Dtype::Float16 =>
            {
                None
            }
            (Family::Hexagon, _) if d.is_float() => Some(format!(
                "{d} weights on {fam}: the HTP runs quantized weights (float16 only in its fp16 \
                 mode, with float16 activations)"
            )),
            (Family::Ane, Dtype::Int16 | Dtype::Uint16) => Some(format!(
                "{d} weights on {fam}: Core ML compresses weights to 8 (or 4) bits"
            )),
            _ => None,
        };
        if let Some(why) = refusal {
            return Err(self.err(&at, why));
        }
        if acts_quantized && d.is_float() {
            return Err(self.err(
                &at,
                format!(
                    "{d} weights with {} activations: a quantized op needs quantized weights",
                    self.p.quantization.activations.dtype
                ),
            ));
        }
        if self.p.family == Family::Neon && d.bits() == 16 && !d.is_float() {
            self.warn(
                &at,
                "MLAS has no 16-bit integer kernels: 16-bit weights run as float on the CPU",
            );
        }
        if let Some(b) = w.block_size {
            let at = path(&["quantization", "weights", "block_size"]);
            if !BLOCK_SIZES.contains(&(b as usize)) {
                return Err(self.err(
                    &at,
                    format!("{b}: block-wise weights take 32, 64 or 128 weights per block"),
                ));
            }
            if !per_block {
                self.warn(&at, "has no effect unless granularity is per-block");
            }
        }
        for (op, o) in &w.per_op {
            let at = path(&["quantization", "weights", "per_op", op, "granularity"]);
            match o.granularity {
                Some(Granularity::PerBlock) => {
                    return Err(self.err(
                        &at,
                        "per-block applies to every weight at once \
                         (quantization.weights.granularity)",
                    ))
                }
                Some(_) if per_block => self.warn(
                    &at,
                    "has no effect: with granularity per-block every weight is quantized per block",
                ),
                _ => {}
            }
        }
        if per_block {
            return self.per_block();
        }
        self.block_keys_unused();
        let weight_only = !acts_quantized && !d.is_float();
        if weight_only && self.p.family == Family::Neon {
            return Err(self.err(
                &granularity_at,
                format!(
                    "{} weights with float activations on {fam}: weight-only on the CPU is \
                     block-wise (MatMulNBits, or DequantizeLinear with block_size): set \
                     granularity: per-block",
                    w.granularity.name()
                ),
            ));
        }
        Ok(())
    }

    /// Per-block weights: weight-only, on a family whose target writes them, in a type and
    /// form it runs.
    fn per_block(&mut self) -> Checked {
        let q = &self.p.quantization;
        let w = &q.weights;
        let fam = self.family();
        let granularity_at = path(&["quantization", "weights", "granularity"]);
        let dtype_at = path(&["quantization", "weights", "dtype"]);
        if w.float_target && !w.sequential {
            return Err(self.err(
                &path(&["quantization", "weights", "float_target"]),
                "aims each stage at the float model's output, so it needs sequential: true",
            ));
        }
        if matches!(self.p.family, Family::Edgetpu | Family::Hexagon) {
            return Err(self.err(
                &granularity_at,
                format!(
                    "per-block weights on {fam}: the {fam} target quantizes activations too; \
                     block-wise weights are weight-only, for the neon and ane targets"
                ),
            ));
        }
        if self.p.quantizes_activations() {
            return Err(self.err(
                &self.newer(
                    granularity_at,
                    path(&["quantization", "activations", "dtype"]),
                ),
                format!(
                    "per-block weights are weight-only, but activations are {}: set \
                     quantization.weight_only: true or a float activations dtype",
                    q.activations.dtype
                ),
            ));
        }
        let d = w.dtype;
        let signed = match d {
            Dtype::Int4 | Dtype::Int8 => true,
            Dtype::Uint4 | Dtype::Uint8 => false,
            _ => {
                return Err(self.err(
                    &dtype_at,
                    format!("{d} per block: block-wise weights are int4, uint4, int8 or uint8"),
                ))
            }
        };
        if signed != w.symmetric {
            let why = if signed {
                format!(
                    "{d} per-block weights are symmetric (zero point 0); for a zero point per \
                     block use u{d} with symmetric: false"
                )
            } else {
                format!(
                    "{d} per-block weights carry a zero point per block: set symmetric: false \
                     (or use {} for symmetric blocks)",
                    d.name().trim_start_matches('u')
                )
            };
            return Err(self.err(
                &self.newer(dtype_at, path(&["quantization", "weights", "symmetric"])),
                why,
            ));
        }
        if w.reduce_range {
            self.warn(
                &path(&["quantization", "weights", "reduce_range"]),
                "has no effect on per-block weights (every block uses the full integer range)",
            );
        }
        if w.format == WeightFormat::Matmulnbits && self.p.family == Family::Ane {
            return Err(self.err(
                &path(&["quantization", "weights", "format"]),
                format!(
                    "matmulnbits on {fam}: MatMulNBits is ONNX Runtime's com.microsoft op, which \
                     Core ML's converters do not read; use qdq (DequantizeLinear with \
                     block_size, the form of Core ML's constexpr_blockwise_shift_scale)"
                ),
            ));
        }
        Ok(())
    }

    /// Warns about block-wise keys changed from their defaults while weights are not per-block.
    fn block_keys_unused(&mut self) {
        let w = &self.p.quantization.weights;
        let d = WeightQuant::default();
        let changed = [
            ("format", w.format != d.format),
            ("method", w.method != d.method),
            ("lm_head", w.lm_head != d.lm_head),
            ("embeddings", w.embeddings != d.embeddings),
            ("sequential", w.sequential != d.sequential),
            ("float_target", w.float_target != d.float_target),
        ];
        for (key, differs) in changed {
            if differs {
                self.warn(
                    &path(&["quantization", "weights", key]),
                    "has no effect unless granularity is per-block",
                );
            }
        }
    }

    /// Bias type: int32 under quantized activations and weights, a float type otherwise.
    fn bias(&self) -> Checked {
        let q = &self.p.quantization;
        let at = path(&["quantization", "bias", "dtype"]);
        let d = q.bias.dtype;
        let quantized = self.p.quantizes_activations() && self.p.quantizes_weights();
        if !d.is_float() && d != Dtype::Int32 {
            return Err(self.err(&at, format!("{d}: a bias is int32 or a float type")));
        }
        if d == Dtype::Int32 && !quantized {
            return Err(self.err(
                &at,
                "int32 bias needs quantized activations and weights (its scale is input scale × \
                 weight scale)",
            ));
        }
        if d.is_float() && quantized && matches!(self.p.family, Family::Edgetpu | Family::Hexagon) {
            return Err(self.err(
                &at,
                format!(
                    "{d} bias on {}: the device takes int32 biases of quantized ops",
                    self.family()
                ),
            ));
        }
        Ok(())
    }

    /// min_real_range, fixed outputs, Q/DQ domain.
    fn quantization_values(&self) -> Checked {
        let q = &self.p.quantization;
        if let Some(m) = q.min_real_range {
            if !(m.is_finite() && m > 0.0) {
                return Err(self.err(
                    &path(&["quantization", "min_real_range"]),
                    format!("must be a number > 0, got {m}"),
                ));
            }
        }
        for (op, by_type) in &q.fixed_outputs {
            for (dtype, fixed) in by_type {
                let at = path(&["quantization", "fixed_outputs", op, dtype.name()]);
                let Some((lo, hi)) = dtype.int_range().filter(|_| *dtype != Dtype::Int32) else {
                    return Err(self.err(&at, format!("{dtype} is not a quantized output type")));
                };
                if !(fixed.scale.is_finite() && fixed.scale > 0.0) {
                    return Err(self.err(
                        &at.key("scale"),
                        format!("must be a number > 0, got {}", fixed.scale),
                    ));
                }
                if !(lo..=hi).contains(&fixed.zero_point) {
                    return Err(self.err(
                        &at.key("zero_point"),
                        format!("{} is outside {dtype}'s {lo}..{hi}", fixed.zero_point),
                    ));
                }
            }
        }
        if let Some(m) = &q.mixed_precision {
            self.mixed_precision(m)?;
        }
        if q.qdq_domain == QdqDomain::Microsoft
            && matches!(self.p.family, Family::Edgetpu | Family::Ane)
        {
            return Err(self.err(
                &path(&["quantization", "qdq_domain"]),
                format!(
                    "com.microsoft Q/DQ are ONNX Runtime's; the {} toolchain reads standard ops",
                    self.family()
                ),
            ));
        }
        Ok(())
    }

    /// Mixed precision: values in range, and a form with a 16-bit counterpart to promote to.
    fn mixed_precision(&self, m: &MixedPrecision) -> Checked {
        let at = |key: &str| path(&["quantization", "mixed_precision", key]);
        if m.target_sqnr.is_none() && m.max_16bit_share.is_none() {
            return Err(self.err(
                &path(&["quantization", "mixed_precision"]),
                "give target_sqnr (dB), max_16bit_share (0..1), or both",
            ));
        }
        if let Some(t) = m.target_sqnr {
            if !t.is_finite() {
                return Err(self.err(
                    &at("target_sqnr"),
                    format!("must be a finite number of dB, got {t}"),
                ));
            }
        }
        if let Some(s) = m.max_16bit_share {
            if !(0.0..=1.0).contains(&s) {
                return Err(self.err(
                    &at("max_16bit_share"),
                    format!("must be a share between 0 and 1, got {s}"),
                ));
            }
        }
        let fam = self.family();
        let per_block = self.p.quantization.weights.granularity == Granularity::PerBlock;
        let promoted = if self.p.family == Family::Edgetpu {
            Some(format!(
                "{fam} runs 8-bit integers only: no layer can be kept at 16-bit"
            ))
        } else if !self.p.quantizes_activations() && !per_block {
            Some(
                "mixed precision searches quantized activations or per-block weights; this \
                 profile has neither"
                    .to_string(),
            )
        } else {
            None
        };
        match promoted {
            Some(why) => Err(self.err(&path(&["quantization", "mixed_precision"]), why)),
            None => Ok(()),
        }
    }

    fn calibration(&mut self) -> Checked {
        let c = &self.p.calibration;
        let acts_quantized = self.p.quantizes_activations();
        if acts_quantized && c.samples == 0 {
            return Err(self.err(
                &path(&["calibration", "samples"]),
                "0 samples, but activations are quantized: calibration needs data to choose \
                 their ranges",
            ));
        }
        if let Some(pct) = c.percentile {
            let at = path(&["calibration", "percentile"]);
            if !(pct.is_finite() && pct > 0.0 && pct <= 100.0) {
                return Err(self.err(&at, format!("must be in (0, 100], got {pct}")));
            }
            if c.method != super::schema::CalibrationMethod::Percentile {
                self.warn(&at, "has no effect unless method is percentile");
            }
        }
        Ok(())
    }

    fn precision(&mut self) -> Checked {
        let pr = &self.p.precision;
        let fam = self.family();
        if pr.pin_float == FloatType::Float32 {
            return Err(self.err(
                &path(&["precision", "pin_float"]),
                "float32 is not a 16-bit float; to keep ops in float32, list them in \
                 quantization.exclude_op_types",
            ));
        }
        let compute = path(&["precision", "compute"]);
        match (self.p.family, pr.compute) {
            (Family::Ane, FloatType::Float32) => {
                return Err(self.err(
                    &compute,
                    format!("float32 on {fam}: the Neural Engine has no float32 datapath"),
                ))
            }
            (Family::Hexagon, FloatType::Bfloat16) => {
                return Err(self.err(
                    &compute,
                    format!("bfloat16 on {fam}: the HTP has no bfloat16 compute"),
                ))
            }
            _ => {}
        }
        if self.p.family == Family::Edgetpu && !pr.pin_ops.is_empty() {
            self.warn(
                &path(&["precision", "pin_ops"]),
                "the Edge TPU runs no float ops: pinned ops run on the CPU and split the graph",
            );
        }
        Ok(())
    }

    fn ops(&mut self) -> Checked {
        let ops = &self.p.ops;
        for (name, c) in &ops.supported {
            constraints(self, &path(&["ops", "supported", name]), c)?;
        }
        let accelerator = matches!(
            self.p.family,
            Family::Edgetpu | Family::Hexagon | Family::Ane
        );
        if accelerator && ops.all {
            self.warn(
                &path(&["ops", "all"]),
                format!(
                    "claims every op runs on {}; the device's own op list is in ops.supported",
                    self.family()
                ),
            );
        }
        if accelerator && !ops.all && ops.supported.is_empty() {
            self.warn(
                &path(&["ops", "supported"]),
                "no op runs on the device: everything falls back to the CPU",
            );
        }
        Ok(())
    }

    fn io(&self) -> Checked {
        let acts = self.p.quantization.activations.dtype;
        for (key, h) in [("inputs", self.p.io.inputs), ("outputs", self.p.io.outputs)] {
            if h == IoHandling::Quantize && !self.p.quantizes_activations() {
                let why = if acts.is_float() {
                    format!("activations are {acts}")
                } else {
                    "quantization is weight-only".to_string()
                };
                return Err(self.err(
                    &path(&["io", key]),
                    format!("quantize, but {why}: there is no quantized type"),
                ));
            }
        }
        Ok(())
    }

    fn shapes(&mut self) -> Checked {
        let s = &self.p.shapes;
        let fam = self.family();
        for (key, v) in [
            ("batch", s.batch),
            ("max_rank", s.max_rank),
            ("max_nontrivial_dims", s.max_nontrivial_dims),
        ] {
            if v == Some(0) {
                return Err(self.err(&path(&["shapes", key]), "must be ≥ 1"));
            }
        }
        match self.p.family {
            Family::Edgetpu if !s.static_shapes => {
                return Err(self.err(
                    &path(&["shapes", "static"]),
                    format!("false on {fam}: the Edge TPU compiles constant tensor sizes only"),
                ))
            }
            Family::Edgetpu if s.batch != Some(1) => {
                return Err(self.err(
                    &path(&["shapes", "batch"]),
                    format!("must be 1 on {fam}: the Edge TPU runs one sample at a time"),
                ))
            }
            Family::Hexagon if !s.static_shapes => {
                return Err(self.err(
                    &path(&["shapes", "static"]),
                    format!("false on {fam}: ONNX Runtime's QNN EP refuses dynamic shapes"),
                ))
            }
            Family::Ane if !s.static_shapes => self.warn(
                &path(&["shapes", "static"]),
                "Core ML runs range-flexible shapes on the Neural Engine only at their default",
            ),
            _ => {}
        }
        Ok(())
    }

    fn memory(&self) -> Checked {
        if self.p.memory.parameter_cache_bytes == Some(0) {
            return Err(self.err(
                &path(&["memory", "parameter_cache_bytes"]),
                "must be ≥ 1 (leave it out when the device has no parameter cache)",
            ));
        }
        Ok(())
    }

    fn validation(&self) -> Checked {
        let v = &self.p.validation;
        let limits = [
            ("min_sqnr", v.min_sqnr, f64::NEG_INFINITY, f64::INFINITY),
            ("min_cosine", v.min_cosine, -1.0, 1.0),
            ("max_abs", v.max_abs, 0.0, f64::INFINITY),
            ("min_top1", v.min_top1, 0.0, 1.0),
        ];
        for (key, value, lo, hi) in limits {
            let Some(x) = value else { continue };
            if x.is_nan() || x < lo || x > hi {
                return Err(self.err(
                    &path(&["validation", key]),
                    format!("{x} is outside {lo}..{hi}"),
                ));
            }
        }
        Ok(())
    }

    /// CPU features: only CPU families have them; MLAS's preferences follow them.
    fn cpu(&mut self) -> Checked {
        let at = path(&["cpu_features"]);
        let features = &self.p.cpu_features;
        if !features.is_empty() && !matches!(self.p.family, Family::Neon | Family::Cpu) {
            return Err(self.err(
                &at,
                format!(
                    "a {} profile runs on no CPU it could describe; cpu_features are for neon \
                     and cpu profiles",
                    self.family()
                ),
            ));
        }
        if self.p.family != Family::Neon {
            return Ok(());
        }
        let has = |f: CpuFeature| features.contains(&f);
        let acts = if self.p.quantizes_activations() {
            self.p.quantization.activations.dtype
        } else {
            // Float activations: the integer kernels' preferences do not apply.
            Dtype::Float32
        };
        let act_at = path(&["quantization", "activations", "dtype"]);
        if acts == Dtype::Int8 && !has(CpuFeature::I8mm) {
            self.warn(
                &act_at,
                "int8 activations without i8mm: MLAS prefers uint8 activations on such CPUs \
                 (ArmNeonIsQuantActivationsUnsigned)",
            );
        }
        if acts == Dtype::Uint8 && has(CpuFeature::I8mm) {
            self.warn(
                &act_at,
                "uint8 activations with i8mm: MLAS prefers int8 activations there (SMMLA)",
            );
        }
        let pin = self.p.precision.pin_float;
        let pin_at = path(&["precision", "pin_float"]);
        if !self.p.precision.pin_ops.is_empty() {
            if pin == FloatType::Float16 && !has(CpuFeature::Fp16) {
                self.warn(
                    &pin_at,
                    "float16 without fp16 in cpu_features: pinned ops convert to float32 to run",
                );
            }
            if pin == FloatType::Bfloat16 && !has(CpuFeature::Bf16) {
                self.warn(
                    &pin_at,
                    "bfloat16 without bf16 in cpu_features: pinned ops convert to float32 to run",
                );
            }
        }
        Ok(())
    }
}

/// The limits of one op are in range.
fn constraints(c: &Checker, at: &KeyPath, k: &OpConstraints) -> Checked {
    if let (Some(lo), Some(hi)) = (k.min_rank, k.max_rank) {
        if lo > hi {
            return Err(c.err(&at.key("min_rank"), format!("{lo} is above max_rank {hi}")));
        }
    }
    for (key, v) in [
        ("max_kernel", k.max_kernel.map(u64::from)),
        ("max_elements", k.max_elements),
    ] {
        if v == Some(0) {
            return Err(c.err(&at.key(key), "must be ≥ 1"));
        }
    }
    if let Some(strides) = &k.strides {
        if strides.is_empty() || strides.contains(&0) {
            return Err(c.err(&at.key("strides"), "must list strides ≥ 1"));
        }
    }
    if k.dtypes.as_ref().is_some_and(Vec::is_empty) {
        return Err(c.err(
            &at.key("dtypes"),
            "an empty list: leave the key out to allow the profile's types",
        ));
    }
    Ok(())
}

/// The element type of a float compute type.
fn float_dtype(f: FloatType) -> Dtype {
    match f {
        FloatType::Float16 => Dtype::Float16,
        FloatType::Bfloat16 => Dtype::Bfloat16,
        FloatType::Float32 => Dtype::Float32,
    }
}

#[cfg(test)]
mod tests {
    use crate::profile::resolve::{resolve, Layer};

    use super::*;

    fn checked(text: &str) -> Result<Vec<ProfileWarning>, ProfileError> {
        let (p, s) = resolve(Layer::text(text, "p.yaml")?)?;
        check(&p, &s)
    }

    fn err(text: &str) -> String {
        match checked(text) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn every_builtin_passes_without_warnings_but_its_deliberate_ones() {
        use crate::profile::builtin::DELIBERATE_WARNINGS;
        for name in crate::profile::builtin::names() {
            let (p, s) = resolve(Layer::builtin(name).unwrap().unwrap()).unwrap();
            let keys: Vec<String> = check(&p, &s).unwrap().into_iter().map(|w| w.key).collect();
            let expected: Vec<&str> = DELIBERATE_WARNINGS
                .iter()
                .filter(|(n, _)| *n == name)
                .map(|(_, k)| *k)
                .collect();
            assert_eq!(keys, expected, "{name}");
        }
    }

    #[test]
    fn int4_and_float_activations_on_edgetpu() {
        let e = err("extends: edgetpu\nquantization:\n  activations:\n    dtype: int4\n");
        assert!(
            e.starts_with(
                "p.yaml:4:5: quantization.activations.dtype: int4 activations on edgetpu"
            ),
            "{e}"
        );
        let e = err("extends: edgetpu\nquantization: {activations: {dtype: float16}}\n");
        assert!(e.contains("float16 activations on edgetpu"), "{e}");
        assert!(e.starts_with("p.yaml:2:30: "), "{e}");
    }

    #[test]
    fn typo_in_an_op_name_suggests_the_nearest() {
        let e = err("extends: hexagon\nops:\n  supported:\n    Convv: {}\n");
        assert_eq!(
            e,
            "p.yaml:4:5: ops.supported.Convv: unknown operator 'Convv'; did you mean 'Conv'?"
        );
        let e = err("extends: neon\nprecision:\n  pin_ops: [LayerNorm, Softmax]\n");
        assert!(
            e.starts_with("p.yaml:3:13: precision.pin_ops[0]: unknown operator 'LayerNorm'"),
            "{e}"
        );
        let e = err("extends: hexagon\nquantization:\n  weights:\n    per_op: {Gem: {granularity: per-channel}}\n");
        assert!(
            e.contains(
                "quantization.weights.per_op.Gem: unknown operator 'Gem'; did you mean 'Gemm'?"
            ),
            "{e}"
        );
    }

    #[test]
    fn typo_in_a_fusion_name() {
        let e = err("extends: neon\noptimize:\n  fusions: [fuse-conv-bn, fuse-gelx]\n");
        assert!(
            e.starts_with("p.yaml:3:27: optimize.fusions[1]: unknown fusion 'fuse-gelx'; did you mean 'fuse-gelu'?"),
            "{e}"
        );
        let e = err("extends: neon\noptimize:\n  fusions: [&a , fold-bias]\n");
        assert!(
            e.starts_with("p.yaml:3:13: optimize.fusions[0]: unknown fusion 'null'"),
            "{e}"
        );
        let e = err("extends: neon\noptimize:\n  fusions: [fold-bias, fold-bias]\n");
        assert!(e.contains("listed twice"), "{e}");
    }

    #[test]
    fn the_error_names_the_file_that_set_the_key() {
        // The parent sets the dtype; the child makes it impossible by changing the family.
        let e = err("extends: ane\nfamily: edgetpu\n");
        assert!(e.starts_with("builtin:ane:"), "{e}");
        assert!(
            e.contains("quantization.activations.dtype: bfloat16 activations on edgetpu"),
            "{e}"
        );
    }

    #[test]
    fn impossible_combinations() {
        let cases = [
            ("extends: ane\nquantization: {activations: {dtype: uint8}}\n", "uint8 activations on ane"),
            ("extends: ane\nprecision: {compute: float32}\n", "precision.compute: float32 on ane: the Neural Engine has no float32"),
            ("extends: ane-fp16\nprecision: {compute: bfloat16}\n", "p.yaml:2:13: precision.compute: bfloat16 differs from quantization.activations.dtype (float16)"),
            ("extends: ane-fp16\nquantization: {activations: {dtype: bfloat16}}\n", "p.yaml:2:30: quantization.activations.dtype: bfloat16 differs from precision.compute (float16)"),
            ("extends: ane\nquantization: {activations: {dtype: float32}}\n", "float32 activations on ane"),
            ("extends: hexagon\nquantization: {activations: {dtype: float32}}\nprecision: {compute: float32}\n", "float32 activations on hexagon"),
            ("extends: hexagon\nquantization: {weights: {dtype: int4}}\n", "int4 weights are per-block only"),
            ("extends: hexagon\nquantization: {bias: {dtype: float32}}\n", "float32 bias on hexagon"),
            ("extends: ane\nquantization: {bias: {dtype: int32}}\n", "int32 bias needs quantized activations"),
            ("extends: neon\nquantization: {weights: {dtype: float32}}\n", "a quantized op needs quantized weights"),
            ("extends: edgetpu\nshapes: {static: false}\n", "the Edge TPU compiles constant tensor sizes only"),
            ("extends: edgetpu\nshapes: {batch: 4}\n", "runs one sample at a time"),
            ("extends: hexagon\nshapes: {static: false}\n", "refuses dynamic shapes"),
            ("extends: neon\ncalibration: {samples: 0}\n", "calibration needs data"),
            ("extends: neon\ncalibration: {method: percentile, percentile: 101}\n", "must be in (0, 100]"),
            ("extends: neon\nprecision: {pin_float: float32}\n", "not a 16-bit float"),
            ("extends: hexagon\ncpu_features: [i8mm]\n", "cpu_features are for neon"),
            ("extends: ane\nio: {inputs: quantize}\n", "there is no quantized type"),
            ("extends: neon\nvalidation: {min_cosine: 1.5}\n", "validation.min_cosine: 1.5 is outside -1..1"),
            ("extends: neon\nvalidation: {max_abs: -1}\n", "validation.max_abs: -1 is outside"),
            ("extends: neon\nvalidation: {min_top1: .nan}\n", "validation.min_top1: NaN is outside"),
            ("extends: hexagon\nquantization: {min_real_range: 0}\n", "must be a number > 0"),
            ("extends: hexagon\nquantization: {fixed_outputs: {Tanh: {uint16: {scale: 0.1, zero_point: 70000}}}}\n", "70000 is outside uint16's 0..65535"),
            ("extends: hexagon\nquantization: {fixed_outputs: {Tanh: {float16: {scale: 0.1, zero_point: 0}}}}\n", "float16 is not a quantized output type"),
            ("extends: edgetpu\nquantization: {qdq_domain: com.microsoft}\n", "com.microsoft Q/DQ are ONNX Runtime's"),
            ("extends: edgetpu\nops: {supported: {Conv: {min_rank: 5}}}\n", "5 is above max_rank 4"),
            ("extends: edgetpu\nops: {supported: {Slice: {strides: []}}}\n", "must list strides"),
            ("extends: edgetpu\nmemory: {parameter_cache_bytes: 0}\n", "must be ≥ 1"),
            ("family: cpu\nquantization: {activations: {dtype: int32}}\n", "int32 is a bias type"),
            ("family: cpu\nquantization: {weights: {block_size: 10}}\n", "10: block-wise weights take 32, 64 or 128"),
        ];
        for (text, want) in cases {
            let e = err(text);
            assert!(e.contains(want), "{text}\n-> {e}");
            assert!(e.starts_with("p.yaml:") || e.starts_with("builtin:"), "{e}");
        }
    }

    #[test]
    fn block_wise_weights_refuse_what_no_target_runs() {
        let cases = [
            ("extends: neon-int4\nquantization:\n  weights:\n    block_size: 48\n", "p.yaml:4:5: quantization.weights.block_size: 48: block-wise weights take 32, 64 or 128"),
            // int4 comes from the parent, per-channel from this file: this file is blamed.
            ("extends: neon-int4\nquantization:\n  weights:\n    granularity: per-channel\n", "p.yaml:4:5: quantization.weights.granularity: int4 weights are per-block only"),
            ("extends: neon\nquantization:\n  weights:\n    dtype: uint4\n", "p.yaml:4:5: quantization.weights.dtype: uint4 weights are per-block only"),
            ("extends: ane-int4\nquantization:\n  weights:\n    format: matmulnbits\n", "p.yaml:4:5: quantization.weights.format: matmulnbits on ane: MatMulNBits is ONNX Runtime's"),
            ("extends: neon\nquantization:\n  weights:\n    granularity: per-block\n", "p.yaml:4:5: quantization.weights.granularity: per-block weights are weight-only, but activations are uint8"),
            ("extends: edgetpu\nquantization: {weights: {granularity: per-block}}\n", "per-block weights on edgetpu"),
            ("extends: hexagon\nquantization: {weights: {granularity: per-block}, activations: {dtype: float16}}\nprecision: {compute: float16}\n", "per-block weights on hexagon"),
            ("extends: hexagon\nquantization: {weight_only: true}\n", "quantization.weight_only: weight-only on hexagon"),
            ("extends: neon-int4\nquantization: {weights: {dtype: uint4}}\n", "quantization.weights.dtype: uint4 per-block weights carry a zero point per block: set symmetric: false (or use int4"),
            ("extends: neon-int4\nquantization: {weights: {symmetric: false}}\n", "quantization.weights.symmetric: int4 per-block weights are symmetric (zero point 0); for a zero point per block use uint4"),
            ("extends: neon-int4\nquantization: {weights: {dtype: int16}}\n", "int16 per block: block-wise weights are int4, uint4, int8 or uint8"),
            ("extends: neon-int4\nquantization: {weights: {per_op: {MatMul: {granularity: per-block}}}}\n", "quantization.weights.per_op.MatMul.granularity: per-block applies to every weight"),
            ("extends: neon-int4\nquantization: {weights: {method: hqq}}\n", "quantization.weights.method: unknown value 'hqq'"),
            ("extends: neon-int4\nquantization:\n  weights:\n    method: gptq\n    float_target: true\n", "p.yaml:5:5: quantization.weights.float_target: aims each stage at the float model's output, so it needs sequential: true"),
            ("extends: neon\nquantization: {activations: {dtype: float32}}\n", "quantization.weights.granularity: per-channel weights with float activations on neon"),
            ("extends: neon\nquantization: {weight_only: true, weights: {dtype: int4, granularity: per-block}}\n", "int32 bias needs quantized activations"),
            ("extends: neon-int4\nio: {outputs: quantize}\n", "io.outputs: quantize, but activations are float32"),
            ("extends: neon\nquantization: {weight_only: true, weights: {dtype: int4, granularity: per-block}, bias: {dtype: float32}}\nio: {inputs: quantize}\n", "io.inputs: quantize, but quantization is weight-only"),
        ];
        for (text, want) in cases {
            let e = err(text);
            assert!(e.contains(want), "{text}\n-> {e}");
            assert!(e.starts_with("p.yaml:") || e.starts_with("builtin:"), "{e}");
        }
    }

    #[test]
    fn block_wise_settings_that_work() {
        for text in [
            "extends: neon-int4\nquantization: {weights: {dtype: uint4, symmetric: false, block_size: 128}}\n",
            "extends: neon-int4\nquantization: {weights: {dtype: int8, format: qdq, lm_head: false, embeddings: true}}\n",
            "extends: ane-int4\nquantization: {weights: {method: awq, block_size: 128}}\n",
            "extends: neon-int4\nquantization: {weights: {method: gptq}}\n",
            "extends: neon-int4\nquantization: {weights: {method: gptq, sequential: true, float_target: true}}\n",
            "extends: ane-int4\nquantization: {weights: {dtype: uint8, symmetric: false, block_size: 64}}\n",
            // weight_only keeps the inherited uint8 activation settings out of play.
            "extends: neon\nquantization: {weight_only: true, weights: {dtype: int4, granularity: per-block}, bias: {dtype: float32}}\n",
            // Weight-only per channel stays what the ane target does without blocks.
            "extends: ane-int4\nquantization: {weights: {dtype: int8, granularity: per-channel}}\nshapes: {static: true}\n",
        ] {
            let w = checked(text).unwrap_or_else(|e| panic!("{text}\n-> {e}"));
            let unrelated: Vec<_> = w
                .iter()
                .filter(|w| !w.message.contains("has no effect unless granularity"))
                // ane-int4's own (flexible shapes for the growing KV cache).
                .filter(|w| w.key != "shapes.static")
                .collect();
            assert!(unrelated.is_empty(), "{text}\n-> {w:?}");
        }
    }

    #[test]
    fn mixed_precision_values_are_located() {
        let cases = [
            ("extends: hexagon\nquantization:\n  mixed_precision:\n    max_16bit_share: -0.1\n", "p.yaml:4:5: quantization.mixed_precision.max_16bit_share: must be a share between 0 and 1, got -0.1"),
            ("extends: hexagon\nquantization:\n  mixed_precision:\n    max_16bit_share: 1.5\n", "p.yaml:4:5: quantization.mixed_precision.max_16bit_share: must be a share between 0 and 1, got 1.5"),
            ("extends: hexagon\nquantization:\n  mixed_precision:\n    target_sqnr: .inf\n", "p.yaml:4:5: quantization.mixed_precision.target_sqnr: must be a finite number of dB"),
            ("extends: hexagon\nquantization:\n  mixed_precision: {}\n", "p.yaml:3:3: quantization.mixed_precision: give target_sqnr (dB), max_16bit_share (0..1), or both"),
            ("extends: edgetpu\nquantization: {mixed_precision: {target_sqnr: 40}}\n", "quantization.mixed_precision: edgetpu runs 8-bit integers only"),
            ("extends: ane\nquantization: {mixed_precision: {target_sqnr: 40}}\n", "this profile has neither"),
        ];
        for (text, want) in cases {
            let e = err(text);
            assert!(e.contains(want), "{text}\n-> {e}");
        }
        // A value of the wrong type, and an unknown key, are refused where they are.
        let e = err("extends: hexagon\nquantization:\n  mixed_precision:\n    target_sqnr: high\n");
        assert!(e.starts_with("p.yaml:4:"), "{e}");
        assert!(e.contains("target_sqnr"), "{e}");
        let e = err("extends: hexagon\nquantization:\n  mixed_precision:\n    target: 40\n");
        assert!(e.starts_with("p.yaml:4:") && e.contains("target"), "{e}");
        for text in [
            "extends: hexagon\nquantization: {mixed_precision: {target_sqnr: 40}}\n",
            "extends: neon-int4\nquantization: {mixed_precision: {target_sqnr: -3, max_16bit_share: 0}}\n",
            "extends: ane-int4\nquantization: {mixed_precision: {max_16bit_share: 1}}\n",
        ] {
            let (p, _) = resolve(Layer::text(text, "p.yaml").unwrap()).unwrap();
            checked(text).unwrap_or_else(|e| panic!("{text}\n-> {e}"));
            assert!(p.quantization.mixed_precision.is_some());
        }
    }

    #[test]
    fn warnings_for_working_but_odd_choices() {
        let w = checked("extends: neon\nquantization: {activations: {dtype: int8}}\n").unwrap();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].to_string().contains("MLAS prefers uint8"), "{}", w[0]);
        let w = checked("extends: neon\ncpu_features: [dotprod, fp16, i8mm]\nquantization: {activations: {dtype: int8}}\n").unwrap();
        assert!(w.is_empty(), "{w:?}");
        let w = checked("extends: neon\ncpu_features: [dotprod]\n").unwrap();
        assert!(
            w.iter().any(|w| w.message.contains("float16 without fp16")),
            "{w:?}"
        );
        let w = checked("extends: edgetpu\nprecision: {pin_ops: [Softmax]}\n").unwrap();
        assert!(w[0].message.contains("split the graph"), "{w:?}");
        let w = checked("extends: neon\nquantization: {weights: {format: matmulnbits}}\n").unwrap();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].to_string().starts_with(
                "p.yaml:2:26: quantization.weights.format: has no effect unless granularity is per-block"
            ),
            "{}",
            w[0]
        );
        let w =
            checked("extends: neon-int4\nquantization: {weights: {reduce_range: true}}\n").unwrap();
        assert!(
            w.iter()
                .any(|w| w.message.contains("no effect on per-block")),
            "{w:?}"
        );
        let w = checked(
            "extends: neon-int4\nquantization: {weights: {per_op: {Gemm: {granularity: per-tensor}}}}\n",
        )
        .unwrap();
        assert!(
            w.iter()
                .any(|w| w.key == "quantization.weights.per_op.Gemm.granularity"),
            "{w:?}"
        );
        let w = checked("extends: neon\nquantization: {weights: {block_size: 64}}\n").unwrap();
        assert!(
            w.iter().any(|w| w.key == "quantization.weights.block_size"),
            "{w:?}"
        );
    }
}
