//! A mining round: encode the split's queries (with the instruction), search
//! the index, select negatives per query, store them chunk by chunk.
//!
//! Encoding runs on its own thread one chunk ahead of search + selection +
//! storage, so mining costs little more than encoding the queries
//! (`MineOptions::overlap_encoding` off runs the stages one at a time).

use crate::error::{Error, Result};
use crate::params::MiningParams;
use crate::select::{self, Candidate, QueryFacts, Rng};
use crate::store::{
    MiningTimings, NegativeStore, QueryRecord, RoundIdentity, RoundManifest, ScoredDoc,
};
use cpack_core::Progress;
use cpack_data::dataset::{Qrels, TextTable};
use cpack_encode::{Encoder, TextKind};
use cpack_index::embeddings::EmbeddingMatrix;
use cpack_index::store::OpenIndex;
use cpack_index::vector::Hits;
use rayon::prelude::*;
use std::collections::{HashMap, HashSet};
use std::time::Instant;

/// Queries per forward pass while mining. Fixed rather than taken from the
/// encoder settings: which queries share a batch changes the last bits of
/// their embeddings, and a round must not depend on `--batch-size`.
pub const QUERY_BATCH: usize = 32;

/// How a mining run proceeds (not part of what it produces).
#[derive(Debug, Clone, Copy)]
pub struct MineOptions {
    /// Mine a new round even if the newest one matches.
    pub force: bool,
    /// Queries per resumable chunk of a new round.
    pub chunk_queries: usize,
    /// Encode the next chunk while this one is searched and stored (the
    /// default). Off, each stage runs alone on every core, so the round's
    /// per-stage timings are what each stage costs by itself.
    pub overlap_encoding: bool,
}

impl Default for MineOptions {
    fn default() -> Self {
        MineOptions {
            force: false,
            chunk_queries: 2048,
            overlap_encoding: true,
        }
    }
}

/// What mining reads.
pub struct MiningInput<'a> {
    pub corpus: &'a TextTable,
    pub queries: &'a TextTable,
    /// Judgements of the mined split.
    pub split_qrels: &'a Qrels,
    /// Judgements of every split: all of a query's positives are excluded.
    pub all_qrels: &'a [Qrels],
    pub encoder: &'a Encoder,
    pub index: &'a mut OpenIndex,
    /// Fingerprint of the model behind `encoder` when it is not the one
    /// that encoded the index (query-side training); `None`: the same model.
    pub query_model_fingerprint: Option<String>,
}

/// What `mine` did.
#[derive(Debug)]
pub enum MineOutcome {
    UpToDate(RoundManifest),
    Mined {
        manifest: RoundManifest,
        resumed: bool,
        queries_without_positives: usize,
        notes: Vec<String>,
    },
}

/// Mines a round (resuming an unfinished one with the same parameters and index).
pub fn mine(
    store: &NegativeStore,
    input: MiningInput,
    params: MiningParams,
    options: MineOptions,
    progress: &dyn Progress,
) -> Result<MineOutcome> {
    // `IndexDir::open` checked that the index was built from this corpus.
    let (params, clamp_note) = params.validated(input.index.ids.len())?;
    // Before any query is encoded: FAISS on a GPU returns at most 2048 hits.
    let most = input.index.vectors.max_k();
    if params.topk > most {
        let problem = format!(
            "is more than this index returns per query ({most} where it searches); \
             lower it or search on the CPU (index.device = \"cpu\")"
        );
        return Err(cpack_core::InvalidSetting::new("topk", params.topk, problem).into());
    }
    let fresh = RoundManifest::fresh(&input, params, options.chunk_queries);
    let same_work = |m: &RoundManifest| {
        m.identity() == fresh.identity() && m.index_generation == fresh.index_generation
    };
    let (mut manifest, resumed) = match store.rounds()?.pop() {
        Some(m) if same_work(&m) && m.complete && !options.force => {
            return Ok(MineOutcome::UpToDate(m))
        }
        Some(m) if same_work(&m) && !m.complete => (m, true),
        _ => {
            let round = store.next_round()?;
            (RoundManifest { round, ..fresh }, false)
        }
    };

    let plan = QueryPlan::new(&input)?;
    if plan.query_ids.is_empty() {
        return Err(Error::NoJudgedQueries {
            split: manifest.params.split.clone(),
        });
    }
    manifest.total_queries = plan.query_ids.len();
    store.put_manifest(&manifest)?;
    let started = Instant::now();
    run_chunks(store, input, &plan, &mut manifest, options, progress)?;
    manifest.complete = true;
    manifest.seconds += started.elapsed().as_secs_f64();
    store.put_manifest(&manifest)?;
    Ok(MineOutcome::Mined {
        manifest,
        resumed,
        queries_without_positives: plan.without_positives,
        notes: clamp_note.into_iter().collect(),
    })
}

