//! One module per subcommand; each turns parsed flags into library calls.

mod embed;
mod eval;
mod index;
mod init;
mod mine;
mod search;

use crate::cli::{Cli, Command, Overrides};
use crate::config::Config;
use crate::progress::Bars;
use anyhow::Result;
use cpack_index::candle_backend::CandleBackend;
use cpack_index::Encoder;
use std::path::PathBuf;

/// What every command gets: where it runs and how chatty to be.
pub struct Context {
    pub workspace: PathBuf,
    pub bars: Bars,
}

pub fn run(cli: Cli) -> Result<()> {
    let workspace = match cli.workspace {
        Some(dir) => dir,
        None => std::env::current_dir()?,
    };
    let ctx = Context {
        workspace,
        bars: Bars::new(cli.quiet),
    };
    match cli.command {
        Command::Init(args) => init::run(&ctx, args),
        Command::Index(cmd) => index::run(&ctx, cmd),
        Command::Search(args) => search::run(&ctx, args),
        Command::Embed(args) => embed::run(&ctx, args),
        Command::Eval(args) => eval::run(&ctx, args),
        Command::Mine(args) => mine::run(&ctx, args),
    }
}

/// Loads the configuration and applies the thread setting before any pool starts.
pub fn load_config(ctx: &Context, overrides: &Overrides) -> Result<Config> {
    let config = Config::load(&ctx.workspace, overrides)?;
    if config.threads > 0 {
        // candle's kernels and rayon both read this before their pools start.
        std::env::set_var("RAYON_NUM_THREADS", config.threads.to_string());
        cpack_index::model::set_blas_threads(config.threads);
    }
    Ok(config)
}

/// The encoder the configuration describes (candle backend).
pub fn open_encoder(config: &Config) -> Result<Encoder> {
    let backend = CandleBackend::load(
        &config.model,
        config.encoder.pooling,
        config.encoder.normalize,
    )?;
    Ok(Encoder::new(
        &config.model,
        config.encoder.clone(),
        Box::new(backend),
    )?)
}
