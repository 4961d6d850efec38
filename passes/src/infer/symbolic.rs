//! Shape arithmetic on values: what a small integer tensor holds, as dims, through Shape,
//! Gather, Slice, Concat, Unsqueeze, Squeeze, Cast, Reshape, ConstantOfShape and integer
//! Add/Sub/Mul/Div — so a Reshape fed by `Concat(Shape(x)[0], [-1, 64])` gets named dims.

use crate::ir::Dim;

use super::ctx::{is_integer, Ctx, SymValue, MAX_SYM_ITEMS};
use super::gather_slice::slice_len;
use super::shape_ops::shape_range;

/// The contents of output 0 of `op`, if it is shape arithmetic this module follows.
pub fn propagate(op: &str, ctx: &Ctx) -> Option<SymValue> {
    match op {
        "Shape" => {
            let s = ctx.shape(0)?;
            let (start, end) = shape_range(ctx, s.len());
            Some(SymValue {
                scalar: false,
                items: s[start..end].to_vec(),
            })
        }
        "Size" => Some(SymValue {
            scalar: true,
            items: vec![super::dims::product_dim(ctx.shape(0)?)],
        }),
        "Identity" => ctx.sym(0).cloned(),
        "Cast" => {
            let to = ctx.attr_dtype("to")?;
            is_integer(to).then(|| ctx.sym(0).cloned()).flatten()
        }
        "Gather" => gather(ctx),
        "Unsqueeze" => {
            let s = ctx.sym(0)?;
            s.scalar.then(|| SymValue {
                scalar: false,
                items: s.items.clone(),
            })
        }
        "Squeeze" => {
            let s = ctx.sym(0)?;
            (!s.scalar && s.items.len() == 1).then(|| SymValue {
                scalar: true,
                items: s.items.clone(),
            })
        }
        "Reshape" => {
            let s = ctx.sym(0)?;
            match ctx.ints(1)?.as_slice() {
                [] if s.items.len() == 1 => Some(SymValue {
                    scalar: true,
                    items: s.items.clone(),
                }),
                [n] if *n == -1 || *n == s.items.len() as i64 => Some(SymValue {
                    scalar: false,
                    items: s.items.clone(),
                }),
                _ => None,
            }
        }
        "Concat" => {
            let mut items = Vec::new();
            for i in 0..ctx.n_inputs() {
                let s = ctx.sym(i)?;
                if s.scalar {
                    return None;
                }
                items.extend(s.items.iter().cloned());
            }
            (items.len() <= MAX_SYM_ITEMS).then_some(SymValue {
                scalar: false,
                items,
            })
        }
        "Slice" => slice(ctx),
        "ConstantOfShape" => {
            let value = match ctx.attr("value") {
                Some(crate::ir::AttrValue::Tensor(t)) => SymValue::of_tensor(t)?,
                _ => return None,
            };
            let n = ctx.ints(0)?;
            match (n.as_slice(), value.items.as_slice()) {
                ([k], [v]) if (0..=MAX_SYM_ITEMS as i64).contains(k) => Some(SymValue {
                    scalar: false,
                    items: vec![v.clone(); *k as usize],
                }),
                _ => None,
            }
        }
        "Add" | "Sub" | "Mul" | "Div" => arithmetic(op, ctx),
        _ => None,
    }
}

fn gather(ctx: &Ctx) -> Option<SymValue> {
    let data = ctx.sym(0)?;
    if data.scalar || ctx.attr_int_or("axis", 0) != 0 {
        return None;
    }
    let idx_tensor = ctx.constant(1)?;
    if idx_tensor.shape().len() > 1 {
        return None;
    }
    let n = data.items.len() as i64;
    let items = ctx
        .ints(1)?
        .into_iter()
        .map(|i| {
            let i = if i < 0 { i + n } else { i };
            data.items.get(usize::try_from(i).ok()?).cloned()
        })
        .collect::<Option<Vec<Dim>>>()?;
    Some(SymValue {
        scalar: idx_tensor.shape().is_empty(),
        items,
    })
}

fn slice(ctx: &Ctx) -> Option<SymValue> {
    let data = ctx.sym(0)?;
    if data.scalar || ctx.opset < 10 {
        return None;
    }
    let one = |i: usize, default: i64| -> Option<i64> {
        if !ctx.has(i) {
            return Some(default);
        }
        match ctx.ints(i)?.as_slice() {
            [v] => Some(*v),
            _ => None,
        }
    };
    let (start, end, axis, step) = (one(1, 0)?, one(2, 0)?, one(3, 0)?, one(4, 1)?);
    if (axis != 0 && axis != -1) || step <= 0 {
        return None;
    }
    let n = data.items.len() as i64;
    let Dim::Known(len) = slice_len(&Dim::Known(n), start, end, step) else {
        return None;
    };
    let s = if start < 0 { start + n } else { start }.clamp(0, n);
    Some(SymValue {
        scalar: false,
        items: (0..len)
            .filter_map(|k| data.items.get((s + k * step) as usize).cloned())
            .collect(),
    })
}

