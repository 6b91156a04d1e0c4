//! A mining round: encode the split's queries (with the instruction), search
//! the index, select negatives per query, store them chunk by chunk.
//!
//! Encoding runs on its own thread one chunk ahead of search + selection +
//! storage, so mining costs little more than encoding the queries
//! (`MineOptions::overlap_encoding` off runs the stages one at a time).

use crate::error::{Error, Result};
use crate::params::MiningParams;
use crate::select::{self, Candidate, Pool, QueryFacts, Rng};
use crate::store::{
    MiningTimings, NegativeStore, QueryRecord, QuerySubset, RoundIdentity, RoundManifest, ScoredDoc,
};
use crate::teacher::{self, Denoise, Teacher, TeacherRound, TeacherScores};
use cpack_core::Progress;
use cpack_data::dataset::{Qrels, TextTable};
use cpack_encode::{CrossEncoder, Encoder, TextKind};
use cpack_index::embeddings::EmbeddingMatrix;
use cpack_index::store::OpenIndex;
use cpack_index::vector::Hits;
use rayon::prelude::*;
use std::collections::{BTreeSet, HashMap, HashSet};
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
    /// A cross-encoder that scores each query's positives and pool, and
    /// may denoise it ([`crate::teacher`]).
    pub teacher: Option<Teacher<'a>>,
    /// Mine these of the split's queries only (`None`: all of them).
    pub only: Option<&'a BTreeSet<String>>,
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
    let clock = RunClock {
        seconds_before: manifest.seconds,
        started: Instant::now(),
    };
    run_chunks(store, input, &plan, &mut manifest, clock, options, progress)?;
    manifest.complete = true;
    manifest.seconds = clock.seconds();
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
        let teacher = (input.teacher.as_ref()).map(|t| t.params(params.negatives));
        let mut wanted = RoundIdentity::of_search(
            &input.index.manifest,
            input.query_model_fingerprint.clone(),
            params,
            teacher,
        );
        wanted.queries = input.only.map(QuerySubset::of);
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
            teacher: wanted.teacher.map(|params| TeacherRound {
                params,
                seconds: 0.0,
                pairs: 0,
            }),
            queries: wanted.queries,
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
        let wanted = |qid: &String| input.only.is_none_or(|only| only.contains(qid));
        for qid in input.split_qrels.by_query.keys().filter(|q| wanted(q)) {
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
    clock: RunClock,
    options: MineOptions,
    progress: &dyn Progress,
) -> Result<()> {
    let MiningInput {
        corpus,
        queries,
        encoder,
        index,
        teacher,
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
        let indexed = IndexedCorpus {
            ids: &index.ids,
            embeddings: &index.embeddings,
        };
        let texts = (corpus, queries);
        let drawn = draw_chunk(texts, indexed, &encoded, &hits, plan, manifest, &teacher);
        // The teacher's scoring is its own stage, not selection's.
        let mut teacher_seconds = 0.0;
        let scores = match (&teacher, manifest.teacher.as_mut()) {
            (Some(teacher), Some(round)) => {
                let started = Instant::now();
                let scores = score_pools(teacher.model, texts, &drawn, progress)?;
                teacher_seconds = started.elapsed().as_secs_f64();
                round.seconds += teacher_seconds;
                round.pairs += scores.iter().map(|s| s.len() as u64).sum::<u64>();
                Some(scores)
            }
            _ => None,
        };
        let denoise = teacher.as_ref().map(|t| t.denoise);
        let mut records = finish_chunk(drawn, scores, denoise, indexed, &manifest.params);
        if let (Some(teacher), Some(round)) = (&teacher, manifest.teacher.as_mut()) {
            let started = Instant::now();
            round.pairs += score_padded(teacher.model, texts, &mut records, progress)?;
            let seconds = started.elapsed().as_secs_f64();
            round.seconds += seconds;
            teacher_seconds += seconds;
        }
        manifest.timings.select_store_seconds += started.elapsed().as_secs_f64() - teacher_seconds;
        // Each chunk is stored with the manifest's running totals, so a killed
        // run's finished chunks still count in a resumed round's costs; the
        // write's own time joins the totals the next write stores.
        manifest.seconds = clock.seconds();
        let storing = Instant::now();
        store.put_chunk(manifest, encoded.chunk, &records)?;
        manifest.timings.select_store_seconds += storing.elapsed().as_secs_f64();
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

/// A round's seconds so far: those of earlier runs, and this run's clock.
#[derive(Clone, Copy)]
struct RunClock {
    seconds_before: f64,
    started: Instant,
}

impl RunClock {
    fn seconds(&self) -> f64 {
        self.seconds_before + self.started.elapsed().as_secs_f64()
    }
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

/// One query between the search and its stored record: its facts, its
/// pool in draw order, and the generator the draw left off at.
struct Drawn<'a> {
    query_id: &'a str,
    query_text: &'a str,
    positives: Vec<ScoredDoc>,
    positive_rows: Vec<usize>,
    facts: QueryFacts<'a>,
    pool: Pool,
    rng: Rng,
}

/// Filters each query's hits and draws its pool: `negatives` candidates,
/// or a teacher's larger pool.
fn draw_chunk<'a>(
    texts: (&'a TextTable, &'a TextTable),
    index: IndexedCorpus,
    encoded: &EncodedChunk<'a>,
    hits: &Hits,
    plan: &'a QueryPlan,
    manifest: &RoundManifest,
    teacher: &Option<Teacher>,
) -> Vec<Drawn<'a>> {
    let queries = texts.1;
    let (ids, vectors) = (encoded.ids, &encoded.vectors);
    let params = &manifest.params;
    let size = teacher
        .as_ref()
        .map_or(params.negatives, |t| t.pool_size(params.negatives));
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
            let query_text = &queries.texts[queries.position(qid).expect("qrels validated")];
            let facts = QueryFacts {
                text: select::text_key(query_text),
                positive_rows,
                positive_texts: positive_rows.iter().map(|&r| text_key_of(r)).collect(),
                lowest_positive_score: positives.iter().map(|p| p.score).reduce(f32::min),
            };
            let mut rng = Rng::for_query(params.seed, qid);
            let pool = select::pool(&candidates, &text_key_of, &facts, params, size, &mut rng);
            let mut positive_rows: Vec<usize> = positive_rows.iter().copied().collect();
            positive_rows.sort_unstable();
            Drawn {
                query_id: qid,
                query_text,
                positives,
                positive_rows,
                facts,
                pool,
                rng,
            }
        })
        .collect()
}

