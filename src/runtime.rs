//! What every command shares: where it runs, how chatty it is, what the
//! command line gave, and opening the configuration and encoders it names.

use crate::config::Config;
use crate::flags::Given;
use crate::progress::Reporter;
use anyhow::{bail, Context as _, Result};
use cpack_encode::candle_backend::CandleLoader;
use cpack_encode::{BackendLoader, CrossEncoder, Encoder, RerankRecipe, RerankSettings, Runtime};
use cpack_miner::teacher::TeacherSpec;
use cpack_model::{ComputeDevice, ModelDir};
use std::path::{Path, PathBuf};

/// What every command gets.
pub struct Context {
    pub workspace: PathBuf,
    pub progress: Reporter,
    /// The flags given on the command line (they override `cpack.toml`).
    pub given: Given,
}

impl Context {
    /// Loads the configuration and sets the process up before any pool starts.
    pub fn config(&self, overrides: &crate::cli::Overrides) -> Result<Config> {
        let mut config = Config::load(&self.workspace, overrides)?;
        config.threads = crate::process::configure(config.threads);
        Ok(config)
    }
}

/// The encoder the configuration describes.
pub fn open_encoder(config: &Config) -> Result<Encoder> {
    open_encoder_of(config, &config.model)
}

/// `model` under the configuration's encoder settings and runtime.
pub fn open_encoder_of(config: &Config, model: &ModelDir) -> Result<Encoder> {
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
        Runtime::Candle { device, precision } => {
            let loader = CandleLoader {
                device: *device,
                precision: *precision,
            };
            // One model on a GPU serves every batch; CPU workers each hold one.
            let workers = if device.is_cpu() { config.threads } else { 1 };
            Ok((Box::new(loader), workers))
        }
        Runtime::Ort { threads, .. } => {
            let workers = (config.threads / threads.max(&1)).max(1);
            Ok((ort_loader(config, workers)?, workers))
        }
    }
}

#[cfg(feature = "ort")]
fn ort_loader(config: &Config, workers: usize) -> Result<Box<dyn BackendLoader>> {
    use cpack_encode::ort_backend::{find_library, OrtLoader, OrtOptions};
    let Runtime::Ort {
        precision,
        library,
        threads,
        spinning,
    } = &config.runtime
    else {
        bail!("the configuration names no ONNX Runtime backend");
    };
    let library = match library {
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
            threads: *threads,
            spinning: *spinning,
        },
        precision: *precision,
        cache_dir: config.state.onnx_cache(),
    }))
}

#[cfg(not(feature = "ort"))]
fn ort_loader(_: &Config, _: usize) -> Result<Box<dyn BackendLoader>> {
    bail!("this cpack was built without the `ort` feature; use encode.backend = \"candle\"")
}

/// The merged `[rerank]` recipe (the flags given over cpack.toml's) and the
/// reranker it names, if it names one, where the encoder computes.
pub fn workspace_reranker(
    config: &Config,
    flags: &RerankRecipe,
) -> Result<(RerankRecipe, Option<CrossEncoder>)> {
    let recipe = crate::config::overlay_set(&config.rerank, flags)?;
    let reranker = match recipe.model {
        Some(_) => Some(open_reranker(
            &config.workspace,
            &recipe,
            config.runtime.device(),
            config.threads,
        )?),
        None => None,
    };
    Ok((recipe, reranker))
}

/// The cross-encoder `spec` names, if any, where the encoder computes: its
/// pairs cut as `[rerank]` says (max_len, part of the round's identity), in
/// batches of a fixed size whatever `[rerank]` sets, because which pairs
/// share a padded batch moves the last bits of their scores, and a resumed
/// round must score as the run that began it.
pub fn open_teacher(config: &Config, spec: Option<&TeacherSpec>) -> Result<Option<CrossEncoder>> {
    let Some(spec) = spec else {
        return Ok(None);
    };
    let recipe = RerankRecipe {
        model: Some(spec.model.clone()),
        batch_size: Some(RerankSettings::DEFAULT_BATCH_SIZE),
        batch_tokens: Some(0),
        ..config.rerank.clone()
    };
    let teacher = open_reranker(
        &config.workspace,
        &recipe,
        config.runtime.device(),
        config.threads,
    );
    teacher
        .with_context(|| format!("teacher {}", spec.model.display()))
        .map(Some)
}

/// The reranker `recipe` names, on `device`, fed by `workers` threads
/// (one on a GPU, which runs every batch).
pub fn open_reranker(
    workspace: &Path,
    recipe: &RerankRecipe,
    device: ComputeDevice,
    workers: usize,
) -> Result<CrossEncoder> {
    let path = recipe.model.as_ref().context(
        "no reranker named: pass --reranker MODEL (a cross-encoder folder or hub id) or set rerank.model in cpack.toml",
    )?;
    let model = ModelDir::open(&crate::config::locate_model(workspace, path)?)?;
    let workers = if device.is_cpu() { workers } else { 1 };
    Ok(CrossEncoder::load(
        &model,
        recipe.settings(&model),
        device,
        workers,
    )?)
}
