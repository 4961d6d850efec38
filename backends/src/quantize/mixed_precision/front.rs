//! The points the search evaluated and the choice among them: the smallest model reaching
//! the target SQNR within the 16-bit share, or the most accurate within the share.

use serde::Serialize;

/// One evaluated point: the `promoted` most sensitive layers kept at 16-bit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FrontPoint {
    /// How many layers are promoted (the first of the ranking).
    pub promoted: usize,
    /// Share of the candidate layers' weight elements stored at 16-bit (0..1).
    pub share: f64,
    /// Bytes of the weights the quantizer stores (see the module documentation).
    pub weight_bytes: u64,
    /// Output SQNR in dB against the float model.
    #[serde(serialize_with = "crate::validate::metrics::finite_or_text")]
    pub sqnr_db: f64,
}

/// What the choice asks for.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Goal {
    /// The output SQNR (dB) to reach.
    pub target_sqnr: Option<f64>,
    /// The largest 16-bit share allowed (0..1).
    pub max_share: Option<f64>,
}

/// Slack on share comparisons: shares are ratios of sums, `0.25` may come out as 0.25000001.
const SHARE_EPSILON: f64 = 1e-9;

impl Goal {
    /// Whether `p` is within the share.
    pub fn allows(&self, p: &FrontPoint) -> bool {
        self.allows_share(p.share)
    }

    /// Whether a 16-bit share of `share` is allowed.
    pub fn allows_share(&self, share: f64) -> bool {
        self.max_share.is_none_or(|s| share <= s + SHARE_EPSILON)
    }

    /// The most layers the share allows, from the share of every prefix (`shares[k]`: the
    /// `k` first layers promoted; `shares[0]` is 0, always allowed).
    pub fn most_layers(&self, shares: &[f64]) -> usize {
        shares
            .iter()
            .rposition(|&s| self.allows_share(s))
            .unwrap_or(0)
    }

    /// Whether `p` reaches the target (any point does when there is none).
    pub fn reached_by(&self, p: &FrontPoint) -> bool {
        self.target_sqnr.is_none_or(|t| p.sqnr_db >= t)
    }
}

/// The point chosen, and whether it meets the goal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    /// Index into the front.
    pub index: usize,
    /// It reaches the target (true when there is none).
    pub reached: bool,
}

