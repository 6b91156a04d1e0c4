//! Checkpoints in Hugging Face layout, written atomically.
//!
//! `epoch-N/` holds `model.safetensors` (every tensor of the base checkpoint
//! under its original name, trained values in place of the variables,
//! `{"format":"pt"}` metadata), `config.json`, the tokenizer files and the
//! sentence-transformers module files, so `SentenceTransformer(path)` and
//! `cpack init --model path` both load it. Beside the model it keeps what
//! `--resume` needs: `optimizer.safetensors` (AdamW moments) and
//! `trainer_state.json`. The folder is assembled as `.epoch-N.partial/`,
//! every file fsynced, then renamed into place: a reader sees a whole
//! checkpoint or none, and a crash never touches the previous one.
//!
//! A reranker's checkpoint ([`save_reranker`]) holds the same files but the
//! module files: its `config.json` names its classification head instead,
//! and its weights include a head the base lacked.

use crate::cross::TrainableCrossEncoder;
use crate::error::{Error, Result};
use crate::model::TrainableEncoder;
use crate::optim::AdamW;
use crate::trainer::EpochStats;
use candle_core::{Device, Tensor, Var};
use cpack_core::fsutil;
use cpack_model::{ClassifierLayout, ModelDir, Pooling};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

pub const STATE_FILE: &str = "trainer_state.json";
const WEIGHTS_FILE: &str = "model.safetensors";
const OPTIMIZER_FILE: &str = "optimizer.safetensors";
const FORMAT_VERSION: u32 = 1;

/// Files copied unchanged from the base model when present.
const COPIED: [&str; 7] = [
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "added_tokens.json",
    "config_sentence_transformers.json",
];

/// Where training stood when the checkpoint was written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    pub format_version: u32,
    /// Epochs completed (this checkpoint is `epoch-{epoch}`).
    pub epoch: usize,
    pub optimizer_steps: u64,
    /// Steps the learning-rate schedule spans: epochs × the steps an epoch of
    /// full batches takes (each epoch's real steps are in `stats`).
    #[serde(default, alias = "total_steps")]
    pub schedule_steps: u64,
    /// Mining round the epoch trained on.
    pub round: Option<u32>,
    /// How the epoch went, and the mining that preceded it: enough to
    /// rebuild its report entry if the process dies before writing it.
    #[serde(default)]
    pub stats: EpochStats,
    #[serde(default)]
    pub mine_seconds: f64,
    /// Of the mining, the teacher's scoring (reported as its own stage).
    #[serde(default)]
    pub teacher_seconds: f64,
    #[serde(default)]
    pub negatives_overlap: Option<f64>,
    /// Size and checksum of the weights and optimizer files, by name, taken
    /// when they were written; `--resume` verifies them (absent in
    /// checkpoints from before they were recorded).
    #[serde(default)]
    pub files: std::collections::BTreeMap<String, fsutil::FileSum>,
    /// Negatives retired so far on the epoch's round (`replace_easy`),
    /// passage ids by query id: the next epoch's draws depend on them.
    #[serde(default)]
    pub retired: std::collections::BTreeMap<String, Vec<String>>,
    /// With several tasks, the round each task's queries trained on, by
    /// task name (each task mines into its own store; `round` is then `None`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub task_rounds: std::collections::BTreeMap<String, u32>,
}

impl TrainerState {
    pub fn new(
        epoch: usize,
        optimizer_steps: u64,
        schedule_steps: u64,
        round: Option<u32>,
    ) -> Self {
        TrainerState {
            format_version: FORMAT_VERSION,
            epoch,
            optimizer_steps,
            schedule_steps,
            round,
            stats: EpochStats::default(),
            mine_seconds: 0.0,
            teacher_seconds: 0.0,
            negatives_overlap: None,
            files: Default::default(),
            retired: Default::default(),
            task_rounds: Default::default(),
        }
    }
}

/// How the sentence-transformers module files describe the trained model.
pub struct Modules {
    pub pooling: Pooling,
    pub normalize: bool,
    pub max_seq_length: usize,
}

