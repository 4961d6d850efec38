//! Streaming per-tensor statistics: what calibration keeps of every run, and its file format.
//!
//! Each run of the model is folded in and dropped, so the memory is one [`TensorStats`] per
//! tensor (a few numbers and a [`Histogram`]) however many samples pass through. Everything
//! but the moving-average range is order-free, so statistics of shards
//! [merge](Statistics::merge) into exactly the statistics of one run over all the samples.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use kiln_passes::quant::{QuantScheme, Range, Ranges};
use serde::{Deserialize, Serialize};

use super::histogram::Histogram;
use super::{entropy, minmax, mse, percentile, CalibrationError, Method};

/// What is known about one tensor's values over every sample seen.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorStats {
    /// Finite values seen.
    count: u64,
    /// Values that were exactly zero (exact in any quantization, so no rounding error).
    zeros: u64,
    /// NaN and ±Inf values seen (left out of everything else).
    non_finite: u64,
    /// Smallest and largest finite value (±Inf while `count` is 0).
    min: f32,
    max: f32,
    /// Runs whose values included a finite one (the moving average's weight in a merge).
    runs: u64,
    /// ONNX Runtime's moving-average range, when collected with one.
    moving: Option<(f32, f32)>,
    /// `None` when collected without histograms (MinMax only).
    histogram: Option<Histogram>,
}

impl TensorStats {
    /// Empty statistics; `bins` 0 keeps no histogram.
    fn new(bins: usize) -> Result<TensorStats, CalibrationError> {
        Ok(TensorStats {
            count: 0,
            zeros: 0,
            non_finite: 0,
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
            runs: 0,
            moving: None,
            histogram: match bins {
                0 => None,
                _ => Some(Histogram::new(bins)?),
            },
        })
    }

    /// Folds one run's values in; `moving_average` is the averaging constant, if any.
    pub(crate) fn add(&mut self, values: &[f32], moving_average: Option<f32>) {
        let Extremes {
            lo,
            hi,
            finite,
            zeros,
        } = extremes(values);
        self.non_finite += values.len() as u64 - finite;
        if finite == 0 {
            return;
        }
        self.count += finite;
        self.zeros += zeros;
        self.min = self.min.min(lo);
        self.max = self.max.max(hi);
        if let Some(h) = &mut self.histogram {
            h.add_counted(values, lo.abs().max(hi.abs()), zeros);
        }
        if let Some(c) = moving_average {
            // ORT's MinMaxCalibrater: the first batch's range, then old + c · (new − old).
            self.moving = Some(match self.moving {
                None => (lo, hi),
                Some((a, b)) => (a + c * (lo - a), b + c * (hi - b)),
            });
        }
        self.runs += 1;
    }

    /// Adds `other`'s statistics. The moving-average range is not order-free, so the merged
    /// one is the average of both weighted by their runs: sane, but not what one run over
    /// all the samples would give.
    fn merge(&mut self, other: &TensorStats) -> Result<(), CalibrationError> {
        match (&mut self.histogram, &other.histogram) {
            (Some(a), Some(b)) => a.merge(b)?,
            (None, None) => {}
            _ => {
                return Err(CalibrationError::Merge(
                    "only one of them has histograms".into(),
                ))
            }
        }
        self.moving = match (self.moving, other.moving) {
            (Some((a0, a1)), Some((b0, b1))) => {
                let (wa, wb) = (self.runs as f64, other.runs as f64);
                let avg = |x: f32, y: f32| {
                    ((f64::from(x) * wa + f64::from(y) * wb) / (wa + wb).max(1.0)) as f32
                };
                Some((avg(a0, b0), avg(a1, b1)))
            }
            (a, b) => a.or(b),
        };
        self.count += other.count;
        self.zeros += other.zeros;
        self.non_finite += other.non_finite;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.runs += other.runs;
        Ok(())
    }

    /// Finite values seen.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Values that were exactly zero.
    pub fn zeros(&self) -> u64 {
        self.zeros
    }

    /// NaN and ±Inf values seen (not in the other statistics).
    pub fn non_finite(&self) -> u64 {
        self.non_finite
    }

    /// Smallest and largest finite value; `None` before any finite value was seen.
    pub fn min_max(&self) -> Option<(f32, f32)> {
        (self.count > 0).then_some((self.min, self.max))
    }

    /// The moving-average range, when collected with one.
    pub fn moving_range(&self) -> Option<(f32, f32)> {
        self.moving
    }

