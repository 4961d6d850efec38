//! Symbolic folding of shape targets under dynamic dims.
//!
//! Exporters write `x.view(x.size(0), x.size(1), heads, -1)` as `Shape → Gather → Unsqueeze
//! → Concat → Reshape`. With a dynamic batch the target cannot be computed, but it can be
//! *expressed* as a constant: a dim copied from the reshaped tensor's own axis at the same
//! position is `0` (Reshape with `allowzero = 0` copies that dim), fixed dims stay, and one
//! element that is only computable at run time may become `-1`. For `Expand`, a dim equal to
//! the input's (right-aligned) axis becomes `1`, which broadcasting keeps.
//!
//! Shape vectors are evaluated element by element ([`Elem`]) through Shape, Gather, Slice,
//! Concat, Unsqueeze, Squeeze, Reshape, Identity, Cast to int64 and integer Add/Sub/Mul/Div.
//! Dims with the same symbolic name (from `infer-shapes` or the model) are taken as equal, as
//! ONNX defines them. Anything not followed leaves the node alone.

mod dim_keys;

use std::collections::HashMap;

use crate::eval::{evaluate_with, shape_range, EvalOptions};
use crate::ir::{Dim, Graph, Node, NodeIndex, ValueInfo, ValueRef};
use crate::pipeline::Changes;
use crate::tensor::{DataType, Tensor};

/// The longest shape vector followed (longer ones are not shapes).
const MAX_ELEMS: usize = 64;
/// How far back a shape computation is followed.
const MAX_DEPTH: usize = 64;

/// One element of a shape vector, as far as it is known before run time.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Elem {
    /// A fixed number.
    Known(i64),
    /// A dim with this symbolic name (equal wherever the name appears).
    Named(String),
    /// The run-time size of axis `.1` of value `.0`, nothing else known.
    DimOf(ValueRef, usize),
    /// Computed from dims (a product, a sum): only its run-time value is known.
    Computed,
}

/// A small int64 tensor whose elements are [`Elem`]s.
#[derive(Debug, Clone)]
struct Sym {
    shape: Vec<usize>,
    elems: Vec<Elem>,
}

/// Replaces computed `Reshape` / `Expand` shape inputs in `graph` (not its subgraphs) by
/// constants that mean the same at run time.
pub(crate) fn make_targets_static(graph: &mut Graph, opset: i64, changes: &mut Changes) {
    let g: &Graph = graph;
    let mut eval = Evaluator {
        graph: g,
        opset,
        memo: HashMap::new(),
        keys: HashMap::new(),
    };
    let mut rewrites: Vec<(NodeIndex, Vec<i64>)> = Vec::new();
    for (idx, node) in g.nodes() {
        if !node.domain().is_empty() {
            continue;
        }
        let (Some(data), Some(target)) = (g.input(idx, 0), g.input(idx, 1)) else {
            continue;
        };
        if g.constant(target).is_some() {
            continue;
        }
        let new = match node.op_type() {
            "Reshape" if node.attr("allowzero").map_or(Some(0), |a| a.as_int()) == Some(0) => eval
                .vector(target)
                .and_then(|t| eval.reshape_target(data, &t)),
            "Expand" => eval
                .vector(target)
                .and_then(|t| eval.expand_shape(data, &t)),
            _ => None,
        };
        if let Some(new) = new {
            rewrites.push((idx, new));
        }
    }
    for (idx, values) in rewrites {
        let Some(old) = graph.input(idx, 1) else {
            continue;
        };
        let name = graph.fresh_name(graph.value_name(old));
        let Ok(tensor) = Tensor::from_vec(vec![values.len()], values.clone()) else {
            continue;
        };
        let mut init = Node::initializer(&name, tensor);
        init.outputs[0] = ValueInfo::tensor(
            name.as_str(),
            DataType::Int64,
            &[Dim::Known(values.len() as i64)],
        );
        let new = graph.add_node(init);
        graph.disconnect(idx, 1);
        graph.connect(ValueRef::new(new, 0), idx, 1);
        changes.add("shape input made static", 1);
    }
}

