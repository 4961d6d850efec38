//! Activations from int8 to uint8 (or uint8 to int8, and the same at 16 bits) by moving every
//! zero point by 2^(bits-1): q' = q + 128 for the same real value, so the arithmetic is
//! unchanged. The Edge TPU runtime does this very conversion on int8 TFLite models; QNN and
//! MLAS prefer unsigned activations.

use crate::ir::{Model, NameSet, NodeIndex, ValueRef};
use crate::pipeline::PassError;
use crate::quant::weights::int_tensor;
use crate::quant::QuantType;

use super::cluster::{activation_clusters, Cluster};
use super::edit::{self, params};
use super::Outcome;

/// Moves every activation of the other signedness at `to`'s width to `to`.
pub fn shift_activations(model: &mut Model, to: QuantType) -> Result<Outcome, PassError> {
    let mut names = NameSet::of(&model.graph);
    let clusters = activation_clusters(&model.graph);
    let g = &mut model.graph;
    let mut out = Outcome::default();
    let mut other_width = 0;
    for c in clusters {
        let c = match c {
            Ok(c) => c,
            Err((q, why)) => {
                let from = params(g, q).and_then(|p| QuantType::from_data_type(p.dtype));
                if from.is_some_and(|f| f != to && f.bits() == to.bits()) {
                    out.kept.push(format!(
                        "{} kept {}: {why}",
                        label(g, q),
                        from.map_or("", |f| f.name())
                    ));
                }
                continue;
            }
        };
        let Some(from) = params(g, c.q).and_then(|p| QuantType::from_data_type(p.dtype)) else {
            out.kept.push(format!(
                "{}: scale or zero point is not a constant",
                label(g, c.q)
            ));
            continue;
        };
        if from == to {
            continue;
        }
        if from.bits() != to.bits() {
            other_width += 1;
            continue;
        }
        match shift(g, &mut names, &c, from, to) {
            Ok(()) => out.changed += 1,
            Err(why) => out
                .kept
                .push(format!("{} kept {}: {why}", label(g, c.q), from.name())),
        }
    }
    g.verify()?;
    if out.changed > 0 {
        let from = if to.is_signed() { "unsigned" } else { "signed" };
        out.notes.push(format!(
            "{} {from} activation tensor(s) → {} (zero points moved by {}; same real values)",
            out.changed,
            to.name(),
            1i64 << (to.bits() - 1)
        ));
    }
    if other_width > 0 {
        out.notes.push(format!(
            "{other_width} activation tensor(s) of another width kept as they are"
        ));
    }
    Ok(out)
}

fn label(g: &crate::ir::Graph, n: NodeIndex) -> String {
    g[n].label(n.index())
}

fn shift(
    g: &mut crate::ir::Graph,
    names: &mut NameSet,
    c: &Cluster,
    from: QuantType,
    to: QuantType,
) -> Result<(), String> {
    let offset = if to.is_signed() {
        -(1i64 << (from.bits() - 1))
    } else {
        1i64 << (from.bits() - 1)
    };
    let nodes: Vec<NodeIndex> = std::iter::once(c.q).chain(c.dqs.iter().copied()).collect();
    // Read everything first: a failure must change nothing.
    let mut zps = Vec::new();
    for &n in &nodes {
        let p = params(g, n).ok_or("a scale or zero point is not a constant")?;
        if QuantType::from_data_type(p.dtype) != Some(from) || g.input(n, 2).is_none() {
            return Err("its Q and DQ disagree on the integer type".into());
        }
        zps.push(p.zero_point);
    }
    for (&n, zp) in nodes.iter().zip(zps) {
        let shifted: Vec<i64> = zp.iter().map(|z| z + offset).collect();
        let old = g.input(n, 2);
        let shape = old
            .and_then(|v| g.constant(v))
            .map(|t| t.shape().to_vec())
            .unwrap_or_default();
        let base = format!(
            "{}_{}",
            old.map_or("zero_point", |v| g.value_name(v)),
            to.name()
        );
        let z = edit::constant(g, names, &base, int_tensor(to, shape, &shifted));
        g.connect(z, n, 2);
        if let Some(old) = old {
            edit::drop_unused(g, &[old]);
        }
    }
    let dtype = to.data_type();
    edit::set_elem_type(g, ValueRef::new(c.q, 0), dtype);
    for &m in &c.moves {
        for s in 0..g[m].outputs.len() {
            edit::set_elem_type(g, ValueRef::new(m, s), dtype);
        }
    }
    Ok(())
}