fn arithmetic(op: &str, ctx: &Ctx) -> Option<SymValue> {
    if !ctx.elem(0).is_some_and(is_integer) {
        return None;
    }
    let (a, b) = (ctx.sym(0)?, ctx.sym(1)?);
    let n = a.items.len().max(b.items.len());
    let pick = |s: &SymValue, i: usize| -> Option<Dim> {
        match s.items.len() {
            1 => Some(s.items[0].clone()),
            m if m == n => Some(s.items[i].clone()),
            _ => None,
        }
    };
    let items = (0..n)
        .map(|i| Some(combine(op, &pick(a, i)?, &pick(b, i)?)))
        .collect::<Option<Vec<Dim>>>()?;
    Some(SymValue {
        scalar: a.scalar && b.scalar,
        items,
    })
}

/// One element of integer arithmetic on dims.
fn combine(op: &str, x: &Dim, y: &Dim) -> Dim {
    match (op, x, y) {
        ("Add", Dim::Known(a), Dim::Known(b)) => a.checked_add(*b).map_or(Dim::Unknown, Dim::Known),
        ("Sub", Dim::Known(a), Dim::Known(b)) => a.checked_sub(*b).map_or(Dim::Unknown, Dim::Known),
        ("Mul", Dim::Known(a), Dim::Known(b)) => a.checked_mul(*b).map_or(Dim::Unknown, Dim::Known),
        ("Div", Dim::Known(a), Dim::Known(b)) if *a >= 0 && *b > 0 => Dim::Known(a / b),
        ("Add" | "Sub", d, Dim::Known(0)) | ("Mul" | "Div", d, Dim::Known(1)) => d.clone(),
        ("Add", Dim::Known(0), d) | ("Mul", Dim::Known(1), d) => d.clone(),
        _ => Dim::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use crate::infer::testutil::*;
    use crate::infer::InferShapes;
    use crate::ir::{describe_type, AttrValue, Model, Node, ValueRef};
    use crate::pipeline::Pass;
    use crate::tensor::{DataType, Tensor};

    /// `Reshape(x, Concat(Unsqueeze(Gather(Shape(x), 0)), Unsqueeze(Gather(Shape(x), 1)), [12, -1]))`
    #[test]
    fn shape_subgraph_gives_named_reshape_dims() {
        let mut m = Model::new(13);
        let ins = add_inputs(
            &mut m,
            &[
                f32_in(&["batch", "seq", "768"]),
                In::Const(Tensor::scalar(0i64)),
                In::Const(Tensor::scalar(1i64)),
                ints_in(&[0]),
                ints_in(&[12, -1]),
            ],
        );
        let [x, i0, i1, ax, tail] = [ins[0], ins[1], ins[2], ins[3], ins[4]].map(Option::unwrap);
        let g = &mut m.graph;
        let shape = g.add_node(Node::op("Shape", "shape", &["s"]));
        g.connect(x, shape, 0);
        let mut parts = Vec::new();
        for (k, i) in [i0, i1].into_iter().enumerate() {
            let gather = g.add_node(Node::op("Gather", &format!("g{k}"), &[&format!("g{k}")]));
            g.connect(ValueRef::new(shape, 0), gather, 0);
            g.connect(i, gather, 1);
            let unsq = g.add_node(Node::op("Unsqueeze", &format!("u{k}"), &[&format!("u{k}")]));
            g.connect(ValueRef::new(gather, 0), unsq, 0);
            g.connect(ax, unsq, 1);
            parts.push(ValueRef::new(unsq, 0));
        }
        let concat = g.add_node(
            Node::op("Concat", "concat", &["target"]).with_attr("axis", AttrValue::Int(0)),
        );
        g.connect(parts[0], concat, 0);
        g.connect(parts[1], concat, 1);
        g.connect(tail, concat, 2);
        let reshape = g.add_node(Node::op("Reshape", "reshape", &["y"]));
        g.connect(x, reshape, 0);
        g.connect(ValueRef::new(concat, 0), reshape, 1);
        let changes = InferShapes.run(&mut m).unwrap();
        m.graph.verify().unwrap();
        let ty = |i| describe_type(m.graph[i].outputs[0].ty.as_ref());
        assert_eq!(ty(concat), "int64[4]");
        assert_eq!(ty(reshape), "float32[batch,seq,12,64]");
        assert_eq!(changes.get("typed"), 7);
        assert_eq!(changes.get("conflicts"), 0);
        let _ = DataType::Int64;
    }
}
