//! The layout of `.cpack/runs/`: one folder per run, its files named here
//! and nowhere else.
//!
//! ```text
//! .cpack/runs/<run>/
//!   run.json        the RunSpec: what was asked, repeated exactly by --resume
//!   report.json     per-epoch loss, metrics, timings; rewritten atomically
//!   queries.json    ids of the training queries (the seeded --max-queries subset)
//!   steps.jsonl     every optimizer step (cpack_train::steps)
//!   epoch-N/        checkpoints (cpack_train::checkpoint)
//!   index/          the corpus under the newest checkpoint
//!   eval-index/     with incremental refreshes: the whole corpus, for evaluation
//!   tasks/<task>/index/  with several tasks: each task's corpus, as index/
//! ```

use crate::error::{Error, Result};
use crate::spec::RunSpec;
use cpack_core::fsutil;
use cpack_index::vector::IndexDevice;
use cpack_index::IndexDir;
use cpack_train::checkpoint::{self, TrainerState};
use std::path::{Path, PathBuf};

/// `.cpack/runs/`: the training runs of a workspace (or, with another
/// spec file, `.cpack/rerankers/`: the reranker runs).
#[derive(Debug, Clone)]
pub struct RunsDir {
    root: PathBuf,
    /// The file whose presence makes a folder a run.
    spec_file: &'static str,
}

impl RunsDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self::with_spec_file(root, RunDir::SPEC_FILE)
    }

    /// Runs recognised by `spec_file` (`rerank.json` for reranker runs).
    pub fn with_spec_file(root: impl Into<PathBuf>, spec_file: &'static str) -> Self {
        RunsDir {
            root: root.into(),
            spec_file,
        }
    }

    /// The folder of the run called `name`, refusing a name that is not one
    /// plain path component: letters, digits, `.`, `_` and `-`, not starting
    /// with `.`, at most 64 characters. Checked before anything is written,
    /// so no name can place a run outside `.cpack/runs/` or straight into it.
    pub fn run(&self, name: &str) -> Result<RunDir> {
        let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if name.is_empty() || name.len() > 64 || name.starts_with('.') || !name.chars().all(plain) {
            return Err(Error::BadRunName {
                name: name.to_string(),
            });
        }
        Ok(RunDir {
            path: self.root.join(name),
            name: name.to_string(),
        })
    }

    /// The run whose `run.json` was written last, if any.
    pub fn newest(&self) -> Result<Option<RunDir>> {
        let mut runs = Vec::new();
        for run in self.runs()? {
            let written = (run.path.join(self.spec_file).metadata()).and_then(|m| m.modified());
            if let Ok(written) = written {
                runs.push((written, run));
            }
        }
        runs.sort_by_key(|(written, _)| *written);
        Ok(runs.pop().map(|(_, run)| run))
    }

    /// `run-NNN`, the first such name not taken.
    pub fn next_name(&self) -> String {
        self.next_name_with("run")
    }

    /// The first free `<stem>-NNN`.
    pub fn next_name_with(&self, stem: &str) -> String {
        (1..)
            .map(|n| format!("{stem}-{n:03}"))
            .find(|name| !self.root.join(name).exists())
            .expect("some run number is free")
    }

    /// The mining rounds of task `task`'s store (empty: the workspace's
    /// lone store) that the newest checkpoint of each run trained on: a
    /// resumed run needs its round again, so `mine --gc` keeps them.
    pub fn rounds_in_use(&self, task: &str) -> Result<Vec<u32>> {
        let mut rounds = Vec::new();
        for run in self.runs()? {
            if let Some(newest) = checkpoint::latest(&run.path)? {
                let state: TrainerState = fsutil::read_json(&newest.join(checkpoint::STATE_FILE))?;
                match task {
                    "" => rounds.extend(state.round),
                    task => rounds.extend(state.task_rounds.get(task)),
                }
            }
        }
        rounds.sort_unstable();
        rounds.dedup();
        Ok(rounds)
    }

    /// Every folder holding a `run.json`.
    fn runs(&self) -> Result<Vec<RunDir>> {
        if !self.root.exists() {
            return Ok(Vec::new());
        }
        let entries =
            std::fs::read_dir(&self.root).map_err(cpack_core::Error::io("list", &self.root))?;
        Ok(entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter_map(|name| self.run(&name).ok())
            .filter(|run| run.path.join(self.spec_file).exists())
            .collect())
    }
}

/// One run's folder.
#[derive(Debug, Clone)]
pub struct RunDir {
    path: PathBuf,
    name: String,
}

impl RunDir {
    pub const SPEC_FILE: &'static str = "run.json";
    pub const REPORT_FILE: &'static str = "report.json";
    /// Ids of the queries the run trains on (for peers reproducing the run).
    pub const QUERIES_FILE: &'static str = "queries.json";

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn spec_file(&self) -> PathBuf {
        self.path.join(Self::SPEC_FILE)
    }

    pub fn report_file(&self) -> PathBuf {
        self.path.join(Self::REPORT_FILE)
    }

    pub fn queries_file(&self) -> PathBuf {
        self.path.join(Self::QUERIES_FILE)
    }

    /// The run's own index (the corpus under its newest checkpoint).
    pub fn index(&self, device: IndexDevice) -> IndexDir {
        IndexDir::new(self.path.join("index")).on(device)
    }

    /// Task `task`'s corpus under the newest checkpoint (`tasks/<task>/index`),
    /// in a run over several tasks; the run's own index for the unnamed one.
    pub fn task_index(&self, task: &str, device: IndexDevice) -> IndexDir {
        if task.is_empty() {
            return self.index(device);
        }
        IndexDir::new(self.path.join("tasks").join(task).join("index")).on(device)
    }

    /// [`RunDir::serve_index`] of task `task` (`tasks/<task>/serve-index`).
    pub fn task_serve_index(&self, task: &str, device: IndexDevice) -> IndexDir {
        IndexDir::new(self.path.join("tasks").join(task).join("serve-index")).on(device)
    }

    /// The whole corpus under the newest checkpoint, for evaluation, when
    /// the run's own index is refreshed incrementally.
    pub fn eval_index(&self, device: IndexDevice) -> IndexDir {
        IndexDir::new(self.path.join("eval-index")).on(device)
    }

    /// The corpus under the newest checkpoint for `cpack serve --run`, when
    /// neither index of the run holds it (kept apart: serving never
    /// rewrites what the run resumes from).
    pub fn serve_index(&self, device: IndexDevice) -> IndexDir {
        IndexDir::new(self.path.join("serve-index")).on(device)
    }

    /// The checkpoint of `epoch` (which may not exist yet).
    pub fn checkpoint(&self, epoch: usize) -> PathBuf {
        checkpoint::epoch_dir(&self.path, epoch)
    }

    /// The stored spec.
    pub fn spec(&self) -> Result<RunSpec> {
        if !self.spec_file().exists() {
            return Err(Error::NoRun {
                path: self.path.clone(),
                file: Self::SPEC_FILE,
            });
        }
        Ok(fsutil::read_json(&self.spec_file())?)
    }
}
