//! `cpack`: the command-line front of the cpack engine. It parses flags,
//! merges them over the workspace's `cpack.toml`, and calls into the
//! library crates; errors are printed as one line plus their causes. The
//! binary (`main.rs`) only calls [`main`]; the parts are a library so that
//! the fuzz targets reach the `cpack.toml` reader.

mod cli;
mod commands;
pub mod config;
mod hub;
pub mod process;
mod progress;
mod serve;

use clap::Parser;
use std::process::ExitCode;

/// Parses the command line, runs the command, prints any error as a chain.
pub fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // A closed pipe (`cpack … | head`) is the reader's choice, not a failure.
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain()
        .filter_map(|e| e.downcast_ref::<std::io::Error>())
        .any(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}
