//! One phase of a run: the model it encodes with, building and opening
//! indexes with it, evaluating it, and mining its round.

use crate::error::Result;
use crate::report::{EpochReport, EvalPoint};
use crate::spec::RunSpec;
use crate::workspace::Workspace;
use cpack_core::Progress;
use cpack_data::dataset::{Qrels, TextTable};
use cpack_encode::{EmbeddingStamp, Encoder, EncoderSettings, TextKind};
use cpack_index::align::AlignmentFit;
use cpack_index::evaluate::evaluate_index;
use cpack_index::store::{
    BuildOptions, BuildOutcome, BuildPlan, IndexDir, Manifest, OpenIndex, PartialPlan, Provenance,
};
use cpack_miner::store::{QuerySubset, RoundIdentity, RoundManifest};
use cpack_miner::{MineOptions, MineOutcome, MiningInput, MiningParams};
use cpack_model::ModelDir;
use cpack_train::data::TrainingSet;
use std::collections::BTreeSet;
use std::time::Instant;

/// What building a run's index cost: seconds encoding and indexing, and
/// the passages encoded (all zero when it was already up to date).
#[derive(Default)]
pub struct Built {
    pub encode_seconds: f64,
    pub index_seconds: f64,
    pub passages: usize,
    pub alignment: Option<AlignmentFit>,
}

impl Built {
    /// What building `manifest`'s generation took and did. Read back from
    /// the manifest when a resumed run finds the index already built, so
    /// the report says the same whether or not a kill came in between.
    pub fn of(manifest: &Manifest) -> Self {
        Built {
            encode_seconds: manifest.timings.encode_seconds
                + manifest.alignment.map_or(0.0, |a| a.seconds),
            index_seconds: manifest.timings.index_seconds,
            passages: manifest.plan.rows - manifest.plan.stale_rows(),
            alignment: manifest.alignment,
        }
    }

    /// Adds what was built to `entry` (the costs of every task's index add up).
    pub fn record(self, entry: &mut EpochReport) {
        entry.encode_seconds += self.encode_seconds;
        entry.index_seconds += self.index_seconds;
        entry.passages_encoded += self.passages;
        entry.alignment = self.alignment.or(entry.alignment);
    }
}

/// The model a phase of the run encodes with (the base model, or an
/// epoch's checkpoint), and what it does to the corpus and the queries.
pub struct ActiveModel {
    pub model: ModelDir,
    pub encoder: Encoder,
}

impl ActiveModel {
    pub fn open(model: ModelDir, settings: &EncoderSettings, ws: &Workspace) -> Result<Self> {
        let encoder = Encoder::open(&model, settings, ws.backend, ws.threads)?;
        Ok(ActiveModel { model, encoder })
    }

    /// Builds (or finds up to date) the index of `dir` for this model, then opens it.
    pub fn index(
        &self,
        ws: &Workspace,
        dir: &IndexDir,
        progress: &dyn Progress,
    ) -> Result<(OpenIndex, Built)> {
        self.build(ws, dir, None, progress)
    }

    /// [`ActiveModel::index`], re-encoding only what `partial` names if given.
    pub fn build(
        &self,
        ws: &Workspace,
        dir: &IndexDir,
        partial: Option<PartialPlan>,
        progress: &dyn Progress,
    ) -> Result<(OpenIndex, Built)> {
        let corpus = &ws.dataset.corpus;
        let stamp = EmbeddingStamp::of(&self.model, &self.encoder)?;
        let mut plan = BuildPlan::new(stamp.clone(), corpus, ws.precision, ws.index_kind.clone());
        if let Some(partial) = partial {
            plan = plan.reencoding_only(partial);
        }
        let provenance = Provenance {
            model_path: &self.model.dir,
            corpus_path: &ws.dataset.paths.corpus,
        };
        let options = BuildOptions {
            chunk_rows: BuildOptions::DEFAULT_CHUNK_ROWS,
            force: false,
        };
        let outcome = dir.build(plan, provenance, corpus, &self.encoder, options, progress)?;
        let open = dir.open(&stamp, corpus)?;
        // Up to date: built for this very model, by this run before a kill
        // (a checkpoint's model is the run's own).
        let built = match outcome {
            BuildOutcome::Built { manifest, .. } => Built::of(&manifest),
            BuildOutcome::UpToDate { .. } => Built::of(&open.manifest),
        };
        Ok((open, built))
    }

