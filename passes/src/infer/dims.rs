//! A small algebra on dims: numpy broadcasting, products and quotients that keep symbolic
//! names where the result is provably that name, and equal-dim unification.
//!
//! Nothing here invents a name: a dim that is computed and not provably a known number or an
//! existing name is [`Dim::Unknown`].

use crate::ir::Dim;

/// Broadcasts two dims (numpy rules); `None` when they cannot broadcast.
pub fn broadcast_dim(a: &Dim, b: &Dim) -> Option<Dim> {
    Some(match (a, b) {
        (Dim::Known(1), d) | (d, Dim::Known(1)) => d.clone(),
        (Dim::Known(x), Dim::Known(y)) if x != y => return None,
        // A fixed size other than 1 wins: the other side must be it or 1.
        (Dim::Known(x), _) | (_, Dim::Known(x)) => Dim::Known(*x),
        (Dim::Symbolic(x), Dim::Symbolic(y)) if x == y => a.clone(),
        // Two different names, or a name and an unknown: either may be 1.
        _ => Dim::Unknown,
    })
}

/// Broadcasts shapes (numpy rules, aligned on the right); `None` when they cannot.
pub fn broadcast(shapes: &[&[Dim]]) -> Option<Vec<Dim>> {
    let rank = shapes.iter().map(|s| s.len()).max()?;
    let mut out = vec![Dim::Known(1); rank];
    for s in shapes {
        let offset = rank - s.len();
        for (i, d) in s.iter().enumerate() {
            out[offset + i] = broadcast_dim(&out[offset + i], d)?;
        }
    }
    Some(out)
}

/// Two dims that the operator requires to be equal: the more informative one.
pub fn unify(a: &Dim, b: &Dim) -> Dim {
    match (a, b) {
        (Dim::Known(_), _) => a.clone(),
        (_, Dim::Known(_)) => b.clone(),
        (Dim::Symbolic(_), _) => a.clone(),
        _ => b.clone(),
    }
}

/// A product of dims: a fixed factor times named factors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Product {
    /// The product of the fixed dims.
    pub coef: i64,
    /// The names, sorted (repeats kept).
    pub names: Vec<String>,
}

impl Product {
    /// The product as a dim: a number, or a single name with factor 1, else unknown.
    pub fn to_dim(&self) -> Dim {
        match self.names.as_slice() {
            [] => Dim::Known(self.coef),
            [name] if self.coef == 1 => Dim::Symbolic(name.clone()),
            _ if self.coef == 0 => Dim::Known(0),
            _ => Dim::Unknown,
        }
    }
}

/// The product of `dims`; `None` if any is unknown (or the fixed part overflows).
pub fn product(dims: &[Dim]) -> Option<Product> {
    let mut p = Product {
        coef: 1,
        names: Vec::new(),
    };
    for d in dims {
        match d {
            Dim::Known(n) => p.coef = p.coef.checked_mul(*n)?,
            Dim::Symbolic(s) => p.names.push(s.clone()),
            Dim::Unknown => return None,
        }
    }
    p.names.sort_unstable();
    Some(p)
}

/// The product of `dims` as one dim.
pub fn product_dim(dims: &[Dim]) -> Dim {
    product(dims).map_or(Dim::Unknown, |p| p.to_dim())
}

/// `num / den` when it is provably a number or one name (names cancel pairwise).
pub fn quotient(num: &Product, den: &Product) -> Dim {
    let mut names = num.names.clone();
    for n in &den.names {
        match names.iter().position(|m| m == n) {
            Some(i) => {
                names.remove(i);
            }
            None => return Dim::Unknown,
        }
    }
    if den.coef == 0 || num.coef % den.coef != 0 {
        return Dim::Unknown;
    }
    Product {
        coef: num.coef / den.coef,
        names,
    }
    .to_dim()
}

/// `d + delta`: exact for numbers, the same name for `delta == 0`, else unknown.
pub fn add(d: &Dim, delta: i64) -> Dim {
    match d {
        Dim::Known(n) => n.checked_add(delta).map_or(Dim::Unknown, Dim::Known),
        _ if delta == 0 => d.clone(),
        _ => Dim::Unknown,
    }
}

