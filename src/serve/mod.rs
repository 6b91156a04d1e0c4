//! `cpack serve`: the workspace's (or a training run's) encoder and index
//! behind HTTP, as text-embeddings-inference serves a model. The engine
//! ([`engine`]) owns the model on its own thread and batches the requests
//! that arrive together; the HTTP layer ([`http`]) only parses, bounds and
//! forwards them.

mod engine;
mod http;
mod listen;

use crate::cli::ServeArgs;
use crate::runtime::Context;
use anyhow::{Context as _, Result};
use engine::{Engine, ModelSource, ServedIndex};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

/// Requests that may wait for the engine before new ones are turned away.
const QUEUE: usize = 1024;

pub fn run(ctx: &Context, args: ServeArgs) -> Result<()> {
    let task = ctx.config(&args.overrides)?.single_task("serve")?;
    let mut config = task.config;
    let (source, served) = match &args.run {
        None => (
            ModelSource::Fixed,
            ServedIndex::Workspace(config.index_dir()),
        ),
        Some(name) => {
            let run = config.state.runs().run(name)?;
            let spec = run
                .spec()
                .with_context(|| format!("no training run {name:?} to serve"))?;
            if spec.train.freeze_passages {
                anyhow::bail!(
                    "run {name:?} trained the query side only (freeze_passages): its passages are \
                     the workspace index's; serve that with `cpack serve` and the base model, or \
                     evaluate the checkpoint with `cpack eval --query-model`"
                );
            }
            let newest = cpack_train::checkpoint::latest(run.path())?
                .with_context(|| format!("run {name:?} has no checkpoint yet"))?;
            config.model = cpack_model::ModelDir::open(&newest)?;
            let plan = (spec.task_plans().into_iter())
                .find(|plan| plan.name == task.name)
                .with_context(|| format!("run {name:?} did not train task {:?}", task.name))?;
            config.encoder = plan.encoder;
            let device = config.index.device;
            let served = match plan.name.as_str() {
                "" => ServedIndex::Run {
                    existing: vec![run.index(device), run.eval_index(device)],
                    own: run.serve_index(device),
                },
                // A task's index under the newest checkpoint is the run's own;
                // its serving copy goes beside it.
                name => ServedIndex::Run {
                    existing: vec![run.task_index(name, device)],
                    own: run.task_serve_index(name, device),
                },
            };
            (ModelSource::Run(run.path().to_path_buf()), served)
        }
    };
    let engine = Engine::open(config, source, served, &ctx.progress)?;
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
    let served =
        runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind(&args.addr)
                .await
                .with_context(|| format!("cannot listen on {}", args.addr))?;
            let addr = listener.local_addr()?;
            {
                let i = info.lock().expect("info lock");
                errln!(
                "cpack serve: listening on http://{addr} · index {} ({} passages, {}) · {} encoder",
                i.generation, i.passages, i.index, i.backend
            );
            }
            let limits = listen::Limits {
                max_connections: args.max_connections as usize,
                read_timeout: Duration::from_secs_f64(args.read_timeout),
            };
            let app = http::router(http::Shared { jobs, info }, limits.read_timeout);
            listen::serve(listener, app, limits, shutdown()).await;
            anyhow::Ok(())
        });
    // Connections still open after the grace period (a client that never
    // reads) hold the router, and with it the engine's queue: drop them, so
    // the engine sees its queue close and ends.
    runtime.shutdown_timeout(Duration::from_secs(1));
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
    errln!("cpack serve: shutting down");
}
