//! `cancel-casts`: Cast pairs that give back their input, and Casts to the type a value
//! already has.

use crate::cleanup::bypass;
use crate::ir::{Graph, Model, NodeIndex};
use crate::pipeline::{Changes, Pass, PassError};
use crate::tensor::DataType;

use super::types::{cast_to, elem_type};

/// Removes consecutive Casts that cancel (X:T -> Cast(wider) -> Cast(T) is X; also a Cast to the type it already has).
///
/// "Wider" means every value of T is exactly a value of the middle type (float16 → float32,
/// int8 → int32, uint8 → bfloat16, …), so the pair is the identity. A lossy pair such as
/// float32 → float16 → float32 is a rounding and stays. The first Cast stays while anything
/// else reads it; a removed Cast whose output is a graph output hands its name to X when X
/// is an operator's output, and stays otherwise (an interface name never changes).
///
/// Types are the declared ones (constants' and Casts' own, else value_info): run
/// `infer-shapes` first on a model that declares few; a value of unknown type is left alone.
///
/// Changes: `cancelled pairs`, `no-op casts`.
#[derive(Debug, Clone, Copy, Default)]
pub struct CancelCasts;

impl Pass for CancelCasts {
    fn name(&self) -> &'static str {
        "cancel-casts"
    }

    fn run(&self, model: &mut Model) -> Result<Changes, PassError> {
        let mut changes = Changes::none();
        model.graph.try_for_each_graph_mut::<PassError>(&mut |g| {
            changes.merge(&cancel_in(g));
            Ok(())
        })?;
        Ok(changes)
    }
}

fn cancel_in(graph: &mut Graph) -> Changes {
    let mut changes = Changes::none();
    // Removing one pair can make the next one adjacent; each round removes nodes, so this
    // ends, and the cap bounds it regardless.
    for _ in 0..graph.node_count().max(1) {
        let mut changed = false;
        for cast in graph.topo_order() {
            if let Some(what) = cancel_one(graph, cast) {
                changes.add(what, 1);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    changes
}

/// Removes Cast node `cast` if it is a no-op or undoes the Cast before it; says which.
fn cancel_one(graph: &mut Graph, cast: NodeIndex) -> Option<&'static str> {
    let to = cast_to(graph.node(cast)?)?;
    let mid = graph.input(cast, 0)?;
    if elem_type(graph, mid) == Some(to) {
        return bypass(graph, cast, 0, mid).then_some("no-op casts");
    }
    let wide = cast_to(graph.node(mid.node)?)?;
    let x = graph.input(mid.node, 0)?;
    if elem_type(graph, x) != Some(to) || !exactly_representable(to, wide) {
        return None;
    }
    if !bypass(graph, cast, 0, x) {
        return None;
    }
    if !graph.is_used(mid) {
        graph.remove_node(mid.node);
    }
    Some("cancelled pairs")
}

/// True when every value of `from` is exactly a value of `to`, so `from → to → from` is
/// the identity.
pub(crate) fn exactly_representable(from: DataType, to: DataType) -> bool {
    use DataType::*;
    if from == to {
        return true;
    }
    // Significant bits of a float type (the implicit leading one included), and bits an
    // integer's magnitude needs (the sign bit excluded).
    let mantissa = |t: DataType| match t {
        Float16 => Some(11),
        Bfloat16 => Some(8),
        Float => Some(24),
        Double => Some(53),
        _ => None,
    };
    let int = |t: DataType| match t {
        Int8 => Some((8, true)),
        Int16 => Some((16, true)),
        Int32 => Some((32, true)),
        Int64 => Some((64, true)),
        Uint8 => Some((8, false)),
        Uint16 => Some((16, false)),
        Uint32 => Some((32, false)),
        Uint64 => Some((64, false)),
        _ => None,
    };
    match (from, to) {
        // 0 and 1 are exact in every numeric type, and casting them back to bool gives them back.
        (Bool, _) => int(to).is_some() || mantissa(to).is_some(),
        // float16 and bfloat16 are both subsets of float32 (8-bit exponent ≥ 5-bit).
        (Float16 | Bfloat16, Float | Double) | (Float, Double) => true,
        _ => match (int(from), int(to), mantissa(to)) {
            (Some((fb, fs)), Some((tb, ts)), _) => tb > fb && (ts || !fs),
            (Some((fb, fs)), None, Some(m)) => fb - usize::from(fs) <= m,
            _ => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn representability_table() {
        use DataType::*;
        for (from, to) in [
            (Float16, Float),
            (Bfloat16, Float),
            (Float, Double),
            (Float16, Double),
            (Int8, Int32),
            (Uint8, Int16),
            (Uint8, Bfloat16),
            (Int8, Float16),
            (Int16, Float),
            (Int32, Double),
            (Uint32, Int64),
            (Bool, Int64),
            (Bool, Float16),
        ] {
            assert!(exactly_representable(from, to), "{from} in {to}");
        }
        for (from, to) in [
            (Float, Float16),
            (Float, Bfloat16),
            (Float16, Bfloat16),
            (Bfloat16, Float16),
            (Double, Float),
            (Int32, Float),
            (Int16, Float16),
            (Int64, Double),
            (Int8, Uint16),
            (Uint16, Int16),
            (Uint16, Bfloat16),
            (Float, Int32),
            (Int32, Bool),
        ] {
            assert!(!exactly_representable(from, to), "{from} not in {to}");
        }
    }
}
