//! `cpack.toml`: each of its tables is the recipe type of the crate that
//! owns it (`[model]`/`[encode]`/`[rerank]`: cpack-encode, `[index]`: cpack-index,
//! `[mine]`: cpack-miner, `[train]`: cpack-run), read by serde; the same
//! types are the flags, read by clap. This module reads the file, finds the
//! line of a bad key, and merges flags over the file into one [`Config`].

use crate::cli::Overrides;
use crate::flags::Given;
use crate::state::StateDir;
use anyhow::{anyhow, bail, Context, Result};
use cpack_data::dataset::{DatasetPaths, TextTable};
use cpack_data::pairs::{PairFields, PairsSource, PairsView};
use cpack_encode::{
    EmbeddingStamp, EncodeRecipe, Encoder, EncoderSettings, ModelRecipe, RerankRecipe, Runtime,
};
use cpack_index::store::{BuildPlan, IndexDir};
use cpack_index::vector::{IndexDevice, IndexKind};
use cpack_index::{embeddings::Precision, IndexRecipe};
use cpack_miner::MiningRecipe;
use cpack_model::ModelDir;
use cpack_run::TrainRecipe;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const FILE_NAME: &str = "cpack.toml";

/// BGE's published query instructions, selectable by name.
pub const INSTRUCTION_PRESETS: [(&str, &str); 2] = [
    (
        "bge-en",
        "Represent this sentence for searching relevant passages: ",
    ),
    ("bge-zh", "为这个句子生成表示以用于检索相关文章："),
];

/// The file as written; every table and key is optional.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TomlFile {
    /// Seed of every random choice; `[train] seed` may set the training
    /// draws' own.
    pub seed: Option<u64>,
    pub data: Option<DataSection>,
    /// Several datasets trained together, each with its own instruction.
    #[serde(default, rename = "task")]
    pub tasks: Vec<TaskSection>,
    #[serde(default)]
    pub model: ModelRecipe,
    #[serde(default, alias = "encoder")]
    pub encode: EncodeRecipe,
    #[serde(default)]
    pub index: IndexRecipe,
    #[serde(default)]
    pub mine: MiningRecipe,
    #[serde(default)]
    pub train: TrainRecipe,
    #[serde(default)]
    pub rerank: RerankRecipe,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    pub dir: PathBuf,
}

/// One `[[task]]`: a BEIR folder with its own query instruction, its share
/// of each training epoch and the split it trains on.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSection {
    /// Names the task in flags (`--task`), reports and `.cpack/tasks/<name>/`.
    pub name: String,
    /// The task's BEIR folder (corpus.jsonl, queries.jsonl, qrels/).
    pub data: Option<PathBuf>,
    /// Or a pairs file (JSONL, FlagEmbedding's `query`/`pos` or the
    /// fields below): a task of alike pairs (NLI, paraphrases) trained
    /// through its BEIR view, each distinct side a query or a passage,
    /// its negatives the other pairs' passages; both sides are encoded
    /// without instruction.
    pub pairs: Option<PathBuf>,
    /// The field of a pairs line holding the query side.
    #[serde(default = "TaskSection::default_query_field")]
    pub query_field: String,
    /// The field holding the passage side (a string or a list).
    #[serde(default = "TaskSection::default_passage_field")]
    pub passage_field: String,
    /// Its queries' instruction (a preset name or the text); unset: the
    /// workspace's `[encode] query_instruction`; "" for none.
    pub query_instruction: Option<String>,
    /// Visits of each of its queries per training epoch (0.5: a seeded
    /// half each epoch; 2: each twice).
    #[serde(default = "TaskSection::default_weight")]
    pub weight: f64,
    /// The split its queries train on and are mined for [default: `[mine] split`].
    pub split: Option<String>,
}

impl TaskSection {
    fn default_weight() -> f64 {
        1.0
    }

    fn default_query_field() -> String {
        PairFields::default().query
    }

    fn default_passage_field() -> String {
        PairFields::default().passage
    }

    /// Refuses a name that cannot name a folder and a weight no epoch can follow.
    /// The most visits of a query per epoch a weight may ask for (beyond,
    /// an epoch's groups would not fit in memory on a real dataset).
    const MAX_WEIGHT: f64 = 100.0;