pub fn epoch_dir(run_dir: &Path, epoch: usize) -> PathBuf {
    run_dir.join(format!("epoch-{epoch}"))
}

/// Writes `epoch-{state.epoch}` under `run_dir`; fails (leaving older
/// checkpoints as they were) if any write fails.
pub fn save(
    run_dir: &Path,
    base: &ModelDir,
    encoder: &TrainableEncoder,
    optimizer: &AdamW,
    state: &TrainerState,
    modules: &Modules,
) -> Result<PathBuf> {
    let kind = Kind::Embedder(modules);
    save_vars(run_dir, base, &encoder.vars(), &kind, optimizer, state)
}

/// What a checkpoint holds besides the weights.
enum Kind<'a> {
    /// An embedder: the sentence-transformers module files.
    Embedder(&'a Modules),
    /// A reranker: `config.json` naming its classification head, so that
    /// `CrossEncoder(path)` and `AutoModelForSequenceClassification` load it.
    Reranker(ClassifierLayout),
}

/// [`save`] for a reranker: the base's files, the trained weights (a new
/// head included) and a `config.json` that names the head.
pub fn save_reranker(
    run_dir: &Path,
    base: &ModelDir,
    model: &TrainableCrossEncoder,
    optimizer: &AdamW,
    state: &TrainerState,
) -> Result<PathBuf> {
    let kind = Kind::Reranker(model.layout());
    save_vars(run_dir, base, &model.vars(), &kind, optimizer, state)
}

fn save_vars(
    run_dir: &Path,
    base: &ModelDir,
    vars: &[(String, Var)],
    kind: &Kind,
    optimizer: &AdamW,
    state: &TrainerState,
) -> Result<PathBuf> {
    let target = epoch_dir(run_dir, state.epoch);
    let partial = run_dir.join(format!(".epoch-{}.partial", state.epoch));
    if partial.exists() {
        fs::remove_dir_all(&partial).map_err(Error::io("remove", &partial))?;
    }
    let written = write_all(&partial, base, vars, kind, optimizer, state);
    if let Err(e) = written {
        let _ = fs::remove_dir_all(&partial);
        return Err(e);
    }
    if target.exists() {
        fs::remove_dir_all(&target).map_err(Error::io("remove", &target))?;
    }
    fs::rename(&partial, &target).map_err(Error::io("rename into place", &target))?;
    fsutil::sync_dir(run_dir)?;
    Ok(target)
}

fn write_all(
    dir: &Path,
    base: &ModelDir,
    vars: &[(String, Var)],
    kind: &Kind,
    optimizer: &AdamW,
    state: &TrainerState,
) -> Result<()> {
    fs::create_dir_all(dir).map_err(Error::io("create", dir))?;
    for name in COPIED {
        let from = base.dir.join(name);
        // A reranker is no sentence-transformers embedder: its config says what it is.
        let skip = matches!(kind, Kind::Reranker(_))
            && matches!(name, "config.json" | "config_sentence_transformers.json");
        if from.exists() && !skip {
            write_synced(&dir.join(name), &fsutil::read(&from)?)?;
        }
    }
    write_synced(&dir.join(WEIGHTS_FILE), &model_bytes(base, vars)?)?;
    match kind {
        Kind::Embedder(modules) => write_modules(dir, modules, base.hidden_size())?,
        Kind::Reranker(layout) => write_reranker_config(dir, base, layout)?,
    }
    let moments: Vec<(String, Tensor)> = optimizer.state()?;
    let metadata = HashMap::from([("steps".to_string(), optimizer.steps().to_string())]);
    write_synced(&dir.join(OPTIMIZER_FILE), &serialize(&moments, metadata)?)?;
    let mut state = state.clone();
    for name in [WEIGHTS_FILE, OPTIMIZER_FILE] {
        state
            .files
            .insert(name.to_string(), fsutil::FileSum::of(&dir.join(name))?);
    }
    write_synced(
        &dir.join(STATE_FILE),
        &serde_json::to_vec_pretty(&state).expect("plain data"),
    )?;
    fsutil::sync_dir(dir)?;
    if matches!(kind, Kind::Embedder(_)) {
        fsutil::sync_dir(&dir.join("1_Pooling"))?;
    }
    Ok(())
}