    /// The histogram of finite values (`None` when collected without histograms).
    pub fn histogram(&self) -> Option<&Histogram> {
        self.histogram.as_ref()
    }

    /// The range `method` chooses for this tensor quantized with `scheme`: `[0, 0]` when no
    /// finite value was seen. Every method stays within the observed `[min, max]`; without a
    /// histogram, every method is MinMax.
    pub fn range(&self, method: Method, scheme: &QuantScheme) -> Range {
        if self.count == 0 {
            return Range::new(0.0, 0.0);
        }
        match method {
            Method::MinMax => minmax::range(self),
            Method::Percentile(p) => percentile::range(self, p, scheme),
            Method::Entropy => entropy::range(self, scheme),
            Method::Mse => mse::range(self, scheme),
        }
    }

    /// Bytes this takes in memory (for checking that it does not grow with the samples).
    fn byte_size(&self) -> usize {
        std::mem::size_of::<TensorStats>()
            + self
                .histogram
                .as_ref()
                .map_or(0, |h| h.bins() * std::mem::size_of::<u64>())
    }
}

/// Smallest and largest finite value, and how many values are finite and exactly zero.
struct Extremes {
    lo: f32,
    hi: f32,
    finite: u64,
    zeros: u64,
}

/// One pass over `values`, in eight independent lanes so the compiler can vectorise it:
/// plain comparisons skip NaN by themselves, and only when an infinity turned up is a second,
/// exact pass needed.
fn extremes(values: &[f32]) -> Extremes {
    const LANES: usize = 8;
    // Lane counters are u32, flushed to u64 every block.
    const BLOCK: usize = LANES << 24;
    let mut lo = [f32::INFINITY; LANES];
    let mut hi = [f32::NEG_INFINITY; LANES];
    let (mut non_finite, mut zeros) = (0u64, 0u64);
    for block in values.chunks(BLOCK) {
        let mut nf = [0u32; LANES];
        let mut z = [0u32; LANES];
        let chunks = block.chunks_exact(LANES);
        let rest = chunks.remainder();
        for chunk in chunks {
            let Ok(c) = <&[f32; LANES]>::try_from(chunk) else {
                continue;
            };
            for k in 0..LANES {
                let x = c[k];
                lo[k] = if x < lo[k] { x } else { lo[k] };
                hi[k] = if x > hi[k] { x } else { hi[k] };
                nf[k] += u32::from(x.abs() >= f32::INFINITY || x.is_nan());
                z[k] += u32::from(x == 0.0);
            }
        }
        for (k, &x) in rest.iter().enumerate() {
            lo[k] = if x < lo[k] { x } else { lo[k] };
            hi[k] = if x > hi[k] { x } else { hi[k] };
            nf[k] += u32::from(x.abs() >= f32::INFINITY || x.is_nan());
            z[k] += u32::from(x == 0.0);
        }
        non_finite += nf.iter().map(|&n| u64::from(n)).sum::<u64>();
        zeros += z.iter().map(|&n| u64::from(n)).sum::<u64>();
    }
    let mut lo = lo.iter().copied().fold(f32::INFINITY, f32::min);
    let mut hi = hi.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let finite = values.len() as u64 - non_finite;
    if lo == f32::NEG_INFINITY || hi == f32::INFINITY {
        let mut finite_values = values.iter().copied().filter(|x| x.is_finite());
        (lo, hi) = finite_values
            .clone()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), x| {
                (a.min(x), b.max(x))
            });
        // Only infinities: nothing finite, as the counts say.
        if finite_values.next().is_none() {
            (lo, hi) = (f32::INFINITY, f32::NEG_INFINITY);
        }
    }
    Extremes {
        lo,
        hi,
        finite,
        zeros,
    }
}

/// Statistics of every calibrated tensor over the samples seen, by tensor name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(into = "StatsFile", try_from = "StatsFile")]
pub struct Statistics {
    samples: u64,
    bins: usize,
    moving_average: Option<f32>,
    tensors: BTreeMap<String, TensorStats>,
}

