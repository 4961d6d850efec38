//! Whether `kiln optimize` upgrades the opset: only when asked, or when a fusion has found a
//! pattern it could rewrite only at a higher opset.

use crate::fuse::{FuseGelu, FuseLayerNorm, FuseOptions};
use crate::ir::Model;
use crate::opset::MAX_TARGET_OPSET;
use crate::pipeline::{Pass, PassError};

/// The opset before and after `kiln optimize`, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpsetChoice {
    /// Default-domain opset the model arrived with (0 when it imports none).
    pub before: i64,
    /// The opset the pipeline will leave it at.
    pub after: i64,
    /// Why (for the report): what asked for the upgrade, or why there is none.
    pub reason: String,
}

impl OpsetChoice {
    /// No change, for the given reason.
    pub fn unchanged(model: &Model, reason: &str) -> OpsetChoice {
        let v = model.opset("").unwrap_or(0);
        OpsetChoice {
            before: v,
            after: v,
            reason: reason.to_string(),
        }
    }
}

/// Decides the target opset. An explicit target below the model's is an error (Kiln never
/// downgrades). Otherwise, unless `keep` is set, the fusions that need a newer opset are
/// tried on a copy of the model that claims opset [`MAX_TARGET_OPSET`]: if LayerNorm
/// patterns fire the model goes to 17, if GELU patterns fire (and `com.microsoft` operators
/// are not allowed) to 20.
pub fn choose_opset(
    model: &Model,
    target: Option<i64>,
    keep: bool,
    fuse: FuseOptions,
) -> Result<OpsetChoice, PassError> {
    let before = model.opset("").unwrap_or(0);
    if let Some(t) = target {
        if t < before {
            return Err(PassError::Unsupported(format!(
                "the model is at opset {before}; --target-opset {t} would downgrade it, which Kiln never does"
            )));
        }
        return Ok(OpsetChoice {
            before,
            after: t,
            reason: if t == before {
                "already at the requested opset".into()
            } else {
                format!("--target-opset {t}")
            },
        });
    }
    if keep {
        return Ok(OpsetChoice::unchanged(model, "--keep-opset"));
    }
    let mut probe = model.clone();
    for import in probe
        .opset_import
        .iter_mut()
        .filter(|o| o.domain.is_empty() || o.domain == "ai.onnx")
    {
        import.version = import.version.max(MAX_TARGET_OPSET);
    }
    let layernorms = FuseLayerNorm
        .run(&mut probe)?
        .iter()
        .map(|(_, n)| n)
        .sum::<usize>();
    let gelus = FuseGelu {
        allow_contrib: false,
    }
    .run(&mut probe)?
    .iter()
    .map(|(_, n)| n)
    .sum::<usize>();
    let mut needed = Vec::new();
    if layernorms > 0 && before < 17 {
        needed.push((
            17,
            format!("{layernorms} LayerNorm pattern(s) fuse at opset 17"),
        ));
    }
    if gelus > 0 && before < 20 && !fuse.allow_contrib {
        needed.push((20, format!("{gelus} GELU pattern(s) fuse at opset 20")));
    }
    match needed.iter().map(|(v, _)| *v).max() {
        Some(after) if before >= crate::opset::MIN_SOURCE_OPSET => Ok(OpsetChoice {
            before,
            after,
            reason: needed
                .into_iter()
                .map(|(_, r)| r)
                .collect::<Vec<_>>()
                .join("; "),
        }),
        Some(_) => Ok(OpsetChoice::unchanged(
            model,
            &format!("fusions want a newer opset, but opset {before} is too old to convert"),
        )),
        None => Ok(OpsetChoice::unchanged(
            model,
            "no fusion needs a newer opset",
        )),
    }
}