impl Evaluator<'_> {
    /// The constant Reshape target equal at run time to `target` (`allowzero = 0`), if any.
    fn reshape_target(&mut self, data: ValueRef, target: &Sym) -> Option<Vec<i64>> {
        if target.shape.len() != 1 {
            return None;
        }
        let mut out = Vec::with_capacity(target.elems.len());
        let mut free = None;
        for (p, e) in target.elems.iter().enumerate() {
            match e {
                Elem::Known(-1) => {
                    if free.replace(p).is_some() {
                        return None;
                    }
                    out.push(-1);
                }
                // A literal 0 copies a dim too, but the target is then not ours to reason about.
                Elem::Known(n) if *n >= 1 => out.push(*n),
                Elem::Known(_) => return None,
                _ if self.same_dim(data, p, e) => out.push(0),
                // Every other element is the same at run time, so the element count pins
                // this one down: `-1` infers it.
                _ => {
                    if free.replace(p).is_some() {
                        return None;
                    }
                    out.push(-1);
                }
            }
        }
        Some(out)
    }

    /// The constant Expand shape equal in effect to `shape` on `data`, if any.
    fn expand_shape(&mut self, data: ValueRef, shape: &Sym) -> Option<Vec<i64>> {
        if shape.shape.len() != 1 {
            return None;
        }
        let rank = dim_keys::dims(self.graph, data)?.len() as i64;
        let offset = rank - shape.elems.len() as i64;
        let mut out = Vec::with_capacity(shape.elems.len());
        for (p, e) in shape.elems.iter().enumerate() {
            out.push(match e {
                Elem::Known(n) if *n >= 0 => *n,
                _ => {
                    let axis = usize::try_from(p as i64 + offset).ok()?;
                    // Broadcasting a dim against 1 keeps it.
                    if !self.same_dim(data, axis, e) {
                        return None;
                    }
                    1
                }
            });
        }
        Some(out)
    }

    /// True when `e` is provably the run-time size of axis `axis` of `data`.
    fn same_dim(&mut self, data: ValueRef, axis: usize, e: &Elem) -> bool {
        if *e == Elem::DimOf(data, axis) {
            return true;
        }
        let rank = dim_keys::dims(self.graph, data).map(|d| d.len());
        if rank.is_none_or(|r| axis >= r) {
            return false;
        }
        let want = self.key(data, axis, 0);
        match e {
            Elem::DimOf(v, a) => self.key(*v, *a, 0) == want,
            Elem::Named(name) => want == dim_keys::Key::Named(name.clone()),
            Elem::Known(_) | Elem::Computed => false,
        }
    }
}

/// Evaluates values to [`Sym`]s, remembering each.
struct Evaluator<'g> {
    graph: &'g Graph,
    opset: i64,
    memo: HashMap<ValueRef, Option<Sym>>,
    keys: HashMap<(ValueRef, usize), dim_keys::Key>,
}

