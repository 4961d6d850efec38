//! Segments: the connected subgraphs the partition cuts a model into. Nodes on the same side
//! joined by a data edge (looking through Q/DQ) are one segment, so two independent device
//! branches that happen to interleave in topological order are not counted as many, and a CPU
//! node between two device regions splits them. Same-side nodes that read one value are joined
//! too (the value is the tensor that connects them): the query, key and value projections
//! reading one CPU LayerNorm are one device call, as TFLite's delegate partitioning makes them,
//! not three. Constants join nothing: a shared weight is not a data path.
//!
//! One more rule keeps a segment runnable as one unit: two same-side nodes are not joined when
//! the other side sits on a path between them (device A feeds CPU C feeds device B, and A also
//! feeds B directly): B needs C's output, so A and B cannot run as one device call.
//!
//! Everything here works on positions in the topological order, so it is testable without a
//! graph and its results are deterministic.

use std::collections::{BTreeMap, HashMap};

use kiln_passes::ir::{Graph, NodeIndex, ValueRef};

use super::values::{is_qdq, through_qdq};

/// How the partitioned nodes are linked, by position in the topological order.
#[derive(Debug, Default)]
pub(super) struct Links {
    /// Data edges (producer, consumer), looking through Q/DQ; a value read twice by one node
    /// is one edge per read. Subgraph captures count.
    pub edges: Vec<(usize, usize)>,
    /// Pairs of nodes reading one value (a graph input or an operator's output, through
    /// Q/DQ), each reader paired with the next.
    pub shared: Vec<(usize, usize)>,
}

/// The links between the partitioned nodes `order`.
pub(super) fn links(g: &Graph, order: &[NodeIndex]) -> Links {
    let pos: HashMap<NodeIndex, usize> = order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    let mut links = Links::default();
    let mut readers: BTreeMap<ValueRef, Vec<usize>> = BTreeMap::new();
    for (j, &n) in order.iter().enumerate() {
        let reads = g.inputs(n).into_iter().flatten().chain(g.captures(n));
        for v in reads {
            if let Some(&i) = through_qdq(g, v).and_then(|src| pos.get(&src)) {
                links.edges.push((i, j));
            }
            if let Some(src) = source(g, v) {
                readers.entry(src).or_default().push(j);
            }
        }
    }
    for mut r in readers.into_values() {
        r.dedup();
        links.shared.extend(r.windows(2).map(|w| (w[0], w[1])));
    }
    links
}

/// The value `v` carries before any Q/DQ, unless it is a constant.
fn source(g: &Graph, mut v: ValueRef) -> Option<ValueRef> {
    for _ in 0..8 {
        if !is_qdq(g, v.node) {
            let constant = g.constant(v).is_some() || g[v.node].op_type() == "Constant";
            return (!constant).then_some(v);
        }
        v = g.input(v.node, 0)?;
    }
    None
}

/// Edges whose ends are on different sides.
pub(super) fn transitions(edges: &[(usize, usize)], on_device: &[bool]) -> usize {
    edges
        .iter()
        .filter(|&&(i, j)| on_device[i] != on_device[j])
        .count()
}

/// The segment of each position, numbered 0.. in the order of each segment's first position.
/// Edges must go forward (`i < j`), as a topological order makes them.
pub(super) fn components(links: &Links, on_device: &[bool]) -> Vec<usize> {
    let n = on_device.len();
    let mut succ: Vec<Vec<usize>> = vec![Vec::new(); n];
    for &(i, j) in &links.edges {
        if i < j && j < n {
            succ[i].push(j);
        }
    }
    for s in &mut succ {
        s.sort_unstable();
        s.dedup();
    }
    let mut joins: Vec<(usize, usize)> = links
        .edges
        .iter()
        .chain(&links.shared)
        .copied()
        .filter(|&(i, j)| i < j && j < n && on_device[i] == on_device[j])
        .collect();
    // Join in the later node's topological order, so the result does not depend on how the
    // links were listed.
    joins.sort_unstable_by_key(|&(i, j)| (j, i));
    joins.dedup();
    let mut sets = Sets::new(&succ);
    for (i, j) in joins {
        let (a, b) = (sets.find(i), sets.find(j));
        if a != b && !sets.path_around(&succ, a, b) && !sets.path_around(&succ, b, a) {
            sets.union(a, b);
        }
    }
    let mut id: HashMap<usize, usize> = HashMap::new();
    (0..n)
        .map(|p| {
            let root = sets.find(p);
            let next = id.len();
            *id.entry(root).or_insert(next)
        })
        .collect()
}

/// Union-find over positions, with each set's size, last position and the nodes outside it
/// that it feeds (so a check walks out of a set without walking through it).
struct Sets {
    parent: Vec<usize>,
    size: Vec<usize>,
    last: Vec<usize>,
    out: Vec<Vec<usize>>,
    /// Visit marks of the current walk, by walk number (no clearing between walks).
    seen: Vec<u32>,
    walk: u32,
}

impl Sets {
    fn new(succ: &[Vec<usize>]) -> Sets {
        let n = succ.len();
        Sets {
            parent: (0..n).collect(),
            size: vec![1; n],
            last: (0..n).collect(),
            out: succ.to_vec(),
            seen: vec![0; n],
            walk: 0,
        }
    }

