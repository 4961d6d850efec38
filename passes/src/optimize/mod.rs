//! The optimization pipeline `kiln optimize` runs, and the report of what it changed.
//!
//! Stages, in order:
//! 0. static input shapes, if given ([`apply_input_shapes`]);
//! 1. `infer-shapes`, so later rewrites can see element types and shapes;
//! 2. folding and cleanup to a fixed point (shape subgraphs fold away, no-ops go);
//! 3. the opset decision: when a fusion has a pattern it could rewrite only at a higher
//!    opset (LayerNormalization needs 17, Gelu 20), the model is upgraded to the lowest opset
//!    that lets it fire, never downgraded (see [`choose_opset`]);
//! 4. the fusions and notes;
//! 5. folding and cleanup to a fixed point again, then `infer-shapes` to annotate the result.
//!
//! `--passes` keeps only the named passes and `--disable` drops some; either way the
//! survivors run in this order, because each stage relies on the ones before it.

mod input_shapes;
mod opset_choice;

use crate::cleanup::{cleanup_passes, UnlistInitializers};
use crate::fold::FoldConstants;
use crate::fuse::{fusion_passes, FuseOptions};
use crate::infer::InferShapes;
use crate::ir::Model;
use crate::opset::UpgradeOpset;
use crate::pipeline::{Pass, PassError, PassRecord, Pipeline};

pub use input_shapes::{apply_input_shapes, InputShapeError};
pub use opset_choice::{choose_opset, OpsetChoice};

/// What to run and how.
#[derive(Debug, Clone, Default)]
pub struct OptimizeOptions {
    /// Run only these passes (by name); `None` runs them all.
    pub only: Option<Vec<String>>,
    /// Passes not to run.
    pub disable: Vec<String>,
    /// Upgrade the default-domain opset to exactly this (never down).
    pub target_opset: Option<i64>,
    /// Never change the opset (no automatic upgrade).
    pub keep_opset: bool,
    /// Allow ONNX Runtime's own operators (`com.microsoft` Gelu, default-domain
    /// SimplifiedLayerNormalization) where the opset lacks the standard one.
    pub allow_contrib: bool,
    /// Largest tensor (elements) constant folding may create.
    pub fold_limit: Option<usize>,
    /// Static shapes for graph inputs, applied before any pass (`--input-shape`).
    pub input_shapes: Vec<(String, Vec<i64>)>,
}

/// What the pipeline did.
#[derive(Debug, Clone)]
pub struct OptimizeReport {
    /// The default-domain opset before and after, and why it changed (or did not).
    pub opset: OpsetChoice,
    /// Operators in the main graph before any pass.
    pub nodes_before: usize,
    /// Operators after the last pass.
    pub nodes_after: usize,
    /// One record per pass run, in order (a pass that runs in two stages appears twice).
    pub records: Vec<PassRecord>,
}

/// Why the options cannot be honoured.
#[derive(Debug, thiserror::Error)]
pub enum OptimizeError {
    /// A pass name that no pass has.
    #[error("unknown pass '{name}' (known: {known})")]
    UnknownPass {
        /// The name given.
        name: String,
        /// Every known name.
        known: String,
    },
    /// An input shape does not fit the model.
    #[error(transparent)]
    InputShape(#[from] InputShapeError),
    /// A pass failed.
    #[error(transparent)]
    Pass(#[from] PassError),
}

/// Every pass name `--passes` and `--disable` accept, in pipeline order.
pub fn pass_names() -> Vec<&'static str> {
    let mut names = vec![
        UnlistInitializers.name(),
        InferShapes.name(),
        FoldConstants::default().name(),
    ];
    names.extend(cleanup_passes().iter().map(|p| p.name()));
    names.push(UpgradeOpset { target: 0 }.name());
    names.extend(
        fusion_passes(FuseOptions::default())
            .iter()
            .map(|p| p.name()),
    );
    names
}

/// Runs the pipeline on `model`.
pub fn optimize(
    model: &mut Model,
    opts: &OptimizeOptions,
) -> Result<OptimizeReport, OptimizeError> {
    let known = pass_names();
    for name in opts.only.iter().flatten().chain(&opts.disable) {
        if !known.contains(&name.as_str()) {
            return Err(OptimizeError::UnknownPass {
                name: name.clone(),
                known: known.join(", "),
            });
        }
    }
    let wanted = |name: &str| {
        opts.only
            .as_ref()
            .is_none_or(|only| only.iter().any(|n| n == name))
            && !opts.disable.iter().any(|n| n == name)
    };
    let fold = || FoldConstants {
        max_output_elements: opts
            .fold_limit
            .unwrap_or(FoldConstants::default().max_output_elements),
    };
    let keep = |passes: Vec<Box<dyn Pass>>| -> Vec<Box<dyn Pass>> {
        passes.into_iter().filter(|p| wanted(p.name())).collect()
    };
    let simplify = || {
        let mut group: Vec<Box<dyn Pass>> = vec![Box::new(fold())];
        group.extend(cleanup_passes());
        keep(group)
    };
    let infer = || keep(vec![Box::new(InferShapes)]);
    let fuse_opts = FuseOptions {
        allow_contrib: opts.allow_contrib,
    };

    let nodes_before = model.graph.stats().nodes;
    apply_input_shapes(model, &opts.input_shapes)?;
    let mut records = Vec::new();
    records.extend(steps(keep(vec![Box::new(UnlistInitializers)])).run(model)?);
    records.extend(steps(infer()).run(model)?);
    records.extend(Pipeline::new().until_fixed_point(simplify()).run(model)?);

    let opset = if wanted("upgrade-opset") {
        choose_opset(model, opts.target_opset, opts.keep_opset, fuse_opts)?
    } else {
        OpsetChoice::unchanged(model, "upgrade-opset is disabled")
    };
    if opset.after > opset.before {
        records.extend(
            Pipeline::new()
                .then(UpgradeOpset {
                    target: opset.after,
                })
                .run(model)?,
        );
    }

    records.extend(steps(keep(fusion_passes(fuse_opts))).run(model)?);
    records.extend(Pipeline::new().until_fixed_point(simplify()).run(model)?);
    records.extend(steps(infer()).run(model)?);
    Ok(OptimizeReport {
        opset,
        nodes_before,
        nodes_after: model.graph.stats().nodes,
        records,
    })
}

/// A pipeline running each pass once, in order.
fn steps(passes: Vec<Box<dyn Pass>>) -> Pipeline {
    passes
        .into_iter()
        .fold(Pipeline::new(), |p, pass| p.then_boxed(pass))
}

#[cfg(test)]
mod tests;
