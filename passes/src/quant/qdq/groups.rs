//! Tensors that must share one scale and zero point (a Reshape's output and its input, the
//! inputs and output of a Concat): a union-find over tensor ids.

use std::collections::BTreeMap;

/// Disjoint sets of tensor ids `0..len`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Groups {
    parent: Vec<usize>,
}

impl Groups {
    /// Adds a tensor in a group of its own; returns its id.
    pub(crate) fn add(&mut self) -> usize {
        self.parent.push(self.parent.len());
        self.parent.len() - 1
    }

    /// The representative of `x`'s group.
    pub(crate) fn find(&self, mut x: usize) -> usize {
        while self.parent[x] != x {
            x = self.parent[x];
        }
        x
    }

    /// Puts `a` and `b` in one group.
    pub(crate) fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            // The smaller id stays representative: deterministic, whatever the call order.
            let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
            self.parent[hi] = lo;
        }
    }

    /// Every group (representative → members in id order), in representative order.
    pub(crate) fn all(&self) -> BTreeMap<usize, Vec<usize>> {
        let mut out: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for x in 0..self.parent.len() {
            out.entry(self.find(x)).or_default().push(x);
        }
        out
    }

    /// The members of `x`'s group, in id order.
    pub(crate) fn members_of(&self, x: usize) -> Vec<usize> {
        let r = self.find(x);
        (0..self.parent.len())
            .filter(|&y| self.find(y) == r)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unions_merge_and_keep_the_smallest_representative() {
        let mut g = Groups::default();
        let ids: Vec<usize> = (0..5).map(|_| g.add()).collect();
        g.union(ids[3], ids[1]);
        g.union(ids[4], ids[3]);
        assert_eq!(g.find(4), 1);
        assert_eq!(g.members_of(3), vec![1, 3, 4]);
        assert_eq!(g.find(0), 0);
        let all = g.all();
        assert_eq!(all.len(), 3);
        assert_eq!(all[&1], vec![1, 3, 4]);
        assert_eq!(all[&2], vec![2]);
    }
}