/// The base's `config.json` naming the classification head: its
/// architecture and one label, as transformers writes a sequence classifier's.
fn write_reranker_config(dir: &Path, base: &ModelDir, layout: &ClassifierLayout) -> Result<()> {
    let path = base.dir.join("config.json");
    let mut config: serde_json::Map<String, serde_json::Value> = fsutil::read_json(&path)?;
    config.insert(
        "architectures".into(),
        serde_json::json!([layout.architecture()]),
    );
    let labels: serde_json::Map<String, serde_json::Value> = (0..layout.labels)
        .map(|i| (i.to_string(), format!("LABEL_{i}").into()))
        .collect();
    let ids: serde_json::Map<String, serde_json::Value> = (0..layout.labels)
        .map(|i| (format!("LABEL_{i}"), i.into()))
        .collect();
    config.insert("id2label".into(), labels.into());
    config.insert("label2id".into(), ids.into());
    let bytes = serde_json::to_vec_pretty(&config).expect("plain data");
    write_synced(&dir.join("config.json"), &bytes)
}

/// Every tensor of the base weights file, with trained values for the
/// variables, then the variables the base lacked (a new head).
fn model_bytes(base: &ModelDir, vars: &[(String, Var)]) -> Result<Vec<u8>> {
    let raw = fsutil::read(&base.weights)?;
    let original = SafeTensors::deserialize(&raw).map_err(|e| Error::Checkpoint {
        path: base.weights.clone(),
        problem: format!("cannot read the base weights: {e}"),
    })?;
    let trained: HashMap<&str, (Vec<u8>, Vec<usize>)> = vars
        .iter()
        .map(|(name, var)| {
            let t = var.as_tensor();
            Ok((name.as_str(), (f32_bytes(t)?, t.dims().to_vec())))
        })
        .collect::<Result<_>>()?;
    let mut views: Vec<(String, TensorView)> = Vec::new();
    for (name, view) in original.tensors() {
        let view = match trained.get(name.as_str()) {
            Some((bytes, _)) => TensorView::new(Dtype::F32, view.shape().to_vec(), bytes)
                .expect("a variable has the shape of the tensor it was loaded from"),
            None => view,
        };
        views.push((name, view));
    }
    for (name, _) in vars {
        if original.tensor(name).is_err() {
            let (bytes, shape) = &trained[name.as_str()];
            let view =
                TensorView::new(Dtype::F32, shape.clone(), bytes).expect("shape matches data");
            views.push((name.clone(), view));
        }
    }
    safetensors::serialize(views, Some(pt_metadata())).map_err(|e| Error::Checkpoint {
        path: base.weights.clone(),
        problem: format!("cannot serialise weights: {e}"),
    })
}

/// Hugging Face loaders check for this marker.
fn pt_metadata() -> HashMap<String, String> {
    HashMap::from([("format".to_string(), "pt".to_string())])
}

fn f32_bytes(t: &Tensor) -> Result<Vec<u8>> {
    let values = t.flatten_all()?.to_vec1::<f32>()?;
    Ok(values.iter().flat_map(|v| v.to_le_bytes()).collect())
}

fn serialize(
    tensors: &[(String, Tensor)],
    mut metadata: HashMap<String, String>,
) -> Result<Vec<u8>> {
    metadata.extend(pt_metadata());
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .iter()
        .map(|(n, t)| Ok((n.clone(), f32_bytes(t)?, t.dims().to_vec())))
        .collect::<Result<_>>()?;
    let views = bytes.iter().map(|(n, b, shape)| {
        (
            n.as_str(),
            TensorView::new(Dtype::F32, shape.clone(), b).expect("shape matches data"),
        )
    });
    Ok(safetensors::serialize(views, Some(metadata)).expect("f32 views are valid"))
}

