//! `cpack serve`: the workspace's (or a training run's) encoder and index
//! behind HTTP, as text-embeddings-inference serves a model. The engine
//! ([`engine`]) owns the model on its own thread and batches the requests
//! that arrive together; the HTTP layer ([`http`]) only parses, bounds and
//! forwards them.

mod engine;
mod http;

use crate::cli::ServeArgs;
use crate::commands::{load_config, Context};
use anyhow::{Context as _, Result};
use engine::{Engine, ModelSource};
use std::sync::{mpsc, Arc, Mutex};

/// Requests that may wait for the engine before new ones are turned away.
const QUEUE: usize = 1024;

pub fn run(ctx: &Context, args: ServeArgs) -> Result<()> {
    let mut config = load_config(ctx, &args.overrides)?;
    let (source, index_dir) = match &args.run {
        None => (ModelSource::Fixed, config.index_dir()),
        Some(name) => {
            cpack_run::validate_run_name(name)?;
            let run_dir = crate::commands::train::runs_dir(&config.workspace).join(name);
            let spec: cpack_run::RunSpec =
                cpack_core::fsutil::read_json(&run_dir.join(cpack_run::SPEC_FILE))
                    .with_context(|| format!("no training run {name:?} to serve"))?;
            let newest = cpack_train::checkpoint::latest(&run_dir)?
                .with_context(|| format!("run {name:?} has no checkpoint yet"))?;
            config.model = cpack_model::ModelDir::open(&newest)?;
            config.encoder = spec.encoder;
            (
                ModelSource::Run(run_dir.clone()),
                cpack_index::store::IndexDir::new(run_dir.join("index")).on(config.index.device),
            )
        }
    };
    let engine = Engine::open(config, source, index_dir)?;
    let info = Arc::new(Mutex::new(engine.info()));
    let (jobs, queue) = mpsc::sync_channel(QUEUE);
    let engine_info = info.clone();
    let worker = std::thread::Builder::new()
        .name("cpack-engine".into())
        .spawn(move || engine.run(queue, &engine_info))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let served = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&args.addr)
            .await
            .with_context(|| format!("cannot listen on {}", args.addr))?;
        let addr = listener.local_addr()?;
        {
            let i = info.lock().expect("info lock");
            eprintln!(
                "cpack serve: listening on http://{addr} · index {} ({} passages, {}) · {} encoder",
                i.generation, i.passages, i.index, i.backend
            );
        }
        let app = http::router(http::Shared { jobs, info });
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown())
            .await
            .context("the HTTP server failed")
    });
    let _ = worker.join();
    served
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown() {
    let interrupt = tokio::signal::ctrl_c();
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler");
    tokio::select! {
        _ = interrupt => {}
        _ = terminate.recv() => {}
    }
    eprintln!("cpack serve: shutting down");
}
