//! The HTTP face of `cpack serve` (axum on tokio): JSON in, JSON out,
//! bounded requests, a 4xx with `{"error": …}` for anything malformed.

use super::engine::{Failure, Info, Job, MAX_BATCH_TEXTS};
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cpack_encode::TextKind;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

/// Bytes a request body may have.
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// Hits a search may ask for per query.
pub const MAX_K: usize = 1000;

/// One engine: its queue and what it serves.
pub struct EngineHandle {
    pub jobs: mpsc::SyncSender<Job>,
    pub info: Arc<Mutex<Info>>,
}

/// The engines by task name ("" for a workspace's lone dataset).
#[derive(Clone)]
pub struct Shared {
    pub engines: Arc<BTreeMap<String, EngineHandle>>,
}

impl Shared {
    /// The engine of `task`: the one named, or the only one.
    fn engine(&self, task: Option<&str>) -> Result<&EngineHandle, ApiError> {
        let names = || {
            (self.engines.keys().cloned())
                .collect::<Vec<_>>()
                .join(", ")
        };
        match task {
            Some(task) => self
                .engines
                .get(task)
                .filter(|_| !task.is_empty())
                .ok_or_else(|| {
                    bad(format!(
                        "no task {task:?} is served here; the tasks are {}",
                        names()
                    ))
                }),
            None if self.engines.len() == 1 => {
                Ok(self.engines.values().next().expect("one engine"))
            }
            None => Err(bad(format!(
                "name the task of the request (\"task\"): one of {}",
                names()
            ))),
        }
    }
}

/// The routes; a request body must arrive whole within `read_timeout`.
pub fn router(shared: Shared, read_timeout: Duration) -> Router {
    Router::new()
        .route("/search", post(search))
        .route("/embed", post(embed))
        .route("/rerank", post(rerank))
        .route("/health", get(health))
        .route("/info", get(info))
        .fallback(not_found)
        .method_not_allowed_fallback(wrong_method)
        .layer(axum::middleware::from_fn_with_state(
            read_timeout,
            read_body_in_time,
        ))
        .layer(axum::middleware::from_fn(refuse_announced_oversize))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(shared)
}

/// Reads the whole body before the handler runs, within the read timeout:
/// a client that announces 100 bytes and sends 22 gets a 408 instead of
/// holding its connection (and a worker) for ever.
async fn read_body_in_time(
    State(read_timeout): State<Duration>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let read = axum::body::to_bytes(body, MAX_BODY_BYTES);
    match tokio::time::timeout(read_timeout, read).await {
        Ok(Ok(bytes)) => {
            let request = axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes));
            next.run(request).await
        }
        Ok(Err(_)) => ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body was cut short or is over {MAX_BODY_BYTES} bytes"),
        )
        .into_response(),
        Err(_) => {
            let mut response = ApiError(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {} s",
                    read_timeout.as_secs_f64()
                ),
            )
            .into_response();
            // The rest of the body may never come: do not wait for it.
            response.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
            response
        }
    }
}

/// Answers 413 at once to a body whose Content-Length is over the cap,
/// before any of it is read (a chunked body is cut by the body limit).
async fn refuse_announced_oversize(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let announced = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    match announced {
        Some(bytes) if bytes > MAX_BODY_BYTES as u64 => ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a body of {bytes} bytes; at most {MAX_BODY_BYTES} per request"),
        )
        .into_response(),
        _ => next.run(request).await,
    }
}

/// A client error or an engine failure, as `{"error": message}`.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::UNPROCESSABLE_ENTITY, message.into())
}

/// The JSON body, or the 4xx axum's rejection calls for, worded as an error object.
fn body<T>(parsed: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    parsed
        .map(|Json(v)| v)
        .map_err(|rejection| ApiError(rejection.status(), rejection.body_text()))
}

/// One text or a list of them.
#[derive(Deserialize)]
#[serde(untagged)]
enum Texts {
    One(String),
    Many(Vec<String>),
}

impl Texts {
    fn into_vec(self) -> Vec<String> {
        match self {
            Texts::One(t) => vec![t],
            Texts::Many(v) => v,
        }
    }
}

fn checked(texts: Vec<String>, what: &str) -> Result<Vec<String>, ApiError> {
    if texts.is_empty() {
        return Err(bad(format!("{what} is empty")));
    }
    if texts.len() > MAX_BATCH_TEXTS {
        return Err(ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{} texts in {what}; at most {MAX_BATCH_TEXTS} per request",
                texts.len()
            ),
        ));
    }
    Ok(texts)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchRequest {
    query: Option<String>,
    queries: Option<Vec<String>>,
    k: Option<usize>,
    /// The task searched, when the workspace has several.
    task: Option<String>,
    /// Reorder the top hits with the served reranker.
    #[serde(default)]
    rerank: bool,
}

