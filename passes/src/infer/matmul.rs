//! Products: MatMul (numpy rules), MatMulInteger, QLinearMatMul, Gemm, Einsum.

use std::collections::BTreeMap;

use crate::ir::Dim;
use crate::tensor::DataType;

use super::ctx::Ctx;
use super::dims;
use super::ty::Ty;

/// The numpy matmul shape of `a @ b`.
pub fn matmul_shape(a: &[Dim], b: &[Dim]) -> Option<Vec<Dim>> {
    if a.is_empty() || b.is_empty() {
        return None;
    }
    let a2: Vec<Dim> = if a.len() == 1 {
        vec![Dim::Known(1), a[0].clone()]
    } else {
        a.to_vec()
    };
    let b2: Vec<Dim> = if b.len() == 1 {
        vec![b[0].clone(), Dim::Known(1)]
    } else {
        b.to_vec()
    };
    let (ab, am) = a2.split_at(a2.len() - 2);
    let (bb, bm) = b2.split_at(b2.len() - 2);
    if let (Dim::Known(x), Dim::Known(y)) = (&am[1], &bm[0]) {
        if x != y {
            return None;
        }
    }
    let mut out = dims::broadcast(&[ab, bb])?;
    if a.len() > 1 {
        out.push(am[0].clone());
    }
    if b.len() > 1 {
        out.push(bm[1].clone());
    }
    Some(out)
}

fn matmul_of(ctx: &Ctx, a: usize, b: usize) -> Option<Vec<Dim>> {
    matmul_shape(ctx.shape(a)?, ctx.shape(b)?)
}

/// MatMul: input 0's type.
pub fn matmul(ctx: &Ctx) -> Option<Vec<Ty>> {
    Some(vec![Ty::tensor(ctx.elem(0), matmul_of(ctx, 0, 1))])
}

/// MatMulInteger: int32.
pub fn matmul_integer(ctx: &Ctx) -> Option<Vec<Ty>> {
    Some(vec![Ty::tensor(
        Some(DataType::Int32),
        matmul_of(ctx, 0, 1),
    )])
}

/// QLinearMatMul: the output zero point's type, product of inputs 0 and 3.
pub fn qlinear_matmul(ctx: &Ctx) -> Option<Vec<Ty>> {
    Some(vec![Ty::tensor(ctx.elem(7), matmul_of(ctx, 0, 3))])
}

/// Gemm: `[M, N]` after the optional transposes.
pub fn gemm(ctx: &Ctx) -> Option<Vec<Ty>> {
    let out = match (ctx.shape(0), ctx.shape(1)) {
        (Some([a0, a1]), Some([b0, b1])) => {
            let m = if ctx.attr_int_or("transA", 0) != 0 {
                a1
            } else {
                a0
            };
            let n = if ctx.attr_int_or("transB", 0) != 0 {
                b0
            } else {
                b1
            };
            Some(vec![m.clone(), n.clone()])
        }
        _ => None,
    };
    Some(vec![Ty::tensor(ctx.elem(0), out)])
}

/// Einsum: dims by letter (equations with `...` give the type only).
pub fn einsum(ctx: &Ctx) -> Option<Vec<Ty>> {
    let elem = ctx.elem(0);
    let eq: String = ctx
        .attr_str("equation")?
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    Some(vec![Ty::tensor(elem, einsum_shape(ctx, &eq))])
}

fn einsum_shape(ctx: &Ctx, eq: &str) -> Option<Vec<Dim>> {
    if eq.contains('.') {
        return None;
    }
    let (lhs, rhs) = match eq.split_once("->") {
        Some((l, r)) => (l, Some(r)),
        None => (eq, None),
    };
    let terms: Vec<&str> = lhs.split(',').collect();
    if terms.len() != ctx.n_inputs() {
        return None;
    }
    let mut letters: BTreeMap<char, (Dim, usize)> = BTreeMap::new();
    for (i, term) in terms.iter().enumerate() {
        let shape = ctx.shape(i)?;
        if term.chars().count() != shape.len() || !term.chars().all(|c| c.is_ascii_alphabetic()) {
            return None;
        }
        for (c, d) in term.chars().zip(shape) {
            let e = letters.entry(c).or_insert((Dim::Unknown, 0));
            // A letter's dims must agree: take the most informative one.
            e.0 = if e.1 == 0 {
                d.clone()
            } else {
                dims::unify(&e.0, d)
            };
            e.1 += 1;
        }
    }
    let out: Vec<char> = match rhs {
        Some(r) => r.chars().collect(),
        None => letters
            .iter()
            .filter(|(_, (_, n))| *n == 1)
            .map(|(c, _)| *c)
            .collect(),
    };
    out.iter()
        .map(|c| letters.get(c).map(|(d, _)| d.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;

    #[test]
    fn matmul_batches_broadcast_and_vectors_drop() {
        let (m, _) = run_one(
            13,
            "MatMul",
            &[
                f32_in(&["b", "12", "s", "64"]),
                f32_in(&["b", "12", "64", "s"]),
            ],
            &[],
            1,
        );
        assert_eq!(out_type(&m, 0), "float32[b,12,s,s]");
        let (m, _) = run_one(
            13,
            "MatMul",
            &[f32_in(&["b", "s", "768"]), f32_in(&["768", "3072"])],
            &[],
            1,
        );
        assert_eq!(out_type(&m, 0), "float32[b,s,3072]");
        let (m, _) = run_one(
            13,
            "MatMul",
            &[f32_in(&["4"]), f32_in(&["2", "4", "5"])],
            &[],
            1,
        );
        assert_eq!(out_type(&m, 0), "float32[2,5]");
        let (m, _) = run_one(13, "MatMul", &[f32_in(&["3", "4"]), f32_in(&["4"])], &[], 1);
        assert_eq!(out_type(&m, 0), "float32[3]");
        let (m, _) = run_one(
            13,
            "MatMul",
            &[f32_in(&["3", "4"]), f32_in(&["5", "2"])],
            &[],
            1,
        );
        assert_eq!(out_type(&m, 0), "float32");
    }

    #[test]
    fn gemm_transposes_and_einsum() {
        let (m, _) = run_one(
            13,
            "Gemm",
            &[f32_in(&["n", "8"]), f32_in(&["10", "8"]), f32_in(&["10"])],
            &[("transB", int(1))],
            1,
        );
        assert_eq!(out_type(&m, 0), "float32[n,10]");
        let (m, _) = run_one(
            12,
            "Einsum",
            &[f32_in(&["b", "i", "k"]), f32_in(&["b", "k", "j"])],
            &[("equation", string("bik,bkj->bij"))],
            1,
        );
        assert_eq!(out_type(&m, 0), "float32[b,i,j]");
        let (m, _) = run_one(
            12,
            "Einsum",
            &[f32_in(&["3", "4"])],
            &[("equation", string("ij"))],
            1,
        );
        assert_eq!(out_type(&m, 0), "float32[3,4]");
        let (m, _) = run_one(
            12,
            "Einsum",
            &[f32_in(&["3", "3"])],
            &[("equation", string("ii"))],
            1,
        );
        assert_eq!(out_type(&m, 0), "float32[]");
    }
}