fn write_modules(dir: &Path, modules: &Modules, dim: usize) -> Result<()> {
    fs::create_dir_all(dir.join("1_Pooling")).map_err(Error::io("create", dir))?;
    let mut list = vec![
        serde_json::json!({"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}),
        serde_json::json!({"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}),
    ];
    if modules.normalize {
        fs::create_dir_all(dir.join("2_Normalize")).map_err(Error::io("create", dir))?;
        list.push(serde_json::json!({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}));
    }
    let pooling = serde_json::json!({
        "word_embedding_dimension": dim,
        "pooling_mode_cls_token": modules.pooling == Pooling::Cls,
        "pooling_mode_mean_tokens": modules.pooling == Pooling::Mean,
        "pooling_mode_max_tokens": false,
        "pooling_mode_mean_sqrt_len_tokens": false,
    });
    let st_config =
        serde_json::json!({"max_seq_length": modules.max_seq_length, "do_lower_case": false});
    let json = |v: &serde_json::Value| serde_json::to_vec_pretty(v).expect("plain data");
    write_synced(
        &dir.join("modules.json"),
        &json(&serde_json::Value::Array(list)),
    )?;
    write_synced(&dir.join("1_Pooling").join("config.json"), &json(&pooling))?;
    write_synced(&dir.join("sentence_bert_config.json"), &json(&st_config))
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = fs::File::create(path).map_err(Error::io("create", path))?;
    file.write_all(bytes)
        .and_then(|_| file.sync_all())
        .map_err(Error::io("write", path))
}

/// A checkpoint read back for `--resume`.
pub struct Saved {
    pub model: ModelDir,
    pub state: TrainerState,
    pub moments: HashMap<String, Tensor>,
}

/// Reads `dir` (an `epoch-N` folder).
pub fn load(dir: &Path) -> Result<Saved> {
    let state: TrainerState = fsutil::read_json(&dir.join(STATE_FILE))?;
    let named_epoch = dir
        .file_name()
        .and_then(|n| n.to_str()?.strip_prefix("epoch-")?.parse::<usize>().ok());
    if named_epoch != Some(state.epoch) {
        return Err(Error::Checkpoint {
            path: dir.join(STATE_FILE),
            problem: format!(
                "says epoch {} but sits in {}; the checkpoint is damaged (delete this folder to resume from the one before)",
                state.epoch,
                dir.file_name().map_or(String::new(), |n| n.to_string_lossy().into_owned())
            ),
        });
    }
    for (name, sum) in &state.files {
        sum.verify(
            &dir.join(name),
            "delete this checkpoint folder to resume from the one before, or start a new run",
        )?;
    }
    if state.format_version != FORMAT_VERSION {
        return Err(Error::Checkpoint {
            path: dir.to_path_buf(),
            problem: format!(
                "format version {} is not {FORMAT_VERSION}",
                state.format_version
            ),
        });
    }
    let path = dir.join(OPTIMIZER_FILE);
    let moments =
        candle_core::safetensors::load(&path, &Device::Cpu).map_err(|e| Error::Checkpoint {
            path: path.clone(),
            problem: format!("cannot read the optimizer state: {e}"),
        })?;
    Ok(Saved {
        model: ModelDir::open(dir)?,
        state,
        moments,
    })
}

/// The newest complete checkpoint of a run, if any.
pub fn latest(run_dir: &Path) -> Result<Option<PathBuf>> {
    if !run_dir.exists() {
        return Ok(None);
    }
    let entries = fs::read_dir(run_dir).map_err(Error::io("list", run_dir))?;
    Ok(entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let epoch: usize = name.strip_prefix("epoch-")?.parse().ok()?;
            e.path()
                .join(STATE_FILE)
                .exists()
                .then_some((epoch, e.path()))
        })
        .max_by_key(|(epoch, _)| *epoch)
        .map(|(_, path)| path))
}