    pub fn evaluate(
        &self,
        ws: &Workspace,
        index: &mut OpenIndex,
        split: &str,
        progress: &dyn Progress,
    ) -> Result<EvalPoint> {
        let qrels = ws.dataset.qrels(split)?;
        let started = Instant::now();
        let e = evaluate_index(
            &self.encoder,
            index,
            &ws.dataset.queries,
            &qrels,
            None,
            progress,
        )?;
        Ok(EvalPoint {
            metrics: e.metrics,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// Topic clusters of the training queries under this model, one per
    /// batch's worth of queries, for `--batching clustered`.
    pub fn query_clusters(
        &self,
        queries: &TextTable,
        set: &TrainingSet,
        spec: &RunSpec,
        epoch: usize,
        progress: &dyn Progress,
    ) -> Result<Vec<u32>> {
        let texts = set.query_texts(queries);
        progress.stage("clustering the training queries", texts.len() as u64);
        let vectors = self.encoder.encode(&texts, TextKind::Query, &mut |n, t| {
            progress.advance(n as u64, t as u64)
        })?;
        let k = texts.len().div_ceil(spec.train.batch_size.max(1));
        let seed = spec.train.seed ^ epoch as u64;
        Ok(cpack_train::cluster::kmeans(
            &vectors,
            self.encoder.dim(),
            k,
            seed,
        ))
    }

    /// The newest complete round of this model's queries against `index`'s
    /// very vectors with `params` (scored by the workspace's teacher, if
    /// any), mining it if there is none — of the queries `only` names, or
    /// all of the split's. The index is this model's own, or (query-side
    /// training) the base model's.
    pub fn round(
        &self,
        ws: &Workspace,
        index: &mut OpenIndex,
        (params, only): (&MiningParams, Option<&BTreeSet<String>>),
        split_qrels: &Qrels,
        progress: &dyn Progress,
    ) -> Result<(u32, MiningCost)> {
        let own = self.model.fingerprint()?;
        let query_model = (own != index.manifest.plan.stamp.model_fingerprint).then_some(own);
        let (validated, _) = params.clone().validated(ws.dataset.corpus.len())?;
        let teacher = ws.teacher.map(|t| t.params(validated.negatives));
        let mut wanted =
            RoundIdentity::of_search(&index.manifest, query_model.clone(), validated, teacher);
        wanted.queries = only.map(QuerySubset::of);
        // A round of unknown vectors (imported, or older than format 3) is
        // never reused: it may have searched an incremental refresh's.
        let existing =
            ws.store.rounds()?.into_iter().rev().find(|m| {
                m.complete && wanted.index_embeddings.is_some() && m.identity() == wanted
            });
        if let Some(m) = existing {
            return Ok((m.round, MiningCost::default()));
        }
        let input = MiningInput {
            corpus: &ws.dataset.corpus,
            queries: &ws.dataset.queries,
            split_qrels,
            all_qrels: ws.all_qrels,
            encoder: &self.encoder,
            index,
            query_model_fingerprint: query_model,
            teacher: ws.teacher,
            only,
        };
        let unfinished = ws.store.rounds()?.pop().filter(|m| !m.complete);
        let started = Instant::now();
        let (manifest, teacher) = match cpack_miner::mine(
            ws.store,
            input,
            params.clone(),
            MineOptions::default(),
            progress,
        )? {
            // Found whole: nothing was scored now.
            MineOutcome::UpToDate(m) => (m, 0.0),
            MineOutcome::Mined { manifest, .. } => {
                // Only what this call scored: a resumed round's earlier
                // seconds belong to the run that began it.
                let scored = |m: &RoundManifest| m.teacher.as_ref().map_or(0.0, |t| t.seconds);
                let earlier = unfinished.filter(|m| m.round == manifest.round);
                let teacher = scored(&manifest) - earlier.as_ref().map_or(0.0, scored);
                (manifest, teacher)
            }
        };
        let cost = MiningCost {
            mine_seconds: started.elapsed().as_secs_f64() - teacher,
            teacher_seconds: teacher,
        };
        Ok((manifest.round, cost))
    }
}

/// What finding or mining rounds cost, the teacher's scoring apart.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct MiningCost {
    pub mine_seconds: f64,
    pub teacher_seconds: f64,
}

impl std::ops::AddAssign for MiningCost {
    fn add_assign(&mut self, other: MiningCost) {
        self.mine_seconds += other.mine_seconds;
        self.teacher_seconds += other.teacher_seconds;
    }
}