async fn search(
    State(shared): State<Shared>,
    parsed: Result<Json<SearchRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let request = body(parsed)?;
    let engine = shared.engine(request.task.as_deref())?;
    let (queries, single) = match (request.query, request.queries) {
        (Some(q), None) => (vec![q], true),
        (None, Some(qs)) => (qs, false),
        _ => {
            return Err(bad(
                "give either \"query\" (a text) or \"queries\" (a list of texts)",
            ))
        }
    };
    let queries = checked(queries, "queries")?;
    let k = request.k.unwrap_or(10);
    if k == 0 || k > MAX_K {
        return Err(bad(format!("k must be between 1 and {MAX_K}, not {k}")));
    }
    if request.rerank && !serves_reranker(engine) {
        return Err(no_reranker());
    }
    let (reply, answer) = oneshot::channel();
    let job = Job::Search {
        queries,
        k,
        rerank: request.rerank,
        reply,
    };
    let answer = ask(engine, job, answer).await?;
    Ok(if single {
        Json(serde_json::json!({
            "generation": answer.generation,
            "hits": answer.results.into_iter().next().unwrap_or_default(),
        }))
        .into_response()
    } else {
        Json(answer).into_response()
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum Kind {
    Query,
    Passage,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmbedRequest {
    inputs: Texts,
    /// `query` gets the workspace's (or task's) instruction, `passage` (the
    /// default, as text-embeddings-inference without a prompt) none.
    kind: Option<Kind>,
    /// The task whose instruction queries get, when the workspace has several.
    task: Option<String>,
}

async fn embed(
    State(shared): State<Shared>,
    parsed: Result<Json<EmbedRequest>, JsonRejection>,
) -> Result<Json<Vec<Vec<f32>>>, ApiError> {
    let request = body(parsed)?;
    let engine = shared.engine(request.task.as_deref())?;
    let inputs = checked(request.inputs.into_vec(), "inputs")?;
    let kind = match request.kind {
        Some(Kind::Query) => TextKind::Query,
        Some(Kind::Passage) | None => TextKind::Passage,
    };
    let (reply, answer) = oneshot::channel();
    Ok(Json(
        ask(
            engine,
            Job::Embed {
                inputs,
                kind,
                reply,
            },
            answer,
        )
        .await?,
    ))
}

fn serves_reranker(engine: &EngineHandle) -> bool {
    engine.info.lock().expect("info lock").reranker.is_some()
}

fn no_reranker() -> ApiError {
    bad("this server runs no reranker: start `cpack serve` with --reranker MODEL (or [rerank] model in cpack.toml)")
}

/// text-embeddings-inference's `/rerank` request.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RerankRequest {
    query: String,
    texts: Vec<String>,
    /// The logits as they are; by default their sigmoid, in (0, 1).
    #[serde(default)]
    raw_scores: bool,
    /// Echo each text beside its score.
    #[serde(default)]
    return_text: bool,
    /// Accepted for text-embeddings-inference's clients: pairs are always
    /// cut to the reranker's length, the longer side first.
    truncate: Option<bool>,
}

/// One text's place in a `/rerank` answer.
#[derive(Serialize)]
struct Ranked {
    /// Its position in the request's `texts`.
    index: usize,
    score: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<String>,
}

/// Scores the query with each text; the texts best first, as
/// text-embeddings-inference answers.
async fn rerank(
    State(shared): State<Shared>,
    parsed: Result<Json<RerankRequest>, JsonRejection>,
) -> Result<Json<Vec<Ranked>>, ApiError> {
    let request = body(parsed)?;
    // The reranker is one model shared by every task's engine: any engine serves it.
    let engine = shared.engines.values().next().ok_or_else(no_reranker)?;
    if !serves_reranker(engine) {
        return Err(no_reranker());
    }
    if request.truncate == Some(false) {
        return Err(bad(
            "\"truncate\": false is not offered: pairs are always cut to the reranker's length, the longer side first",
        ));
    }
    let texts = checked(request.texts, "texts")?;
    let (reply, answer) = oneshot::channel();
    let job = Job::Rerank {
        query: request.query,
        texts: texts.clone(),
        reply,
    };
    let logits = ask(engine, job, answer).await?;
    let mut ranked: Vec<Ranked> = logits
        .into_iter()
        .enumerate()
        .map(|(index, logit)| Ranked {
            index,
            score: if request.raw_scores {
                logit
            } else {
                sigmoid(logit)
            },
            text: request.return_text.then(|| texts[index].clone()),
        })
        .collect();
    ranked.sort_by(|a, b| b.score.total_cmp(&a.score));
    Ok(Json(ranked))
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Hands a job to the engine and waits for its answer.
async fn ask<T>(
    engine: &EngineHandle,
    job: Job,
    answer: oneshot::Receiver<Result<T, Failure>>,
) -> Result<T, ApiError> {
    let unavailable = || {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "the engine has stopped".into(),
        )
    };
    engine.jobs.try_send(job).map_err(|e| match e {
        mpsc::TrySendError::Full(_) => ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many requests are waiting; retry shortly".into(),
        ),
        mpsc::TrySendError::Disconnected(_) => unavailable(),
    })?;
    answer
        .await
        .map_err(|_| unavailable())?
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")))
}

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// The engine's info; with several tasks, each task's by name.
async fn info(State(shared): State<Shared>) -> Json<serde_json::Value> {
    let of = |engine: &EngineHandle| {
        let info: Info = engine.info.lock().expect("info lock").clone();
        serde_json::to_value(info).expect("info is JSON")
    };
    Json(match shared.engine(None) {
        Ok(engine) => of(engine),
        Err(_) => {
            let tasks = shared
                .engines
                .iter()
                .map(|(name, engine)| (name.clone(), of(engine)));
            serde_json::json!({ "tasks": tasks.collect::<serde_json::Map<_, _>>() })
        }
    })
}

async fn wrong_method(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{method} {} is not served: POST /search, POST /embed, POST /rerank, GET /health, GET /info",
            uri.path()
        ),
    )
}

async fn not_found() -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        "no such endpoint: POST /search, POST /embed, POST /rerank, GET /health, GET /info".into(),
    )
}
