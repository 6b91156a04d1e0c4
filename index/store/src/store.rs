//! The persistent index under `.cpack/index/`: generations, manifest,
//! resumable builds and the atomic swap.
//!
//! ```text
//! .cpack/index/
//!   CURRENT               name of the live generation (written atomically)
//!   gen-000003/           an immutable, complete generation
//!     manifest.json       what made it (model, corpus, settings) and how long it took
//!     ids.json            corpus ids in row order
//!     embeddings.f32      rows × dim (or embeddings.f16)
//!     vectors.faiss       the FAISS index, when the backend is FAISS
//!   LOCK                  held (flock) by the one build allowed at a time
//!   build/                the build in progress, if any
//!     state.json          its plan and the rows already encoded and synced
//!     embeddings.f32      the rows encoded so far
//! ```
//!
//! A build appends encoded chunks to `build/`, recording after each fsync how
//! many rows are durable; a killed build resumes from there when its plan is
//! unchanged, and starts clean otherwise. When complete, `build/` is renamed
//! to a new generation and `CURRENT` is switched to it, so readers always see
//! either the old or the new index, never a half-built one.

use crate::align::{self, AlignmentFit, StaleVectors};
use crate::embeddings::{EmbeddingMatrix, Precision};
use crate::error::{Error, Result};
pub use crate::generation::Generation;
use crate::vector::{IndexDevice, IndexKind, VectorIndex};
use cpack_core::fsutil;
use cpack_core::progress::Progress;
use cpack_data::dataset::TextTable;
use cpack_encode::{EmbeddingStamp, Encoder, TextKind};
use cpack_model::ComputeDevice;
use serde::{Deserialize, Serialize};
use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Version of the on-disk layout; bumped on any incompatible change.
/// Version 2 added the checksums of every file of a generation.
pub const FORMAT_VERSION: u32 = 2;

/// What to do about a damaged or stale generation.
const REBUILD: &str =
    "rebuild it with `cpack index build` (it builds anew when the live index is damaged)";

/// What a build will produce: identical plans give identical generations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildPlan {
    pub stamp: EmbeddingStamp,
    pub corpus_fingerprint: String,
    pub rows: usize,
    pub precision: Precision,
    pub index: IndexKind,
    /// Re-encode only some rows and keep the rest from a base generation
    /// (an incremental refresh); `None`: every row is encoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial: Option<PartialPlan>,
}

/// The rows an incremental build re-encodes, and the generation whose vectors
/// the other rows keep. Those rows are stale: encoded by the base's model (or,
/// if the base was itself partial, by older ones).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartialPlan {
    /// The base generation's embeddings file, and its size and checksum when
    /// the plan was made (it is verified before its rows are copied).
    pub base_embeddings: PathBuf,
    pub base_sum: fsutil::FileSum,
    pub base_model_fingerprint: String,
    /// Rows encoded under the plan's stamp, ascending.
    pub rows: Vec<u32>,
    /// What the other rows get: the base's vectors, or those mapped into the
    /// new model's space (see [`crate::align`]).
    #[serde(default)]
    pub stale: StaleVectors,
}

impl PartialPlan {
    /// Re-encode `rows` of `base`'s corpus (sorted and deduplicated here);
    /// the other rows' vectors come from `base` as `stale` says.
    pub fn over(base: &OpenIndex, mut rows: Vec<u32>, stale: StaleVectors) -> Result<Self> {
        rows.sort_unstable();
        rows.dedup();
        if let Some(&last) = rows.last() {
            if last as usize >= base.ids.len() {
                return Err(Error::RowOutOfRange {
                    row: last as usize,
                    rows: base.ids.len(),
                });
            }
        }
        let base_embeddings = base.embeddings_path();
        let name = base.manifest.plan.precision.file_name();
        let base_sum = match base.manifest.files.get(name) {
            Some(sum) => *sum,
            None => fsutil::FileSum::of(&base_embeddings)?,
        };
        Ok(PartialPlan {
            base_embeddings,
            base_sum,
            base_model_fingerprint: base.manifest.plan.stamp.model_fingerprint.clone(),
            rows,
            stale,
        })
    }
}

impl BuildPlan {
    /// The plan for encoding all of `corpus` under `stamp`.
    pub fn new(
        stamp: EmbeddingStamp,
        corpus: &TextTable,
        precision: Precision,
        index: IndexKind,
    ) -> Self {
        BuildPlan {
            stamp,
            corpus_fingerprint: corpus.fingerprint(),
            rows: corpus.len(),
            precision,
            index,
            partial: None,
        }
    }

    /// The same plan, re-encoding only what `partial` names.
    pub fn reencoding_only(self, partial: PartialPlan) -> Self {
        BuildPlan {
            partial: Some(partial),
            ..self
        }
    }

    /// Fails now, before any encoding, if the plan cannot be built: an index
    /// kind that cannot hold these vectors, or a base of another size.
    fn check(&self) -> Result<()> {
        self.index.check(self.stamp.dim)?;
        let Some(partial) = &self.partial else {
            return Ok(());
        };
        let needed = (self.rows * self.stamp.dim * self.precision.bytes()) as u64;
        if partial.base_sum.bytes == needed {
            return Ok(());
        }
        Err(Error::bad_file(
            &partial.base_embeddings,
            format!(
                "holds {} bytes of vectors, a refresh of {} rows × {} at {:?} needs {needed}: \
                 refresh the whole index instead",
                partial.base_sum.bytes, self.rows, self.stamp.dim, self.precision
            ),
        ))
    }

