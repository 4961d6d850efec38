//! Calibration: run the float model over sample inputs, keep streaming statistics of the
//! tensors that will be quantized, and choose their ranges.
//!
//! - [`data`]: where samples come from ([`CalibrationData`] → [`Samples`], read one at a time).
//! - [`run`]: [`collect`] runs ONNX Runtime per sample and folds each run into [`Statistics`].
//! - [`stats`]: per-tensor count, min/max, moving-average range and [`histogram`]; merging
//!   shards; the versioned JSON file.
//! - [`minmax`], [`percentile`], [`entropy`], [`mse`]: the range of one tensor by each
//!   [`Method`], for a [`QuantScheme`](kiln_passes::quant::QuantScheme).
//! - [`saturation`](mod@saturation): the share of held-out values outside the chosen ranges.
//!
//! Memory is one histogram per tensor whatever the number of samples, and every statistic
//! but ONNX Runtime's moving-average range is independent of sample order, so shards merge
//! into exactly the statistics — and the ranges — of one run over all the samples.

pub mod data;
pub mod entropy;
pub mod error;
pub mod histogram;
pub mod minmax;
pub mod mse;
pub mod percentile;
pub mod run;
pub mod saturation;
pub mod stats;

mod search;
#[cfg(test)]
mod testing;

use std::time::Duration;

pub use data::{open_samples, open_samples_with, CalibrationData, Sample, Samples};
pub use error::CalibrationError;
pub use histogram::{Histogram, DEFAULT_BINS};
pub use run::collect;
pub use saturation::{saturation, Saturation};
pub use stats::{Statistics, TensorStats};

/// How a tensor's range is chosen from its statistics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Method {
    /// The observed range (or the moving average of per-sample ranges, when collected).
    MinMax,
    /// Keep this percentage of the values (e.g. 99.999): of |x| for symmetric schemes, cut
    /// evenly from both sides for asymmetric ones.
    Percentile(f64),
    /// Least KL divergence between the histogram and its quantized form (TensorRT-style).
    Entropy,
    /// Least expected squared quantization error (clipping plus rounding).
    Mse,
}

/// How calibration runs.
#[derive(Debug, Clone, PartialEq)]
pub struct CalibrationOptions {
    /// Keep ONNX Runtime's moving-average MinMax range with this constant (e.g. 0.01):
    /// per sample, `range += c · (sample range − range)`. Depends on sample order, so shards
    /// merge only approximately (a run-weighted average).
    pub moving_average: Option<f32>,
    /// ONNX Runtime's intra-op threads per worker; `None`: ONNX Runtime decides with one
    /// worker, one thread each with several.
    pub intra_threads: Option<usize>,
    /// Samples run in parallel, each worker with its own session and statistics (merged
    /// exactly); `None`: one per core. A moving average forces one (it depends on order).
    pub workers: Option<usize>,
    /// Bins of each tensor's histogram (a power of two): resolution of percentile, entropy
    /// and MSE, and the memory per tensor (8 bytes a bin). 0 keeps no histograms: only
    /// MinMax ranges, but collection two to three times as fast (binning costs about as much
    /// as running the model), so it is the choice for MinMax when statistics are not saved.
    pub histogram_bins: usize,
}

impl CalibrationOptions {
    /// The defaults for `method`: MinMax collects no histograms (half the folding time)
    /// unless `keep_histograms` (statistics saved for reuse with any method).
    pub fn for_method(method: Method, keep_histograms: bool) -> CalibrationOptions {
        let mut o = CalibrationOptions::default();
        if matches!(method, Method::MinMax) && !keep_histograms {
            o.histogram_bins = 0;
        }
        o
    }
}

impl Default for CalibrationOptions {
    fn default() -> CalibrationOptions {
        CalibrationOptions {
            moving_average: None,
            intra_threads: None,
            workers: None,
            histogram_bins: DEFAULT_BINS,
        }
    }
}

/// How far a calibration run has got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Samples done.
    pub done: usize,
    /// Samples in all.
    pub total: usize,
    /// Time since the first sample started.
    pub elapsed: Duration,
}