/// Chooses among `front`: with a target, the smallest point that reaches it within the share
/// (ties: fewer layers); when none does, or without a target, the best SQNR within the share
/// (ties: smaller, then fewer layers). `None` when no point is within the share.
pub fn choose(front: &[FrontPoint], goal: &Goal) -> Option<Choice> {
    let allowed = || front.iter().enumerate().filter(|(_, p)| goal.allows(p));
    if goal.target_sqnr.is_some() {
        let smallest = allowed()
            .filter(|(_, p)| goal.reached_by(p))
            .min_by(|(_, a), (_, b)| {
                a.weight_bytes
                    .cmp(&b.weight_bytes)
                    .then(a.promoted.cmp(&b.promoted))
            });
        if let Some((index, _)) = smallest {
            return Some(Choice {
                index,
                reached: true,
            });
        }
    }
    let best = allowed().min_by(|(_, a), (_, b)| {
        b.sqnr_db
            .total_cmp(&a.sqnr_db)
            .then(a.weight_bytes.cmp(&b.weight_bytes))
            .then(a.promoted.cmp(&b.promoted))
    })?;
    Some(Choice {
        index: best.0,
        reached: goal.target_sqnr.is_none(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(promoted: usize, share: f64, weight_bytes: u64, sqnr_db: f64) -> FrontPoint {
        FrontPoint {
            promoted,
            share,
            weight_bytes,
            sqnr_db,
        }
    }

    fn front() -> Vec<FrontPoint> {
        vec![
            p(0, 0.0, 1000, 30.0),
            p(1, 0.10, 1100, 36.0),
            p(2, 0.20, 1200, 41.0),
            p(4, 0.50, 1500, 44.0),
            p(3, 0.30, 1300, 42.5),
        ]
    }

    fn goal(target: Option<f64>, share: Option<f64>) -> Goal {
        Goal {
            target_sqnr: target,
            max_share: share,
        }
    }

    #[test]
    fn target_takes_the_smallest_point_reaching_it() {
        let f = front();
        let c = choose(&f, &goal(Some(40.0), None)).unwrap();
        assert_eq!((f[c.index].promoted, c.reached), (2, true));
        // Reached exactly counts.
        let c = choose(&f, &goal(Some(42.5), None)).unwrap();
        assert_eq!((f[c.index].promoted, c.reached), (3, true));
        // Zero promoted layers when they already reach it.
        let c = choose(&f, &goal(Some(20.0), None)).unwrap();
        assert_eq!((f[c.index].promoted, c.reached), (0, true));
    }

    #[test]
    fn size_decides_before_layers_and_layers_break_ties() {
        // A point with more layers but fewer bytes (layers without weights) wins on size...
        let f = vec![
            p(0, 0.0, 1000, 30.0),
            p(3, 0.2, 1200, 41.0),
            p(5, 0.1, 1100, 41.0),
        ];
        let c = choose(&f, &goal(Some(40.0), None)).unwrap();
        assert_eq!(f[c.index].promoted, 5);
        // ...and at equal size, fewer layers win.
        let f = vec![p(4, 0.0, 1000, 41.0), p(2, 0.0, 1000, 40.5)];
        let c = choose(&f, &goal(Some(40.0), None)).unwrap();
        assert_eq!(f[c.index].promoted, 2);
    }

    #[test]
    fn unreachable_target_gives_the_best_point_not_reached() {
        let f = front();
        let c = choose(&f, &goal(Some(60.0), None)).unwrap();
        assert_eq!((f[c.index].promoted, c.reached), (4, false));
    }

    #[test]
    fn share_bounds_every_choice() {
        let f = front();
        // Best SQNR within 30 %: three layers, not four.
        let c = choose(&f, &goal(None, Some(0.3))).unwrap();
        assert_eq!((f[c.index].promoted, c.reached), (3, true));
        // Both: the smallest reaching 40 dB within 30 %.
        let c = choose(&f, &goal(Some(40.0), Some(0.3))).unwrap();
        assert_eq!((f[c.index].promoted, c.reached), (2, true));
        // Target beyond what the share allows: the best within it, not reached.
        let c = choose(&f, &goal(Some(44.0), Some(0.3))).unwrap();
        assert_eq!((f[c.index].promoted, c.reached), (3, false));
        // A zero share leaves only the all-8-bit point.
        let c = choose(&f, &goal(Some(40.0), Some(0.0))).unwrap();
        assert_eq!((f[c.index].promoted, c.reached), (0, false));
        // Rounding in the share does not exclude a point at the limit.
        let c = choose(&f, &goal(None, Some(0.3 - 1e-12))).unwrap();
        assert_eq!(f[c.index].promoted, 3);
    }

    #[test]
    fn best_sqnr_ties_go_to_the_smaller_point() {
        let f = vec![
            p(2, 0.2, 1200, 41.0),
            p(1, 0.1, 1100, 41.0),
            p(3, 0.3, 1300, 40.0),
        ];
        let c = choose(&f, &goal(None, None)).unwrap();
        assert_eq!(f[c.index].promoted, 1);
        // Infinite SQNR (identical outputs) is the best.
        let f = vec![p(0, 0.0, 10, 30.0), p(1, 1.0, 20, f64::INFINITY)];
        let c = choose(&f, &goal(None, None)).unwrap();
        assert_eq!(f[c.index].promoted, 1);
    }

    #[test]
    fn the_share_bounds_the_count() {
        let shares = [0.0, 0.0, 0.1, 0.30000000001, 0.5, 1.0];
        assert_eq!(goal(None, None).most_layers(&shares), 5);
        assert_eq!(goal(None, Some(0.3)).most_layers(&shares), 3);
        assert_eq!(goal(None, Some(0.0)).most_layers(&shares), 1);
        assert_eq!(goal(Some(1.0), Some(0.0)).most_layers(&[0.0]), 0);
    }

    #[test]
    fn nothing_within_the_share_is_no_choice() {
        let f = vec![p(1, 0.5, 1100, 36.0)];
        assert_eq!(choose(&f, &goal(None, Some(0.1))), None);
        assert_eq!(choose(&[], &goal(Some(1.0), None)), None);
    }
}
