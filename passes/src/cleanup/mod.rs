//! Cleanup passes: dead code, Identity/Dropout, no-op operators, Transpose pairs, duplicate
//! constants and common subexpressions.
//!
//! Every pass keeps the graph's interface (input and output names and order) and recurses
//! into subgraphs, where body inputs and outputs are interface too.

pub mod cse;
pub mod dead_code;
pub mod dedup_constants;
pub mod identity;
pub mod noop;
pub mod transpose_pairs;

mod bypass;
mod util;

#[cfg(test)]
mod test_util;

pub use cse::CommonSubexpressions;
pub use dead_code::DeadCode;
pub use dedup_constants::DedupConstants;
pub use identity::RemoveIdentity;
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
