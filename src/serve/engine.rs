//! The model and index behind `cpack serve`, on a thread of their own.
//!
//! HTTP handlers never encode: they send a [`Job`] and await its reply. The
//! engine thread takes every job waiting (up to [`MAX_BATCH_TEXTS`] texts),
//! encodes all their texts in one go and searches all their queries at
//! once, the way text-embeddings-inference batches requests that arrive
//! together. Before each batch it looks at the index's `CURRENT`: when a
//! build (or a training run's refresh) has published a new generation, it
//! opens it — and, for a training run, the newest checkpoint — and swaps
//! them in between two batches, so no request sees half of each.
//!
//! With a reranker, the same thread scores `/rerank` pairs and reorders the
//! top hits of the searches that ask for it, batched across the jobs of a
//! batch as the texts are.

use crate::config::Config;
use crate::progress::Reporter;
use anyhow::{Context as _, Result};
use cpack_core::Progress as _;
use cpack_data::dataset::{DatasetPaths, TextTable};
use cpack_encode::EmbeddingStamp;
use cpack_encode::{CrossEncoder, Encoder, TextKind};
use cpack_index::store::{
    BuildOptions, BuildOutcome, BuildPlan, Generation, IndexDir, OpenIndex, Provenance,
};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::Arc;
use tokio::sync::oneshot;

/// Texts the engine encodes in one batch at most.
pub const MAX_BATCH_TEXTS: usize = 256;

/// One hit of a search.
#[derive(Debug, Clone, Serialize)]
pub struct Hit {
    pub rank: usize,
    pub id: String,
    pub score: f32,
    /// The reranker's score, for hits a reranked search reordered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rerank_score: Option<f32>,
    pub title: String,
    pub text: String,
}

/// The cross-encoder a server runs beside its embedder, shared by every
/// task's engine.
pub struct ServedReranker {
    /// As named on the command line or in cpack.toml.
    pub model: String,
    /// Hits a reranked search reorders.
    pub depth: usize,
    pub cross_encoder: CrossEncoder,
}

/// What `GET /info` says of the reranker.
#[derive(Debug, Clone, Serialize)]
pub struct RerankerInfo {
    pub model: String,
    pub model_fingerprint: String,
    pub max_len: usize,
    pub depth: usize,
}

/// Why a batch failed: one error, shared by every job of the batch.
pub type Failure = Arc<anyhow::Error>;

/// What a handler asks of the engine.
pub enum Job {
    Search {
        queries: Vec<String>,
        k: usize,
        /// Reorder the top hits with the reranker.
        rerank: bool,
        reply: oneshot::Sender<Result<SearchAnswer, Failure>>,
    },
    /// The reranker's logit of `query` with each text, in order.
    Rerank {
        query: String,
        texts: Vec<String>,
        reply: oneshot::Sender<Result<Vec<f32>, Failure>>,
    },
    Embed {
        inputs: Vec<String>,
        kind: TextKind,
        reply: oneshot::Sender<Result<Vec<Vec<f32>>, Failure>>,
    },
}

impl Job {
    fn texts(&self) -> usize {
        match self {
            Job::Search { queries, .. } => queries.len(),
            Job::Embed { inputs, .. } => inputs.len(),
            Job::Rerank { texts, .. } => texts.len(),
        }
    }
}

/// Hits per query, and the generation that answered.
#[derive(Debug, Serialize)]
pub struct SearchAnswer {
    pub generation: Generation,
    pub results: Vec<Vec<Hit>>,
}

/// A search job's queries, depth, whether to rerank, and reply.
type SearchJob = (
    Vec<String>,
    usize,
    bool,
    oneshot::Sender<Result<SearchAnswer, Failure>>,
);

/// A `/rerank` job's query, texts and reply.
type RerankJob = (
    String,
    Vec<String>,
    oneshot::Sender<Result<Vec<f32>, Failure>>,
);

/// What `GET /info` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Info {
    pub model: String,
    pub model_fingerprint: String,
    pub backend: String,
    pub precision: String,
    pub dim: usize,
    pub pooling: String,
    pub normalize: bool,
    pub query_instruction: String,
    pub query_max_len: usize,
    pub passage_max_len: usize,
    pub index: String,
    pub generation: Generation,
    pub passages: usize,
    pub max_batch_texts: usize,
    pub reranker: Option<RerankerInfo>,
}

/// Where the engine's model comes from: fixed, or a training run's newest checkpoint.
/// How long a generation that could not be served waits before it is
/// tried again.
const RETRY_REFUSED: std::time::Duration = std::time::Duration::from_secs(60);

pub enum ModelSource {
    Fixed,
    Run(PathBuf),
}

