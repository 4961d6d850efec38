//! `note-silu`: `Mul(x, Sigmoid(x))` (either operand order, the Sigmoid read only by the Mul)
//! is recognized as SiLU / Swish and noted; the computation is unchanged.
//!
//! The Mul node gets `metadata_props` entry `kiln.pattern = SiLU` (see [`SILU_KEY`]); the
//! count reports patterns marked by this run.

use crate::ir::{Graph, Model, NodeIndex};
use crate::pipeline::{Changes, Pass, PassError};

use super::pattern::{each_graph, is_op, operators, other_operand, out, set_mark, sole_consumer};

/// Metadata key of pattern notes; SiLU multiplies are marked `kiln.pattern = SiLU`.
pub const SILU_KEY: &str = "kiln.pattern";

/// Notes Sigmoid(x)·x patterns.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoteSilu;

impl Pass for NoteSilu {
    fn name(&self) -> &'static str {
        "note-silu"
    }

    fn run(&self, model: &mut Model) -> Result<Changes, PassError> {
        let n = each_graph(&mut model.graph, &mut |g| {
            let mut n = 0;
            for sig in operators(g) {
                if let Some(mul) = silu_mul(g, sig) {
                    if g.node_mut(mul)
                        .is_some_and(|m| set_mark(m, SILU_KEY, "SiLU"))
                    {
                        n += 1;
                    }
                }
            }
            Ok(n)
        })?;
        let mut changes = Changes::none();
        changes.add("silu noted", n);
        Ok(changes)
    }
}

/// The Mul computing `x · Sigmoid(x)` from the Sigmoid `sig`.
fn silu_mul(g: &Graph, sig: NodeIndex) -> Option<NodeIndex> {
    if !is_op(g, sig, "Sigmoid") {
        return None;
    }
    let x = g.input(sig, 0)?;
    let (mul, _) = sole_consumer(g, out(sig))?;
    (is_op(g, mul, "Mul") && other_operand(g, mul, out(sig)) == Some(x)).then_some(mul)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuse::testutil::Builder;

    #[test]
    fn notes_sigmoid_times_x() {
        for swap in [false, true] {
            let mut b = Builder::new(13);
            let x = b.input("x", &[2, 3]);
            let s = b.op("Sigmoid", &[x], vec![]);
            let y = if swap {
                b.op("Mul", &[s, x], vec![])
            } else {
                b.op("Mul", &[x, s], vec![])
            };
            b.output(y);
            assert_eq!(b.run(&NoteSilu).get("silu noted"), 1);
            assert_eq!(b.model.graph[y.node].metadata_props[0].value, "SiLU");
            assert!(b.run(&NoteSilu).is_empty());
        }
    }

    #[test]
    fn ignores_other_products() {
        // Sigmoid of another value, and a Sigmoid that is also a graph output.
        let mut b = Builder::new(13);
        let x = b.input("x", &[2, 3]);
        let z = b.input("z", &[2, 3]);
        let s = b.op("Sigmoid", &[z], vec![]);
        let y = b.op("Mul", &[x, s], vec![]);
        b.output(y);
        assert!(b.run(&NoteSilu).is_empty());
        let mut b = Builder::new(13);
        let x = b.input("x", &[2, 3]);
        let s = b.op("Sigmoid", &[x], vec![]);
        let y = b.op("Mul", &[x, s], vec![]);
        b.output(y);
        b.output(s);
        assert!(b.run(&NoteSilu).is_empty());
    }
}
