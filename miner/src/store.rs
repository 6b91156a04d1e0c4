//! The sled store under `.cpack/negatives/`: mining rounds and, per round
//! and query, the sampled negatives.
//!
//! Trees:
//! - `rounds`: round number (u32, big-endian) → [`RoundManifest`]
//! - `round-NNNNNN`: `q/<query id>` → [`QueryRecord`], and `c/<chunk>` → chunk-done
//!   markers. A chunk's records and its marker go in one atomic batch, so a
//!   killed run resumes at chunk granularity and never sees half a chunk.
//!
//! Every value goes through [`crate::codec`] (format byte + bincode).

use crate::codec;
use crate::error::{Error, Result};
use crate::params::MiningParams;
use crate::select::FilterCounts;
use crate::teacher::{TeacherParams, TeacherRound, TeacherScores};
use cpack_core::fsutil::{FileSum, ProcessLock};
use cpack_index::store::Manifest;
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;
use std::convert::Infallible;
use std::path::{Path, PathBuf};

/// One stored negative (or positive): corpus id, 0-based raw rank (`u32::MAX` if
/// padded or not retrieved), inner-product score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoredDoc {
    pub id: String,
    pub rank: u32,
    pub score: f32,
}

/// What a round stores for one query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueryRecord {
    pub negatives: Vec<ScoredDoc>,
    /// Every positive, with its score and its rank within the top-k (`u32::MAX` if absent).
    pub positives: Vec<ScoredDoc>,
    pub survivors: u32,
    pub shortfall: u32,
    pub filtered: FilterCounts,
    /// The teacher's scores, in a round mined with one (format 4 on).
    pub teacher: Option<TeacherScores>,
}

/// A query record as formats 1 to 3 stored it (no teacher).
#[derive(Deserialize)]
struct QueryRecordV3 {
    negatives: Vec<ScoredDoc>,
    positives: Vec<ScoredDoc>,
    survivors: u32,
    shortfall: u32,
    filtered: FilterCounts,
}

fn decode_record(bytes: &[u8]) -> Result<QueryRecord> {
    const WHAT: &str = "query";
    match bytes.first() {
        Some(1..=3) => {
            let v3 = codec::decode::<QueryRecordV3>(WHAT, bytes)?;
            Ok(QueryRecord {
                negatives: v3.negatives,
                positives: v3.positives,
                survivors: v3.survivors,
                shortfall: v3.shortfall,
                filtered: v3.filtered,
                teacher: None,
            })
        }
        _ => codec::decode(WHAT, bytes),
    }
}

/// How a round came about, and where it stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundManifest {
    pub round: u32,
    pub params: MiningParams,
    /// Model fingerprint and corpus fingerprint of the index searched.
    pub model_fingerprint: String,
    pub corpus_fingerprint: String,
    pub query_instruction: String,
    pub index_generation: String,
    /// Queries per resumable chunk (fixed for the round).
    pub chunk_queries: usize,
    pub total_queries: usize,
    pub complete: bool,
    pub created_unix: u64,
    pub seconds: f64,
    /// Where the time went, summed over resumed runs.
    pub timings: MiningTimings,
    /// The model that encoded the queries, when it is not the index's
    /// (query-side training searches the base model's passages with the
    /// model being trained); `None`: the index's model did.
    pub query_model_fingerprint: Option<String>,
    /// Checksum of the index's vectors that were searched: two indexes by
    /// the same model differ when one was refreshed incrementally. `None`:
    /// imported, or stored before format 3.
    pub index_embeddings: Option<FileSum>,
    /// The cross-encoder that scored the round, if one did (format 4 on).
    pub teacher: Option<TeacherRound>,
    /// The queries mined, when not every judged query of the split (a
    /// teacher's run mines only the queries it trains on).
    pub queries: Option<QuerySubset>,
}

/// Some of a split's queries, as a round records them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuerySubset {
    pub count: usize,
    /// A hash of the sorted ids: two subsets are the same work only if equal.
    pub fingerprint: String,
}

