//! Opset conversion of the default ONNX domain, upward only (the role of
//! `onnx.version_converter`): [`UpgradeOpset`] rewrites every node whose operator changed
//! signature or meaning between the model's opset and the target, in every subgraph, then
//! sets the model's default-domain import (and raises the IR version to what the target
//! opset requires).
//!
//! The conversion walks one opset at a time: at step `v` every node whose operator has an
//! adapter at `v` is rewritten into its opset-`v` form, so a node crossing several changes
//! goes through each in turn. Attributes that became inputs are written as new int64 (or
//! data-typed) initializers named after the node (`<node>_axes`, `<node>_pads`, …), unique
//! across the whole model. Conversion is all or nothing: if one node cannot be converted the
//! model is left untouched and the error names the node and the step.
//!
//! Sources below opset 7 and targets above 21 are refused; so is any downgrade.
//!
//! # Adapters
//!
//! | step | operators | rewrite |
//! |------|-----------|---------|
//! | 9  | Upsample | `scales` attribute → input |
//! | 9  | BatchNormalization | `spatial` dropped (1); `spatial=0` refused |
//! | 9  | Scan | Scan-8 (batched) refused |
//! | 10 | Slice | `starts`/`ends`/`axes` → int64 inputs |
//! | 10 | TopK | `k` → input `K` |
//! | 10 | Upsample | → Resize-10 (same inputs and mode) |
//! | 10 | Dropout | mask became bool: refused if the mask is read |
//! | 11 | Pad | `pads` → input; `value` → `constant_value` of the data's type (CastLike if unknown) |
//! | 11 | Clip | `min`/`max` → inputs of the data's type (absent = unbounded) |
//! | 11 | Resize | `roi` input added; `coordinate_transformation_mode=asymmetric` and, for nearest, `nearest_mode` floor (upsampling) / ceil (downsampling), as opset 10 behaved |
//! | 11 | Scatter | → ScatterElements |
//! | 12 | Dropout | `ratio` → input |
//! | 13 | Squeeze, Unsqueeze, ReduceSum | `axes` → input |
//! | 13 | Split | `split` → input |
//! | 13 | Softmax, LogSoftmax, Hardmax | last axis: axis written out; else `Reshape(op(Flatten(x, axis), axis=1), Shape(x))` |
//! | 13 | Resize | `scales` left out when `sizes` is given; `tf_half_pixel_for_nn` refused |
//! | 14 | BatchNormalization | unused extra outputs dropped; read ones refused |
//! | 16 | RoiAlign | `coordinate_transformation_mode=output_half_pixel` written out |
//! | 18 | ReduceMean/Max/Min/Prod/L1/L2/LogSum/LogSumExp/SumSquare | `axes` → input |
//! | 18 | Split | equal split gets `num_outputs` |
//! | 20 | DFT | `axis` → input (always written: its default changed) |
//! | 20 | GridSample | modes `bilinear`/`bicubic` → `linear`/`cubic` |
//! | 21 | GroupNormalization | per-group constant scale/bias repeated per channel |
//!
//! Every other step of every operator from 8 to 21 keeps the meaning of old uses; they are
//! listed with the reason in [`compat`], and a test checks the two tables cover every step.

mod adapters;
// The table documents the compatible steps; the pass needs only the adapters, and a test
// checks that the two together cover every step.
#[cfg_attr(not(test), allow(dead_code))]
mod compat;
mod rewrite;

use crate::ir::NameSet;
use crate::ir::{Graph, Model, NodeIndex};
use crate::pipeline::{Changes, Pass, PassError};
use rewrite::Cx;

/// The lowest default-domain opset the pass converts from.
pub const MIN_SOURCE_OPSET: i64 = 7;
/// The highest default-domain opset the pass converts to.
pub const MAX_TARGET_OPSET: i64 = 21;

/// Raises the default-domain opset of a model to `target`, rewriting the nodes whose
/// operators changed on the way (pass name `upgrade-opset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpgradeOpset {
    /// The opset to reach.
    pub target: i64,
}

