//! Latency statistics for benchmarks (nearest-rank percentiles, mean, min, max) and the
//! process's peak memory.

use serde::Serialize;

/// A summary of latencies, in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatencyStats {
    /// Timed runs.
    pub runs: usize,
    /// Median (nearest-rank 50th percentile).
    pub p50: f64,
    /// Nearest-rank 90th percentile.
    pub p90: f64,
    /// Nearest-rank 99th percentile.
    pub p99: f64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Fastest run.
    pub min: f64,
    /// Slowest run.
    pub max: f64,
}

impl LatencyStats {
    /// The statistics of `samples_ms`; `None` when there are none (or one is NaN).
    pub fn of(samples_ms: &[f64]) -> Option<LatencyStats> {
        if samples_ms.is_empty() || samples_ms.iter().any(|x| x.is_nan()) {
            return None;
        }
        let mut sorted = samples_ms.to_vec();
        sorted.sort_by(f64::total_cmp);
        Some(LatencyStats {
            runs: sorted.len(),
            p50: nearest_rank(&sorted, 50.0),
            p90: nearest_rank(&sorted, 90.0),
            p99: nearest_rank(&sorted, 99.0),
            mean: sorted.iter().sum::<f64>() / sorted.len() as f64,
            min: sorted[0],
            max: sorted[sorted.len() - 1],
        })
    }
}

/// The nearest-rank `p`-th percentile of ascending `sorted` (non-empty): the smallest value
/// with at least p% of the values at or below it, i.e. element ⌈p/100 · N⌉ (1-based). No
/// interpolation, so it is always a measured value and p50 ≤ p90 ≤ p99 holds.
pub fn nearest_rank(sorted: &[f64], p: f64) -> f64 {
    let n = sorted.len();
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    sorted[rank.clamp(1, n) - 1]
}

/// The process's peak resident memory in bytes (`VmHWM` of `/proc/self/status`); `None`
/// where that is not available (not Linux).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_hwm(&status)
}

/// `VmHWM:     1234 kB` → bytes.
fn parse_vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kb.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_known_answers() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(nearest_rank(&v, 50.0), 5.0);
        assert_eq!(nearest_rank(&v, 90.0), 9.0);
        assert_eq!(nearest_rank(&v, 99.0), 10.0);
        assert_eq!(nearest_rank(&v, 0.0), 1.0);
        assert_eq!(nearest_rank(&[7.0], 99.0), 7.0);
    }

    #[test]
    fn stats_of_unsorted_samples() {
        let s = LatencyStats::of(&[3.0, 1.0, 2.0, 4.0]).unwrap();
        assert_eq!((s.p50, s.p90, s.p99), (2.0, 4.0, 4.0));
        assert_eq!((s.mean, s.min, s.max, s.runs), (2.5, 1.0, 4.0, 4));
        assert_eq!(LatencyStats::of(&[]), None);
    }

    #[test]
    fn vm_hwm_is_parsed() {
        let status = "Name:\tkiln\nVmPeak:\t  999 kB\nVmHWM:\t    1234 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(1234 * 1024));
        assert_eq!(parse_vm_hwm("Name: x\n"), None);
    }
}
