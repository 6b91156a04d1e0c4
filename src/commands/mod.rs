//! One module per subcommand; each turns parsed flags into library calls.

mod embed;
mod eval;
mod export;
mod index;
mod init;
mod mine;
mod report;
mod search;
pub(crate) mod train;

use crate::cli::{Cli, Command, Overrides};
use crate::config::Config;
use crate::config::{EncoderRuntime, OrtConfig};
use crate::progress::{Output, Reporter};
use anyhow::{bail, Result};
use cpack_encode::candle_backend::CandleLoader;
use cpack_encode::{BackendLoader, Encoder};
use cpack_model::ModelDir;
use std::path::{Path, PathBuf};

/// What every command gets: where it runs and how chatty to be.
pub struct Context {
    pub workspace: PathBuf,
    pub progress: Reporter,
}

pub fn run(cli: Cli) -> Result<()> {
    let workspace = match cli.workspace {
        Some(dir) => dir,
        None => std::env::current_dir()?,
    };
    let ctx = Context {
        workspace,
        progress: Reporter::new(Output::for_stderr(
            cli.quiet,
            std::time::Duration::from_secs_f64(cli.progress_every.max(0.0)),
        )),
    };
    match cli.command {
        Command::Init(args) => init::run(&ctx, args),
        Command::Index(cmd) => index::run(&ctx, cmd),
        Command::Search(args) => search::run(&ctx, args),
        Command::Embed(args) => embed::run(&ctx, args),
        Command::Eval(args) => eval::run(&ctx, args),
        Command::Mine(args) => mine::run(&ctx, args),
        Command::Export(args) => export::run(&ctx, args),
        Command::Train(args) => train::run(&ctx, *args),
        Command::Report(args) => report::run(&ctx, args),
        Command::Serve(args) => crate::serve::run(&ctx, args),
    }
}

/// Loads the configuration and sets up threads before any pool starts.
pub fn load_config(ctx: &Context, overrides: &Overrides) -> Result<Config> {
    let mut config = Config::load(&ctx.workspace, overrides)?;
    config.threads = crate::process::configure(config.threads);
    Ok(config)
}

/// The encoder the configuration describes.
pub fn open_encoder(config: &Config) -> Result<Encoder> {
    open_encoder_of(config, &config.model)
}

/// `model` under the configuration's encoder settings and runtime.
fn open_encoder_of(config: &Config, model: &ModelDir) -> Result<Encoder> {
    let (loader, workers) = backend_loader(config)?;
    Ok(Encoder::open(
        model,
        &config.encoder,
        loader.as_ref(),
        workers,
    )?)
}

/// What encodes the queries: `index_encoder` (the workspace model's), or
/// with `--query-model` another model over the same index — the query
/// encoder a `cpack train --freeze-passages` run trains.
pub fn query_encoder(
    config: &Config,
    query_model: Option<&Path>,
    index_encoder: Encoder,
) -> Result<Encoder> {
    let Some(path) = query_model else {
        return Ok(index_encoder);
    };
    let model = ModelDir::open(&crate::config::locate_model(&config.workspace, path)?)?;
    let encoder = open_encoder_of(config, &model)?;
    if encoder.dim() != index_encoder.dim() {
        bail!(
            "--query-model {} makes {}-dimensional vectors and the index holds {}",
            path.display(),
            encoder.dim(),
            index_encoder.dim()
        );
    }
    Ok(encoder)
}

/// The backend loader the configuration asks for, and the workers that feed it.
pub fn backend_loader(config: &Config) -> Result<(Box<dyn BackendLoader>, usize)> {
    match &config.runtime {
        // One model on a GPU serves every batch; CPU workers each hold one.
        EncoderRuntime::Candle { device, precision } => {
            let loader = CandleLoader {
                device: *device,
                precision: *precision,
            };
            // One model on a GPU serves every batch; CPU workers each hold one.
            let workers = if device.is_cpu() { config.threads } else { 1 };
            Ok((Box::new(loader), workers))
        }
        EncoderRuntime::Ort(ort) => {
            let workers = (config.threads / ort.threads.max(1)).max(1);
            Ok((ort_loader(config, ort, workers)?, workers))
        }
    }
}

#[cfg(feature = "ort")]
fn ort_loader(config: &Config, ort: &OrtConfig, workers: usize) -> Result<Box<dyn BackendLoader>> {
    use anyhow::Context as _;
    use cpack_encode::ort_backend::{find_library, OrtLoader, OrtOptions};
    let library = match &ort.library {
        Some(path) => path.clone(),
        None => {
            let exe = std::env::current_exe().unwrap_or_default();
            find_library(&[&config.workspace, &exe]).context(
                "no ONNX Runtime library found: run scripts/setup.sh, set CPACK_ORT_LIBRARY, \
                 or set encode.ort_library in cpack.toml",
            )?
        }
    };
    Ok(Box::new(OrtLoader {
        options: OrtOptions {
            library,
            sessions: workers,
            threads: ort.threads,
            spinning: ort.spinning,
        },
        precision: ort.precision,
        // Exports of the workspace's models, named by their weights' fingerprint.
        cache_dir: config.workspace.join(crate::config::STATE_DIR).join("onnx"),
    }))
}

#[cfg(not(feature = "ort"))]
fn ort_loader(_: &Config, _: &OrtConfig, _: usize) -> Result<Box<dyn BackendLoader>> {
    anyhow::bail!("this cpack was built without the `ort` feature; use encode.backend = \"candle\"")
}