impl Pass for UpgradeOpset {
    fn name(&self) -> &'static str {
        "upgrade-opset"
    }

    fn run(&self, model: &mut Model) -> Result<Changes, PassError> {
        let target = self.target;
        let source = model.opset("").ok_or_else(|| {
            PassError::Unsupported("the model imports no default-domain (ai.onnx) opset".into())
        })?;
        if target < source {
            return Err(PassError::Unsupported(format!(
                "the model is at opset {source}; converting down to {target} is not supported \
                 (upgrade-opset only raises the opset)"
            )));
        }
        if target == source {
            return Ok(Changes::none());
        }
        if source < MIN_SOURCE_OPSET {
            return Err(PassError::Unsupported(format!(
                "the model is at opset {source}; upgrading from below opset \
                 {MIN_SOURCE_OPSET} is not supported"
            )));
        }
        if target > MAX_TARGET_OPSET {
            return Err(PassError::Unsupported(format!(
                "upgrading to opset {target} is not supported (at most {MAX_TARGET_OPSET})"
            )));
        }
        // Work on a copy so a node that cannot be converted leaves the model untouched
        // (tensors are shared, so the copy is cheap).
        let mut graph = model.graph.clone();
        let mut names = NameSet::of(&graph);
        let mut changes = Changes::none();
        for step in source + 1..=target {
            upgrade_graph(&mut graph, step, target, &mut names, &mut changes)?;
        }
        model.graph = graph;
        for import in &mut model.opset_import {
            if import.domain.is_empty() || import.domain == "ai.onnx" {
                import.version = target;
            }
        }
        model.ir_version = model.ir_version.max(min_ir_version(target));
        changes.add("opset raised", 1);
        Ok(changes)
    }
}

/// Applies the adapters of `step` to every default-domain node of `graph` and its subgraphs.
fn upgrade_graph(
    graph: &mut Graph,
    step: i64,
    target: i64,
    names: &mut NameSet,
    changes: &mut Changes,
) -> Result<(), PassError> {
    let nodes: Vec<NodeIndex> = graph
        .nodes()
        .filter(|(_, n)| n.is_operator() && matches!(n.domain(), "" | "ai.onnx"))
        .map(|(i, _)| i)
        .collect();
    for idx in nodes {
        for sub in graph[idx].subgraphs_mut() {
            upgrade_graph(sub, step, target, names, changes)?;
        }
        let op = graph[idx].op_type().to_string();
        if let Some(adapter) = adapters::find(&op, step) {
            let mut cx = Cx {
                g: graph,
                names,
                target,
            };
            (adapter.run)(&mut cx, idx, step)?;
            changes.add(&format!("{op} adapted to {step}"), 1);
        }
    }
    Ok(())
}

/// The lowest IR version that may declare default-domain `opset` (ONNX's version table).
fn min_ir_version(opset: i64) -> i64 {
    match opset {
        ..=8 => 3,
        9 => 4,
        10 => 5,
        11 => 6,
        12..=14 => 7,
        15..=18 => 8,
        19..=20 => 9,
        _ => 10,
    }
}

/// The default-domain opset the model must reach so that every operator in `ops`
/// (name, opset it first appears in) may be used: `None` when the model is there already,
/// when it has no default-domain import, or when it would take an opset the pass cannot
/// reach (below [`MIN_SOURCE_OPSET`] or above [`MAX_TARGET_OPSET`]).
pub fn upgrade_target_for(model: &Model, ops: &[(&str, i64)]) -> Option<i64> {
    let current = model.opset("")?;
    let needed = ops.iter().map(|&(_, since)| since).max()?;
    (needed > current && current >= MIN_SOURCE_OPSET && needed <= MAX_TARGET_OPSET)
        .then_some(needed)
}

/// True when upgrading would make one of `ops` available (see [`upgrade_target_for`]);
/// `kiln optimize` asks this with e.g. `[("LayerNormalization", 17)]` when a fusion found a
/// pattern it could rewrite only at a higher opset.
pub fn needs_upgrade_for(model: &Model, ops: &[(&str, i64)]) -> bool {
    upgrade_target_for(model, ops).is_some()
}

#[cfg(test)]
mod tests;
