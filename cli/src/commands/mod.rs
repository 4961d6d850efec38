//! One module per subcommand; each parses its own arguments and returns an [`Outcome`].

mod bench;
mod check;
mod compile;
mod convert;
mod diff;
mod inspect;
mod optimize;
mod profile;
mod quantize;
mod run;
mod validate;

use clap::Subcommand;

use crate::error::CliError;

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Summarize a model: IR and opsets, inputs and outputs, ops, parameters, external data.
    Inspect(inspect::Args),
    /// Run a model in ONNX Runtime on inputs from files and print or save its outputs.
    Run(run::Args),
    /// Re-save a model through Kiln's graph, embedding or externalizing its weights.
    Convert(convert::Args),
    /// Fold, clean up and fuse a model (the rewrites every target needs), and save it.
    Optimize(optimize::Args),
    /// Quantize a model (static QDQ from calibrated ranges, or dynamic), pinning sensitive ops to fp16/bf16.
    Quantize(quantize::Args),
    /// Run a candidate and a reference model on the same inputs and judge every output.
    Validate(validate::Args),
    /// Compare two models, a model and saved outputs, or two saved outputs.
    Diff(diff::Args),
    /// Time a model in ONNX Runtime (p50/p90/p99, mean, peak memory), or two alternately.
    Bench(bench::Args),
    /// Compile a model for one device's profile: quantize, legalize, emit, validate, report.
    Compile(compile::Args),
    /// Hardware profiles: list the built-ins, show one resolved, check a file, start one.
    Profile(profile::Args),
}

/// How a command that did not fail ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything asked for was done and every check passed (exit 0).
    Success,
    /// Done, but a check failed (exit 1).
    CheckFailed,
}

impl From<Outcome> for std::process::ExitCode {
    fn from(o: Outcome) -> Self {
        match o {
            Outcome::Success => std::process::ExitCode::SUCCESS,
            Outcome::CheckFailed => std::process::ExitCode::from(1),
        }
    }
}

/// Runs one subcommand.
pub fn run(command: Command) -> Result<Outcome, CliError> {
    match command {
        Command::Inspect(args) => inspect::run(args),
        Command::Run(args) => run::run(args),
        Command::Convert(args) => convert::run(args),
        Command::Optimize(args) => optimize::run(args),
        Command::Quantize(args) => quantize::run(args),
        Command::Validate(args) => validate::run(args),
        Command::Diff(args) => diff::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Profile(args) => profile::run(args),
        Command::Compile(args) => compile::run(args),
    }
}
