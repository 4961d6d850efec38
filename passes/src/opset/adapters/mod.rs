//! The adapters: one function per (operator, opset step) whose signature or meaning changed.
//!
//! An adapter rewrites one node written for opset `step - 1` into the form `step` gives the
//! same meaning; the pass applies them step by step, so a node crossing several steps goes
//! through each adapter in turn (Upsample-7 → Upsample-9 → Resize-10 → Resize-11 → Resize-13).

mod axes;
mod misc;
mod norm;
mod pad_clip;
mod resize;
mod softmax;

#[cfg(test)]
pub(crate) mod testing;

use super::rewrite::Cx;
use crate::ir::NodeIndex;
use crate::pipeline::PassError;

/// Rewrites one node for opset `step`.
pub(crate) type AdaptFn = fn(&mut Cx<'_>, NodeIndex, i64) -> Result<(), PassError>;

/// One entry of the adapter table.
pub(crate) struct Adapter {
    /// The operator.
    pub op: &'static str,
    /// The opset at which its signature changed.
    pub step: i64,
    /// The rewrite.
    pub run: AdaptFn,
}

const fn a(op: &'static str, step: i64, run: AdaptFn) -> Adapter {
    Adapter { op, step, run }
}

/// Every adapter, by operator and step (see the table in [`crate::opset`]).
pub(crate) const ADAPTERS: &[Adapter] = &[
    a("Slice", 10, axes::slice_10),
    a("TopK", 10, axes::topk_10),
    a("Squeeze", 13, axes::axes_to_input),
    a("Unsqueeze", 13, axes::axes_to_input),
    a("ReduceSum", 13, axes::axes_to_input),
    a("ReduceMean", 18, axes::axes_to_input),
    a("ReduceMax", 18, axes::axes_to_input),
    a("ReduceMin", 18, axes::axes_to_input),
    a("ReduceProd", 18, axes::axes_to_input),
    a("ReduceL1", 18, axes::axes_to_input),
    a("ReduceL2", 18, axes::axes_to_input),
    a("ReduceLogSum", 18, axes::axes_to_input),
    a("ReduceLogSumExp", 18, axes::axes_to_input),
    a("ReduceSumSquare", 18, axes::axes_to_input),
    a("Split", 13, axes::split_13),
    a("Split", 18, axes::split_18),
    a("DFT", 20, axes::dft_20),
    a("Pad", 11, pad_clip::pad_11),
    a("Clip", 11, pad_clip::clip_11),
    a("Dropout", 10, pad_clip::dropout_10),
    a("Dropout", 12, pad_clip::dropout_12),
    a("Upsample", 9, resize::upsample_9),
    a("Upsample", 10, resize::upsample_10),
    a("Resize", 11, resize::resize_11),
    a("Resize", 13, resize::resize_13),
    a("Softmax", 13, softmax::softmax_13),
    a("LogSoftmax", 13, softmax::softmax_13),
    a("Hardmax", 13, softmax::softmax_13),
    a("BatchNormalization", 9, norm::batchnorm_9),
    a("BatchNormalization", 14, norm::batchnorm_14),
    a("GroupNormalization", 21, norm::groupnorm_21),
    a("Scatter", 11, misc::scatter_11),
    a("RoiAlign", 16, misc::roialign_16),
    a("GridSample", 20, misc::gridsample_20),
    a("Scan", 9, misc::scan_9),
];

/// The adapter for `op` at `step`, if its signature changed there.
pub(crate) fn find(op: &str, step: i64) -> Option<&'static Adapter> {
    ADAPTERS.iter().find(|a| a.op == op && a.step == step)
}