impl Evaluator<'_> {
    /// `value` as a 1-D shape vector.
    fn vector(&mut self, value: ValueRef) -> Option<Sym> {
        self.value(value, 0).filter(|s| s.shape.len() == 1)
    }

    fn value(&mut self, value: ValueRef, depth: usize) -> Option<Sym> {
        if let Some(known) = self.memo.get(&value) {
            return known.clone();
        }
        let result = if depth > MAX_DEPTH {
            None
        } else {
            self.compute(value, depth)
        };
        self.memo.insert(value, result.clone());
        result
    }

    fn compute(&mut self, value: ValueRef, depth: usize) -> Option<Sym> {
        let g = self.graph;
        if let Some(t) = g.constant(value) {
            if t.dtype() != DataType::Int64 || t.len() > MAX_ELEMS {
                return None;
            }
            let elems = t
                .to_vec::<i64>()
                .ok()?
                .into_iter()
                .map(Elem::Known)
                .collect();
            return Some(Sym {
                shape: t.shape().to_vec(),
                elems,
            });
        }
        let node = g.node(value.node)?;
        if !node.is_operator() || !node.domain().is_empty() || value.slot != 0 {
            return None;
        }
        let input = |slot: usize| g.input(value.node, slot);
        match node.op_type() {
            "Shape" => {
                let source = input(0)?;
                let dims = g.value_info(source).shape()?;
                let start = node.attr("start").map_or(Some(0), |a| a.as_int())?;
                let end = match node.attr("end") {
                    Some(a) => Some(a.as_int()?),
                    None => None,
                };
                let (s, e) = shape_range(start, end, dims.len());
                // An undeclared dim may still be provably fixed or named (see `dim_keys`).
                let elems: Vec<Elem> = (s..e)
                    .map(|axis| match self.key(source, axis, depth + 1) {
                        dim_keys::Key::Known(n) if n >= 0 => Elem::Known(n),
                        dim_keys::Key::Named(name) => Elem::Named(name),
                        _ => Elem::DimOf(source, axis),
                    })
                    .collect();
                Some(Sym {
                    shape: vec![elems.len()],
                    elems,
                })
            }
            "Identity" => self.value(input(0)?, depth + 1),
            "Cast" => {
                let to = node.attr("to")?.as_int()?;
                if to != i64::from(DataType::Int64.onnx()) {
                    return None;
                }
                self.value(input(0)?, depth + 1)
            }
            "Concat" => {
                let n = g.inputs(value.node).len();
                self.moved(value.node, n, depth)
            }
            "Gather" | "Slice" | "Unsqueeze" | "Squeeze" | "Reshape" => {
                self.moved(value.node, 1, depth)
            }
            "Where" => {
                let (cond_shape, cond) = self.truth(input(0)?, depth + 1)?;
                let x = self.value(input(1)?, depth + 1)?;
                let y = self.value(input(2)?, depth + 1)?;
                let c = Sym {
                    shape: cond_shape,
                    elems: cond.iter().map(|&b| Elem::Known(i64::from(b))).collect(),
                };
                let len = broadcast_len(&[&c, &x, &y])?;
                let pick =
                    |s: &Sym, i: usize| s.elems[if s.elems.len() == 1 { 0 } else { i }].clone();
                let elems = (0..len)
                    .map(|i| {
                        if cond[if cond.len() == 1 { 0 } else { i }] {
                            pick(&x, i)
                        } else {
                            pick(&y, i)
                        }
                    })
                    .collect();
                let shape = if [&c, &x, &y].iter().all(|s| s.shape.is_empty()) {
                    Vec::new()
                } else {
                    vec![len]
                };
                Some(Sym { shape, elems })
            }
            op @ ("Add" | "Sub" | "Mul" | "Div") => {
                let a = self.value(input(0)?, depth + 1)?;
                let b = self.value(input(1)?, depth + 1)?;
                arithmetic(op, &a, &b)
            }
            _ => None,
        }
    }

    /// A boolean condition on shape vectors: a constant, or `Equal` where the answer is
    /// certain (a dim is never negative).
    fn truth(&mut self, value: ValueRef, depth: usize) -> Option<(Vec<usize>, Vec<bool>)> {
        let g = self.graph;
        if let Some(t) = g.constant(value) {
            if t.dtype() != DataType::Bool || t.len() > MAX_ELEMS {
                return None;
            }
            return Some((t.shape().to_vec(), t.to_vec::<bool>().ok()?));
        }
        let node = g.node(value.node)?;
        if node.op_type() != "Equal" || !node.domain().is_empty() || value.slot != 0 {
            return None;
        }
        let a = self.value(g.input(value.node, 0)?, depth + 1)?;
        let b = self.value(g.input(value.node, 1)?, depth + 1)?;
        let len = broadcast_len(&[&a, &b])?;
        let answers = (0..len)
            .map(|i| {
                let x = &a.elems[if a.elems.len() == 1 { 0 } else { i }];
                let y = &b.elems[if b.elems.len() == 1 { 0 } else { i }];
                match (x, y) {
                    (Elem::Known(p), Elem::Known(q)) => Some(p == q),
                    (Elem::Known(n), Elem::Named(_) | Elem::DimOf(..))
                    | (Elem::Named(_) | Elem::DimOf(..), Elem::Known(n))
                        if *n < 0 =>
                    {
                        Some(false)
                    }
                    _ => None,
                }
            })
            .collect::<Option<Vec<bool>>>()?;
        let shape = if a.shape.is_empty() && b.shape.is_empty() {
            Vec::new()
        } else {
            vec![len]
        };
        Some((shape, answers))
    }

    /// An operator that only moves elements: run it on element positions (the first
    /// `data_inputs` inputs are shape vectors, numbered one after another; the rest must be
    /// constants) and pick the elements it chose.
    fn moved(&mut self, idx: NodeIndex, data_inputs: usize, depth: usize) -> Option<Sym> {
        let g = self.graph;
        let inputs = g.inputs(idx);
        let mut elems = Vec::new();
        let mut positions = Vec::new();
        for v in inputs.iter().take(data_inputs) {
            let sym = self.value((*v)?, depth + 1)?;
            let first = elems.len() as i64;
            let numbers = (first..first + sym.elems.len() as i64).collect();
            positions.push(Tensor::from_vec(sym.shape.clone(), numbers).ok()?);
            elems.extend(sym.elems);
        }
        let mut args: Vec<Option<&Tensor>> = positions.iter().map(Some).collect();
        for v in inputs.iter().skip(data_inputs) {
            args.push(match v {
                Some(v) => Some(g.constant(*v)?),
                None => None,
            });
        }
        let node = &g[idx];
        let options = EvalOptions {
            max_elements: MAX_ELEMS,
            num_outputs: Some(node.outputs.len()),
        };
        let out = evaluate_with(
            node.op_type(),
            "",
            self.opset,
            &node.attributes,
            &args,
            options,
        )
        .ok()??
        .into_iter()
        .next()?;
        let picked = out
            .to_vec::<i64>()
            .ok()?
            .into_iter()
            .map(|p| elems.get(usize::try_from(p).ok()?).cloned())
            .collect::<Option<Vec<Elem>>>()?;
        Some(Sym {
            shape: out.shape().to_vec(),
            elems: picked,
        })
    }
}