    fn check(&self, seen: &[TaskSection]) -> Result<()> {
        let name = &self.name;
        check_task_name(name)?;
        match (&self.data, &self.pairs) {
            (Some(_), None) | (None, Some(_)) => {}
            _ => bail!("task {name:?} needs one of data (a BEIR folder) or pairs (a pairs file)"),
        }
        if self.pairs.is_some()
            && self
                .query_instruction
                .as_deref()
                .is_some_and(|i| !i.is_empty())
        {
            bail!("task {name:?}: a pairs task encodes both sides alike, without instruction; drop its query_instruction");
        }
        if seen.iter().any(|t| &t.name == name) {
            bail!("two tasks are named {name:?}: each [[task]] needs its own name");
        }
        if !(self.weight > 0.0 && self.weight <= Self::MAX_WEIGHT) {
            bail!(
                "task {name:?}: weight {} must be above 0 and at most {} (1 visits each query once per epoch)",
                self.weight,
                Self::MAX_WEIGHT
            );
        }
        Ok(())
    }
}

impl TomlFile {
    /// Reads the text of a `cpack.toml`; unknown keys are errors.
    pub fn parse(text: &str) -> std::result::Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// Reads `text`, the content of `path`; an error names the file and the
    /// line of the offending key.
    fn read(path: &Path, text: &str) -> Result<Self> {
        TomlFile::parse(text).map_err(|error| {
            let located = locate_in_table(text, &error).unwrap_or_else(|| error.to_string());
            anyhow!(located).context(format!("{} is not a valid cpack.toml", path.display()))
        })
    }
}

/// toml reports an error inside a table built of flattened parts (`[train]`
/// is three recipes) at the table's header, not at the key: retry the
/// table's keys one at a time to find the one that fails, and its line.
fn locate_in_table(text: &str, error: &toml::de::Error) -> Option<String> {
    let header_line = text[..error.span()?.start].matches('\n').count() + 1;
    let header = text.lines().nth(header_line - 1)?.trim();
    let section = header.strip_prefix('[')?.strip_suffix(']')?;
    let table: toml::Table = toml::from_str(text).ok()?;
    for (key, value) in table.get(section)?.as_table()? {
        let alone = toml::Table::from_iter([(
            section.to_string(),
            toml::Value::Table(toml::Table::from_iter([(key.clone(), value.clone())])),
        )]);
        if let Err(e) = TomlFile::parse(&toml::to_string(&alone).ok()?) {
            let line = line_of_key(text, section, key)?;
            return Some(format!("line {line}: {section}.{key}: {}", e.message()));
        }
    }
    None
}

/// The line (from 1) where `key` is set in `[section]`.
fn line_of_key(text: &str, section: &str, key: &str) -> Option<usize> {
    let mut current = "";
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.trim();
        } else if current == section
            && line
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        {
            return Some(n + 1);
        }
    }
    None
}

/// Index settings after defaults and overrides.
#[derive(Debug, Clone)]
pub struct IndexConfig {
    pub kind: IndexKind,
    pub precision: Precision,
    /// Where opened generations search (not part of what is built).
    pub device: IndexDevice,
}

/// Everything a command needs, validated.
#[derive(Clone)]
pub struct Config {
    pub workspace: PathBuf,
    pub state: StateDir,
    pub data: Option<DatasetPaths>,
    pub model: ModelDir,
    pub encoder: EncoderSettings,
    pub runtime: Runtime,
    /// Compute threads asked for (0 = every core), until the process is
    /// set up; then the threads the global pool has.
    pub threads: usize,
    pub index: IndexConfig,
    /// Seed of every random choice (negative sampling, training order, dropout).
    pub seed: u64,
    /// `[index]` as written; `cpack index build` merges its flags over it.
    pub index_recipe: IndexRecipe,
    /// `[mine]` as written; `cpack mine` merges its flags over it.
    pub mine: MiningRecipe,
    /// `[train]` as written, its seed the workspace's unless it sets its own;
    /// `cpack train` merges its flags over it.
    pub train: TrainRecipe,
    /// The `[[task]]`s the command works on (all, or the one `--task`
    /// names); empty in a workspace of one `[data]` folder.
    pub tasks: Vec<TaskSection>,
    /// `[rerank]` as written; commands that rerank merge their flags over it.
    pub rerank: RerankRecipe,
}

/// One task of a workspace as a command sees it: the workspace's
/// configuration narrowed to the task's data, instruction, split and state.
pub struct TaskConfig {
    /// Empty for the lone dataset of a workspace without tasks.
    pub name: String,
    pub section: Option<TaskSection>,
    pub config: Config,
}

