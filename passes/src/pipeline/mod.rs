//! Passes and the pipeline that runs them.
//!
//! A pass does one thing to a [`Model`], reports what it changed, and leaves the graph
//! valid. Passes take the whole model rather than one graph because some need the opset
//! imports (opset conversion, fusions that emit ops of a given opset). The pipeline runs
//! passes in order, repeats groups (cleanup and folding) until nothing changes, and in tests
//! and debug builds verifies the graph after every pass so a broken rewrite is caught at the
//! pass that made it.

mod changes;
mod error;

use crate::ir::Model;

pub use changes::Changes;
pub use error::PassError;

/// One rewrite of a model.
pub trait Pass {
    /// A short, stable name (`fold-constants`, `fuse-layernorm`) used on the command line and in reports.
    fn name(&self) -> &'static str;
    /// Rewrites the model and says what changed.
    fn run(&self, model: &mut Model) -> Result<Changes, PassError>;
}

/// What one pass did, for reports.
#[derive(Debug, Clone, PartialEq)]
pub struct PassRecord {
    /// The pass's name.
    pub pass: &'static str,
    /// What it changed (merged over fixed-point rounds).
    pub changes: Changes,
    /// Operator count of the main graph before the pass first ran.
    pub nodes_before: usize,
    /// `nodes_before` changed by what this pass added and removed (over every round of a
    /// fixed-point group; the other passes' effects in between are not counted).
    pub nodes_after: usize,
}

/// A step of a pipeline: a pass, or a group repeated until none of its passes changes anything.
enum Step {
    Once(Box<dyn Pass>),
    FixedPoint(Vec<Box<dyn Pass>>),
}

/// An ordered list of passes.
pub struct Pipeline {
    steps: Vec<Step>,
    verify: bool,
    max_rounds: usize,
}

impl Default for Pipeline {
    fn default() -> Pipeline {
        Pipeline::new()
    }
}

impl Pipeline {
    /// An empty pipeline; verification after each pass is on in debug builds.
    pub fn new() -> Pipeline {
        Pipeline {
            steps: Vec::new(),
            verify: cfg!(debug_assertions),
            max_rounds: 16,
        }
    }

    /// Adds a pass that runs once.
    pub fn then(mut self, pass: impl Pass + 'static) -> Pipeline {
        self.steps.push(Step::Once(Box::new(pass)));
        self
    }

    /// Adds an already boxed pass that runs once.
    pub fn then_boxed(mut self, pass: Box<dyn Pass>) -> Pipeline {
        self.steps.push(Step::Once(pass));
        self
    }

    /// Adds a group of passes repeated, in order, until a round changes nothing.
    pub fn until_fixed_point(mut self, passes: Vec<Box<dyn Pass>>) -> Pipeline {
        self.steps.push(Step::FixedPoint(passes));
        self
    }

    /// Turns verification after every pass on or off.
    pub fn verify_each(mut self, verify: bool) -> Pipeline {
        self.verify = verify;
        self
    }

    /// Names of the passes, in order (a fixed-point group's passes listed once).
    pub fn pass_names(&self) -> Vec<&'static str> {
        self.steps
            .iter()
            .flat_map(|s| match s {
                Step::Once(p) => vec![p.name()],
                Step::FixedPoint(ps) => ps.iter().map(|p| p.name()).collect(),
            })
            .collect()
    }

    /// Runs every step on `model` and returns one record per pass.
    pub fn run(&self, model: &mut Model) -> Result<Vec<PassRecord>, PassError> {
        let mut records: Vec<PassRecord> = Vec::new();
        for step in &self.steps {
            match step {
                Step::Once(pass) => records.push(self.run_pass(pass.as_ref(), model)?),
                Step::FixedPoint(passes) => {
                    let first = records.len();
                    for round in 0.. {
                        let mut changed = false;
                        for (i, pass) in passes.iter().enumerate() {
                            let rec = self.run_pass(pass.as_ref(), model)?;
                            changed |= !rec.changes.is_empty();
                            if round == 0 {
                                records.push(rec);
                            } else {
                                // Each pass's own effect, summed over rounds: the
                                // other passes' changes in between are not its doing.
                                let merged = &mut records[first + i];
                                merged.changes.merge(&rec.changes);
                                merged.nodes_after = (merged.nodes_after + rec.nodes_after)
                                    .saturating_sub(rec.nodes_before);
                            }
                        }
                        // A rewrite that keeps undoing another would loop forever; the cap
                        // turns that bug into a bounded run instead of a hang.
                        if !changed || round + 1 >= self.max_rounds {
                            break;
                        }
                    }
                }
            }
        }
        Ok(records)
    }

    fn run_pass(&self, pass: &dyn Pass, model: &mut Model) -> Result<PassRecord, PassError> {
        let nodes_before = model.graph.stats().nodes;
        let changes = pass.run(model)?;
        if self.verify {
            model.graph.verify().map_err(|source| PassError::Broke {
                pass: pass.name(),
                source,
            })?;
        }
        Ok(PassRecord {
            pass: pass.name(),
            changes,
            nodes_before,
            nodes_after: model.graph.stats().nodes,
        })
    }
}

#[cfg(test)]
mod tests;
