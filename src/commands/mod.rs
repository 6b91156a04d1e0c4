//! One module per subcommand; each turns parsed flags into library calls.

mod embed;
mod eval;
mod index;
mod init;
mod mine;
mod report;
mod search;
mod train;

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
        Command::Train(args) => train::run(&ctx, args),
        Command::Report(args) => report::run(&ctx, args),
    }
}

/// Loads the configuration and sets up threads before any pool starts.
pub fn load_config(ctx: &Context, overrides: &Overrides) -> Result<Config> {
    let mut config = Config::load(&ctx.workspace, overrides)?;
    config.threads = cpack_index::model::configure_threads(config.threads);
    Ok(config)
}

/// [`load_config`] for `cpack train`, whose process trains as well as encodes.
pub fn load_training_config(ctx: &Context, overrides: &Overrides) -> Result<Config> {
    let mut config = Config::load(&ctx.workspace, overrides)?;
    config.threads = cpack_index::model::configure_training_threads(config.threads);
    Ok(config)
}

/// The encoder the configuration describes (candle backend), one worker per thread.
pub fn open_encoder(config: &Config) -> Result<Encoder> {
    let backend = CandleBackend::load(
        &config.model,
        config.encoder.pooling,
        config.encoder.normalize,
    )?;
    let encoder = Encoder::new(&config.model, config.encoder.clone(), Box::new(backend))?;
    Ok(encoder.with_workers(config.threads))
}