pub struct Engine {
    config: Config,
    source: ModelSource,
    encoder: Encoder,
    stamp: EmbeddingStamp,
    index_dir: IndexDir,
    corpus_path: DatasetPaths,
    corpus: TextTable,
    live: OpenIndex,
    reranker: Option<Arc<ServedReranker>>,
    /// A published generation that could not be served, and when it was
    /// last tried: said once, tried again only after [`RETRY_REFUSED`] (a
    /// mismatch of settings stays; a transient failure may not).
    refused: Option<(Generation, std::time::Instant)>,
}

/// The index a run is served from: the first of `existing` (the run's
/// own index, its evaluation index) that holds the newest checkpoint's
/// vectors; else `own`, built for it now. A run leaves its index with the
/// last checkpoint it encoded the corpus with — with evaluation off or
/// incremental refreshes, not its final one — and the run's folders are
/// the run's: serving never rewrites them. The build is the index's own
/// (resumable, checksummed, published atomically); later serves find it up
/// to date.
fn run_index(
    existing: Vec<IndexDir>,
    own: IndexDir,
    plan: BuildPlan,
    provenance: Provenance,
    corpus: &TextTable,
    encoder: &Encoder,
    progress: &Reporter,
) -> Result<IndexDir> {
    let stamp = plan.stamp.clone();
    if let Some(dir) = existing
        .into_iter()
        .find(|dir| dir.open(&stamp, corpus).is_ok())
    {
        return Ok(dir);
    }
    let options = BuildOptions {
        chunk_rows: BuildOptions::DEFAULT_CHUNK_ROWS,
        force: false,
    };
    let model = provenance.model_path.display().to_string();
    let outcome = own.build(plan, provenance, corpus, encoder, options, progress)?;
    progress.finish();
    if let BuildOutcome::Built { generation, .. } = outcome {
        progress.note(&format!(
            "indexed the corpus with {model}, the run's newest checkpoint, as {generation} in {}: the run had not (evaluation off, or incremental refreshes)",
            own.root().display()
        ));
    }
    Ok(own)
}

/// Where the served vectors come from.
pub enum ServedIndex {
    /// The workspace's index.
    Workspace(IndexDir),
    /// A run's: see [`run_index`].
    Run {
        existing: Vec<IndexDir>,
        own: IndexDir,
    },
}

impl Engine {
    /// Opens the encoder the configuration describes and the live
    /// generation of the index `served` names (a run's built first if none
    /// holds its newest checkpoint).
    pub fn open(
        config: Config,
        source: ModelSource,
        served: ServedIndex,
        reranker: Option<Arc<ServedReranker>>,
        progress: &Reporter,
    ) -> Result<Self> {
        let corpus_path = config.data()?.clone();
        let corpus = cpack_data::dataset::Dataset::load_corpus(&corpus_path)?;
        let encoder = crate::runtime::open_encoder(&config)?;
        let stamp = config.embedding_stamp(&encoder)?;
        let index_dir = match served {
            ServedIndex::Workspace(dir) => dir,
            ServedIndex::Run { existing, own } => {
                let plan = config.build_plan(stamp.clone(), &corpus);
                let provenance = Provenance {
                    model_path: &config.model.dir,
                    corpus_path: &corpus_path.corpus,
                };
                run_index(existing, own, plan, provenance, &corpus, &encoder, progress)?
            }
        };
        let live = index_dir.open(&stamp, &corpus)?;
        Ok(Engine {
            config,
            source,
            encoder,
            stamp,
            index_dir,
            corpus_path,
            corpus,
            live,
            reranker,
            refused: None,
        })
    }

    pub fn info(&self) -> Info {
        let s = &self.stamp;
        Info {
            model: self.config.model.dir.display().to_string(),
            model_fingerprint: s.model_fingerprint.clone(),
            backend: self.encoder.backend_kind().to_string(),
            precision: self.encoder.precision().to_string(),
            dim: s.dim,
            pooling: s.pooling.to_string(),
            normalize: s.normalize,
            query_instruction: s.query_instruction.clone(),
            query_max_len: s.query_max_len,
            passage_max_len: s.passage_max_len,
            index: self.live.manifest.plan.index.to_string(),
            generation: self.live.generation,
            passages: self.live.ids.len(),
            max_batch_texts: MAX_BATCH_TEXTS,
            reranker: self.reranker.as_ref().map(|r| RerankerInfo {
                model: r.model.clone(),
                model_fingerprint: r.cross_encoder.fingerprint().to_string(),
                max_len: r.cross_encoder.settings().max_len,
                depth: r.depth,
            }),
        }
    }

