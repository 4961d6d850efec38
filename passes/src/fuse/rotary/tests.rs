use super::*;
use crate::fuse::testutil::Builder;

/// How the split point of rotate_half is written.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Split {
    /// Constants (after folding).
    Constant,
    /// One computed value read by both Slices.
    Shared,
    /// Two Unsqueezes of one computed value (the exporter's form before CSE).
    Unsqueezes,
}

/// One way of writing `x·cos + rotate_half(x)·sin` on x [1, 2, 3, 8].
#[derive(Clone, Debug)]
struct Rope {
    split: Split,
    /// Operands of every Mul and of the Add swapped.
    swapped: bool,
    /// The axes constant as `3` rather than `-1`.
    positive_axis: bool,
    /// The halves in the wrong order (`Concat(x1, Neg(x2))`).
    wrong_order: bool,
    /// The split point (4 is half of 8).
    half: i64,
    /// Where the second half ends.
    end: i64,
}

impl Default for Rope {
    fn default() -> Rope {
        Rope {
            split: Split::Constant,
            swapped: false,
            positive_axis: false,
            wrong_order: false,
            half: 4,
            end: i64::MAX,
        }
    }
}

fn ints(b: &mut Builder, v: &[i64]) -> ValueRef {
    let name = format!("i{}", b.model.graph.node_count());
    b.ints(&name, v.to_vec())
}

fn mul(b: &mut Builder, p: ValueRef, q: ValueRef, swapped: bool) -> ValueRef {
    if swapped {
        b.op("Mul", &[q, p], vec![])
    } else {
        b.op("Mul", &[p, q], vec![])
    }
}

/// The pattern; returns the builder and the final Add.
fn rope(r: &Rope) -> (Builder, ValueRef) {
    let mut b = Builder::new(17);
    let x = b.input("q", &[1, 2, 3, 8]);
    let cos = b.input("cos", &[1, 1, 3, 8]);
    let sin = b.input("sin", &[1, 1, 3, 8]);
    let (end1, start2) = match r.split {
        Split::Constant => (ints(&mut b, &[r.half]), ints(&mut b, &[r.half])),
        Split::Shared => {
            let h = b.input("h", &[1]);
            (h, h)
        }
        Split::Unsqueezes => {
            let h = b.input("h", &[]);
            let a0 = ints(&mut b, &[0]);
            let a1 = ints(&mut b, &[0]);
            let u0 = b.op("Unsqueeze", &[h, a0], vec![]);
            let u1 = b.op("Unsqueeze", &[h, a1], vec![]);
            (u0, u1)
        }
    };
    let axis = if r.positive_axis { 3 } else { -1 };
    let zero = ints(&mut b, &[0]);
    let axes = ints(&mut b, &[axis]);
    let steps = ints(&mut b, &[1]);
    let x1 = b.op("Slice", &[x, zero, end1, axes, steps], vec![]);
    let big = ints(&mut b, &[r.end]);
    let axes2 = ints(&mut b, &[axis]);
    let x2 = b.op("Slice", &[x, start2, big, axes2], vec![]);
    let neg = b.op("Neg", &[x2], vec![]);
    let halves = if r.wrong_order { [x1, neg] } else { [neg, x1] };
    let rotated = b.op("Concat", &halves, vec![("axis", AttrValue::Int(-1))]);
    let direct = mul(&mut b, x, cos, r.swapped);
    let turned = mul(&mut b, rotated, sin, r.swapped);
    let y = if r.swapped {
        b.op("Add", &[turned, direct], vec![])
    } else {
        b.op("Add", &[direct, turned], vec![])
    };
    b.output(y);
    (b, y)
}

fn marks(b: &Builder, v: ValueRef) -> Vec<(String, String)> {
    b.model.graph[v.node]
        .metadata_props
        .iter()
        .map(|e| (e.key.clone(), e.value.clone()))
        .collect()
}

#[test]
fn notes_the_rotate_half_form() {
    let mut cases = Vec::new();
    for split in [Split::Constant, Split::Shared, Split::Unsqueezes] {
        for swapped in [false, true] {
            cases.push(Rope {
                split,
                swapped,
                ..Rope::default()
            });
        }
    }
    cases.push(Rope {
        positive_axis: true,
        ..Rope::default()
    });
    for r in cases {
        let (mut b, y) = rope(&r);
        let nodes = b.model.graph.node_count();
        assert_eq!(b.run(&NoteRotary).get("rotary noted"), 1, "{r:?}");
        assert_eq!(b.model.graph.node_count(), nodes, "computation unchanged");
        assert_eq!(
            marks(&b, y),
            vec![
                (PATTERN_KEY.to_string(), "Rotary".to_string()),
                (ROTARY_KEY.to_string(), "x=q;cos=cos;sin=sin".to_string()),
            ],
            "{r:?}"
        );
        assert!(
            b.run(&NoteRotary).is_empty(),
            "a second run marks nothing new"
        );
    }
}

#[test]
fn ignores_what_is_not_rotate_half() {
    for r in [
        Rope {
            wrong_order: true,
            ..Rope::default()
        },
        Rope {
            half: 3,
            ..Rope::default()
        },
    ] {
        let (mut b, _) = rope(&r);
        assert!(b.run(&NoteRotary).is_empty(), "{r:?}");
    }
    // A rotated half that is also read elsewhere.
    let (mut b, y) = rope(&Rope::default());
    let concat = b
        .model
        .graph
        .nodes()
        .find(|(_, n)| n.op_type() == "Concat")
        .map(|(i, _)| ValueRef::new(i, 0))
        .unwrap();
    b.output(concat);
    assert!(b.run(&NoteRotary).is_empty());
    assert!(marks(&b, y).is_empty());
    // Slices of another tensor than the one multiplied by cos.
    let mut b = Builder::new(17);
    let x = b.input("q", &[1, 2, 3, 8]);
    let other = b.input("k", &[1, 2, 3, 8]);
    let cos = b.input("cos", &[1, 1, 3, 8]);
    let sin = b.input("sin", &[1, 1, 3, 8]);
    let (z, h, e, a) = (
        ints(&mut b, &[0]),
        ints(&mut b, &[4]),
        ints(&mut b, &[8]),
        ints(&mut b, &[-1]),
    );
    let x1 = b.op("Slice", &[other, z, h, a], vec![]);
    let x2 = b.op("Slice", &[other, h, e, a], vec![]);
    let neg = b.op("Neg", &[x2], vec![]);
    let rot = b.op("Concat", &[neg, x1], vec![("axis", AttrValue::Int(-1))]);
    let d = b.op("Mul", &[x, cos], vec![]);
    let t = b.op("Mul", &[rot, sin], vec![]);
    let y = b.op("Add", &[d, t], vec![]);
    b.output(y);
    assert!(b.run(&NoteRotary).is_empty());
    // A second half that stops short of the end.
    let (mut b, _) = rope(&Rope {
        end: 6,
        ..Rope::default()
    });
    assert!(b.run(&NoteRotary).is_empty());
}
