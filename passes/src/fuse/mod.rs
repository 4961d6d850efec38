//! Operator fusions, each a pattern: match a small subgraph, prove the rewrite safe (the
//! intermediate values have no other readers and are not graph outputs, constants have the
//! shapes the rewrite needs, the opset has the fused operator), then replace it. A pattern
//! that cannot be proved safe is left alone.
//!
//! Rewrites: [`FuseConvBn`] (`fuse-conv-bn`), [`FuseMatMulAdd`] (`fuse-matmul-add`),
//! [`FoldBias`] (`fold-bias`), [`FuseLayerNorm`] (`fuse-layernorm`), [`FuseRmsNorm`]
//! (`fuse-rmsnorm`), [`FuseGelu`] (`fuse-gelu`). Notes that leave the computation unchanged and mark nodes for later stages
//! (see each module for its metadata key): [`NoteActivations`] (`note-activations`),
//! [`NoteSilu`] (`note-silu`), [`NoteRotary`] (`note-rotary`), [`FindAttention`]
//! (`find-attention`).
//!
//! Every pass also works inside subgraphs (If / Loop / Scan bodies).

mod activation;
mod attention;
mod bias;
mod conv_bn;
mod gelu;
mod gemm;
mod layernorm;
mod pattern;
mod rmsnorm;
mod rotary;
mod silu;

#[cfg(test)]
mod testutil;

pub use activation::{NoteActivations, FUSED_ACTIVATION_KEY, FUSED_ACTIVATION_OUTPUT_KEY};
pub use attention::{FindAttention, ATTENTION_KEY};
pub use bias::FoldBias;
pub use conv_bn::FuseConvBn;
pub use gelu::FuseGelu;
pub use gemm::FuseMatMulAdd;
pub use layernorm::FuseLayerNorm;
pub use rmsnorm::{decomposed_rmsnorms, FuseRmsNorm, RmsNormUnit};
pub use rotary::{NoteRotary, ROTARY_KEY};
pub use silu::{NoteSilu, SILU_KEY};

use crate::pipeline::Pass;

/// What the fusions may emit beyond the default ONNX domain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FuseOptions {
    /// Allow ONNX Runtime's own operators (`com.microsoft` Gelu / FastGelu, and the
    /// default-domain SimplifiedLayerNormalization ONNX Runtime registers) where the model's
    /// opset is too old for the standard one.
    pub allow_contrib: bool,
}

/// Every fusion, in the order they should run: weight folds first (so a Conv freed of its
/// BatchNormalization can take a bias and be noted with its activation), then the
/// transformer patterns, then the notes, which look at the graph the rewrites left.
pub fn fusion_passes(opts: FuseOptions) -> Vec<Box<dyn Pass>> {
    vec![
        Box::new(FuseConvBn),
        Box::new(FuseMatMulAdd),
        Box::new(FoldBias),
        Box::new(FuseLayerNorm),
        Box::new(FuseRmsNorm {
            allow_contrib: opts.allow_contrib,
        }),
        Box::new(FuseGelu {
            allow_contrib: opts.allow_contrib,
        }),
        Box::new(NoteActivations),
        Box::new(NoteSilu),
        Box::new(NoteRotary),
        Box::new(FindAttention),
    ]
}