    /// Swaps in a newly published generation (and, for a run, its
    /// checkpoint); on failure keeps serving the current one and says why.
    fn refresh(&mut self, info: &std::sync::Mutex<Info>) {
        let published = match self.index_dir.current() {
            Ok(Some((generation, _))) => generation,
            _ => return,
        };
        if published == self.live.generation {
            return;
        }
        let said = matches!(self.refused, Some((g, _)) if g == published);
        if matches!(self.refused, Some((g, at)) if g == published && at.elapsed() < RETRY_REFUSED) {
            return;
        }
        match self.reopen() {
            Ok(()) => {
                // /info answers for the new generation before the line says so.
                *info.lock().expect("info lock") = self.info();
                errln!("cpack serve: now serving index {}", self.live.generation);
            }
            Err(_) if said => self.refused = Some((published, std::time::Instant::now())),
            Err(e) => {
                self.refused = Some((published, std::time::Instant::now()));
                errln!(
                    "cpack serve: index {published} was published but cannot be served with the \
                     encoder this server opened ({e:#}); still serving {}. To serve it, restart \
                     `cpack serve` with the settings it was built with; or rebuild the index \
                     with the settings being served",
                    self.live.generation
                );
            }
        }
    }

    fn reopen(&mut self) -> Result<()> {
        let corpus = cpack_data::dataset::Dataset::load_corpus(&self.corpus_path)?;
        let (encoder, stamp, model) = match &self.source {
            ModelSource::Fixed => (None, self.stamp.clone(), None),
            ModelSource::Run(run_dir) => {
                let newest = cpack_train::checkpoint::latest(run_dir)?
                    .context("the run has no checkpoint any more")?;
                if newest == self.config.model.dir {
                    (None, self.stamp.clone(), None)
                } else {
                    let mut config_model = cpack_model::ModelDir::open(&newest)?;
                    std::mem::swap(&mut self.config.model, &mut config_model);
                    let opened = crate::runtime::open_encoder(&self.config)
                        .and_then(|e| Ok((self.config.embedding_stamp(&e)?, e)));
                    std::mem::swap(&mut self.config.model, &mut config_model);
                    let (stamp, encoder) = opened?;
                    (Some(encoder), stamp, Some(config_model))
                }
            }
        };
        let live = self.index_dir.open(&stamp, &corpus)?;
        if let (Some(encoder), Some(model)) = (encoder, model) {
            self.encoder = encoder;
            self.config.model = model;
        }
        self.stamp = stamp;
        self.corpus = corpus;
        self.live = live;
        Ok(())
    }

    /// Serves jobs until every sender is gone.
    pub fn run(mut self, jobs: mpsc::Receiver<Job>, info: &std::sync::Mutex<Info>) {
        while let Ok(first) = jobs.recv() {
            let mut batch = vec![first];
            let mut texts = batch[0].texts();
            while texts < MAX_BATCH_TEXTS {
                match jobs.try_recv() {
                    Ok(job) => {
                        texts += job.texts();
                        batch.push(job);
                    }
                    Err(_) => break,
                }
            }
            self.refresh(info);
            self.answer(batch);
        }
    }

    fn answer(&mut self, batch: Vec<Job>) {
        let mut searches = Vec::new();
        let mut reranks = Vec::new();
        for job in batch {
            match job {
                Job::Search {
                    queries,
                    k,
                    rerank,
                    reply,
                } => searches.push((queries, k, rerank, reply)),
                Job::Embed {
                    inputs,
                    kind,
                    reply,
                } => {
                    let _ = reply.send(self.embed(&inputs, kind).map_err(Arc::new));
                }
                Job::Rerank {
                    query,
                    texts,
                    reply,
                } => reranks.push((query, texts, reply)),
            }
        }
        if !reranks.is_empty() {
            self.answer_reranks(reranks);
        }
        if !searches.is_empty() {
            self.answer_searches(searches);
        }
    }

    /// Scores every pair of the `/rerank` jobs in one go.
    fn answer_reranks(&self, jobs: Vec<RerankJob>) {
        let scored = (|| {
            let reranker = self.reranker.as_ref().context("no reranker is served")?;
            let pairs: Vec<(&str, &str)> = jobs
                .iter()
                .flat_map(|(q, texts, _)| texts.iter().map(move |t| (q.as_str(), t.as_str())))
                .collect();
            anyhow::Ok(reranker.cross_encoder.score(&pairs, &mut |_, _| {})?)
        })();
        match scored {
            Ok(scores) => {
                let mut scores = scores.into_iter();
                for (_, texts, reply) in jobs {
                    let _ = reply.send(Ok(scores.by_ref().take(texts.len()).collect()));
                }
            }
            Err(e) => {
                let failure = Arc::new(e);
                for (_, _, reply) in jobs {
                    let _ = reply.send(Err(failure.clone()));
                }
            }
        }
    }