/// `d * factor`: exact for numbers, the same name for `factor == 1`, 0 for 0, else unknown.
pub fn scale(d: &Dim, factor: i64) -> Dim {
    match d {
        _ if factor == 1 => d.clone(),
        _ if factor == 0 => Dim::Known(0),
        Dim::Known(n) => n.checked_mul(factor).map_or(Dim::Unknown, Dim::Known),
        _ => Dim::Unknown,
    }
}

/// The most axes a tensor is taken to have (a larger "rank" is a corrupt model).
pub const MAX_RANK: i64 = 1 << 12;

/// The length of a short 1-D operand (axes, pads, a shape vector) whose size is `d`.
pub fn small_len(d: &Dim) -> Option<usize> {
    match d {
        Dim::Known(n) if (0..=MAX_RANK).contains(n) => Some(*n as usize),
        _ => None,
    }
}

/// The number a dim is, if fixed.
pub fn known(d: &Dim) -> Option<i64> {
    match d {
        Dim::Known(n) => Some(*n),
        _ => None,
    }
}

/// An axis in `[-rank, rank)` as an index; `None` out of range.
pub fn axis(a: i64, rank: usize) -> Option<usize> {
    let r = rank as i64;
    let a = if a < 0 { a + r } else { a };
    (0..r).contains(&a).then_some(a as usize)
}

/// Axes in `[-rank, rank)` as sorted, deduplicated indices; `None` if any is out of range.
pub fn axes(list: &[i64], rank: usize) -> Option<Vec<usize>> {
    let mut v = list
        .iter()
        .map(|&a| axis(a, rank))
        .collect::<Option<Vec<usize>>>()?;
    v.sort_unstable();
    v.dedup();
    (v.len() == list.len()).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: &str) -> Dim {
        Dim::Symbolic(n.into())
    }
    fn k(n: i64) -> Dim {
        Dim::Known(n)
    }

    #[test]
    fn broadcasting_keeps_names_only_when_provable() {
        let a = [s("batch"), k(1), s("seq"), k(768)];
        let b = [k(12), s("seq"), k(1)];
        assert_eq!(
            broadcast(&[&a, &b]),
            Some(vec![s("batch"), k(12), s("seq"), k(768)])
        );
        assert_eq!(broadcast_dim(&s("a"), &s("b")), Some(Dim::Unknown));
        assert_eq!(broadcast_dim(&s("a"), &Dim::Unknown), Some(Dim::Unknown));
        assert_eq!(broadcast_dim(&k(1), &Dim::Unknown), Some(Dim::Unknown));
        assert_eq!(broadcast_dim(&k(3), &Dim::Unknown), Some(k(3)));
        assert_eq!(broadcast_dim(&k(3), &k(4)), None);
        assert_eq!(broadcast(&[&[], &[k(2)]]), Some(vec![k(2)]));
    }

    #[test]
    fn quotients_cancel_names() {
        let num = product(&[s("batch"), s("seq"), k(768)]).unwrap();
        assert_eq!(
            quotient(&num, &product(&[s("batch"), s("seq"), k(12)]).unwrap()),
            k(64)
        );
        assert_eq!(
            quotient(&num, &product(&[s("batch"), k(768)]).unwrap()),
            s("seq")
        );
        assert_eq!(quotient(&num, &product(&[k(768)]).unwrap()), Dim::Unknown);
        assert_eq!(
            quotient(&num, &product(&[s("other")]).unwrap()),
            Dim::Unknown
        );
        assert_eq!(
            quotient(&num, &product(&[s("batch"), k(7)]).unwrap()),
            Dim::Unknown
        );
        assert!(product(&[k(2), Dim::Unknown]).is_none());
        assert_eq!(product_dim(&[k(2), k(3)]), k(6));
        assert_eq!(product_dim(&[k(1), s("n")]), s("n"));
        assert_eq!(product_dim(&[k(2), s("n")]), Dim::Unknown);
    }

    #[test]
    fn axes_normalize_and_reject_out_of_range() {
        assert_eq!(axis(-1, 3), Some(2));
        assert_eq!(axis(3, 3), None);
        assert_eq!(axes(&[0, -1], 3), Some(vec![0, 2]));
        assert_eq!(axes(&[0, -3], 3), None);
        assert_eq!(add(&s("n"), 0), s("n"));
        assert_eq!(add(&s("n"), 1), Dim::Unknown);
        assert_eq!(scale(&k(3), 2), k(6));
    }
}