impl QuerySubset {
    pub fn of(ids: &std::collections::BTreeSet<String>) -> Self {
        // SHA-256, not std's hasher: its output may change between Rust
        // releases, and a stored round must keep matching its subset.
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        for id in ids {
            hasher.update(id.as_bytes());
            hasher.update([0]);
        }
        QuerySubset {
            count: ids.len(),
            fingerprint: hex::encode(&hasher.finalize()[..8]),
        }
    }
}

/// What makes two rounds the same work: the parameters, the model that
/// encoded the queries and its instruction, and the very vectors searched.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundIdentity {
    pub params: MiningParams,
    pub model_fingerprint: String,
    pub query_model_fingerprint: Option<String>,
    pub corpus_fingerprint: String,
    pub query_instruction: String,
    pub index_embeddings: Option<FileSum>,
    pub teacher: Option<TeacherParams>,
    pub queries: Option<QuerySubset>,
}

impl RoundIdentity {
    /// A round searching the index of `index` with `params` (validated),
    /// its queries encoded by the model of `query_model_fingerprint` (`None`:
    /// the index's own), scored by `teacher` if given.
    pub fn of_search(
        index: &Manifest,
        query_model_fingerprint: Option<String>,
        params: MiningParams,
        teacher: Option<TeacherParams>,
    ) -> Self {
        let stamp = &index.plan.stamp;
        RoundIdentity {
            params,
            model_fingerprint: stamp.model_fingerprint.clone(),
            query_model_fingerprint,
            corpus_fingerprint: index.plan.corpus_fingerprint.clone(),
            query_instruction: stamp.query_instruction.clone(),
            index_embeddings: index.embeddings_sum(),
            teacher,
            queries: None,
        }
    }
}

impl RoundManifest {
    pub fn identity(&self) -> RoundIdentity {
        RoundIdentity {
            params: self.params.clone(),
            model_fingerprint: self.model_fingerprint.clone(),
            query_model_fingerprint: self.query_model_fingerprint.clone(),
            corpus_fingerprint: self.corpus_fingerprint.clone(),
            query_instruction: self.query_instruction.clone(),
            index_embeddings: self.index_embeddings,
            teacher: self.teacher.as_ref().map(|t| t.params.clone()),
            queries: self.queries.clone(),
        }
    }

    /// Fingerprint of the model that encoded this round's queries.
    pub fn query_model(&self) -> &str {
        self.query_model_fingerprint
            .as_deref()
            .unwrap_or(&self.model_fingerprint)
    }
}

/// A round manifest as format 1 stored it (no query model).
#[derive(Deserialize)]
struct RoundManifestV1 {
    round: u32,
    params: MiningParams,
    model_fingerprint: String,
    corpus_fingerprint: String,
    query_instruction: String,
    index_generation: String,
    chunk_queries: usize,
    total_queries: usize,
    complete: bool,
    created_unix: u64,
    seconds: f64,
    timings: MiningTimings,
}

impl From<RoundManifestV1> for RoundManifest {
    fn from(v: RoundManifestV1) -> Self {
        RoundManifest {
            round: v.round,
            params: v.params,
            model_fingerprint: v.model_fingerprint,
            corpus_fingerprint: v.corpus_fingerprint,
            query_instruction: v.query_instruction,
            index_generation: v.index_generation,
            chunk_queries: v.chunk_queries,
            total_queries: v.total_queries,
            complete: v.complete,
            created_unix: v.created_unix,
            seconds: v.seconds,
            timings: v.timings,
            query_model_fingerprint: None,
            index_embeddings: None,
            teacher: None,
            queries: None,
        }
    }
}

/// A round manifest as format 2 stored it: format 1's fields, then the
/// query model (bincode writes a struct as its fields in order, so a
/// nested struct and a field after it read as this pair).
type RoundManifestV2 = (RoundManifestV1, Option<String>);