    fn find(&mut self, mut x: usize) -> usize {
        while self.parent[x] != x {
            self.parent[x] = self.parent[self.parent[x]];
            x = self.parent[x];
        }
        x
    }

    fn union(&mut self, a: usize, b: usize) {
        let (keep, gone) = if self.size[a] >= self.size[b] {
            (a, b)
        } else {
            (b, a)
        };
        self.parent[gone] = keep;
        self.size[keep] += self.size[gone];
        self.last[keep] = self.last[keep].max(self.last[gone]);
        let mut out = std::mem::take(&mut self.out[keep]);
        out.append(&mut self.out[gone]);
        out.retain(|&x| self.find(x) != keep);
        out.sort_unstable();
        out.dedup();
        self.out[keep] = out;
    }

    /// Whether set `a` reaches set `b` through a node in neither (the sets are roots). Joining
    /// them would then make a segment that waits on itself.
    fn path_around(&mut self, succ: &[Vec<usize>], a: usize, b: usize) -> bool {
        // Edges go forward: nothing after b's last node leads back into b.
        let limit = self.last[b];
        self.walk = self.walk.wrapping_add(1);
        if self.walk == 0 {
            self.seen.fill(0);
            self.walk = 1;
        }
        let mut stack: Vec<usize> = Vec::new();
        for k in 0..self.out[a].len() {
            let x = self.out[a][k];
            let s = self.find(x);
            if s != a && s != b && x < limit && self.seen[x] != self.walk {
                self.seen[x] = self.walk;
                stack.push(x);
            }
        }
        while let Some(x) = stack.pop() {
            for &y in &succ[x] {
                let s = self.find(y);
                if s == b {
                    return true;
                }
                if s != a && y < limit && self.seen[y] != self.walk {
                    self.seen[y] = self.walk;
                    stack.push(y);
                }
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: bool = true;
    const C: bool = false;

    fn components_of(edges: &[(usize, usize)], side: &[bool]) -> Vec<usize> {
        let links = Links {
            edges: edges.to_vec(),
            shared: Vec::new(),
        };
        components(&links, side)
    }

    #[test]
    fn same_side_neighbours_join_and_ids_follow_first_position() {
        // 0 -> 2 -> 4 on the device, 1 -> 3 on the CPU, no edge between the two.
        let side = [D, C, D, C, D];
        let edges = [(0, 2), (1, 3), (2, 4)];
        assert_eq!(components_of(&edges, &side), [0, 1, 0, 1, 0]);
        assert_eq!(transitions(&edges, &side), 0);
    }

    #[test]
    fn a_node_with_no_same_side_neighbour_is_its_own_segment() {
        // 0 and 1 both read the graph input only: two segments, no transition.
        let side = [D, D, C];
        let edges = [(1, 2)];
        assert_eq!(components_of(&edges, &side), [0, 1, 2]);
        assert_eq!(transitions(&edges, &side), 1);
    }

    #[test]
    fn a_join_that_would_wait_on_the_other_side_is_not_made() {
        // 0 -> 1 (CPU) -> 2 and 0 -> 2: 0 and 2 stay apart.
        let side = [D, C, D];
        let edges = [(0, 1), (1, 2), (0, 2)];
        assert_eq!(components_of(&edges, &side), [0, 1, 2]);
        assert_eq!(transitions(&edges, &side), 2);
        // Through a longer same-side detour, the path around is seen too: 0 -> 1 -> 2 (CPU)
        // -> 3 -> 4, and 0 -> 4. Device 0 joins neither 3 nor 4.
        let side = [D, C, C, D, D];
        let edges = [(0, 1), (1, 2), (2, 3), (3, 4), (0, 4)];
        assert_eq!(components_of(&edges, &side), [0, 1, 1, 2, 2]);
    }

    #[test]
    fn a_fork_and_join_on_one_side_is_one_segment() {
        let side = [D, D, C, D, D];
        // 0 forks to 1 and 3, both join at 4; CPU 2 hangs off 1 and feeds nothing.
        let edges = [(0, 1), (0, 3), (1, 2), (1, 4), (3, 4)];
        assert_eq!(components_of(&edges, &side), [0, 0, 1, 0, 0]);
        assert_eq!(transitions(&edges, &side), 1);
    }

    #[test]
    fn the_edge_list_order_does_not_change_the_result() {
        let side = [D, C, D, D, C, D];
        let mut edges = vec![(0, 1), (1, 2), (0, 3), (2, 5), (3, 4), (4, 5), (3, 5)];
        let first = components_of(&edges, &side);
        edges.reverse();
        assert_eq!(components_of(&edges, &side), first);
        edges.swap(0, 3);
        assert_eq!(components_of(&edges, &side), first);
    }

    #[test]
    fn readers_of_one_value_join_unless_the_other_side_is_between() {
        // CPU 0 feeds devices 1, 2, 3 (query, key, value): one device segment.
        let side = [C, D, D, D];
        let links = Links {
            edges: vec![(0, 1), (0, 2), (0, 3)],
            shared: vec![(1, 2), (2, 3)],
        };
        assert_eq!(components(&links, &side), [0, 1, 1, 1]);
        // Devices 0 and 2 read one input, but 2 also waits on CPU 1, which reads 0.
        let side = [D, C, D];
        let links = Links {
            edges: vec![(0, 1), (1, 2)],
            shared: vec![(0, 2)],
        };
        assert_eq!(components(&links, &side), [0, 1, 2]);
    }
}