impl Config {
    /// Reads `cpack.toml` in `workspace` (if present) and applies `overrides`.
    /// A workspace without cpack.toml is allowed when `--model` names the model.
    pub fn load(workspace: &Path, overrides: &Overrides) -> Result<Self> {
        let state = StateDir::of(workspace)?;
        let toml_path = workspace.join(FILE_NAME);
        let (file, train_sets_seed) = if toml_path.exists() {
            let text = std::fs::read_to_string(&toml_path)
                .with_context(|| format!("cannot read {}", toml_path.display()))?;
            let file = TomlFile::read(&toml_path, &text)?;
            let raw: toml::Table = toml::from_str(&text)?;
            let sets_seed = raw.get("train").and_then(|t| t.get("seed")).is_some();
            (file, sets_seed)
        } else if overrides.model.path.is_some() {
            (TomlFile::default(), false)
        } else {
            anyhow::bail!(
                "no {FILE_NAME} in {}; create one with `cpack init --data DIR --model DIR`, pass --workspace, or name a model with --model (enough for embed and filter)",
                workspace.display()
            );
        };
        let tasks = select_tasks(&file, overrides.task.as_deref(), &toml_path)?;
        let model_recipe = overlay_set(&file.model, &overrides.model)?;
        let encode = overlay_set(&file.encode, &overrides.encode)?;
        let model_path = model_recipe
            .path
            .clone()
            .context("cpack.toml has no model.path and no --model was given")?;
        let model = ModelDir::open(&locate_model(workspace, &model_path)?)?;
        let mut index_recipe = file.index;
        index_recipe.device = overrides.index_device.or(index_recipe.device);
        let seed = file.seed.unwrap_or(cpack_core::DEFAULT_SEED);
        let mut train = file.train;
        if !train_sets_seed {
            train.trainer.seed = seed;
        }
        Ok(Config {
            encoder: model_recipe.settings(&model, &encode),
            runtime: with_library_in(encode.runtime()?, workspace),
            threads: encode.threads(),
            index: IndexConfig::of(&index_recipe)?,
            data: file
                .data
                .map(|d| DatasetPaths::beir(&resolve(workspace, &d.dir))),
            workspace: workspace.to_path_buf(),
            state,
            model,
            seed,
            index_recipe,
            mine: file.mine,
            train,
            tasks,
            rerank: file.rerank,
        })
    }

    /// What the command works through: each selected task's
    /// configuration, or the workspace's own when it lists no tasks.
    pub fn task_configs(&self) -> Result<Vec<TaskConfig>> {
        if self.tasks.is_empty() {
            let (name, section, config) = (String::new(), None, self.clone());
            return Ok(vec![TaskConfig {
                name,
                section,
                config,
            }]);
        }
        self.tasks
            .iter()
            .map(|task| self.task_config(task))
            .collect()
    }

    /// The one task a command that serves a single one works on: the
    /// workspace's lone dataset, its only task, or the task `--task` names.
    pub fn single_task(&self, command: &str) -> Result<TaskConfig> {
        let mut configs = self.task_configs()?;
        if configs.len() > 1 {
            let names: Vec<&str> = self.tasks.iter().map(|t| t.name.as_str()).collect();
            bail!(
                "this workspace has {} tasks ({}); {command} works on one: name it with --task",
                names.len(),
                names.join(", ")
            );
        }
        Ok(configs.remove(0))
    }

    fn task_config(&self, task: &TaskSection) -> Result<TaskConfig> {
        let mut config = self.clone();
        config.data = Some(DatasetPaths::beir(&self.task_data(task)?));
        if let Some(instruction) = &task.query_instruction {
            config.encoder.query_instruction = expand_instruction(instruction).to_string();
        }
        let split = match &task.pairs {
            Some(_) => {
                config.encoder.query_instruction.clear();
                Some(PairsView::SPLIT.to_string())
            }
            None => task.split.clone(),
        };
        if let Some(split) = split {
            config.mine.split = split.clone();
            config.train.mining.split = split;
        }
        config.state = self.state.for_task(&task.name);
        config.tasks = vec![task.clone()];
        Ok(TaskConfig {
            name: task.name.clone(),
            section: Some(task.clone()),
            config,
        })
    }