/// Format 3: format 2's, then the checksum of the vectors searched.
type RoundManifestV3 = (RoundManifestV1, Option<String>, Option<FileSum>);

fn decode_manifest(bytes: &[u8]) -> Result<RoundManifest> {
    const WHAT: &str = "round manifest";
    match bytes.first() {
        Some(1) => Ok(codec::decode::<RoundManifestV1>(WHAT, bytes)?.into()),
        Some(2) => {
            let (v1, query_model) = codec::decode::<RoundManifestV2>(WHAT, bytes)?;
            Ok(RoundManifest {
                query_model_fingerprint: query_model,
                ..v1.into()
            })
        }
        Some(3) => {
            let (v1, query_model, embeddings) = codec::decode::<RoundManifestV3>(WHAT, bytes)?;
            Ok(RoundManifest {
                query_model_fingerprint: query_model,
                index_embeddings: embeddings,
                ..v1.into()
            })
        }
        _ => codec::decode(WHAT, bytes),
    }
}

/// Seconds spent per stage of mining. Encoding runs on its own thread,
/// overlapping the others, so the stages add up to more than `seconds`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MiningTimings {
    pub encode_seconds: f64,
    pub search_seconds: f64,
    pub select_store_seconds: f64,
}

pub struct NegativeStore {
    db: sled::Db,
    rounds: sled::Tree,
    path: PathBuf,
    /// Released last, after sled has closed.
    _lock: ProcessLock,
}

/// Opens the sled database at `path`, surviving what a full disk leaves
/// behind. sled writes its snapshot (a cache of its log's index) as
/// `snap.N.generating` and renames it when complete, yet reads a leftover
/// one as the newest snapshot and fails with "Read corrupted data"; such
/// files are removed first. If a snapshot is still unreadable, the
/// snapshots are removed and sled rebuilds them from its log, which holds
/// the data.
fn open_sled(path: &Path) -> sled::Result<sled::Db> {
    for leftover in snapshots(path)
        .into_iter()
        .filter(|p| has_extension(p, "generating"))
    {
        let _ = std::fs::remove_file(leftover);
    }
    match sled::open(path) {
        Err(sled::Error::Corruption { .. }) if !snapshots(path).is_empty() => {
            for snapshot in snapshots(path) {
                std::fs::remove_file(snapshot)?;
            }
            sled::open(path)
        }
        other => other,
    }
}

fn has_extension(path: &Path, extension: &str) -> bool {
    path.extension().is_some_and(|e| e == extension)
}

/// sled's snapshot files in `dir` (`snap.*`, finished or not).
fn snapshots(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("snap."))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Store-wide facts: the highest round number ever used.
const META_TREE: &str = "meta";
const HIGHEST_ROUND: &[u8] = b"highest-round";

fn round_tree_name(round: u32) -> String {
    format!("round-{round:06}")
}

fn query_key(id: &str) -> Vec<u8> {
    [b"q/".as_slice(), id.as_bytes()].concat()
}

fn chunk_key(chunk: u32) -> Vec<u8> {
    [b"c/".as_slice(), &chunk.to_be_bytes()].concat()
}

impl NegativeStore {
    pub fn open(path: &Path) -> Result<Self> {
        let err = |source| Error::Store {
            path: path.to_path_buf(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(cpack_core::Error::io("create", parent))?;
        }
        // sled's own lock says only "WouldBlock"; this one names the holder.
        let lock = ProcessLock::acquire(&path.with_extension("lock"), "the negatives store")?;
        let db = open_sled(path).map_err(err)?;
        let rounds = db.open_tree("rounds").map_err(err)?;
        Ok(NegativeStore {
            db,
            rounds,
            path: path.to_path_buf(),
            _lock: lock,
        })
    }

    fn err(&self) -> impl Fn(sled::Error) -> Error + '_ {
        move |source| Error::Store {
            path: self.path.clone(),
            source,
        }
    }