/// The teacher's score of every (query, positive) and (query, pool
/// candidate) pair of the chunk, per query: positives first, in the
/// record's order, then the pool in draw order. All pairs share batches.
fn score_pools(
    teacher: &CrossEncoder,
    texts: (&TextTable, &TextTable),
    drawn: &[Drawn],
    progress: &dyn Progress,
) -> Result<Vec<Vec<f32>>> {
    // Index rows are corpus rows: the index is built from this corpus.
    let corpus = texts.0;
    let passages: Vec<Vec<String>> = drawn
        .iter()
        .map(|d| {
            let pool = d.pool.drawn.iter().map(|c| c.row);
            let rows = d.positive_rows.iter().copied().chain(pool);
            rows.map(|row| corpus.full_text(row)).collect()
        })
        .collect();
    let queries: Vec<&str> = drawn.iter().map(|d| d.query_text).collect();
    let lists: Vec<Vec<&str>> = passages
        .iter()
        .map(|list| list.iter().map(String::as_str).collect())
        .collect();
    let total: usize = lists.iter().map(Vec::len).sum();
    let mut done = 0;
    let mut on_batch = |pairs: usize, _tokens: usize| {
        done += pairs;
        progress.detail(&format!("teacher scored {done} of {total} pairs"));
    };
    Ok(teacher.score_lists(&queries, &lists, &mut on_batch)?)
}