impl Statistics {
    /// Empty statistics for `tensors`, with histograms of `bins` bins (0: none, for MinMax
    /// only) and the moving-average range kept when `moving_average` (the averaging
    /// constant) is given.
    pub fn new(
        tensors: &[String],
        bins: usize,
        moving_average: Option<f32>,
    ) -> Result<Statistics, CalibrationError> {
        if let Some(c) = moving_average {
            if !(c > 0.0 && c <= 1.0) {
                return Err(CalibrationError::Option(format!(
                    "the moving-average constant must be in (0, 1], got {c}"
                )));
            }
        }
        let empty = TensorStats::new(bins)?;
        Ok(Statistics {
            samples: 0,
            bins,
            moving_average,
            tensors: tensors.iter().map(|t| (t.clone(), empty.clone())).collect(),
        })
    }

    /// Folds one run's values of tensor `name` in (a tensor not asked for is added).
    pub(crate) fn add(&mut self, name: &str, values: &[f32]) -> Result<(), CalibrationError> {
        let moving = self.moving_average;
        if !self.tensors.contains_key(name) {
            self.tensors
                .insert(name.to_string(), TensorStats::new(self.bins)?);
        }
        if let Some(t) = self.tensors.get_mut(name) {
            t.add(values, moving);
        }
        Ok(())
    }

    /// Folds values of `name` in, as one run would (for benchmarks and tools that produce
    /// values without ONNX Runtime).
    pub fn add_values(&mut self, name: &str, values: &[f32]) -> Result<(), CalibrationError> {
        self.add(name, values)
    }

    /// Counts one more sample (after its tensors were added).
    pub(crate) fn end_sample(&mut self) {
        self.samples += 1;
    }

    /// Adds `other` (statistics of another shard of the samples, collected with the same
    /// histogram size and moving-average constant). Tensors of either are kept. The result
    /// equals one collection over both shards, except for the moving-average range, which
    /// depends on the order of the samples (see [`TensorStats`]'s merge).
    pub fn merge(&mut self, other: &Statistics) -> Result<(), CalibrationError> {
        if self.bins != other.bins {
            let show = |b: usize| match b {
                0 => "no histograms".to_string(),
                b => format!("histograms of {b} bins"),
            };
            return Err(CalibrationError::Merge(format!(
                "{} and {}",
                show(self.bins),
                show(other.bins)
            )));
        }
        if self.moving_average != other.moving_average {
            let show = |m: Option<f32>| m.map_or("none".to_string(), |c| c.to_string());
            return Err(CalibrationError::Merge(format!(
                "moving-average constants differ ({} and {})",
                show(self.moving_average),
                show(other.moving_average)
            )));
        }
        for (name, theirs) in &other.tensors {
            match self.tensors.get_mut(name) {
                Some(ours) => ours.merge(theirs)?,
                None => {
                    self.tensors.insert(name.clone(), theirs.clone());
                }
            }
        }
        self.samples += other.samples;
        Ok(())
    }