    /// All round manifests, oldest first.
    pub fn rounds(&self) -> Result<Vec<RoundManifest>> {
        self.rounds
            .iter()
            .map(|kv| {
                let (_, v) = kv.map_err(self.err())?;
                decode_manifest(&v)
            })
            .collect()
    }

    pub fn round(&self, round: u32) -> Result<Option<RoundManifest>> {
        match self.rounds.get(round.to_be_bytes()).map_err(self.err())? {
            Some(v) => Ok(Some(decode_manifest(&v)?)),
            None => Ok(None),
        }
    }

    pub fn put_manifest(&self, manifest: &RoundManifest) -> Result<()> {
        self.rounds
            .insert(manifest.round.to_be_bytes(), codec::encode(manifest))
            .map_err(self.err())?;
        self.flush()
    }

    pub fn flush(&self) -> Result<()> {
        self.db.flush().map(|_| ()).map_err(self.err())
    }

    fn tree(&self, round: u32) -> Result<sled::Tree> {
        self.db
            .open_tree(round_tree_name(round))
            .map_err(self.err())
    }

    /// Whether chunk `chunk` of `round` is stored.
    pub fn chunk_done(&self, round: u32, chunk: u32) -> Result<bool> {
        self.tree(round)?
            .contains_key(chunk_key(chunk))
            .map_err(self.err())
    }

    /// Stores one chunk's records, its done-marker and the round's manifest
    /// (its running totals, this chunk's costs included) in one transaction,
    /// then flushes: a kill keeps all of them or none, so a resumed round's
    /// costs count every stored chunk once.
    pub fn put_chunk(
        &self,
        manifest: &RoundManifest,
        chunk: u32,
        records: &[(String, QueryRecord)],
    ) -> Result<()> {
        let mut batch = sled::Batch::default();
        for (id, record) in records {
            batch.insert(query_key(id), codec::encode(record));
        }
        batch.insert(chunk_key(chunk), &[][..]);
        let round_key = manifest.round.to_be_bytes();
        let encoded_manifest = codec::encode(manifest);
        let tree = self.tree(manifest.round)?;
        (&self.rounds, &tree)
            .transaction(|(rounds, tree)| {
                tree.apply_batch(&batch)?;
                rounds.insert(&round_key[..], encoded_manifest.as_slice())?;
                Ok::<_, ConflictableTransactionError<Infallible>>(())
            })
            .map_err(|e| match e {
                TransactionError::Storage(source) => self.err()(source),
                TransactionError::Abort(never) => match never {},
            })?;
        self.flush()
    }

    /// The records of a round in query-id byte order.
    pub fn records(&self, round: u32) -> Result<Vec<(String, QueryRecord)>> {
        self.tree(round)?
            .scan_prefix(b"q/")
            .map(|kv| {
                let (k, v) = kv.map_err(self.err())?;
                let id = String::from_utf8_lossy(&k[2..]).to_string();
                Ok((id, decode_record(&v)?))
            })
            .collect()
    }

    /// The number the next round gets: one past every round this store has
    /// ever held, so numbers are never reused after a `gc`.
    pub fn next_round(&self) -> Result<u32> {
        let newest = self.rounds()?.last().map_or(0, |m| m.round);
        Ok(newest.max(self.highest_recorded()?) + 1)
    }

    fn highest_recorded(&self) -> Result<u32> {
        let meta = self.db.open_tree(META_TREE).map_err(self.err())?;
        Ok(match meta.get(HIGHEST_ROUND).map_err(self.err())? {
            Some(v) if v.len() == 4 => u32::from_be_bytes([v[0], v[1], v[2], v[3]]),
            _ => 0,
        })
    }

