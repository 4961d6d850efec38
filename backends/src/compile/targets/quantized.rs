//! The integer targets' shared steps: the quantizer's options from the profile, and fixed
//! output ranges (QNN's 16-bit Sigmoid/Tanh) keyed by the names in this graph.

use kiln_passes::ir::Model;
use kiln_passes::quant::{QuantConfig, TensorOverride};

use super::super::error::CompileError;
use super::super::Context;
use crate::calibrate::{CalibrationOptions, Method};
use crate::profile::CalibrationMethod;
use crate::quantize::mixed_precision::DEFAULT_SAMPLES;
use crate::quantize::{
    quantize, MixedPrecisionOptions, Mode, QuantizeOptions, QuantizeReport, RangeSource,
};

/// Quantizes `model` with `config` and the profile's calibration; the optimize pipeline
/// already ran in the driver.
pub fn run(
    model: &mut Model,
    mut config: QuantConfig,
    cx: &Context,
) -> Result<QuantizeReport, CompileError> {
    fixed_outputs(model, &mut config, cx);
    let p = &cx.profile;
    let method = match p.calibration.method {
        CalibrationMethod::Minmax => Method::MinMax,
        CalibrationMethod::Percentile => {
            Method::Percentile(p.calibration_percentile().unwrap_or(99.999))
        }
        CalibrationMethod::Entropy => Method::Entropy,
        CalibrationMethod::Mse => Method::Mse,
    };
    let options = QuantizeOptions {
        config,
        optimize: None,
        mode: Mode::Static {
            source: RangeSource::Calibrate(cx.calibration.clone()),
            method,
            calibration: CalibrationOptions::for_method(method, false),
            save_stats: None,
            bias_correction: false,
        },
        check: None,
        sensitivity: None,
        mixed_precision: mixed_precision(&cx.profile),
        session: cx.session.clone(),
        synthetic: cx.synthetic.clone(),
    };
    quantize(model, &options, &mut |_, _| {}).map_err(|e| CompileError::Quantize(Box::new(e)))
}

/// The profile's mixed-precision search (`quantization.mixed_precision`), measured on the
/// first calibration samples.
pub fn mixed_precision(profile: &crate::profile::Profile) -> Option<MixedPrecisionOptions> {
    profile
        .quantization
        .mixed_precision
        .map(|m| MixedPrecisionOptions {
            target_sqnr: m.target_sqnr,
            max_16bit_share: m.max_16bit_share,
            samples: DEFAULT_SAMPLES,
        })
}

/// Fixed output ranges of the profile, as overrides on the outputs of the ops they name.
fn fixed_outputs(model: &Model, config: &mut QuantConfig, cx: &Context) {
    let g = &model.graph;
    for (_, n) in g.nodes() {
        if !n.is_operator() {
            continue;
        }
        let Some(out) = n.outputs.first() else {
            continue;
        };
        let dtype = config.activation_scheme(&out.name).dtype;
        if let Some(f) = cx.profile.fixed_output(n.op_type(), dtype) {
            config.overrides.insert(
                out.name.clone(),
                TensorOverride {
                    range: Some(f.range(dtype)),
                    ..Default::default()
                },
            );
        }
    }
}

/// The profile's supported op types, as the set of ops to quantize (integer-only devices).
pub fn device_ops(cx: &Context) -> Option<std::collections::BTreeSet<String>> {
    if cx.profile.ops.all {
        return None;
    }
    Some(cx.profile.ops.supported.keys().cloned().collect())
}
