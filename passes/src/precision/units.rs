//! Decomposed RMSNorms pinned as a unit.
//!
//! When the pinned op types name a fused RMSNorm (`RMSNormalization`, or ONNX Runtime's
//! `SimplifiedLayerNormalization`), an RMSNorm left decomposed (the fusion off, or a target
//! that takes neither op) is pinned too, as one unit with the numerics of a fused low-float
//! kernel that computes in float32 inside (stash_type 1, as ONNX Runtime's float16 kernels do):
//! its input and its weight are rounded to the low float, its output is rounded to the low
//! float, and the ops in between stay float32. Pinning each op on its own would compute `x²`
//! in float16, which overflows beyond |x| ≈ 256 (hidden states of real LLMs go that far).
//! The quantizer leaves the unit's ops in float (see [`unit_nodes`]), so no Q/DQ lands inside.
//! Every node of a pinned unit is marked with [`UNIT_KEY`]; pinning by op type then leaves it
//! alone.

use std::collections::{BTreeSet, HashSet};

use crate::fuse::decomposed_rmsnorms;
use kiln_proto::onnx::StringStringEntryProto;

use crate::ir::{Graph, Node, NodeIndex};

/// Op types that, pinned, also pin every decomposed RMSNorm as a unit.
pub const RMSNORM_OPS: &[&str] = &["RMSNormalization", "SimplifiedLayerNormalization"];

/// Metadata key on every node of a decomposed RMSNorm pinned as a unit (value: the low float
/// its boundary is rounded to).
pub const UNIT_KEY: &str = "kiln.pinned_unit";

/// True when `ops` names a fused RMSNorm, so decomposed ones are pinned as units.
pub fn pins_rmsnorm(ops: &BTreeSet<String>) -> bool {
    RMSNORM_OPS.iter().any(|op| ops.contains(*op))
}

/// The nodes of `g`'s decomposed RMSNorms when `ops` pins them as units (empty otherwise):
/// what the quantizer leaves in float.
pub fn unit_nodes(g: &Graph, ops: &BTreeSet<String>) -> HashSet<NodeIndex> {
    if !pins_rmsnorm(ops) {
        return HashSet::new();
    }
    decomposed_rmsnorms(g)
        .into_iter()
        .flat_map(|u| u.nodes)
        .collect()
}

/// True when `node` belongs to a unit pinned earlier.
pub fn in_pinned_unit(node: &Node) -> bool {
    node.metadata_props.iter().any(|e| e.key == UNIT_KEY)
}

/// Marks `node` as part of a pinned unit (`value`: how it is pinned).
pub(crate) fn mark_unit(node: &mut Node, value: &str) {
    node.metadata_props.retain(|e| e.key != UNIT_KEY);
    node.metadata_props.push(StringStringEntryProto {
        key: UNIT_KEY.to_string(),
        value: value.to_string(),
    });
}