    /// Deletes all but the newest `keep` rounds, never one in `protected`
    /// (rounds training runs depend on); returns the rounds removed.
    pub fn gc(&self, keep: usize, protected: &[u32]) -> Result<Vec<u32>> {
        let rounds = self.rounds()?;
        let doomed: Vec<u32> = rounds
            .iter()
            .rev()
            .skip(keep)
            .map(|m| m.round)
            .filter(|r| !protected.contains(r))
            .collect();
        let highest = rounds.last().map_or(0, |m| m.round);
        if highest > self.highest_recorded()? {
            self.db
                .open_tree(META_TREE)
                .and_then(|t| t.insert(HIGHEST_ROUND, &highest.to_be_bytes()[..]))
                .map_err(self.err())?;
        }
        for &round in &doomed {
            self.rounds
                .remove(round.to_be_bytes())
                .map_err(self.err())?;
            self.db
                .drop_tree(round_tree_name(round))
                .map_err(self.err())?;
        }
        self.flush()?;
        Ok(doomed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::{OnShort, Sampling};

    #[test]
    fn older_manifests_read_with_what_their_format_lacked_left_unset() {
        let params = MiningParams {
            split: "train".into(),
            topk: 30,
            skip: 2,
            skip_after_filter: false,
            negatives: 3,
            sampling: Sampling::Top,
            on_short: OnShort::Keep,
            seed: 7,
            max_score: None,
            margin: Some(0.05),
            relative_margin: None,
        };
        // bincode writes a struct as its fields in order, as this tuple.
        let v1 = (
            3u32,
            params.clone(),
            "model-fp".to_string(),
            "corpus-fp".to_string(),
            "instruction".to_string(),
            "gen-1".to_string(),
            2048usize,
            40usize,
            true,
            5u64,
            1.5f64,
            MiningTimings::default(),
        );
        let mut bytes = codec::encode(&v1);
        bytes[0] = 1;
        let old = decode_manifest(&bytes).unwrap();
        assert_eq!((old.round, old.total_queries, old.complete), (3, 40, true));
        assert_eq!(old.params, params);
        assert_eq!(old.index_generation, "gen-1");
        assert_eq!(old.query_model_fingerprint, None);
        assert_eq!(old.query_model(), "model-fp");
        assert_eq!(old.index_embeddings, None);
        let mut bytes = codec::encode(&(v1.clone(), Some("query-fp".to_string())));
        bytes[0] = 2;
        let v2 = decode_manifest(&bytes).unwrap();
        assert_eq!(v2.query_model(), "query-fp");
        assert_eq!(v2.index_embeddings, None);
        assert_eq!(v2.params, params);
        let sum = FileSum {
            bytes: 4096,
            crc32: 0xdead_beef,
        };
        let mut bytes = codec::encode(&(v1, Some("query-fp".to_string()), Some(sum)));
        bytes[0] = 3;
        let v3 = decode_manifest(&bytes).unwrap();
        assert_eq!(v3.index_embeddings, Some(sum));
        assert_eq!((v3.query_model(), v3.teacher.as_ref()), ("query-fp", None));
        let current = RoundManifest {
            teacher: Some(TeacherRound {
                params: TeacherParams::imported(),
                seconds: 2.5,
                pairs: 40,
            }),
            ..v3
        };
        assert_eq!(decode_manifest(&codec::encode(&current)).unwrap(), current);
    }

    #[test]
    fn older_query_records_read_without_teacher_scores() {
        let doc = ScoredDoc {
            id: "d1".into(),
            rank: 4,
            score: 0.5,
        };
        let filtered = FilterCounts {
            skipped: 3,
            ..Default::default()
        };
        let old = (vec![doc.clone()], vec![doc.clone()], 9u32, 0u32, filtered);
        let mut bytes = codec::encode(&old);
        bytes[0] = 3;
        let record = decode_record(&bytes).unwrap();
        assert_eq!((record.survivors, record.filtered), (9, filtered));
        assert_eq!(record.teacher, None);
        let scored = QueryRecord {
            teacher: Some(TeacherScores {
                positives: vec![2.0],
                negatives: vec![-1.0],
                pool: 5,
                denoised_ranks: vec![12],
            }),
            ..record
        };
        assert_eq!(decode_record(&codec::encode(&scored)).unwrap(), scored);
    }
}
