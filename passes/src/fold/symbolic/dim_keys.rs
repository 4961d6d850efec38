//! Which axes of which values provably have the same run-time size.
//!
//! An axis is followed back through operators that pass it through unchanged (elementwise
//! and broadcasting operators, MatMul / Gemm rows and columns, Transpose, Unsqueeze, Squeeze,
//! Gather, Slice and Concat on other axes, Reshape copying it with a `0`, Expand, reductions
//! keeping it). Its [`Key`] is a fixed size, a symbolic name met on the way, or the value and
//! axis where following stops; two axes with the same key are equal. A broadcasting output
//! axis is followed only when every input that can set it has the same key.

use crate::ir::{Dim, Graph, NodeIndex, ValueRef};

use super::{Elem, Evaluator, Sym, MAX_DEPTH};

/// The identity of an axis size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Key {
    /// A fixed size.
    Known(i64),
    /// A symbolic name (equal wherever it appears).
    Named(String),
    /// Nothing proves it equal to anything else: the value and axis themselves.
    Root(ValueRef, usize),
}

/// Operators whose output 0 has input 0's shape.
const SAME_SHAPE: &[&str] = &[
    "Abs",
    "Cast",
    "CastLike",
    "Ceil",
    "Celu",
    "Clip",
    "Dropout",
    "Elu",
    "Erf",
    "Exp",
    "Floor",
    "Gelu",
    "HardSigmoid",
    "HardSwish",
    "Identity",
    "IsInf",
    "IsNaN",
    "LayerNormalization",
    "LeakyRelu",
    "Log",
    "LogSoftmax",
    "Mish",
    "Neg",
    "Not",
    "Reciprocal",
    "Relu",
    "Round",
    "Selu",
    "Sigmoid",
    "Sign",
    "Sin",
    "Cos",
    "Softmax",
    "Softplus",
    "Softsign",
    "Sqrt",
    "Tanh",
    "ThresholdedRelu",
];

/// Operators broadcasting all their inputs (numpy rules).
const BROADCAST: &[&str] = &[
    "Add",
    "And",
    "BitShift",
    "Div",
    "Equal",
    "Greater",
    "GreaterOrEqual",
    "Less",
    "LessOrEqual",
    "Max",
    "Mean",
    "Min",
    "Mod",
    "Mul",
    "Or",
    "Pow",
    "PRelu",
    "Sub",
    "Sum",
    "Where",
    "Xor",
];

