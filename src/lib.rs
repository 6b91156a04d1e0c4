//! `cpack`: the command-line front of the cpack engine. It parses flags,
//! merges them over the workspace's `cpack.toml`, and calls into the
//! library crates; errors are printed as one line plus their causes, with
//! the settings they name written as the flags that set them. The binary
//! (`main.rs`) only calls [`main`]; the parts are a library so that the fuzz
//! targets reach the `cpack.toml` reader and the benchmarks the process
//! set-up.

/// `println!` that hands back the write's error instead of panicking, so a
/// closed pipe (`cpack report | head -1`) travels up as an error that
/// [`main`] ends quietly. All of a command's standard output goes through it
/// (or through [`cpack_core::write_output`]).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
    }};
}

/// `eprintln!` that never panics: when stderr is a closed pipe (`cpack …
/// 2>&1 | head -1`) a progress line or note is lost and the command goes
/// on (its standard output, if closed too, ends it quietly).
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

mod cli;
mod commands;
pub mod config;
mod flags;
mod hub;
mod pairs_file;
pub mod process;
mod progress;
mod report_table;
mod runtime;
mod serve;
mod state;
mod template;

use clap::{CommandFactory, FromArgMatches};
use std::process::ExitCode;

/// Parses the command line, runs the command, prints any error as a chain.
pub fn main() -> ExitCode {
    process::before_threads();
    let command = cli::Cli::command().long_version(build_description());
    let matches = command.clone().get_matches();
    let cli = cli::Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let ctx = runtime::Context {
        workspace: match &cli.workspace {
            Some(dir) => dir.clone(),
            None => std::env::current_dir().unwrap_or_default(),
        },
        progress: progress::Reporter::new(progress::Output::for_stderr(
            cli.quiet,
            std::time::Duration::from_secs_f64(cli.progress_every),
        )),
        given: flags::Given::of(&matches),
    };
    match commands::run(cli, &ctx) {
        Ok(()) => ExitCode::SUCCESS,
        // A closed pipe (`cpack … | head`) is the reader's choice, not a failure.
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            let names = flags::FlagNames::of(flags::leaf_command(&command, &matches));
            let mut chain = err.chain();
            if let Some(first) = chain.next() {
                errln!("error: {}", clipped(names.describe(first)));
            }
            for cause in chain {
                errln!("  caused by: {}", clipped(names.describe(cause)));
            }
            ExitCode::FAILURE
        }
    }
}

/// `cpack --version`'s lines after the version: what this build can do and
/// the matrix kernel this CPU gets (leaked once: clap keeps `&'static str`).
fn build_description() -> &'static str {
    let features: Vec<&str> = [
        (cfg!(feature = "faiss"), "faiss"),
        (cfg!(feature = "ort"), "ort"),
        (cfg!(feature = "cuda"), "cuda"),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect();
    let text = format!(
        "{}\nfeatures: {}\nmatrix kernel: {}\nbf16 products: {}",
        env!("CARGO_PKG_VERSION"),
        if features.is_empty() {
            "none".to_string()
        } else {
            features.join(", ")
        },
        cpack_model::matmul::kernel(),
        cpack_model::matmul::Bf16Kernel::detect().name(),
    );
    Box::leak(text.into_boxed_str())
}

/// Characters of one error line printed at most: errors quote values from
/// the input, and a megabyte-long string in the wrong place must not become
/// a megabyte-long message.
const ERROR_LINE_CHARS: usize = 1000;

/// `line` cut to [`ERROR_LINE_CHARS`], saying how much was left out.
fn clipped(line: String) -> String {
    match line.char_indices().nth(ERROR_LINE_CHARS) {
        None => line,
        Some((cut, _)) => format!(
            "{}… ({} more bytes not shown)",
            &line[..cut],
            line.len() - cut
        ),
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain()
        .filter_map(|e| e.downcast_ref::<std::io::Error>())
        .any(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}