    /// The BEIR folder of `task`: its `data`, or its pairs file's view
    /// (written under `.cpack/pairs/` on first use, then verified).
    pub fn task_data(&self, task: &TaskSection) -> Result<PathBuf> {
        let Some(pairs) = &task.pairs else {
            let data = (task.data.as_ref())
                .with_context(|| format!("task {:?} has neither data nor pairs", task.name))?;
            return Ok(resolve(&self.workspace, data));
        };
        let fields = PairFields {
            query: task.query_field.clone(),
            passage: task.passage_field.clone(),
        };
        let source = PairsSource::of(&resolve(&self.workspace, pairs), fields)?;
        let dir = self.state.pairs_view(&source);
        source.view(&dir)?;
        Ok(dir)
    }

    /// The dataset, or an error saying the workspace has none.
    pub fn data(&self) -> Result<&DatasetPaths> {
        self.data
            .as_ref()
            .with_context(|| format!("{FILE_NAME} has no [data] dir; this command needs a dataset"))
    }

    pub fn negatives_dir(&self) -> PathBuf {
        self.state.negatives()
    }

    /// The workspace index, searched where the configuration says.
    pub fn index_dir(&self) -> IndexDir {
        self.state.index(self.index.device)
    }

    /// The stamp an index must carry to be searched with this configuration's encoder.
    pub fn embedding_stamp(&self, encoder: &Encoder) -> Result<EmbeddingStamp> {
        Ok(EmbeddingStamp::of(&self.model, encoder)?)
    }

    /// What an index of `corpus` under `stamp` is built as: this
    /// configuration's vector precision and index kind.
    pub fn build_plan(&self, stamp: EmbeddingStamp, corpus: &TextTable) -> BuildPlan {
        BuildPlan::new(stamp, corpus, self.index.precision, self.index.kind.clone())
    }

    /// `cpack index build`'s index: `[index]` with its flags over it.
    pub fn with_index_flags(&mut self, flags: &IndexRecipe) -> Result<()> {
        let mut recipe = overlay_set(&self.index_recipe, flags)?;
        recipe.device = self.index_recipe.device;
        self.index = IndexConfig::of(&recipe)?;
        Ok(())
    }

    /// `cpack mine`'s recipe: `[mine]` with the flags given over it.
    pub fn mining_recipe(&self, flags: &MiningRecipe, given: &Given) -> Result<MiningRecipe> {
        overlay_given(&self.mine, flags, given)
    }

    /// `cpack train`'s recipe: `[train]` with the flags given over it.
    pub fn train_recipe(&self, flags: &TrainRecipe, given: &Given) -> Result<TrainRecipe> {
        overlay_given(&self.train, flags, given)
    }
}

/// Refuses a task name that cannot name a folder under `.cpack/tasks/`.
pub fn check_task_name(name: &str) -> Result<()> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if name.is_empty() || name.len() > 64 || !name.chars().all(allowed) {
        bail!("task name {name:?} is not allowed: use 1 to 64 letters, digits, '_' or '-' (it names a folder under .cpack/tasks/)");
    }
    Ok(())
}

/// The tasks of `file` a command works on: every `[[task]]`, or the one
/// `--task` names; checked for names and weights.
fn select_tasks(file: &TomlFile, wanted: Option<&str>, path: &Path) -> Result<Vec<TaskSection>> {
    let mut checked: Vec<TaskSection> = Vec::new();
    for task in &file.tasks {
        task.check(&checked)
            .with_context(|| format!("{} is not a valid cpack.toml", path.display()))?;
        checked.push(task.clone());
    }
    if !checked.is_empty() && file.data.is_some() {
        bail!(
            "{} has both [data] and [[task]]: a workspace trains one dataset ([data]) or several tasks; move [data] dir into a [[task]]",
            path.display()
        );
    }
    let Some(name) = wanted else {
        return Ok(checked);
    };
    if checked.is_empty() {
        bail!(
            "--task {name}: {} lists no [[task]] (its one dataset is [data])",
            path.display()
        );
    }
    let names: Vec<&str> = checked.iter().map(|t| t.name.as_str()).collect();
    match checked.iter().find(|t| t.name == name) {
        Some(task) => Ok(vec![task.clone()]),
        None => bail!(
            "--task {name}: {} has no such task (it has {})",
            path.display(),
            names.join(", ")
        ),
    }
}

impl IndexConfig {
    fn of(recipe: &IndexRecipe) -> Result<Self> {
        Ok(IndexConfig {
            kind: recipe.kind()?,
            precision: recipe.precision(),
            device: recipe.device(),
        })
    }
}

