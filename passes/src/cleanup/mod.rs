//! Cleanup passes: dead code, Identity/Dropout, no-op operators, Transpose pairs, duplicate
//! constants, common subexpressions, and IR < 4 initializers listed as inputs.
//!
//! Every pass keeps the graph's interface (input and output names and order) and recurses
//! into subgraphs, where body inputs and outputs are interface too.

pub mod cse;
pub mod dead_code;
pub mod dedup_constants;
pub mod identity;
pub mod legacy_initializers;
pub mod noop;
pub mod transpose_pairs;

mod bypass;
pub(crate) use bypass::bypass;
mod util;

#[cfg(test)]
pub(crate) mod test_util;

pub use cse::CommonSubexpressions;
pub use dead_code::DeadCode;
pub use dedup_constants::DedupConstants;
pub use identity::RemoveIdentity;
pub use legacy_initializers::UnlistInitializers;
pub use noop::RemoveNoop;
pub use transpose_pairs::CancelTransposes;

use crate::pipeline::Pass;

/// The cleanup passes in an order suited to a fixed-point group: rewrites first, then the
/// merges that make equal values share one producer, then dead-code removal.
pub fn cleanup_passes() -> Vec<Box<dyn Pass>> {
    vec![
        Box::new(RemoveIdentity),
        Box::new(RemoveNoop),
        Box::new(CancelTransposes),
        Box::new(DedupConstants),
        Box::new(CommonSubexpressions),
        Box::new(DeadCode),
    ]
}

#[cfg(test)]
mod tests {
    use super::test_util::*;
    use super::*;
    use crate::ir::{AttrValue, Model, Node};
    use crate::pipeline::Pipeline;
    use crate::tensor::Tensor;

    #[test]
    fn passes_reach_a_fixed_point_together() {
        let mut m = Model::new(17);
        let x = input(&mut m.graph, "x");
        let one = init(&mut m.graph, "one", Tensor::scalar(1.0f32));
        let one_again = init(&mut m.graph, "one_again", Tensor::scalar(1.0f32));
        let i = op(&mut m.graph, "Identity", &[x], "i");
        let a = op(&mut m.graph, "Add", &[i, one], "a");
        let b = op(&mut m.graph, "Add", &[i, one_again], "b");
        let ta = op_node(
            &mut m.graph,
            Node::op("Transpose", "", &["ta"]).with_attr("perm", AttrValue::Ints(vec![1, 0])),
            &[a],
        );
        let tb = op_node(
            &mut m.graph,
            Node::op("Transpose", "", &["y"]).with_attr("perm", AttrValue::Ints(vec![1, 0])),
            &[ta],
        );
        let s = op(&mut m.graph, "Mul", &[tb, b], "s");
        let m1 = init(&mut m.graph, "m1", Tensor::scalar(1.0f32));
        let out = op(&mut m.graph, "Mul", &[s, m1], "out");
        op(&mut m.graph, "Neg", &[s], "dead");
        output(&mut m.graph, out);
        let names: Vec<_> = cleanup_passes().iter().map(|p| p.name()).collect();
        assert_eq!(
            names,
            [
                "remove-identity",
                "remove-noop",
                "cancel-transposes",
                "dedup-constants",
                "cse",
                "dead-code"
            ]
        );
        let records = Pipeline::new()
            .verify_each(true)
            .until_fixed_point(cleanup_passes())
            .run(&mut m)
            .unwrap();
        assert!(
            records.iter().all(|r| !r.changes.is_empty()),
            "every pass has something to do: {records:?}"
        );
        // x → Add(x, 1) → Mul(a, a) named `out`; nothing else.
        let ops: Vec<&str> = m
            .graph
            .nodes()
            .filter(|(_, n)| n.is_operator())
            .map(|(_, n)| n.op_type())
            .collect();
        assert_eq!(ops, ["Add", "Mul"]);
        assert_eq!(output_names(&m), vec!["out"]);
        assert_eq!(input_names(&m), vec!["x"]);
    }
}