    /// Searches the queries of every search job at once, at the largest
    /// depth any asks for, reranks the hits of those that ask, and cuts
    /// each job's lists to its own `k`.
    fn answer_searches(&mut self, searches: Vec<SearchJob>) {
        let all: Vec<String> = searches.iter().flat_map(|(q, ..)| q.clone()).collect();
        let depth = self.reranker.as_ref().map_or(0, |r| r.depth);
        let wanted = |&(_, k, rerank, _): &SearchJob| if rerank { k.max(depth) } else { k };
        let k = searches.iter().map(wanted).max().unwrap_or(1);
        let reranked: Vec<bool> = (searches.iter())
            .flat_map(|(q, _, rerank, _)| std::iter::repeat_n(*rerank, q.len()))
            .collect();
        let found = self
            .search(&all, k)
            .and_then(|mut hits| self.rerank(&all, &mut hits, &reranked).map(|()| hits));
        match found {
            Ok(mut hits) => {
                for (queries, k, _, reply) in searches {
                    let rest = hits.split_off(queries.len());
                    let mine = std::mem::replace(&mut hits, rest)
                        .into_iter()
                        .map(|mut h| {
                            h.truncate(k);
                            h
                        })
                        .collect();
                    let _ = reply.send(Ok(SearchAnswer {
                        generation: self.live.generation,
                        results: mine,
                    }));
                }
            }
            Err(e) => {
                let failure = Arc::new(e);
                for (.., reply) in searches {
                    let _ = reply.send(Err(failure.clone()));
                }
            }
        }
    }

    /// Reorders the top hits of each query `reranked` marks by the
    /// reranker's scores (all pairs scored together); the rest stay below.
    fn rerank(&self, queries: &[String], hits: &mut [Vec<Hit>], reranked: &[bool]) -> Result<()> {
        let marked: Vec<usize> = (0..queries.len()).filter(|&q| reranked[q]).collect();
        if marked.is_empty() {
            return Ok(());
        }
        let reranker = self.reranker.as_ref().context("no reranker is served")?;
        let top = |q: usize| &hits[q][..reranker.depth.min(hits[q].len())];
        let texts: Vec<Vec<String>> = (marked.iter())
            .map(|&q| top(q).iter().map(|h| self.full_text(&h.id)).collect())
            .collect();
        let candidates: Vec<Vec<&str>> = (texts.iter())
            .map(|list| list.iter().map(String::as_str).collect())
            .collect();
        let marked_queries: Vec<&str> = marked.iter().map(|&q| queries[q].as_str()).collect();
        let orders = (reranker.cross_encoder).rank(&marked_queries, &candidates, &mut |_, _| {})?;
        for (&q, order) in marked.iter().zip(orders) {
            let original: Vec<Hit> = hits[q][..order.len()].to_vec();
            for (rank, (i, score)) in order.into_iter().enumerate() {
                let mut hit = original[i].clone();
                hit.rank = rank + 1;
                hit.rerank_score = Some(score);
                hits[q][rank] = hit;
            }
        }
        Ok(())
    }

    /// The text a model reads for passage `id`: title and text, as indexed.
    fn full_text(&self, id: &str) -> String {
        (self.corpus.position(id))
            .map(|p| self.corpus.full_text(p))
            .unwrap_or_default()
    }

    fn embed(&self, inputs: &[String], kind: TextKind) -> Result<Vec<Vec<f32>>> {
        let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        let flat = self.encoder.encode(&refs, kind, &mut |_, _| {})?;
        Ok(flat
            .chunks(self.encoder.dim().max(1))
            .map(<[f32]>::to_vec)
            .collect())
    }

    /// The `k` best passages for each query, as `cpack search` finds them.
    fn search(&mut self, queries: &[String], k: usize) -> Result<Vec<Vec<Hit>>> {
        let refs: Vec<&str> = queries.iter().map(String::as_str).collect();
        let vectors = self
            .encoder
            .encode(&refs, TextKind::Query, &mut |_, _| {})?;
        let k = k.min(self.live.ids.len());
        let hits = self.live.vectors.search(&vectors, k, self.config.threads)?;
        Ok((0..queries.len())
            .map(|q| {
                hits.of(q)
                    .enumerate()
                    .map(|(rank, (row, score))| {
                        let id = self.live.ids[row].clone();
                        let at = self.corpus.position(&id);
                        Hit {
                            rank: rank + 1,
                            score,
                            rerank_score: None,
                            title: at
                                .map(|p| self.corpus.titles[p].clone())
                                .unwrap_or_default(),
                            text: at.map(|p| self.corpus.texts[p].clone()).unwrap_or_default(),
                            id,
                        }
                    })
                    .collect()
            })
            .collect())
    }
}