/// `runtime`, its ONNX Runtime library (relative in `cpack.toml`) resolved
/// against `workspace`.
fn with_library_in(runtime: Runtime, workspace: &Path) -> Runtime {
    match runtime {
        Runtime::Ort {
            precision,
            library,
            threads,
            spinning,
        } => Runtime::Ort {
            precision,
            library: library.map(|l| resolve(workspace, &l)),
            threads,
            spinning,
        },
        candle => candle,
    }
}

/// `file` with every setting `flags` sets taking its place: the merge of a
/// recipe whose unset settings are `None`.
pub fn overlay_set<T: Serialize + DeserializeOwned>(file: &T, flags: &T) -> Result<T> {
    overlay(file, flags, |_| true)
}

/// `file` with every setting given on the command line taking its place:
/// the merge of a recipe whose flags carry defaults (clap's ids are the
/// recipe's keys, see `flags::tests`).
fn overlay_given<T: Serialize + DeserializeOwned>(file: &T, flags: &T, given: &Given) -> Result<T> {
    overlay(file, flags, |key| given.contains(key))
}

/// `file` with the settings of `flags` that `take` accepts. Through TOML
/// values, which hold what a recipe holds (NaN and infinities included,
/// unlike JSON) and leave unset settings out.
fn overlay<T: Serialize + DeserializeOwned>(
    file: &T,
    flags: &T,
    take: impl Fn(&str) -> bool,
) -> Result<T> {
    let mut merged = toml::Table::try_from(file)?;
    for (key, value) in toml::Table::try_from(flags)? {
        if take(&key) {
            merged.insert(key, value);
        }
    }
    Ok(merged.try_into()?)
}

/// `[rerank]` of the workspace's cpack.toml, if it has one, with the flags
/// given over it: what a command that needs no embedder reads.
pub fn rerank_recipe(workspace: &Path, flags: &RerankRecipe) -> Result<RerankRecipe> {
    let path = workspace.join(FILE_NAME);
    let file = if path.exists() {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        TomlFile::read(&path, &text)?.rerank
    } else {
        RerankRecipe::default()
    };
    overlay_set(&file, flags)
}

/// A model spec is a folder (relative to the workspace) or a Hugging Face hub id.
pub fn locate_model(workspace: &Path, spec: &Path) -> Result<PathBuf> {
    let local = resolve(workspace, spec);
    if !local.exists() && crate::hub::is_hub_id(spec) {
        return crate::hub::resolve(&spec.to_string_lossy());
    }
    Ok(local)
}

/// Relative paths in cpack.toml are relative to the workspace.
pub fn resolve(workspace: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        workspace.join(path)
    }
}

/// Expands an instruction preset name to its text; other values pass through.
pub fn expand_instruction(value: &str) -> &str {
    INSTRUCTION_PRESETS
        .iter()
        .find(|(name, _)| *name == value)
        .map_or(value, |(_, text)| text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_key_in_a_flattened_table_is_found_by_line() {
        let text = "seed = 1\n\n[train]\nepochs = 2\n\ntopkk = 5\n";
        let err = TomlFile::parse(text).unwrap_err();
        let located = locate_in_table(text, &err).unwrap();
        assert!(located.starts_with("line 6: train.topkk"), "{located}");
        // A table of one recipe: toml names the line itself.
        let text = "[mine]\ntopk = \"many\"\n";
        let err = TomlFile::parse(text).unwrap_err();
        assert!(locate_in_table(text, &err).is_none());
        assert!(err.to_string().contains("line 2"), "{err}");
    }

    #[test]
    fn a_flag_of_nan_survives_the_merge_to_be_refused() {
        let flags = MiningRecipe {
            max_score: Some(f32::NAN),
            ..MiningRecipe::default()
        };
        let merged = overlay_given(
            &MiningRecipe::default(),
            &flags,
            &Given::from_ids(["max_score"]),
        );
        assert!(merged.unwrap().max_score.unwrap().is_nan());
    }

    #[test]
    fn flags_given_replace_the_file_and_the_rest_keep_it() {
        let file: TrainRecipe = toml::from_str("epochs = 3\ntopk = 50\nlr = 1e-4\n").unwrap();
        let flags = TrainRecipe::default();
        let given = Given::from_ids(["topk"]);
        let merged = overlay_given(&file, &flags, &given).unwrap();
        assert_eq!(merged.run.epochs, 3);
        assert_eq!(merged.mining.topk, MiningRecipe::default().topk);
        assert_eq!(merged.trainer.lr, 1e-4);
    }
}
