//! Automatic mixed precision (`kiln quantize --target-sqnr DB [--max-16bit-share S]`): which
//! layers to keep at 16-bit, chosen from per-layer sensitivity and measured whole-model points.
//!
//! 1. Rank the candidate layers by sensitivity, most sensitive first: each quantized alone,
//!    everything else float, output SQNR on the samples (static: `--sensitivity`'s runs;
//!    weight-only: one weight quantized block-wise alone).
//! 2. Evaluate the whole quantized model with the `k` most sensitive layers promoted (see
//!    [`promote`]) for the counts [`search`] chooses: 0, doubling until the target is reached
//!    (or the share allows no more), then bisection. Every evaluated point joins the front.
//! 3. Choose ([`front::choose`]): the smallest model reaching the target within the share;
//!    without a target, the best SQNR within the share; when nothing reaches the target, the
//!    best point, reported as not reached. The driver then builds the chosen point again, with
//!    the same steps, as the output model.
//!
//! Candidates: static mode, every node the QDQ plan quantizes; weight-only mode, every
//! main-graph MatMul/Gemm whose weight is quantized block-wise. Size: bytes of the weights the
//! quantizer stores — static, integer weights (1 B per int8 element, 2 B per int16) with their
//! float32 scales and zero points (int32 biases and float constants are the same at every
//! point and not counted); weight-only, the block-wise integers with their scales and zero
//! points plus 2 B per element of the weights promoted to float16. The 16-bit share is the
//! share of the candidate layers' weight elements stored at 16-bit (each weight counted once):
//! a layer without weights (Add, Concat, pooling) promotes activations only and adds nothing to
//! it.

pub mod front;
pub mod promote;
mod qdq_search;
pub mod search;
mod weight_only_search;

use serde::Serialize;

pub use front::{choose, Choice, FrontPoint, Goal};
pub use promote::{keep_float16, promote_qdq, sixteen_bit, Float16Summary, Float16Weight};
pub(crate) use qdq_search::QdqSearch;
pub(crate) use weight_only_search::{name_linear_nodes, BlockSearch};

use super::report::SkippedNode;
use super::sensitivity::LayerSensitivity;

/// Samples each sensitivity run and each point of the front use, unless told otherwise.
pub const DEFAULT_SAMPLES: usize = 8;

/// What the search is asked to reach.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MixedPrecisionOptions {
    /// The output SQNR (dB) the chosen model must reach.
    pub target_sqnr: Option<f64>,
    /// The largest share (0..1) of the candidate layers' weight elements at 16-bit.
    pub max_16bit_share: Option<f64>,
    /// Samples every measurement runs (the first of the held-out or calibration samples).
    pub samples: usize,
}

impl MixedPrecisionOptions {
    /// Checks the values: at least one of target and share, a finite target, a share in
    /// [0, 1], at least one sample.
    pub fn validate(&self) -> Result<(), String> {
        if self.target_sqnr.is_none() && self.max_16bit_share.is_none() {
            return Err("mixed precision needs a target SQNR or a largest 16-bit share".into());
        }
        if let Some(t) = self.target_sqnr {
            if !t.is_finite() {
                return Err(format!("target SQNR {t}: expected a finite number of dB"));
            }
        }
        if let Some(s) = self.max_16bit_share {
            if !(0.0..=1.0).contains(&s) {
                return Err(format!(
                    "16-bit share {s}: expected a fraction between 0 and 1"
                ));
            }
        }
        if self.samples == 0 {
            return Err("mixed precision needs at least 1 sample".into());
        }
        Ok(())
    }

    /// The goal the choice applies.
    pub fn goal(&self) -> Goal {
        Goal {
            target_sqnr: self.target_sqnr,
            max_share: self.max_16bit_share,
        }
    }
}

/// What the search explored and chose.
#[derive(Debug, Clone, Serialize)]
pub struct MixedPrecisionReport {
    /// The target asked for.
    pub target_sqnr: Option<f64>,
    /// The largest 16-bit share allowed.
    pub max_16bit_share: Option<f64>,
    /// What a promoted layer becomes (`uint16 activations, int16 weights`, `float16 weight`).
    pub promotion: String,
    /// The samples measured: `check-inputs` (held out) or `calibration` (in-sample).
    pub on: String,
    /// How many.
    pub samples: usize,
    /// Candidate layers, most sensitive first, each with its SQNR quantized alone.
    pub ranking: Vec<LayerSensitivity>,
    /// Every point evaluated, by number of promoted layers (the first ones of `ranking`).
    pub front: Vec<FrontPoint>,
    /// The index in `front` of the point written.
    pub chosen: usize,
    /// Whether it reaches the target (true when there is none).
    pub target_reached: bool,
    /// The layers it keeps at 16-bit.
    pub promoted: Vec<String>,
    /// Promoted layers the promotion could not apply to, and why (they stay quantized).
    pub not_promoted: Vec<SkippedNode>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(target: Option<f64>, share: Option<f64>, samples: usize) -> MixedPrecisionOptions {
        MixedPrecisionOptions {
            target_sqnr: target,
            max_16bit_share: share,
            samples,
        }
    }

    #[test]
    fn options_are_checked() {
        assert!(opts(Some(40.0), None, 8).validate().is_ok());
        assert!(opts(None, Some(0.0), 8).validate().is_ok());
        assert!(opts(Some(-3.0), Some(1.0), 1).validate().is_ok());
        let err = |o: MixedPrecisionOptions| o.validate().unwrap_err();
        assert!(err(opts(None, None, 8)).contains("needs a target"));
        assert!(err(opts(Some(f64::NAN), None, 8)).contains("finite"));
        assert!(err(opts(None, Some(-0.1), 8)).contains("between 0 and 1"));
        assert!(err(opts(None, Some(1.5), 8)).contains("between 0 and 1"));
        assert!(err(opts(Some(30.0), None, 0)).contains("1 sample"));
    }
}
