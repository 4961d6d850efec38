//! Resource limits on what a model may declare, each overridable by an environment variable.
//!
//! A compiler in CI reads models from anywhere, so a model is measured before it is believed:
//! [`scan`] walks the protobuf wire format (no allocation) before prost decodes it, and
//! [`check_tensors`] sums tensor payloads once external data is resolved. Every refusal names
//! the limit and the variable that raises it.

mod scan;

use std::path::Path;

use crate::error::ProtoError;
use crate::onnx::ModelProto;
use crate::walk::try_for_each_tensor;

pub use scan::{scan, WireCounts};

/// Environment variable: the most tensor payload bytes a model may hold in total.
pub const ENV_TENSOR_BYTES: &str = "KILN_MAX_TENSOR_BYTES";
/// Environment variable: the most bytes typed tensor fields may expand to when decoded.
pub const ENV_DECODED_BYTES: &str = "KILN_MAX_DECODED_BYTES";
/// Environment variable: the most bytes one element of a string tensor may hold.
pub const ENV_STRING_BYTES: &str = "KILN_MAX_STRING_BYTES";
/// Environment variable: the most nodes a model may have, subgraphs and functions included.
pub const ENV_NODES: &str = "KILN_MAX_NODES";
/// Environment variable: how deep subgraphs (If/Loop/Scan bodies) may nest.
pub const ENV_SUBGRAPH_DEPTH: &str = "KILN_MAX_SUBGRAPH_DEPTH";

/// Caps on what a model may declare; [`Limits::default`] is what Kiln uses unless told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Total tensor payload bytes (embedded, external and string data together).
    pub max_tensor_bytes: u64,
    /// Bytes the typed fields (`float_data`, `int64_data`, …) decode to; one varint byte can
    /// become eight, so this bounds the allocation decoding makes before anything else runs.
    pub max_decoded_bytes: u64,
    /// Bytes of one string tensor element.
    pub max_string_bytes: u64,
    /// Nodes in the whole model.
    pub max_nodes: u64,
    /// Subgraph nesting depth (the main graph is depth 0).
    pub max_subgraph_depth: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_tensor_bytes: 16 << 30,
            max_decoded_bytes: 4 << 30,
            max_string_bytes: 64 << 20,
            // Decoded and built into Kiln's graph a node costs about 1.2 KB: a million nodes is
            // about 1.2 GB, an order of magnitude more than the largest real exports.
            max_nodes: 1_000_000,
            // Protobuf decoding itself stops at 100 nested messages (about 30 subgraph
            // levels), so a higher default could never be reached from a file.
            max_subgraph_depth: 16,
        }
    }
}

impl Limits {
    /// The defaults, with each `KILN_MAX_*` variable that is set taking its place.
    pub fn from_env() -> Result<Limits, ProtoError> {
        let mut limits = Limits::default();
        for (env, slot) in [
            (ENV_TENSOR_BYTES, &mut limits.max_tensor_bytes),
            (ENV_DECODED_BYTES, &mut limits.max_decoded_bytes),
            (ENV_STRING_BYTES, &mut limits.max_string_bytes),
            (ENV_NODES, &mut limits.max_nodes),
            (ENV_SUBGRAPH_DEPTH, &mut limits.max_subgraph_depth),
        ] {
            if let Some(value) = std::env::var_os(env) {
                let text = value.to_string_lossy();
                *slot = text.trim().parse().map_err(|_| ProtoError::BadLimit {
                    env,
                    value: text.into_owned(),
                })?;
            }
        }
        Ok(limits)
    }

    /// Refuses what the wire scan found over the limits.
    pub fn check_counts(&self, counts: &WireCounts, path: &Path) -> Result<(), ProtoError> {
        if counts.depth_exceeded {
            return Err(over(
                path,
                format!(
                    "a subgraph nesting depth of more than {}",
                    self.max_subgraph_depth
                ),
                self.max_subgraph_depth,
                ENV_SUBGRAPH_DEPTH,
                self.max_subgraph_depth.saturating_mul(2).max(1),
            ));
        }
        if counts.nodes > self.max_nodes {
            return Err(over(
                path,
                format!("a node count of {}", counts.nodes),
                self.max_nodes,
                ENV_NODES,
                counts.nodes,
            ));
        }
        if counts.decoded_bytes > self.max_decoded_bytes {
            return Err(over(
                path,
                format!(
                    "typed tensor data decoding to {} bytes",
                    counts.decoded_bytes
                ),
                self.max_decoded_bytes,
                ENV_DECODED_BYTES,
                counts.decoded_bytes,
            ));
        }
        Ok(())
    }
}

/// The one message shape every limit uses.
fn over(path: &Path, what: String, limit: u64, env: &str, need: u64) -> ProtoError {
    ProtoError::Limit {
        path: path.to_path_buf(),
        message: format!("{what} exceeds the limit of {limit} (raise it with {env}={need})"),
    }
}

/// Refuses a resolved model whose tensors hold more bytes than allowed, or a string element
/// longer than allowed.
pub fn check_tensors(model: &ModelProto, path: &Path, limits: &Limits) -> Result<(), ProtoError> {
    let mut total: u64 = 0;
    try_for_each_tensor(model, |t, site| {
        let mut bytes = t.raw_data.len() as u64;
        for s in &t.string_data {
            let len = s.len() as u64;
            if len > limits.max_string_bytes {
                let name = site.describe(t);
                return Err(over(
                    path,
                    format!("string tensor '{name}' has an element of {len} bytes, which"),
                    limits.max_string_bytes,
                    ENV_STRING_BYTES,
                    len,
                ));
            }
            bytes = bytes.saturating_add(len);
        }
        // Typed fields at their in-memory width (decoding was already capped by the scan).
        let narrow = (t.float_data.len() + t.int32_data.len()) as u64;
        let wide = (t.int64_data.len() + t.double_data.len() + t.uint64_data.len()) as u64;
        bytes = bytes
            .saturating_add(narrow.saturating_mul(4))
            .saturating_add(wide.saturating_mul(8));
        total = total.saturating_add(bytes);
        Ok(())
    })?;
    if total > limits.max_tensor_bytes {
        return Err(over(
            path,
            format!("tensor data of {total} bytes"),
            limits.max_tensor_bytes,
            ENV_TENSOR_BYTES,
            total,
        ));
    }
    Ok(())
}
