//! Which prefixes of the sensitivity ranking to evaluate: none promoted, then doubling counts
//! until the target is reached (or the share allows no more), then bisection between the last
//! count that missed and the first that reached it. Every point evaluated joins the front.
//!
//! The bisection assumes that promoting more layers does not lower the SQNR; where it does
//! locally, the front still holds every point measured and the choice takes the smallest one
//! that reached the target.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::calibrate::Progress;

use super::super::error::QuantizeError;
use super::super::Stage;
use super::front::{choose, Choice, FrontPoint};
use super::MixedPrecisionOptions;

/// Evaluates prefixes of `0..=k_max` promoted layers (`evaluate(k)` builds and measures the
/// model with the `k` most sensitive layers promoted) and returns the points, by count.
///
/// With a target: 0; if it falls short, 1, 2, 4, … (the last one `k_max`) until one reaches
/// it, then bisection. Without a target: 0, 1, 2, 4, …, `k_max` (the front up to the share).
pub fn search<E>(
    k_max: usize,
    target: Option<f64>,
    evaluate: &mut dyn FnMut(usize) -> Result<FrontPoint, E>,
) -> Result<Vec<FrontPoint>, E> {
    let mut points: BTreeMap<usize, FrontPoint> = BTreeMap::new();
    let mut at = |k: usize, points: &mut BTreeMap<usize, FrontPoint>| -> Result<f64, E> {
        if let Some(p) = points.get(&k) {
            return Ok(p.sqnr_db);
        }
        let p = evaluate(k)?;
        let db = p.sqnr_db;
        points.insert(k, p);
        Ok(db)
    };
    let reaches = |db: f64| target.is_some_and(|t| db >= t);
    if reaches(at(0, &mut points)?) {
        return Ok(points.into_values().collect());
    }
    let (mut lo, mut hi) = (0, None);
    let mut k = 1;
    while lo < k_max {
        let k_now = k.min(k_max);
        if reaches(at(k_now, &mut points)?) {
            hi = Some(k_now);
            break;
        }
        lo = k_now;
        k = k_now * 2;
    }
    if let Some(mut hi) = hi {
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if reaches(at(mid, &mut points)?) {
                hi = mid;
            } else {
                lo = mid;
            }
        }
    }
    Ok(points.into_values().collect())
}

/// The part both searches share once the candidates are ranked: evaluates the counts
/// [`search`] picks within what `options` allows, reporting [`Stage::Search`] progress, and
/// chooses one. `build(k)` returns the weight bytes and output SQNR (dB) of the model with the
/// `k` most sensitive layers promoted; `shares[k]` is that point's 16-bit share.
pub(crate) fn explore(
    options: &MixedPrecisionOptions,
    shares: &[f64],
    progress: &mut dyn FnMut(Stage, Progress),
    build: &mut dyn FnMut(usize) -> Result<(u64, f64), QuantizeError>,
) -> Result<(Vec<FrontPoint>, Choice), QuantizeError> {
    let goal = options.goal();
    let k_max = goal.most_layers(shares);
    let planned = max_points(k_max);
    let started = Instant::now();
    let mut done = 0;
    let front = search(k_max, options.target_sqnr, &mut |k| {
        let (weight_bytes, sqnr_db) = build(k)?;
        done += 1;
        progress(
            Stage::Search,
            Progress {
                done,
                total: planned.max(done),
                elapsed: started.elapsed(),
            },
        );
        Ok::<_, QuantizeError>(FrontPoint {
            promoted: k,
            share: shares[k],
            weight_bytes,
            sqnr_db,
        })
    })?;
    let choice = choose(&front, &goal).ok_or_else(|| {
        QuantizeError::Options("mixed precision: no point within the 16-bit share".into())
    })?;
    Ok((front, choice))
}

/// Adapts `progress` to the sensitivity runs' `(done, total)` callback for `total` candidates.
pub(crate) fn sensitivity_progress<'a>(
    total: usize,
    progress: &'a mut dyn FnMut(Stage, Progress),
) -> impl FnMut(usize, usize) + 'a {
    let started = Instant::now();
    move |done, _| {
        progress(
            Stage::Sensitivity,
            Progress {
                done,
                total,
                elapsed: started.elapsed(),
            },
        )
    }
}

/// The most points [`search`] evaluates for `k_max` (for a progress bar): 0, the doublings,
/// the bisection steps.
pub fn max_points(k_max: usize) -> usize {
    let log = usize::BITS as usize - k_max.leading_zeros() as usize;
    1 + (log + 1) + log
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the search against a made-up SQNR per count; returns the counts evaluated, in order.
    fn run(
        k_max: usize,
        target: Option<f64>,
        db: impl Fn(usize) -> f64,
    ) -> (Vec<usize>, Vec<usize>) {
        let mut order = Vec::new();
        let points = search::<()>(k_max, target, &mut |k| {
            order.push(k);
            Ok(FrontPoint {
                promoted: k,
                share: k as f64 / k_max.max(1) as f64,
                weight_bytes: 100 + k as u64,
                sqnr_db: db(k),
            })
        })
        .unwrap();
        let counts = points.iter().map(|p| p.promoted).collect();
        (order, counts)
    }

    #[test]
    fn doubles_then_bisects_to_the_first_count_reaching_the_target() {
        // 30 dB + 1 dB per layer: 40 dB is first reached at 10 layers.
        let (order, counts) = run(64, Some(40.0), |k| 30.0 + k as f64);
        assert_eq!(order, vec![0, 1, 2, 4, 8, 16, 12, 10, 9]);
        assert_eq!(counts, vec![0, 1, 2, 4, 8, 9, 10, 12, 16]);
        assert!(order.len() <= max_points(64));
    }

    #[test]
    fn stops_at_zero_when_it_already_reaches() {
        let (order, _) = run(64, Some(20.0), |k| 30.0 + k as f64);
        assert_eq!(order, vec![0]);
    }

    #[test]
    fn unreachable_target_ends_at_k_max() {
        let (order, _) = run(10, Some(100.0), |k| 30.0 + k as f64);
        assert_eq!(order, vec![0, 1, 2, 4, 8, 10]);
        assert!(order.len() <= max_points(10));
        // No layer to promote (a zero share): only the all-8-bit point.
        let (order, _) = run(0, Some(100.0), |k| 30.0 + k as f64);
        assert_eq!(order, vec![0]);
    }

    #[test]
    fn without_a_target_the_front_runs_to_the_share() {
        let (order, _) = run(5, None, |k| 30.0 + k as f64);
        assert_eq!(order, vec![0, 1, 2, 4, 5]);
    }

    #[test]
    fn reached_at_k_max_bisects_below_it() {
        // Reached only from 7 layers, k_max 7: 0, 1, 2, 4, 7, then 5, 6.
        let (order, _) = run(7, Some(37.0), |k| 30.0 + k as f64);
        assert_eq!(order, vec![0, 1, 2, 4, 7, 5, 6]);
        assert!(order.len() <= max_points(7));
    }

    #[test]
    fn bound_holds_for_every_k_max() {
        for k_max in 0..300 {
            for first in 0..=k_max {
                let (order, _) = run(k_max, Some(first as f64), |k| k as f64);
                assert!(order.len() <= max_points(k_max), "{k_max} {first}");
                // The first count reaching the target is always evaluated.
                assert!(order.contains(&first), "{k_max} {first}: {order:?}");
            }
        }
    }
}