impl Evaluator<'_> {
    /// The key of axis `axis` of `value`.
    pub(super) fn key(&mut self, value: ValueRef, axis: usize, depth: usize) -> Key {
        if let Some(k) = self.keys.get(&(value, axis)) {
            return k.clone();
        }
        let dims = dims(self.graph, value);
        let key = match dims.as_ref().and_then(|d| d.get(axis)) {
            Some(Dim::Known(n)) => Key::Known(*n),
            Some(Dim::Symbolic(s)) => Key::Named(s.clone()),
            _ if depth > MAX_DEPTH => Key::Root(value, axis),
            _ => self
                .follow(value, axis, depth)
                .unwrap_or(Key::Root(value, axis)),
        };
        self.keys.insert((value, axis), key.clone());
        key
    }

    /// The key of `value`'s axis through its producer, if the producer passes it through.
    fn follow(&mut self, value: ValueRef, axis: usize, depth: usize) -> Option<Key> {
        let g = self.graph;
        let node = g.node(value.node)?;
        if !node.is_operator() || !node.domain().is_empty() {
            return None;
        }
        if value.slot != 0 && node.op_type() != "Split" {
            return None;
        }
        let idx = value.node;
        let input = |slot: usize| g.input(idx, slot);
        let rank = |v: ValueRef| dims(g, v).map(|d| d.len());
        let op = node.op_type();
        // Every output of Split has its input's size on the other axes.
        if op == "Split" {
            let r = rank(input(0)?)?;
            let a = super::axis(node.attr("axis").map_or(Some(0), |a| a.as_int())?, r)?;
            return (axis != a)
                .then_some(input(0))
                .flatten()
                .map(|x| self.key(x, axis, depth + 1));
        }
        if SAME_SHAPE.contains(&op) {
            return Some(self.key(input(0)?, axis, depth + 1));
        }
        if BROADCAST.contains(&op) {
            let out_rank = rank(value)?;
            let sources = g
                .inputs(idx)
                .into_iter()
                .map(|v| {
                    let v = v?;
                    let offset = out_rank.checked_sub(rank(v)?)?;
                    Some((axis >= offset).then(|| (v, axis - offset)))
                })
                .collect::<Option<Vec<_>>>()?;
            return self.agree(sources.into_iter().flatten().collect(), depth);
        }
        match op {
            "MatMul" => {
                let (a, b) = (input(0)?, input(1)?);
                let (ra, rb, r) = (rank(a)?, rank(b)?, rank(value)?);
                if ra < 2 || rb < 2 || r < 2 {
                    return None;
                }
                if axis == r - 1 {
                    return Some(self.key(b, rb - 1, depth + 1));
                }
                if axis == r - 2 {
                    return Some(self.key(a, ra - 2, depth + 1));
                }
                // Batch axes broadcast.
                let sources = [(a, ra), (b, rb)]
                    .into_iter()
                    .filter_map(|(v, rv)| {
                        let offset = r.checked_sub(rv)?;
                        (axis >= offset).then(|| (v, axis - offset))
                    })
                    .collect();
                self.agree(sources, depth)
            }
            "Gemm" => {
                let flag = |name: &str| node.attr(name).and_then(|a| a.as_int()).unwrap_or(0);
                match axis {
                    0 => Some(self.key(input(0)?, usize::from(flag("transA") != 0), depth + 1)),
                    1 => Some(self.key(input(1)?, usize::from(flag("transB") == 0), depth + 1)),
                    _ => None,
                }
            }
            "Transpose" => {
                let perm = match node.attr("perm") {
                    Some(a) => usize::try_from(*a.as_ints()?.get(axis)?).ok()?,
                    None => rank(value)?.checked_sub(axis + 1)?,
                };
                Some(self.key(input(0)?, perm, depth + 1))
            }
            "Reshape" => {
                let copies = node.attr("allowzero").map_or(Some(0), |a| a.as_int())? == 0;
                let target = self.vector(input(1)?)?;
                match target.elems.get(axis)? {
                    Elem::Known(0) if copies => Some(self.key(input(0)?, axis, depth + 1)),
                    Elem::Known(-1) => self.inferred(input(0)?, &target, copies, depth),
                    e => self.elem_key(e, depth),
                }
            }
            "ConstantOfShape" => {
                let shape = self.vector(input(0)?)?;
                self.elem_key(shape.elems.get(axis)?, depth)
            }
            // Range(0, n, 1) has n elements.
            "Range" => {
                let (start, limit, delta) = (input(0)?, input(1)?, input(2)?);
                let one = |s: Option<Sym>, n: i64| {
                    s.is_some_and(|s| s.shape.is_empty() && s.elems == [Elem::Known(n)])
                };
                let from_zero = one(self.value(start, depth + 1), 0);
                if axis != 0 || !from_zero || !one(self.value(delta, depth + 1), 1) {
                    return None;
                }
                let limit = self.value(limit, depth + 1)?;
                if !limit.shape.is_empty() {
                    return None;
                }
                self.elem_key(limit.elems.first()?, depth)
            }
            "Unsqueeze" | "Squeeze" | "Slice" | "ReduceMean" | "ReduceSum" | "ReduceMax"
            | "ReduceMin" | "ReduceProd" | "ReduceL2" => {
                let source = self.kept_axis(idx, axis, rank(input(0)?)?, rank(value)?)?;
                Some(self.key(input(0)?, source, depth + 1))
            }
            "Gather" => {
                let (data, indices) = (input(0)?, input(1)?);
                let rd = rank(data)?;
                let ri = rank(indices)?;
                let a = super::axis(node.attr("axis").map_or(Some(0), |a| a.as_int())?, rd)?;
                if axis < a {
                    Some(self.key(data, axis, depth + 1))
                } else if axis < a + ri {
                    Some(self.key(indices, axis - a, depth + 1))
                } else {
                    Some(self.key(data, axis + 1 - ri, depth + 1))
                }
            }
            "Concat" => {
                let r = rank(value)?;
                let a = super::axis(node.attr("axis")?.as_int()?, r)?;
                (axis != a)
                    .then_some(input(0))
                    .flatten()
                    .map(|x| self.key(x, axis, depth + 1))
            }
            "Expand" => {
                let (x, shape) = (input(0)?, input(1)?);
                let shape = self.vector(shape)?;
                let r = rank(value)?;
                let mut keys = Vec::new();
                if let Some(offset) = r.checked_sub(rank(x)?) {
                    if axis >= offset {
                        keys.push(self.key(x, axis - offset, depth + 1));
                    }
                }
                let offset = r.checked_sub(shape.elems.len())?;
                if axis >= offset {
                    keys.push(self.elem_key(&shape.elems[axis - offset], depth)?);
                }
                common(keys)
            }
            _ => None,
        }
    }

    /// The size a Reshape infers for its `-1`: the input's axes with the other target
    /// elements cancelled out, when what is left is a fixed number.
    fn inferred(&mut self, x: ValueRef, target: &Sym, copies: bool, depth: usize) -> Option<Key> {
        let rank = dims(self.graph, x)?.len();
        let mut left: Vec<Key> = (0..rank).map(|a| self.key(x, a, depth + 1)).collect();
        let mut divisor: i64 = 1;
        for (p, e) in target.elems.iter().enumerate() {
            let key = match e {
                Elem::Known(-1) => continue,
                Elem::Known(0) if copies => self.key(x, p, depth + 1),
                e => self.elem_key(e, depth)?,
            };
            match key {
                Key::Known(n) => divisor = divisor.checked_mul(n)?,
                other => {
                    let at = left.iter().position(|k| *k == other)?;
                    left.remove(at);
                }
            }
        }
        let mut size: i64 = 1;
        for k in left {
            match k {
                Key::Known(n) => size = size.checked_mul(n)?,
                _ => return None,
            }
        }
        (divisor > 0 && size % divisor == 0).then(|| Key::Known(size / divisor))
    }

    /// The key of a shape element that is a size (not `-1`, not computed).
    fn elem_key(&mut self, e: &Elem, depth: usize) -> Option<Key> {
        match e {
            Elem::Known(n) if *n >= 0 => Some(Key::Known(*n)),
            Elem::Named(s) => Some(Key::Named(s.clone())),
            Elem::DimOf(v, a) => Some(self.key(*v, *a, depth + 1)),
            _ => None,
        }
    }

    /// The common key of broadcast sources (value, axis), ignoring those fixed at 1.
    fn agree(&mut self, sources: Vec<(ValueRef, usize)>, depth: usize) -> Option<Key> {
        let keys = sources
            .into_iter()
            .map(|(v, a)| self.key(v, a, depth + 1))
            .collect();
        common(keys)
    }

    /// For axis-dropping or -adding operators and slices: the input axis that output axis
    /// `axis` is, unchanged; `None` if it is new, sliced or reduced.
    fn kept_axis(
        &self,
        idx: NodeIndex,
        axis: usize,
        in_rank: usize,
        out_rank: usize,
    ) -> Option<usize> {
        let g = self.graph;
        let node = &g[idx];
        let op = node.op_type();
        let listed = |slot: usize| -> Option<Option<Vec<i64>>> {
            match node.attr("axes") {
                Some(a) => Some(Some(a.as_ints()?.to_vec())),
                None => match g.input(idx, slot) {
                    Some(_) => Some(Some(g.constant_input(idx, slot)?.to_vec::<i64>().ok()?)),
                    None => Some(None),
                },
            }
        };
        match op {
            "Unsqueeze" => {
                let axes = normalize(&listed(1)??, out_rank)?;
                if axes.contains(&axis) {
                    return None;
                }
                Some(axis - axes.iter().filter(|&&a| a < axis).count())
            }
            "Squeeze" => {
                let axes = normalize(&listed(1)??, in_rank)?;
                (0..in_rank).filter(|a| !axes.contains(a)).nth(axis)
            }
            "Slice" => {
                let axes = match listed(3)? {
                    Some(axes) => normalize(&axes, in_rank)?,
                    None => {
                        let starts = match node.attr("starts") {
                            Some(a) => a.as_ints()?.len(),
                            None => g.constant_input(idx, 1)?.len(),
                        };
                        (0..starts).collect()
                    }
                };
                (!axes.contains(&axis) && in_rank == out_rank).then_some(axis)
            }
            _ => {
                let keep = node.attr("keepdims").map_or(Some(1), |a| a.as_int())? != 0;
                let axes = normalize(&listed(1)??, in_rank)?;
                (keep && !axes.contains(&axis) && in_rank == out_rank).then_some(axis)
            }
        }
    }
}

/// The dims of `value`: a constant's own, else the declared ones.
pub(super) fn dims(g: &Graph, value: ValueRef) -> Option<Vec<Dim>> {
    match g.constant(value) {
        Some(t) => Some(t.shape().iter().map(|&n| Dim::Known(n as i64)).collect()),
        None => g.value_info(value).shape(),
    }
}

/// The key all of `keys` share, ignoring sizes fixed at 1 (they broadcast).
fn common(keys: Vec<Key>) -> Option<Key> {
    let mut rest = keys.into_iter().filter(|k| *k != Key::Known(1));
    let first = rest.next()?;
    rest.all(|k| k == first).then_some(first)
}

/// Axes in `[-rank, rank)` as indices; `None` if any is out of range.
fn normalize(axes: &[i64], rank: usize) -> Option<Vec<usize>> {
    axes.iter().map(|&a| super::axis(a, rank)).collect()
}