/// Integer `a op b` on scalars or 1-D vectors (one side may have a single element).
fn arithmetic(op: &str, a: &Sym, b: &Sym) -> Option<Sym> {
    if a.shape.len() > 1 || b.shape.len() > 1 {
        return None;
    }
    let (la, lb) = (a.elems.len(), b.elems.len());
    let len = broadcast_len(&[a, b])?;
    let shape = if a.shape.is_empty() && b.shape.is_empty() {
        Vec::new()
    } else {
        vec![len]
    };
    let elems = (0..len)
        .map(|i| {
            let x = &a.elems[if la == 1 { 0 } else { i }];
            let y = &b.elems[if lb == 1 { 0 } else { i }];
            combine(op, x, y)
        })
        .collect();
    Some(Sym { shape, elems })
}

/// The common length of scalars and 1-D vectors under broadcasting.
fn broadcast_len(syms: &[&Sym]) -> Option<usize> {
    if syms.iter().any(|s| s.shape.len() > 1) {
        return None;
    }
    let len = syms.iter().map(|s| s.elems.len()).max()?;
    syms.iter()
        .all(|s| s.elems.len() == len || s.elems.len() == 1)
        .then_some(len)
}

/// An axis in `[-rank, rank)` as an index; `None` out of range.
fn axis(a: i64, rank: usize) -> Option<usize> {
    let r = rank as i64;
    let a = if a < 0 { a + r } else { a };
    (0..r).contains(&a).then_some(a as usize)
}

/// One element of integer arithmetic: exact on numbers, identities kept, else computed.
fn combine(op: &str, x: &Elem, y: &Elem) -> Elem {
    use Elem::Known;
    let exact = match (op, x, y) {
        ("Add", Known(a), Known(b)) => a.checked_add(*b),
        ("Sub", Known(a), Known(b)) => a.checked_sub(*b),
        ("Mul", Known(a), Known(b)) => a.checked_mul(*b),
        // Sizes are non-negative; other signs would bring in rounding rules.
        ("Div", Known(a), Known(b)) if *a >= 0 && *b > 0 => Some(a / b),
        ("Add" | "Sub", e, Known(0)) | ("Mul" | "Div", e, Known(1)) => return e.clone(),
        ("Add", Known(0), e) | ("Mul", Known(1), e) => return e.clone(),
        _ => None,
    };
    exact.map_or(Elem::Computed, Known)
}

#[cfg(test)]
mod tests;