impl RoundManifest {
    /// The manifest of a round not yet numbered nor started, mining `input`
    /// with `params` in chunks of `chunk_queries`.
    fn fresh(input: &MiningInput, params: MiningParams, chunk_queries: usize) -> Self {
        let wanted = RoundIdentity::of_search(
            &input.index.manifest,
            input.query_model_fingerprint.clone(),
            params,
        );
        RoundManifest {
            round: 0,
            params: wanted.params,
            model_fingerprint: wanted.model_fingerprint,
            corpus_fingerprint: wanted.corpus_fingerprint,
            query_instruction: wanted.query_instruction,
            index_generation: input.index.generation.to_string(),
            chunk_queries: chunk_queries.max(1),
            total_queries: 0,
            complete: false,
            created_unix: now(),
            seconds: 0.0,
            timings: MiningTimings::default(),
            query_model_fingerprint: wanted.query_model_fingerprint,
            index_embeddings: wanted.index_embeddings,
        }
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The split's queries that have positives, in id order, with their positive rows.
struct QueryPlan {
    query_ids: Vec<String>,
    positives: HashMap<String, HashSet<usize>>,
    without_positives: usize,
    /// [`select::text_key`] of every passage, by index row.
    passage_keys: Vec<u64>,
}

impl QueryPlan {
    fn new(input: &MiningInput) -> Result<Self> {
        let row_of: HashMap<&str, usize> = input
            .index
            .ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.as_str(), i))
            .collect();
        let mut positives: HashMap<String, HashSet<usize>> = HashMap::new();
        let mut missing = Vec::new();
        for qrels in input.all_qrels {
            for (qid, docs) in &qrels.by_query {
                for (doc, _) in docs.iter().filter(|(_, score)| *score > 0) {
                    match row_of.get(doc.as_str()) {
                        Some(&row) => {
                            positives.entry(qid.clone()).or_default().insert(row);
                        }
                        None => missing.push(doc.clone()),
                    }
                }
            }
        }
        if !missing.is_empty() {
            missing.truncate(5);
            return Err(Error::PositivesNotIndexed { first: missing });
        }
        let mut query_ids = Vec::new();
        let mut without_positives = 0;
        for qid in input.split_qrels.by_query.keys() {
            if positives.contains_key(qid) {
                query_ids.push(qid.clone());
            } else {
                without_positives += 1;
            }
        }
        let passage_keys = (0..input.corpus.len())
            .into_par_iter()
            .map(|row| select::text_key(&input.corpus.full_text(row)))
            .collect();
        Ok(QueryPlan {
            query_ids,
            positives,
            without_positives,
            passage_keys,
        })
    }
}

fn run_chunks<'a>(
    store: &NegativeStore,
    input: MiningInput<'a>,
    plan: &'a QueryPlan,
    manifest: &mut RoundManifest,
    options: MineOptions,
    progress: &dyn Progress,
) -> Result<()> {
    let MiningInput {
        queries,
        encoder,
        index,
        ..
    } = input;
    progress.stage("mining queries", plan.query_ids.len() as u64);
    let mut todo = Vec::new();
    for (chunk, ids) in plan.query_ids.chunks(manifest.chunk_queries).enumerate() {
        if store.chunk_done(manifest.round, chunk as u32)? {
            progress.advance(ids.len() as u64, 0);
        } else {
            todo.push((chunk as u32, ids));
        }
    }
    let encode = |(chunk, ids): (u32, &'a [String])| -> Result<EncodedChunk<'a>> {
        let texts: Vec<&str> = ids
            .iter()
            .map(|id| queries.texts[queries.position(id).expect("qrels validated")].as_str())
            .collect();
        let started = Instant::now();
        let vectors =
            encoder.encode_in_batches_of(QUERY_BATCH, &texts, TextKind::Query, &mut |_, _| {})?;
        Ok(EncodedChunk {
            chunk,
            ids,
            vectors,
            seconds: started.elapsed().as_secs_f64(),
        })
    };
    let mut finish = |encoded: EncodedChunk, search_threads: usize| -> Result<()> {
        manifest.timings.encode_seconds += encoded.seconds;
        let started = Instant::now();
        let hits = index
            .vectors
            .search(&encoded.vectors, manifest.params.topk, search_threads)?;
        manifest.timings.search_seconds += started.elapsed().as_secs_f64();
        let started = Instant::now();
        let corpus = IndexedCorpus {
            ids: &index.ids,
            embeddings: &index.embeddings,
        };
        let records = select_chunk(queries, corpus, &encoded, &hits, plan, &manifest.params);
        store.put_chunk(manifest.round, encoded.chunk, &records)?;
        manifest.timings.select_store_seconds += started.elapsed().as_secs_f64();
        progress.advance(encoded.ids.len() as u64, 0);
        Ok(())
    };
    if !options.overlap_encoding {
        // Nothing else runs: the search gets every thread.
        let threads = rayon::current_num_threads();
        return todo
            .into_iter()
            .try_for_each(|chunk| finish(encode(chunk)?, threads));
    }
    std::thread::scope(|scope| -> Result<()> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<EncodedChunk>>(1);
        scope.spawn(move || {
            for chunk in todo {
                let encoded = encode(chunk);
                let failed = encoded.is_err();
                if tx.send(encoded).is_err() || failed {
                    break;
                }
            }
        });
        // The encoders keep every core busy meanwhile: the search takes one.
        rx.into_iter().try_for_each(|encoded| finish(encoded?, 1))
    })
}

