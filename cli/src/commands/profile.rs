//! `kiln profile`: list the built-in hardware profiles, show one resolved, check a file, start
//! a new one.

use clap::Subcommand;
use kiln_backends::profile::{self, LoadedProfile, ProfileError};

use super::Outcome;
use crate::error::CliError;

/// Arguments of `kiln profile`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: ProfileCommand,
}

#[derive(Debug, Subcommand)]
enum ProfileCommand {
    /// List the built-in profiles.
    List,
    /// Print a profile fully resolved (after `extends`) as YAML.
    Show {
        /// A built-in name or a profile file.
        #[arg(value_name = "NAME|FILE")]
        profile: String,
    },
    /// Check a profile: one error with file:line:column and the key (exit 2), or one OK line.
    Check {
        /// A profile file (or a built-in name).
        #[arg(value_name = "FILE")]
        profile: String,
    },
    /// Print a commented starting file for a profile that extends NAME.
    Init {
        /// The profile to start from: a built-in name or a file.
        #[arg(long, value_name = "NAME")]
        extends: String,
    },
}

/// Runs `kiln profile`.
pub fn run(args: Args) -> Result<Outcome, CliError> {
    match args.command {
        ProfileCommand::List => list(),
        ProfileCommand::Show { profile } => {
            let loaded = load(&profile)?;
            print!("{}", loaded.to_yaml());
        }
        ProfileCommand::Check { profile } => {
            let loaded = load(&profile)?;
            let p = &loaded.profile;
            let warnings = match loaded.warnings.len() {
                0 => String::new(),
                1 => ", 1 warning".into(),
                n => format!(", {n} warnings"),
            };
            println!(
                "OK: {profile}: profile '{}' for {} ({}){warnings}",
                p.name,
                p.family.name(),
                loaded.sources.join(" <- "),
            );
        }
        ProfileCommand::Init { extends } => {
            print!("{}", profile::starter(&extends).map_err(usage)?);
        }
    }
    Ok(Outcome::Success)
}

/// Loads a profile and prints its warnings to stderr.
fn load(name_or_file: &str) -> Result<LoadedProfile, CliError> {
    let loaded = profile::load(name_or_file).map_err(usage)?;
    for w in &loaded.warnings {
        eprintln!("kiln: warning: {w}");
    }
    Ok(loaded)
}

fn list() {
    let loaded: Vec<LoadedProfile> = profile::builtin_names()
        .into_iter()
        .filter_map(|n| profile::load(n).ok())
        .collect();
    let width = loaded
        .iter()
        .map(|l| l.profile.name.len())
        .max()
        .unwrap_or(0);
    for l in &loaded {
        let p = &l.profile;
        println!(
            "{:width$}  {:8}  {}",
            p.name,
            p.family.name(),
            p.description
        );
    }
}

/// A bad profile is bad input: exit 2 with the located message.
fn usage(e: ProfileError) -> CliError {
    CliError::Usage(e.to_string())
}