/// Scores the negatives padding added (random passages outside the pool
/// the teacher scored) into their records, so that every stored negative
/// has its teacher score; returns the pairs scored.
fn score_padded(
    teacher: &CrossEncoder,
    texts: (&TextTable, &TextTable),
    records: &mut [(String, QueryRecord)],
    progress: &dyn Progress,
) -> Result<u64> {
    let (corpus, queries) = texts;
    let mut wanted: Vec<(usize, Vec<usize>)> = Vec::new();
    for (at, (_, record)) in records.iter().enumerate() {
        let Some(scores) = &record.teacher else {
            continue;
        };
        let unscored: Vec<usize> = (scores.negatives.iter().enumerate())
            .filter(|(_, s)| s.is_nan())
            .map(|(i, _)| i)
            .collect();
        if !unscored.is_empty() {
            wanted.push((at, unscored));
        }
    }
    if wanted.is_empty() {
        return Ok(0);
    }
    let position = |table: &TextTable, id: &str| table.position(id).expect("the dataset's ids");
    // As `score_pools` pairs them: the query's text, the passage's full text.
    let query_refs: Vec<&str> = (wanted.iter())
        .map(|(at, _)| queries.texts[position(queries, &records[*at].0)].as_str())
        .collect();
    let passages: Vec<Vec<String>> = (wanted.iter())
        .map(|(at, negatives)| {
            let record = &records[*at].1;
            (negatives.iter())
                .map(|&i| corpus.full_text(position(corpus, &record.negatives[i].id)))
                .collect()
        })
        .collect();
    let lists: Vec<Vec<&str>> = (passages.iter())
        .map(|list| list.iter().map(String::as_str).collect())
        .collect();
    progress.detail("teacher scoring padded negatives");
    let scored = teacher.score_lists(&query_refs, &lists, &mut |_, _| {})?;
    let mut pairs = 0;
    for ((at, negatives), scores) in wanted.iter().zip(scored) {
        let teacher = (records[*at].1.teacher.as_mut()).expect("chosen for its teacher scores");
        for (&i, score) in negatives.iter().zip(scores) {
            teacher.negatives[i] = score;
            pairs += 1;
        }
    }
    Ok(pairs)
}

/// Each query's record: the draw finished with the teacher's drops (if
/// any), and its scores kept beside the negatives they belong to.
fn finish_chunk(
    drawn: Vec<Drawn>,
    scores: Option<Vec<Vec<f32>>>,
    denoise: Option<Denoise>,
    index: IndexedCorpus,
    params: &MiningParams,
) -> Vec<(String, QueryRecord)> {
    let mut scores = scores.map(Vec::into_iter);
    let work: Vec<(Drawn, Option<Vec<f32>>)> = drawn
        .into_iter()
        .map(|d| (d, scores.as_mut().and_then(Iterator::next)))
        .collect();
    work.into_par_iter()
        .map(|(mut d, scores)| {
            let split = d.positive_rows.len();
            let (positive_scores, pool_scores) = match &scores {
                Some(s) => (&s[..split], &s[split..]),
                None => (&[][..], &[][..]),
            };
            let denoise = denoise.unwrap_or_default();
            let dropped = teacher::dropped(pool_scores, positive_scores, &denoise);
            let pool = d.pool.drawn.clone();
            let selection = select::choose(
                d.pool,
                &dropped,
                &d.facts,
                params,
                index.ids.len(),
                &mut d.rng,
            );
            let teacher = scores.as_ref().map(|_| TeacherScores {
                positives: positive_scores.to_vec(),
                negatives: teacher::scores_of(&selection.chosen, &pool, pool_scores),
                pool: pool.len() as u32,
                denoised_ranks: (pool.iter().zip(&dropped))
                    .filter(|(_, &gone)| gone)
                    .map(|(c, _)| c.rank)
                    .collect(),
            });
            let negatives = selection
                .chosen
                .iter()
                .map(|c| ScoredDoc {
                    id: index.ids[c.row].clone(),
                    rank: c.rank,
                    score: c.score,
                })
                .collect();
            let record = QueryRecord {
                negatives,
                positives: d.positives,
                survivors: selection.survivors,
                shortfall: selection.shortfall,
                filtered: selection.filtered,
                teacher,
            };
            (d.query_id.to_string(), record)
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