/// One chunk's query vectors, as the encoding thread hands them over.
struct EncodedChunk<'a> {
    chunk: u32,
    ids: &'a [String],
    vectors: Vec<f32>,
    seconds: f64,
}

/// What selection reads of the index: the row ids and the stored vectors.
#[derive(Clone, Copy)]
struct IndexedCorpus<'a> {
    ids: &'a [String],
    embeddings: &'a EmbeddingMatrix,
}

/// Selects each query's negatives from the chunk's search hits.
fn select_chunk(
    queries: &TextTable,
    index: IndexedCorpus,
    encoded: &EncodedChunk,
    hits: &Hits,
    plan: &QueryPlan,
    params: &MiningParams,
) -> Vec<(String, QueryRecord)> {
    let (ids, vectors) = (encoded.ids, &encoded.vectors);
    let dim = index.embeddings.dim();
    let text_key_of = |row: usize| plan.passage_keys[row];
    // Each query's draw is seeded by its id, so the parallel order changes nothing.
    ids.par_iter()
        .enumerate()
        .map(|(q, qid)| {
            let query_vector = &vectors[q * dim..(q + 1) * dim];
            let candidates = Candidate::from_hits(hits, q);
            let positive_rows = &plan.positives[qid];
            let positives = score_positives(index, positive_rows, query_vector, &candidates);
            let facts = QueryFacts {
                text: select::text_key(
                    &queries.texts[queries.position(qid).expect("qrels validated")],
                ),
                positive_rows,
                positive_texts: positive_rows.iter().map(|&r| text_key_of(r)).collect(),
                lowest_positive_score: positives.iter().map(|p| p.score).reduce(f32::min),
            };
            let mut rng = Rng::for_query(params.seed, qid);
            let selection = select::select(
                &candidates,
                &text_key_of,
                &facts,
                params,
                index.ids.len(),
                &mut rng,
            );
            let negatives = selection
                .chosen
                .iter()
                .map(|c| ScoredDoc {
                    id: index.ids[c.row].clone(),
                    rank: c.rank,
                    score: c.score,
                })
                .collect();
            (
                qid.clone(),
                QueryRecord {
                    negatives,
                    positives,
                    survivors: selection.survivors,
                    shortfall: selection.shortfall,
                    filtered: selection.filtered,
                },
            )
        })
        .collect()
}

/// Each positive's score against the query and its rank in the top-k (if there).
fn score_positives(
    index: IndexedCorpus,
    rows: &HashSet<usize>,
    query: &[f32],
    candidates: &[Candidate],
) -> Vec<ScoredDoc> {
    let mut sorted: Vec<usize> = rows.iter().copied().collect();
    sorted.sort_unstable();
    sorted
        .into_iter()
        .map(|row| {
            let vector = index.embeddings.rows_f32(row, row + 1);
            ScoredDoc {
                id: index.ids[row].clone(),
                rank: candidates
                    .iter()
                    .find(|c| c.row == row)
                    .map_or(u32::MAX, |c| c.rank),
                score: vector.iter().zip(query).map(|(a, b)| a * b).sum(),
            }
        })
        .collect()
}
