//! Computing ops in a 16-bit float, twice: the emitted form (real low-float ops) and the
//! simulated twin (float32 between rounding casts where ORT's CPU provider lacks the kernel).

use std::collections::BTreeSet;

use kiln_passes::ir::Model;
use kiln_passes::pipeline::{Changes, Pass};
use kiln_passes::precision::{ort_cpu_lacks_kernel, CancelCasts, PinPrecision};
use kiln_passes::quant::PinFloat;

use super::super::error::CompileError;

/// One pinning step: these op types in this float.
pub struct Pin {
    /// Op types.
    pub ops: BTreeSet<String>,
    /// The float they compute in.
    pub float: PinFloat,
}

/// Applies `pins` in order to `model` (emitted form) and to a copy (twin); returns the twin
/// only when it differs, and the changes of the emitted form.
pub fn pin_both(model: &mut Model, pins: &[Pin]) -> Result<(Option<Model>, Changes), CompileError> {
    let mut twin = model.clone();
    let mut changes = Changes::default();
    let mut simulated = 0;
    for p in pins.iter().filter(|p| !p.ops.is_empty()) {
        let real = PinPrecision {
            ops: p.ops.clone(),
            float: p.float,
            simulate: BTreeSet::new(),
        };
        changes.merge(&real.run(model)?);
        let sim = PinPrecision {
            ops: p.ops.clone(),
            float: p.float,
            simulate: p
                .ops
                .iter()
                .filter(|op| ort_cpu_lacks_kernel(op, p.float))
                .cloned()
                .collect(),
        };
        let done = sim.run(&mut twin)?;
        simulated += done
            .iter()
            .filter(|(k, _)| *k == "simulated")
            .map(|(_, v)| v)
            .sum::<usize>();
    }
    changes.merge(&CancelCasts.run(model)?);
    CancelCasts.run(&mut twin)?;
    for m in [&*model, &twin] {
        m.graph
            .verify()
            .map_err(kiln_passes::pipeline::PassError::from)?;
    }
    Ok(((simulated > 0).then_some(twin), changes))
}

/// The changes as one line.
pub fn describe(changes: &Changes) -> String {
    changes
        .iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}
