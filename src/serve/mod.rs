//! `cpack serve`: the workspace's (or a training run's) encoder and index
//! behind HTTP, as text-embeddings-inference serves a model, and
//! optionally a reranker beside them. The engine
//! ([`engine`]) owns the model on its own thread and batches the requests
//! that arrive together; the HTTP layer ([`http`]) only parses, bounds and
//! forwards them.

mod engine;
mod http;
mod listen;

use crate::cli::ServeArgs;
use crate::config::Config;
use crate::runtime::Context;
use anyhow::{Context as _, Result};
use engine::{Engine, ModelSource, ServedIndex, ServedReranker};
use std::collections::BTreeMap;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

/// Requests that may wait for the engine before new ones are turned away.
const QUEUE: usize = 1024;

pub fn run(ctx: &Context, args: ServeArgs) -> Result<()> {
    let config = ctx.config(&args.overrides)?;
    let reranker = open_served_reranker(&config, &args)?;
    // One engine per task (its own encoder, instruction and index), each on
    // its own thread; a request names its task when there are several.
    let mut engines = BTreeMap::new();
    let mut workers = Vec::new();
    for task in config.task_configs()? {
        let (config, source, served) = engine_setup(task.config, &task.name, &args)?;
        let engine = Engine::open(config, source, served, reranker.clone(), &ctx.progress)?;
        let info = Arc::new(Mutex::new(engine.info()));
        let (jobs, queue) = mpsc::sync_channel(QUEUE);
        let engine_info = info.clone();
        workers.push(
            std::thread::Builder::new()
                .name(format!("cpack-engine-{}", task.name))
                .spawn(move || engine.run(queue, &engine_info))?,
        );
        engines.insert(task.name, http::EngineHandle { jobs, info });
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let served = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&args.addr)
            .await
            .with_context(|| format!("cannot listen on {}", args.addr))?;
        announce(listener.local_addr()?, &engines);
        let limits = listen::Limits {
            max_connections: args.max_connections as usize,
            read_timeout: Duration::from_secs_f64(args.read_timeout),
        };
        let shared = http::Shared {
            engines: Arc::new(engines),
        };
        let app = http::router(shared, limits.read_timeout);
        listen::serve(listener, app, limits, shutdown()).await;
        anyhow::Ok(())
    });
    // Connections still open after the grace period (a client that never
    // reads) hold the router, and with it the engines' queues: drop them, so
    // the engines see their queues close and end.
    runtime.shutdown_timeout(Duration::from_secs(1));
    for worker in workers {
        let _ = worker.join();
    }
    served
}

/// The reranker `--reranker` or `[rerank]` names, if any: one model shared
/// by every task's engine.
fn open_served_reranker(config: &Config, args: &ServeArgs) -> Result<Option<Arc<ServedReranker>>> {
    let (recipe, reranker) = crate::runtime::workspace_reranker(config, &args.rerank)?;
    let (Some(model), Some(cross_encoder)) = (&recipe.model, reranker) else {
        return Ok(None);
    };
    Ok(Some(Arc::new(ServedReranker {
        model: model.display().to_string(),
        depth: recipe.depth(),
        cross_encoder,
    })))
}

/// Says where the server listens and what each engine serves.
fn announce(addr: std::net::SocketAddr, engines: &BTreeMap<String, http::EngineHandle>) {
    for (name, engine) in engines {
        let i = engine.info.lock().expect("info lock");
        let what = format!(
            "index {} ({} passages, {}) · {} encoder",
            i.generation, i.passages, i.index, i.backend
        );
        let what = match &i.reranker {
            Some(r) => format!("{what} · reranker {} (top {})", r.model, r.depth),
            None => what,
        };
        match name.as_str() {
            "" => errln!("cpack serve: listening on http://{addr} · {what}"),
            name => errln!("cpack serve: listening on http://{addr} · task {name}: {what}"),
        }
    }
}

/// What task `task`'s engine serves: the workspace's model and index, or
/// with `--run` that run's newest checkpoint and its index of the task.
fn engine_setup(
    mut config: Config,
    task: &str,
    args: &ServeArgs,
) -> Result<(Config, ModelSource, ServedIndex)> {
    let Some(name) = &args.run else {
        let served = ServedIndex::Workspace(config.index_dir());
        return Ok((config, ModelSource::Fixed, served));
    };
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
        .find(|plan| plan.name == task)
        .with_context(|| format!("run {name:?} did not train task {task:?}"))?;
    config.encoder = plan.encoder;
    let device = config.index.device;
    let served = match task {
        "" => ServedIndex::Run {
            existing: vec![run.index(device), run.eval_index(device)],
            own: run.serve_index(device),
        },
        task => ServedIndex::Run {
            existing: vec![run.task_index(task, device)],
            own: run.task_serve_index(task, device),
        },
    };
    Ok((config, ModelSource::Run(run.path().to_path_buf()), served))
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