    /// Writes the statistics as JSON, atomically (a temporary file, then a rename).
    pub fn save(&self, path: &Path) -> Result<(), CalibrationError> {
        let text = serde_json::to_vec(self).map_err(|e| CalibrationError::StatsFile {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        crate::tensors::write_atomic(path, |w| std::io::Write::write_all(w, &text)).map_err(|e| {
            match e {
                crate::tensors::TensorFileError::Io { path, source } => {
                    CalibrationError::Io { path, source }
                }
                other => CalibrationError::StatsFile {
                    path: path.to_path_buf(),
                    reason: other.to_string(),
                },
            }
        })
    }

    /// Reads statistics [`save`](Statistics::save)d before.
    pub fn load(path: &Path) -> Result<Statistics, CalibrationError> {
        let bytes = fs::read(path).map_err(|source| CalibrationError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let bad = |reason: String| CalibrationError::StatsFile {
            path: path.to_path_buf(),
            reason,
        };
        // The header first, so a file of another kind or version gets a message that says so.
        let header: Header =
            serde_json::from_slice(&bytes).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        if header.format.as_deref() != Some(FORMAT) {
            return Err(bad(format!(
                "expected \"format\": \"{FORMAT}\", found {}",
                header
                    .format
                    .map_or("no format field".to_string(), |f| format!("\"{f}\""))
            )));
        }
        if header.version != Some(VERSION) {
            return Err(bad(format!(
                "version {} is not the supported version {VERSION}",
                header
                    .version
                    .map_or("(missing)".to_string(), |v| v.to_string())
            )));
        }
        serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))
    }

    /// The range of every tensor by `method`, each quantized with the scheme `scheme_of`
    /// gives for its name (percentile, entropy and MSE depend on the number of levels and
    /// on symmetry). Statistics without histograms give MinMax ranges for every method
    /// (see [`has_histograms`](Statistics::has_histograms)).
    pub fn ranges(&self, method: Method, scheme_of: &dyn Fn(&str) -> QuantScheme) -> Ranges {
        let jobs: Vec<(&String, &TensorStats, QuantScheme)> = self
            .tensors
            .iter()
            .map(|(name, t)| (name, t, scheme_of(name)))
            .collect();
        // The searches are independent per tensor: spread them over the cores.
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let chunk = jobs.len().div_ceil(threads).max(1);
        std::thread::scope(|scope| {
            let handles: Vec<_> = jobs
                .chunks(chunk)
                .map(|part| {
                    scope.spawn(move || {
                        part.iter()
                            .map(|(name, t, scheme)| ((*name).clone(), t.range(method, scheme)))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| match h.join() {
                    Ok(part) => part,
                    Err(panic) => std::panic::resume_unwind(panic),
                })
                .collect()
        })
    }

    /// The calibrated tensors' names, in name order.
    pub fn tensor_names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// The statistics of one tensor.
    pub fn tensor(&self, name: &str) -> Option<&TensorStats> {
        self.tensors.get(name)
    }

    /// Samples folded in.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// Bins of each histogram (0: collected without histograms).
    pub fn histogram_bins(&self) -> usize {
        self.bins
    }

    /// Whether percentile, entropy and MSE ranges can be computed (else only MinMax).
    pub fn has_histograms(&self) -> bool {
        self.bins > 0
    }

    /// The moving-average constant the statistics were collected with.
    pub fn moving_average(&self) -> Option<f32> {
        self.moving_average
    }

    /// Bytes the statistics take in memory: a function of the tensors and the histogram
    /// size only, never of the samples.
    pub fn byte_size(&self) -> usize {
        std::mem::size_of::<Statistics>()
            + self
                .tensors
                .iter()
                .map(|(n, t)| n.len() + t.byte_size())
                .sum::<usize>()
    }
}

/// The `format` field of a statistics file.
pub const FORMAT: &str = "kiln-calibration-stats";
/// The `version` field this code writes and reads.
pub const VERSION: u32 = 1;

/// The fields read first to recognise a file.
#[derive(Deserialize)]
struct Header {
    format: Option<String>,
    version: Option<u32>,
}

/// The file as written: a header, the settings, and one record per tensor.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatsFile {
    format: String,
    version: u32,
    samples: u64,
    histogram_bins: usize,
    moving_average: Option<f32>,
    tensors: BTreeMap<String, TensorRecord>,
}

/// One tensor in the file. The histogram is stored from its first to its last nonzero bin.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TensorRecord {
    count: u64,
    zeros: u64,
    non_finite: u64,
    min: Option<f32>,
    max: Option<f32>,
    runs: u64,
    moving_min: Option<f32>,
    moving_max: Option<f32>,
    /// The grid is `[-2^exponent, 2^exponent)` (absent without histograms, as are the next).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exponent: Option<i32>,
    /// Index of the first stored bin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    offset: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    counts: Option<Vec<u64>>,
}

impl From<Statistics> for StatsFile {
    fn from(s: Statistics) -> StatsFile {
        StatsFile {
            format: FORMAT.to_string(),
            version: VERSION,
            samples: s.samples,
            histogram_bins: s.bins,
            moving_average: s.moving_average,
            tensors: s
                .tensors
                .into_iter()
                .map(|(name, t)| {
                    let trimmed = t.histogram.as_ref().map(|h| (h.exponent(), h.trimmed()));
                    let record = TensorRecord {
                        count: t.count,
                        zeros: t.zeros,
                        non_finite: t.non_finite,
                        min: t.min_max().map(|m| m.0),
                        max: t.min_max().map(|m| m.1),
                        runs: t.runs,
                        moving_min: t.moving.map(|m| m.0),
                        moving_max: t.moving.map(|m| m.1),
                        exponent: trimmed.map(|(e, _)| e),
                        offset: trimmed.map(|(_, (o, _))| o),
                        counts: trimmed.map(|(_, (_, c))| c.to_vec()),
                    };
                    (name, record)
                })
                .collect(),
        }
    }
}

impl TryFrom<StatsFile> for Statistics {
    type Error = String;
    fn try_from(f: StatsFile) -> Result<Statistics, String> {
        if f.format != FORMAT || f.version != VERSION {
            return Err(format!(
                "format \"{}\" version {} is not \"{FORMAT}\" version {VERSION}",
                f.format, f.version
            ));
        }
        let mut tensors = BTreeMap::new();
        for (name, r) in f.tensors {
            let at = |reason: String| format!("tensor '{name}': {reason}");
            let histogram = match (f.histogram_bins, r.exponent, r.offset, &r.counts) {
                (0, None, None, None) => None,
                (0, ..) => return Err(at("a histogram in a file of no histograms".into())),
                (bins, Some(e), Some(o), Some(c)) => {
                    Some(Histogram::from_parts(bins, e, o, c).map_err(at)?)
                }
                _ => return Err(at("exponent, offset and counts must be given".into())),
            };
            let (min, max) = match (r.min, r.max) {
                (Some(a), Some(b)) if r.count > 0 && a <= b => (a, b),
                (None, None) if r.count == 0 => (f32::INFINITY, f32::NEG_INFINITY),
                _ => {
                    return Err(at(format!(
                        "min {:?} and max {:?} do not fit a count of {}",
                        r.min, r.max, r.count
                    )))
                }
            };
            if r.zeros > r.count {
                return Err(at(format!("{} zeros of {} values", r.zeros, r.count)));
            }
            if let Some(h) = &histogram {
                if h.total() != r.count {
                    return Err(at(format!(
                        "the histogram holds {} values but the count is {}",
                        h.total(),
                        r.count
                    )));
                }
                let needed = super::histogram::exponent_for(min.abs().max(max.abs()));
                if r.count > 0 && h.exponent() < needed {
                    return Err(at("the histogram's grid does not cover min and max".into()));
                }
            }
            let moving = match (r.moving_min, r.moving_max) {
                (Some(a), Some(b)) => Some((a, b)),
                (None, None) => None,
                _ => return Err(at("moving_min and moving_max must be given together".into())),
            };
            tensors.insert(
                name,
                TensorStats {
                    count: r.count,
                    zeros: r.zeros,
                    non_finite: r.non_finite,
                    min,
                    max,
                    runs: r.runs,
                    moving,
                    histogram,
                },
            );
        }
        Ok(Statistics {
            samples: f.samples,
            bins: f.histogram_bins,
            moving_average: f.moving_average,
            tensors,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calibrate::testing::{gaussian, gaussian_with_outliers, relu_like};
    use kiln_passes::quant::QuantType;

    const METHODS: [Method; 4] = [
        Method::MinMax,
        Method::Percentile(99.9),
        Method::Entropy,
        Method::Mse,
    ];

    fn names() -> Vec<String> {
        vec!["a".into(), "b".into()]
    }

    /// Runs of two tensors with different scales, so the grids grow as runs come in.
    fn runs() -> Vec<(Vec<f32>, Vec<f32>)> {
        (0..8)
            .map(|k| {
                let scale = 1.0 + k as f32 * 3.0;
                let a: Vec<f32> = gaussian(3000, k).iter().map(|x| x * scale).collect();
                (a, relu_like(2000, 100 + k))
            })
            .collect()
    }

    fn collect(runs: &[(Vec<f32>, Vec<f32>)], moving: Option<f32>) -> Statistics {
        let mut s = Statistics::new(&names(), 256, moving).unwrap();
        for (a, b) in runs {
            s.add("a", a).unwrap();
            s.add("b", b).unwrap();
            s.end_sample();
        }
        s
    }

    fn schemes(_: &str) -> QuantScheme {
        QuantScheme::new(QuantType::Uint8, false)
    }

    #[test]
    fn shards_merge_into_one_run() {
        let all = runs();
        let whole = collect(&all, None);
        for cut in [1, 3, 7] {
            // Small grid first, large second, and the other way round.
            for (x, y) in [(&all[..cut], &all[cut..]), (&all[cut..], &all[..cut])] {
                let mut merged = collect(x, None);
                merged.merge(&collect(y, None)).unwrap();
                assert_eq!(merged, whole);
                for m in METHODS {
                    for sym in [false, true] {
                        let scheme = |_: &str| QuantScheme::new(QuantType::Int8, sym);
                        assert_eq!(merged.ranges(m, &scheme), whole.ranges(m, &scheme));
                    }
                }
            }
        }
        assert_eq!(whole.samples(), 8);
    }

    #[test]
    fn moving_average_merges_by_weight() {
        let all = runs();
        let mut merged = collect(&all[..2], Some(0.5));
        merged.merge(&collect(&all[2..], Some(0.5))).unwrap();
        let (a, b) = (
            collect(&all[..2], Some(0.5))
                .tensor("a")
                .unwrap()
                .moving_range()
                .unwrap(),
            collect(&all[2..], Some(0.5))
                .tensor("a")
                .unwrap()
                .moving_range()
                .unwrap(),
        );
        let m = merged.tensor("a").unwrap().moving_range().unwrap();
        assert!((m.1 - (a.1 * 2.0 + b.1 * 6.0) / 8.0).abs() < 1e-4, "{m:?}");
        let e = merged.merge(&collect(&all, None)).unwrap_err();
        assert!(
            e.to_string().contains("moving-average constants differ"),
            "{e}"
        );
        let other = Statistics::new(&names(), 512, Some(0.5)).unwrap();
        assert!(merged
            .merge(&other)
            .unwrap_err()
            .to_string()
            .contains("histograms of 256 bins and histograms of 512 bins"));
        assert!(Statistics::new(&names(), 256, Some(1.5)).is_err());
    }

    #[test]
    fn files_round_trip_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stats.json");
        let mut s = collect(&runs(), Some(0.01));
        // Awkward floats and a tensor that never saw a finite value.
        s.add(
            "odd",
            &gaussian_with_outliers(5000, 3, 1)
                .iter()
                .map(|x| x * 1e-7)
                .collect::<Vec<_>>(),
        )
        .unwrap();
        s.add("none", &[f32::NAN]).unwrap();
        s.save(&path).unwrap();
        let back = Statistics::load(&path).unwrap();
        assert_eq!(back, s);
        assert_eq!(
            back.ranges(Method::Entropy, &schemes),
            s.ranges(Method::Entropy, &schemes)
        );
        assert_eq!(back.tensor("none").unwrap().min_max(), None);
        let text = fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with(r#"{"format":"kiln-calibration-stats","version":1,"#),
            "{text:.80}"
        );
        assert_eq!(s.byte_size(), back.byte_size());
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stats.json");
        let load_err = |text: &str| {
            fs::write(&path, text).unwrap();
            Statistics::load(&path).unwrap_err().to_string()
        };
        assert!(load_err("{").contains("not valid JSON"));
        assert!(load_err(r#"{"ranges": {}}"#)
            .contains("expected \"format\": \"kiln-calibration-stats\", found no format field"));
        assert!(
            load_err(r#"{"format": "kiln-calibration-stats", "version": 2}"#)
                .contains("version 2 is not the supported version 1")
        );
        collect(&runs(), None).save(&path).unwrap();
        let good = fs::read_to_string(&path).unwrap();
        let e = load_err(&good.replacen("\"count\":", "\"count\":1", 1));
        assert!(
            e.contains("tensor 'a'") && e.contains("the histogram holds"),
            "{e}"
        );
        let e = load_err(&good.replacen("\"offset\":", "\"offset\":9", 1));
        assert!(e.contains("overrun"), "{e}");
        let e = load_err(&good.replacen("\"histogram_bins\":256", "\"histogram_bins\":100", 1));
        assert!(e.contains("power of two"), "{e}");
        let e = Statistics::load(&dir.path().join("missing.json")).unwrap_err();
        assert!(matches!(e, CalibrationError::Io { .. }), "{e}");
    }

    #[test]
    fn size_does_not_grow_with_samples() {
        let all = runs();
        assert_eq!(
            collect(&all[..1], None).byte_size(),
            collect(&all, None).byte_size()
        );
    }

    #[test]
    fn without_histograms_every_method_is_minmax() {
        let all = runs();
        let mut s = Statistics::new(&names(), 0, None).unwrap();
        for (a, b) in &all {
            s.add("a", a).unwrap();
            s.add("b", b).unwrap();
            s.end_sample();
        }
        assert!(!s.has_histograms());
        let with = collect(&all, None);
        let minmax = with.ranges(Method::MinMax, &schemes);
        for m in METHODS {
            assert_eq!(s.ranges(m, &schemes), minmax, "{m:?}");
        }
        assert!(s.byte_size() < with.byte_size() / 10);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("minmax.json");
        s.save(&path).unwrap();
        assert_eq!(Statistics::load(&path).unwrap(), s);
        let e = s.clone().merge(&with).unwrap_err().to_string();
        assert!(
            e.contains("no histograms and histograms of 256 bins"),
            "{e}"
        );
    }
}
