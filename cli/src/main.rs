//! `kiln`: the command-line front end. Parses arguments, calls the libraries, renders results.

mod commands;
mod error;
mod model_file;
mod progress;
mod render;

use std::process::ExitCode;

use clap::Parser;

use crate::commands::Command;

/// Kiln: an ONNX graph optimizer and compiler for edge hardware.
#[derive(Debug, Parser)]
#[command(name = "kiln", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Lets a closed stdout end the process quietly, as for any Unix filter (`kiln … | head`):
/// Rust ignores SIGPIPE, which turns the next write into a panic.
#[cfg(unix)]
fn default_sigpipe() {
    // SAFETY: restoring the default disposition of one signal, before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[cfg(not(unix))]
fn default_sigpipe() {}

fn main() -> ExitCode {
    default_sigpipe();
    // ONNX Runtime 1.31's telemetry starts while its environment is created, before
    // `DisableTelemetryEvents` can run: it writes a device id to ~/.cache/Microsoft and sends a
    // process event. Only this variable stops it; set here, before any thread exists, unless
    // the user chose a value.
    if std::env::var_os("ORT_DISABLE_TELEMETRY").is_none() {
        std::env::set_var("ORT_DISABLE_TELEMETRY", "1");
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help/version to stdout (exit 0) and usage errors to stderr (exit 2).
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    match commands::run(cli.command) {
        Ok(code) => code.into(),
        Err(e) => {
            eprintln!("kiln: error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