    /// Rows not encoded under this plan's stamp (0 for a whole build).
    pub fn stale_rows(&self) -> usize {
        self.partial
            .as_ref()
            .map_or(0, |p| self.rows - p.rows.len())
    }

    /// The rows this build encodes, ascending.
    fn rows_to_encode(&self) -> Vec<usize> {
        match &self.partial {
            Some(p) => p.rows.iter().map(|&r| r as usize).collect(),
            None => (0..self.rows).collect(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Timings {
    pub encode_seconds: f64,
    pub index_seconds: f64,
    pub tokens: u64,
}

/// `manifest.json` of a generation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub plan: BuildPlan,
    pub model_path: String,
    pub corpus_path: String,
    pub created_unix: u64,
    pub timings: Timings,
    /// Size and checksum of each file of the generation, by name. Empty in
    /// format 1, which had none.
    #[serde(default)]
    pub files: std::collections::BTreeMap<String, fsutil::FileSum>,
    /// Where the passages were encoded (recorded, not compared: f32 vectors
    /// agree across devices; a lower precision shows in the stamp).
    #[serde(default)]
    pub encoded_on: ComputeDevice,
    /// How the stale rows of a partial build with aligned vectors were mapped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alignment: Option<AlignmentFit>,
}

impl Manifest {
    /// Checksum of the generation's vectors: what identifies the index's
    /// content (an incremental refresh and a full one by the same model
    /// share a stamp but not their vectors). `None` for format 1.
    pub fn embeddings_sum(&self) -> Option<fsutil::FileSum> {
        self.files.get(self.plan.precision.file_name()).copied()
    }

    /// Checks every file of the generation in `dir` against its recorded
    /// checksum (format 1 generations have none to check).
    fn verify_files(&self, dir: &Path) -> Result<()> {
        for (name, sum) in &self.files {
            sum.verify(&dir.join(name), REBUILD)?;
        }
        Ok(())
    }
}

#[derive(Serialize, Deserialize)]
struct BuildState {
    format_version: u32,
    plan: BuildPlan,
    rows_done: usize,
    timings: Timings,
}

/// Where the corpus and model of a build came from (recorded, not compared).
pub struct Provenance<'a> {
    pub model_path: &'a Path,
    pub corpus_path: &'a Path,
}

/// How a build proceeds.
#[derive(Debug, Clone, Copy)]
pub struct BuildOptions {
    /// Passages encoded and synced between two resumable checkpoints.
    pub chunk_rows: usize,
    /// Rebuild even when the live generation already matches the plan.
    pub force: bool,
}

impl BuildOptions {
    /// Passages per resumable chunk unless the user asks otherwise.
    pub const DEFAULT_CHUNK_ROWS: usize = 2048;
}

/// What `build` did.
#[derive(Debug)]
pub enum BuildOutcome {
    /// The live generation already matches the plan.
    UpToDate { generation: Generation },
    Built {
        generation: Generation,
        resumed_from_row: usize,
        manifest: Box<Manifest>,
    },
}

/// An opened generation, ready to search.
pub struct OpenIndex {
    pub generation: Generation,
    /// The generation's folder.
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub ids: Vec<String>,
    pub embeddings: Arc<EmbeddingMatrix>,
    pub vectors: Box<dyn VectorIndex>,
}

impl OpenIndex {
    /// The generation's embeddings file.
    pub fn embeddings_path(&self) -> PathBuf {
        self.dir.join(self.manifest.plan.precision.file_name())
    }
}

/// What a build needs from an encoder: passages in, vectors out (row-major,
/// in order), and where they were computed (recorded in the manifest).
pub trait PassageEncoder: Sync {
    /// Embeds `texts` as passages; `on_batch(texts_done, tokens_done)`
    /// reports progress.
    fn encode_passages(
        &self,
        texts: &[&str],
        on_batch: &mut dyn FnMut(usize, usize),
    ) -> cpack_encode::Result<Vec<f32>>;

    /// Where the vectors are computed.
    fn device(&self) -> ComputeDevice;
}

impl PassageEncoder for Encoder {
    fn encode_passages(
        &self,
        texts: &[&str],
        on_batch: &mut dyn FnMut(usize, usize),
    ) -> cpack_encode::Result<Vec<f32>> {
        self.encode(texts, TextKind::Passage, on_batch)
    }

    fn device(&self) -> ComputeDevice {
        Encoder::device(self)
    }
}

/// The `.cpack/index` directory of a workspace, and where its generations
/// are searched once opened.
pub struct IndexDir {
    root: PathBuf,
    device: IndexDevice,
}

const CURRENT: &str = "CURRENT";
const BUILD: &str = "build";
const STATE: &str = "state.json";
const MANIFEST: &str = "manifest.json";
const IDS: &str = "ids.json";
const LOCK: &str = "LOCK";

/// The files of a finished generation in `dir`, by name: ids, embeddings,
/// and whatever the vector index saved beside them.
fn generation_files(dir: &Path, precision: Precision) -> Result<Vec<String>> {
    let mut names = vec![IDS.to_string(), precision.file_name().to_string()];
    for entry in fs::read_dir(dir).map_err(Error::io("list", dir))? {
        let name = entry
            .map_err(Error::io("list", dir))?
            .file_name()
            .to_string_lossy()
            .into_owned();
        if !names.contains(&name) && name != STATE && name != MANIFEST && !name.starts_with('.') {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Builds the vector index over the embeddings in `build_dir` and saves it
/// there; returns the seconds it took.
fn index_build(build_dir: &Path, plan: &BuildPlan, progress: &dyn Progress) -> Result<f64> {
    progress.stage(&format!("indexing ({})", plan.index), 0);
    let started = Instant::now();
    let embeddings = Arc::new(EmbeddingMatrix::open(
        &build_dir.join(plan.precision.file_name()),
        plan.rows,
        plan.stamp.dim,
        plan.precision,
    )?);
    // Encoding is over: FAISS training (k-means) gets every thread.
    let vectors = plan.index.build(embeddings, rayon::current_num_threads())?;
    vectors.save(build_dir)?;
    Ok(started.elapsed().as_secs_f64())
}

/// Size and checksum of every file of the finished generation in `dir`.
fn checksums(
    dir: &Path,
    precision: Precision,
) -> Result<std::collections::BTreeMap<String, fsutil::FileSum>> {
    let mut files = std::collections::BTreeMap::new();
    for name in generation_files(dir, precision)? {
        files.insert(name.clone(), fsutil::FileSum::of(&dir.join(&name))?);
    }
    Ok(files)
}

/// Copies the base generation's embeddings to `data` (synced), after checking
/// they are still what the plan was made from.
fn copy_base(partial: &PartialPlan, data: &Path) -> Result<()> {
    let base = &partial.base_embeddings;
    partial.base_sum.verify(
        base,
        "the index it refreshes changed or is damaged; run the refresh again",
    )?;
    fs::copy(base, data).map_err(Error::io("copy", base))?;
    fs::File::open(data)
        .and_then(|f| f.sync_all())
        .map_err(Error::io("sync", data))
}

/// Rewrites the stale rows of the partial build in `build_dir` (its rows
/// all encoded) as the base's vectors mapped into the new model's space, the
/// map fitted on the re-encoded rows. Reads only the base for the rows it
/// writes, so a rerun after a kill rewrites them the same.
fn align_stale(
    build_dir: &Path,
    plan: &BuildPlan,
    partial: &PartialPlan,
    progress: &dyn Progress,
) -> Result<AlignmentFit> {
    let started = Instant::now();
    let (dim, precision) = (plan.stamp.dim, plan.precision);
    let threads = rayon::current_num_threads();
    partial.base_sum.verify(
        &partial.base_embeddings,
        "the index it refreshes changed or is damaged; run the refresh again",
    )?;
    let base = EmbeddingMatrix::open(&partial.base_embeddings, plan.rows, dim, precision)?;
    let data_path = build_dir.join(precision.file_name());
    let encoded: Vec<usize> = partial.rows.iter().map(|&r| r as usize).collect();
    let fresh = EmbeddingMatrix::open(&data_path, plan.rows, dim, precision)?.gather(&encoded);
    let (map, mut fit) = align::fit_held_out(
        &base.gather(&encoded),
        &fresh,
        dim,
        plan.stamp.normalize,
        threads,
    )?;
    drop(fresh);
    // `encoded` is ascending (the plan's rows are).
    let stale: Vec<usize> = (0..plan.rows)
        .filter(|r| encoded.binary_search(r).is_err())
        .collect();
    progress.stage("aligning the stale vectors", stale.len() as u64);
    let data = OpenOptions::new()
        .write(true)
        .open(&data_path)
        .map_err(Error::io("open", &data_path))?;
    for rows in stale.chunks(BuildOptions::DEFAULT_CHUNK_ROWS) {
        let mapped = map.apply(&base.gather(rows), plan.stamp.normalize, threads)?;
        write_rows(
            &data,
            rows,
            &precision.encode(&mapped),
            dim * precision.bytes(),
        )
        .map_err(Error::io("write", &data_path))?;
        progress.advance(rows.len() as u64, 0);
    }
    data.sync_data().map_err(Error::io("sync", &data_path))?;
    fit.seconds = started.elapsed().as_secs_f64();
    Ok(fit)
}

/// Writes the encoded `bytes` of `rows` (ascending) at their places in
/// `file`, one write per run of consecutive rows.
fn write_rows(file: &fs::File, rows: &[usize], bytes: &[u8], width: usize) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut start = 0;
    while start < rows.len() {
        let mut end = start + 1;
        while end < rows.len() && rows[end] == rows[end - 1] + 1 {
            end += 1;
        }
        file.write_all_at(
            &bytes[start * width..end * width],
            (rows[start] * width) as u64,
        )?;
        start = end;
    }
    Ok(())
}

impl IndexDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        IndexDir {
            root: root.into(),
            device: IndexDevice::Cpu,
        }
    }

    /// The same directory, its generations opened to search on `device`.
    pub fn on(mut self, device: IndexDevice) -> Self {
        self.device = device;
        self
    }

    pub fn device(&self) -> IndexDevice {
        self.device
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The live generation's name and manifest, if any.
    pub fn current(&self) -> Result<Option<(Generation, Manifest)>> {
        let current = self.root.join(CURRENT);
        if !current.exists() {
            return Ok(None);
        }
        let name: Generation = String::from_utf8_lossy(&fsutil::read(&current)?)
            .trim()
            .parse()
            .map_err(|e| Error::bad_file(&current, format!("{e}; {REBUILD}")))?;
        let manifest_path = self.generation_dir(name).join(MANIFEST);
        let manifest: Manifest = fsutil::read_json(&manifest_path)?;
        if manifest.format_version > FORMAT_VERSION {
            return Err(Error::bad_file(
                manifest_path,
                format!(
                    "written by a newer cpack (format {}, this one reads up to {FORMAT_VERSION})",
                    manifest.format_version
                ),
            ));
        }
        Ok(Some((name, manifest)))
    }

    /// Opens the live generation, refusing it if it was embedded differently
    /// from `expect`, built from another version of `corpus`, or damaged.
    pub fn open(&self, expect: &EmbeddingStamp, corpus: &TextTable) -> Result<OpenIndex> {
        let (generation, manifest) = self.current()?.ok_or_else(|| Error::NoIndex {
            path: self.root.clone(),
        })?;
        let dir = self.generation_dir(generation);
        if manifest.plan.corpus_fingerprint != corpus.fingerprint() {
            return Err(Error::StaleIndex { path: dir });
        }
        if let Some((field, index_value, workspace_value)) =
            manifest.plan.stamp.first_difference(expect)
        {
            return Err(Error::Mismatch {
                path: dir,
                field,
                index_value,
                workspace_value,
            });
        }
        self.open_generation(generation, manifest)
    }

    fn open_generation(&self, generation: Generation, manifest: Manifest) -> Result<OpenIndex> {
        let dir = self.generation_dir(generation);
        // Before anything reads them: FAISS trusts its file, the embeddings
        // are mapped as they are.
        manifest.verify_files(&dir)?;
        let plan = &manifest.plan;
        let ids: Vec<String> = fsutil::read_json(&dir.join(IDS))?;
        if ids.len() != plan.rows {
            return Err(Error::bad_file(
                dir.join(IDS),
                format!(
                    "lists {} ids, the manifest promises {}",
                    ids.len(),
                    plan.rows
                ),
            ));
        }
        let embeddings = Arc::new(EmbeddingMatrix::open(
            &dir.join(plan.precision.file_name()),
            plan.rows,
            plan.stamp.dim,
            plan.precision,
        )?);
        let vectors = plan.index.open(&dir, embeddings.clone(), self.device)?;
        Ok(OpenIndex {
            generation,
            dir,
            manifest,
            ids,
            embeddings,
            vectors,
        })
    }

    /// Builds (or resumes building) the index the plan describes and makes it live.
    pub fn build(
        &self,
        plan: BuildPlan,
        provenance: Provenance,
        corpus: &TextTable,
        encoder: &dyn PassageEncoder,
        options: BuildOptions,
        progress: &dyn Progress,
    ) -> Result<BuildOutcome> {
        plan.check()?;
        fs::create_dir_all(&self.root).map_err(Error::io("create", &self.root))?;
        let _lock = self.lock()?;
        if let Some(generation) = self.up_to_date(&plan, options.force)? {
            return Ok(BuildOutcome::UpToDate { generation });
        }
        let build_dir = self.root.join(BUILD);
        let mut state = self.resume_or_start(&build_dir, &plan, progress)?;
        let resumed_from_row = state.rows_done;
        let chunk_rows = options.chunk_rows.max(1);
        self.encode_remaining(
            &build_dir, &mut state, corpus, encoder, chunk_rows, progress,
        )?;
        let alignment = match &plan.partial {
            Some(partial) if partial.stale == StaleVectors::Aligned => {
                Some(align_stale(&build_dir, &plan, partial, progress)?)
            }
            _ => None,
        };
        state.timings.index_seconds = index_build(&build_dir, &plan, progress)?;
        fsutil::write_json_atomic(&build_dir.join(IDS), &corpus.ids)?;
        let manifest = Manifest {
            format_version: FORMAT_VERSION,
            files: checksums(&build_dir, plan.precision)?,
            plan,
            model_path: provenance.model_path.display().to_string(),
            corpus_path: provenance.corpus_path.display().to_string(),
            created_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            timings: state.timings.clone(),
            encoded_on: encoder.device(),
            alignment,
        };
        fsutil::write_json_atomic(&build_dir.join(MANIFEST), &manifest)?;
        fs::remove_file(build_dir.join(STATE))
            .map_err(Error::io("remove", build_dir.join(STATE)))?;
        let generation = self.publish(&build_dir)?;
        Ok(BuildOutcome::Built {
            generation,
            resumed_from_row,
            manifest: Box::new(manifest),
        })
    }

    /// The live generation, when it was built to `plan` and is intact
    /// (never when `force`d: the caller wants a new one).
    fn up_to_date(&self, plan: &BuildPlan, force: bool) -> Result<Option<Generation>> {
        if force {
            return Ok(None);
        }
        let Some((generation, manifest)) = self.current()? else {
            return Ok(None);
        };
        let intact = || {
            manifest.format_version == FORMAT_VERSION
                && manifest
                    .verify_files(&self.generation_dir(generation))
                    .is_ok()
        };
        Ok((manifest.plan == *plan && intact()).then_some(generation))
    }

    /// Holds the workspace's build lock until dropped: two builds writing
    /// `build/` at once would interleave their chunks.
    fn lock(&self) -> Result<fsutil::ProcessLock> {
        Ok(fsutil::ProcessLock::acquire(
            &self.root.join(LOCK),
            "the index",
        )?)
    }

    /// Picks up `build/` if it was started with the same plan, else clears it
    /// and starts it: an empty embeddings file, or for a partial plan a
    /// verified copy of the base's, whose re-encoded rows are then overwritten.
    fn resume_or_start(
        &self,
        build_dir: &Path,
        plan: &BuildPlan,
        progress: &dyn Progress,
    ) -> Result<BuildState> {
        let state_path = build_dir.join(STATE);
        let data = build_dir.join(plan.precision.file_name());
        if state_path.exists() {
            if let Ok(state) = fsutil::read_json::<BuildState>(&state_path) {
                if state.format_version == FORMAT_VERSION && &state.plan == plan {
                    // Rows past the last recorded chunk may be partial: a whole
                    // build drops them; a partial one (its file written only
                    // after the base was copied whole) rewrites them.
                    if plan.partial.is_none() {
                        let width = (plan.stamp.dim * plan.precision.bytes()) as u64;
                        let file = OpenOptions::new()
                            .write(true)
                            .open(&data)
                            .map_err(Error::io("open", &data))?;
                        file.set_len(state.rows_done as u64 * width)
                            .map_err(Error::io("truncate", &data))?;
                    }
                    progress.note(&format!(
                        "resuming an interrupted build at row {} of {}",
                        state.rows_done,
                        plan.rows_to_encode().len()
                    ));
                    return Ok(state);
                }
            }
            progress.note("discarding an interrupted build made with other settings");
        }
        if build_dir.exists() {
            fs::remove_dir_all(build_dir).map_err(Error::io("remove", build_dir))?;
        }
        fs::create_dir_all(build_dir).map_err(Error::io("create", build_dir))?;
        match &plan.partial {
            None => {
                fs::File::create(&data).map_err(Error::io("create", &data))?;
            }
            Some(partial) => copy_base(partial, &data)?,
        }
        let state = BuildState {
            format_version: FORMAT_VERSION,
            plan: plan.clone(),
            rows_done: 0,
            timings: Timings::default(),
        };
        fsutil::write_json_atomic(&state_path, &state)?;
        Ok(state)
    }

    fn encode_remaining(
        &self,
        build_dir: &Path,
        state: &mut BuildState,
        corpus: &TextTable,
        encoder: &dyn PassageEncoder,
        chunk_rows: usize,
        progress: &dyn Progress,
    ) -> Result<()> {
        let plan = state.plan.clone();
        let targets = plan.rows_to_encode();
        let width = plan.stamp.dim * plan.precision.bytes();
        let data_path = build_dir.join(plan.precision.file_name());
        let data = OpenOptions::new()
            .write(true)
            .open(&data_path)
            .map_err(Error::io("open", &data_path))?;
        let stage = match plan.partial {
            None => "encoding passages".to_string(),
            Some(_) => format!("re-encoding {} of {} passages", targets.len(), plan.rows),
        };
        progress.stage(&stage, targets.len() as u64);
        progress.advance(state.rows_done as u64, 0);
        while state.rows_done < targets.len() {
            let started = Instant::now();
            let end = (state.rows_done + chunk_rows).min(targets.len());
            let rows = &targets[state.rows_done..end];
            let texts: Vec<String> = rows.iter().map(|&i| corpus.full_text(i)).collect();
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            let mut tokens = 0u64;
            let vectors = encoder.encode_passages(&refs, &mut |n, t| {
                tokens += t as u64;
                progress.advance(n as u64, t as u64);
            })?;
            write_rows(&data, rows, &plan.precision.encode(&vectors), width)
                .and_then(|_| data.sync_data())
                .map_err(Error::io("write", &data_path))?;
            state.rows_done = end;
            state.timings.tokens += tokens;
            state.timings.encode_seconds += started.elapsed().as_secs_f64();
            fsutil::write_json_atomic(&build_dir.join(STATE), state)?;
        }
        Ok(())
    }

    /// Renames the finished build to the next generation, switches CURRENT to
    /// it, then removes older generations.
    fn publish(&self, build_dir: &Path) -> Result<Generation> {
        let existing = self.generations()?;
        let generation = existing
            .iter()
            .max()
            .map_or(Generation::FIRST, |g| g.next());
        let target = self.generation_dir(generation);
        fs::rename(build_dir, &target).map_err(Error::io("rename into place", &target))?;
        fsutil::sync_dir(&self.root)?;
        fsutil::atomic_write(
            &self.root.join(CURRENT),
            format!("{generation}\n").as_bytes(),
        )?;
        for old in existing {
            let path = self.generation_dir(old);
            // A failed clean-up only wastes disk; the swap itself is done.
            let _ = fs::remove_dir_all(path);
        }
        Ok(generation)
    }

    fn generations(&self) -> Result<Vec<Generation>> {
        let entries = fs::read_dir(&self.root).map_err(Error::io("list", &self.root))?;
        Ok(entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect())
    }

    /// The folder of `generation`.
    pub fn generation_dir(&self, generation: Generation) -> PathBuf {
        self.root.join(generation.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cpack_core::progress::Silent;
    use cpack_encode::candle_backend::CandleBackend;
    use cpack_encode::{BackendKind, EncoderBackend, EncoderSettings, TokenBatch};
    use cpack_model::ModelDir;
    use cpack_model::Pooling;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const TEXTS: [&str; 12] = [
        "the cat sat on the mat",
        "dogs chase cats",
        "insurance covers the car",
        "life insurance pays out",
        "保险公司支付赔偿",
        "猫坐在垫子上",
        "a quick brown fox",
        "",
        "claims take six weeks",
        "term life ends",
        "renters insurance is cheap",
        "the dog barks",
    ];

    struct Fixture {
        _dir: tempfile::TempDir,
        root: PathBuf,
        model: ModelDir,
        corpus: TextTable,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let model_dir = dir.path().join("model");
        cpack_model::test_model::write_tiny_model(&model_dir, &TEXTS, 7).unwrap();
        let ids = (0..TEXTS.len()).map(|i| format!("d{i}")).collect();
        Fixture {
            root: dir.path().join("index"),
            model: ModelDir::open(&model_dir).unwrap(),
            corpus: TextTable::from_texts(ids, TEXTS.iter().map(|s| s.to_string()).collect()),
            _dir: dir,
        }
    }

    fn encoder_with(f: &Fixture, backend: Box<dyn EncoderBackend>) -> Encoder {
        let settings = EncoderSettings {
            batch_size: 3,
            ..EncoderSettings::declared_by(&f.model)
        };
        Encoder::new(&f.model, settings, backend).unwrap()
    }

    /// The fixture's model on candle's CPU kernels, f32.
    fn candle(f: &Fixture) -> CandleBackend {
        let (device, precision) = (
            cpack_model::ComputeDevice::Cpu,
            cpack_encode::WeightPrecision::F32,
        );
        CandleBackend::load(&f.model, Pooling::Mean, true, device, precision).unwrap()
    }

    fn encoder(f: &Fixture) -> Encoder {
        encoder_with(f, Box::new(candle(f)))
    }

    fn plan(f: &Fixture, enc: &Encoder, index: IndexKind) -> BuildPlan {
        BuildPlan {
            stamp: EmbeddingStamp::of(&f.model, enc).unwrap(),
            corpus_fingerprint: f.corpus.fingerprint(),
            rows: f.corpus.len(),
            precision: Precision::F32,
            index,
            partial: None,
        }
    }

    fn opts(chunk_rows: usize, force: bool) -> BuildOptions {
        BuildOptions { chunk_rows, force }
    }

    fn provenance() -> Provenance<'static> {
        Provenance {
            model_path: Path::new("model"),
            corpus_path: Path::new("corpus.jsonl"),
        }
    }

    /// Fails every call after the first `ok_calls`: a build dying mid-way.
    struct FailingBackend {
        inner: CandleBackend,
        ok_calls: usize,
        calls: AtomicUsize,
    }

    impl EncoderBackend for FailingBackend {
        fn embed(&self, batch: &TokenBatch) -> cpack_encode::Result<Vec<f32>> {
            if self.calls.fetch_add(1, Ordering::SeqCst) >= self.ok_calls {
                let injected = candle_core::Error::Msg("injected failure".into());
                return Err(cpack_encode::Error::Candle(injected));
            }
            self.inner.embed(batch)
        }
        fn dim(&self) -> usize {
            self.inner.dim()
        }
        fn kind(&self) -> BackendKind {
            BackendKind::Candle
        }
    }

    /// The fixture's encoder, failing every backend call after the first `ok_calls`.
    fn failing_after(f: &Fixture, ok_calls: usize) -> Encoder {
        let backend = FailingBackend {
            inner: candle(f),
            ok_calls,
            calls: AtomicUsize::new(0),
        };
        encoder_with(f, Box::new(backend))
    }

    fn embeddings_file(dir: &IndexDir) -> Vec<u8> {
        let (generation, manifest) = dir.current().unwrap().unwrap();
        std::fs::read(
            dir.generation_dir(generation)
                .join(manifest.plan.precision.file_name()),
        )
        .unwrap()
    }

    #[test]
    fn build_then_search_finds_each_passage_itself() {
        for kind in [
            IndexKind::Exact,
            IndexKind::Faiss {
                factory: "Flat".into(),
            },
        ] {
            if matches!(kind, IndexKind::Faiss { .. }) && !cfg!(feature = "faiss") {
                continue;
            }
            let f = fixture();
            let enc = encoder(&f);
            let p = plan(&f, &enc, kind.clone());
            let dir = IndexDir::new(&f.root);
            let out = dir
                .build(
                    p.clone(),
                    provenance(),
                    &f.corpus,
                    &enc,
                    opts(5, false),
                    &Silent,
                )
                .unwrap();
            assert!(matches!(
                out,
                BuildOutcome::Built {
                    resumed_from_row: 0,
                    ..
                }
            ));
            let mut index = dir.open(&p.stamp, &f.corpus).unwrap();
            assert_eq!(index.ids, f.corpus.ids);
            let all = index.embeddings.to_f32();
            let hits = index.vectors.search(&all, 3, 2).unwrap();
            for row in 0..f.corpus.len() {
                let (best, score) = hits.of(row).next().unwrap();
                assert_eq!(
                    best, row,
                    "{kind}: passage {row} is not its own nearest neighbour"
                );
                assert!(
                    (score - 1.0).abs() < 1e-4,
                    "{kind}: self-similarity {score}"
                );
            }
        }
    }

    #[test]
    fn rebuild_is_skipped_when_up_to_date_and_swaps_generations_when_forced() {
        let f = fixture();
        let enc = encoder(&f);
        let p = plan(&f, &enc, IndexKind::Exact);
        let dir = IndexDir::new(&f.root);
        dir.build(
            p.clone(),
            provenance(),
            &f.corpus,
            &enc,
            opts(4, false),
            &Silent,
        )
        .unwrap();
        let again = dir
            .build(
                p.clone(),
                provenance(),
                &f.corpus,
                &enc,
                opts(4, false),
                &Silent,
            )
            .unwrap();
        assert!(
            matches!(again, BuildOutcome::UpToDate { ref generation } if generation == "gen-000001")
        );
        let forced = dir
            .build(p, provenance(), &f.corpus, &enc, opts(4, true), &Silent)
            .unwrap();
        assert!(
            matches!(forced, BuildOutcome::Built { ref generation, .. } if generation == "gen-000002")
        );
        assert!(
            !f.root.join("gen-000001").exists(),
            "the old generation is removed after the swap"
        );
        assert!(!f.root.join(BUILD).exists());
    }

    #[test]
    fn interrupted_build_resumes_and_matches_a_clean_build() {
        let f = fixture();
        let clean_dir = IndexDir::new(f.root.join("clean"));
        let enc = encoder(&f);
        let p = plan(&f, &enc, IndexKind::Exact);
        clean_dir
            .build(
                p.clone(),
                provenance(),
                &f.corpus,
                &enc,
                opts(4, false),
                &Silent,
            )
            .unwrap();

        let dir = IndexDir::new(f.root.join("resumed"));
        // Batch 3, chunk 4: the first chunk (2 calls) lands, the second dies.
        let failing = failing_after(&f, 3);
        let err = dir.build(
            p.clone(),
            provenance(),
            &f.corpus,
            &failing,
            opts(4, false),
            &Silent,
        );
        assert!(err.is_err());
        assert!(
            dir.current().unwrap().is_none(),
            "a failed build must not publish an index"
        );
        assert!(matches!(
            dir.open(&p.stamp, &f.corpus),
            Err(Error::NoIndex { .. })
        ));

        let out = dir
            .build(p, provenance(), &f.corpus, &enc, opts(4, false), &Silent)
            .unwrap();
        assert!(
            matches!(
                out,
                BuildOutcome::Built {
                    resumed_from_row: 4,
                    ..
                }
            ),
            "{out:?}"
        );
        assert_eq!(embeddings_file(&dir), embeddings_file(&clean_dir));
    }

    #[test]
    fn a_second_concurrent_build_is_refused() {
        let f = fixture();
        let enc = encoder(&f);
        let p = plan(&f, &enc, IndexKind::Exact);
        let dir = IndexDir::new(&f.root);
        std::fs::create_dir_all(&f.root).unwrap();
        let held = dir.lock().unwrap();
        let err = dir
            .build(
                p.clone(),
                provenance(),
                &f.corpus,
                &enc,
                opts(4, false),
                &Silent,
            )
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("the index is in use by another cpack process, pid"),
            "{err}"
        );
        drop(held);
        dir.build(p, provenance(), &f.corpus, &enc, opts(4, false), &Silent)
            .unwrap();
    }

    #[test]
    fn opening_with_other_settings_is_a_named_mismatch() {
        let f = fixture();
        let enc = encoder(&f);
        let p = plan(&f, &enc, IndexKind::Exact);
        let dir = IndexDir::new(&f.root);
        dir.build(
            p.clone(),
            provenance(),
            &f.corpus,
            &enc,
            opts(100, false),
            &Silent,
        )
        .unwrap();
        let mut other = p.stamp.clone();
        other.query_instruction = "Represent this: ".into();
        let err = dir.open(&other, &f.corpus).err().expect("mismatch");
        assert!(
            matches!(
                err,
                Error::Mismatch {
                    field: "query instruction",
                    ..
                }
            ),
            "{err}"
        );
        let mut other = p.stamp.clone();
        other.model_fingerprint = "0000".into();
        let err = dir.open(&other, &f.corpus).err().expect("mismatch");
        assert!(err.to_string().contains("model fingerprint"), "{err}");
    }

    /// An index built by the fixture's model, and the whole corpus encoded
    /// by another: the two sides of an incremental refresh.
    struct Refresh {
        f: Fixture,
        g: Fixture,
        old: Encoder,
        new: Encoder,
        dir: IndexDir,
        new_plan: BuildPlan,
        before: Vec<u8>,
        fresh: Vec<u8>,
    }

    fn refresh_fixture() -> Refresh {
        let f = fixture();
        let other_model = f.root.with_file_name("other-model");
        cpack_model::test_model::write_tiny_model(&other_model, &TEXTS, 8).unwrap();
        let g = Fixture {
            model: ModelDir::open(&other_model).unwrap(),
            root: f.root.clone(),
            corpus: f.corpus.clone(),
            _dir: tempfile::tempdir().unwrap(),
        };
        let (old, new) = (encoder(&f), encoder(&g));
        let dir = IndexDir::new(f.root.join("run"));
        let old_plan = plan(&f, &old, IndexKind::Exact);
        dir.build(
            old_plan,
            provenance(),
            &f.corpus,
            &old,
            opts(4, false),
            &Silent,
        )
        .unwrap();
        let before = embeddings_file(&dir);
        let whole = IndexDir::new(f.root.join("whole"));
        let new_plan = plan(&g, &new, IndexKind::Exact);
        whole
            .build(
                new_plan.clone(),
                provenance(),
                &f.corpus,
                &new,
                opts(4, false),
                &Silent,
            )
            .unwrap();
        let fresh = embeddings_file(&whole);
        Refresh {
            f,
            g,
            old,
            new,
            dir,
            new_plan,
            before,
            fresh,
        }
    }

    impl Refresh {
        /// The plan re-encoding `rows` of the old index with the new model.
        fn partial(&self, rows: Vec<u32>, stale: StaleVectors) -> BuildPlan {
            let base = self
                .dir
                .open(
                    &plan(&self.f, &self.old, IndexKind::Exact).stamp,
                    &self.f.corpus,
                )
                .unwrap();
            let partial = PartialPlan::over(&base, rows, stale).unwrap();
            self.new_plan.clone().reencoding_only(partial)
        }

        fn build(&self, p: &BuildPlan, enc: &Encoder) -> Result<BuildOutcome> {
            let corpus = &self.f.corpus;
            self.dir.build(
                p.clone(),
                provenance(),
                corpus,
                enc,
                opts(2, false),
                &Silent,
            )
        }
    }

    fn floats(x: &[u8]) -> Vec<f32> {
        x.chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    fn max_difference(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max)
    }

    fn distance(a: &[u8], b: &[u8]) -> f32 {
        max_difference(&floats(a), &floats(b))
    }

    #[test]
    fn partial_build_reencodes_exactly_its_rows_and_resumes() {
        let r = refresh_fixture();
        let p = r.partial(vec![6, 1, 4, 1, 5], StaleVectors::Kept);
        assert_eq!(p.partial.as_ref().unwrap().rows, [1, 4, 5, 6]);
        assert_eq!(p.stale_rows(), TEXTS.len() - 4);
        // Batch 3, chunk 2: the first chunk (1 call) lands, the second dies.
        assert!(r.build(&p, &failing_after(&r.g, 1)).is_err());
        let out = r.build(&p, &r.new).unwrap();
        assert!(
            matches!(
                out,
                BuildOutcome::Built {
                    resumed_from_row: 2,
                    ..
                }
            ),
            "{out:?}"
        );
        let after = embeddings_file(&r.dir);
        let width = r.new.dim() * 4;
        let row_of = |bytes: &[u8], row: usize| bytes[row * width..(row + 1) * width].to_vec();
        for row in 0..TEXTS.len() {
            let got = row_of(&after, row);
            if [1, 4, 5, 6].contains(&row) {
                // Re-encoded: the new model's vector (batches pad differently,
                // so to rounding), and not the old one.
                assert!(distance(&got, &row_of(&r.fresh, row)) < 1e-5, "row {row}");
                assert!(distance(&got, &row_of(&r.before, row)) > 1e-2, "row {row}");
            } else {
                assert_eq!(
                    got,
                    row_of(&r.before, row),
                    "row {row} must keep its old bytes"
                );
            }
        }
        let index = r.dir.open(&p.stamp, &r.f.corpus).unwrap();
        assert_eq!(index.manifest.plan.stale_rows(), TEXTS.len() - 4);
        assert_eq!(index.manifest.alignment, None);
        assert!(matches!(
            r.build(&p, &r.new).unwrap(),
            BuildOutcome::UpToDate { .. }
        ));
    }

    #[test]
    fn an_alignment_cut_short_reruns_to_the_same_bytes() {
        let r = refresh_fixture();
        let p = r.partial((0..10).collect(), StaleVectors::Aligned);
        let partial = p.partial.clone().unwrap();
        let build_dir = r.dir.root().join(BUILD);
        let mut state = r.dir.resume_or_start(&build_dir, &p, &Silent).unwrap();
        r.dir
            .encode_remaining(&build_dir, &mut state, &r.f.corpus, &r.new, 4, &Silent)
            .unwrap();
        let data = build_dir.join(p.precision.file_name());
        align_stale(&build_dir, &p, &partial, &Silent).unwrap();
        let aligned = std::fs::read(&data).unwrap();
        // A kill half-way through the rewrite: one stale row written, one
        // torn. The rerun fits on the re-encoded rows, which it never writes.
        let width = p.stamp.dim * 4;
        let mut torn = aligned.clone();
        torn[10 * width..10 * width + width / 2].fill(0xFF);
        std::fs::write(&data, &torn).unwrap();
        align_stale(&build_dir, &p, &partial, &Silent).unwrap();
        assert_eq!(std::fs::read(&data).unwrap(), aligned);
    }

    #[test]
    fn aligned_partial_build_maps_the_stale_rows_by_the_fit_on_the_reencoded_ones() {
        let r = refresh_fixture();
        let p = r.partial((0..10).collect(), StaleVectors::Aligned);
        r.build(&p, &r.new).unwrap();
        let after = embeddings_file(&r.dir);
        let dim = r.new.dim();
        let (before, fresh, got) = (floats(&r.before), floats(&r.fresh), floats(&after));
        let rows_of = |v: &[f32], rows: &[usize]| -> Vec<f32> {
            rows.iter()
                .flat_map(|&i| v[i * dim..(i + 1) * dim].to_vec())
                .collect()
        };
        let (encoded, stale): (Vec<usize>, Vec<usize>) = (0..TEXTS.len()).partition(|&i| i < 10);
        assert!(max_difference(&rows_of(&got, &encoded), &rows_of(&fresh, &encoded)) < 1e-5);
        // The stale rows: the old vectors through the map fitted on the
        // re-encoded rows' (old, new) pairs, unit length as the model's.
        let (map, fit) = align::fit_held_out(
            &rows_of(&before, &encoded),
            &rows_of(&got, &encoded),
            dim,
            true,
            1,
        )
        .unwrap();
        let expected = map.apply(&rows_of(&before, &stale), true, 1).unwrap();
        assert!(max_difference(&rows_of(&got, &stale), &expected) < 1e-5);
        assert!(max_difference(&rows_of(&got, &stale), &rows_of(&before, &stale)) > 1e-3);
        for row in rows_of(&got, &stale).chunks_exact(dim) {
            let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5, "{norm}");
        }
        let index = r.dir.open(&p.stamp, &r.f.corpus).unwrap();
        let recorded = index.manifest.alignment.expect("alignment recorded");
        assert_eq!((recorded.fitted_rows, recorded.held_out_rows), (9, 1));
        assert_eq!(recorded.cosine_aligned, fit.cosine_aligned);
    }
}
