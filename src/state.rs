//! `.cpack/`, the workspace's state beside `cpack.toml`: every path under
//! it is named here.
//!
//! ```text
//! .cpack/
//!   index/       the workspace index (cpack-index: generations, CURRENT, LOCK)
//!   negatives/   the mining rounds (cpack-miner: sled)
//!   runs/        training runs (cpack-run: one folder per run)
//!   onnx/        ONNX exports of the workspace's models, made by the ort backend
//!   pairs/       BEIR views of pairs files (`cpack train --pairs`)
//!   tasks/<name>/index/, tasks/<name>/negatives/
//!                with several [[task]]s: each task's own index and rounds
//! ```

use anyhow::{bail, Result};
use cpack_index::store::IndexDir;
use cpack_index::vector::IndexDevice;
use cpack_run::RunsDir;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
    /// `tasks/<name>` under the root for a task's own index and negatives.
    task: Option<PathBuf>,
}

impl StateDir {
    pub const NAME: &'static str = ".cpack";

    /// `workspace/.cpack`, refusing a symbolic link that leads nowhere (every
    /// write under it would fail with a puzzling "File exists").
    pub fn of(workspace: &Path) -> Result<Self> {
        let root = workspace.join(Self::NAME);
        if let Ok(link) = std::fs::read_link(&root) {
            if !root.exists() {
                bail!(
                    "{} is a symbolic link to {}, which does not exist; create that folder or remove the link",
                    root.display(),
                    link.display()
                );
            }
        }
        Ok(StateDir { root, task: None })
    }

    /// The same state seen from task `name`: its own index and negatives
    /// under `tasks/<name>/`; runs, exports and pair views stay shared.
    pub fn for_task(&self, name: &str) -> StateDir {
        let task = Some(Path::new("tasks").join(name));
        StateDir {
            task,
            ..self.clone()
        }
    }

    /// Whether any task has state here (`tasks/`).
    pub fn has_tasks(&self) -> bool {
        self.root.join("tasks").is_dir()
    }

    /// Where this (task's) index and negatives live.
    fn own(&self) -> PathBuf {
        match &self.task {
            Some(task) => self.root.join(task),
            None => self.root.clone(),
        }
    }

    /// The workspace (or task) index, searched on `device` once opened.
    pub fn index(&self, device: IndexDevice) -> IndexDir {
        IndexDir::new(self.own().join("index")).on(device)
    }

    /// The negatives store (sled).
    pub fn negatives(&self) -> PathBuf {
        self.own().join("negatives")
    }

    pub fn runs(&self) -> RunsDir {
        RunsDir::new(self.root.join("runs"))
    }

    /// `.cpack/rerankers/`: the reranker runs (`cpack rerank train`).
    pub fn rerankers(&self) -> RunsDir {
        RunsDir::with_spec_file(self.root.join("rerankers"), cpack_run::rerank::SPEC_FILE)
    }

    /// The BEIR view of a pairs file that `cpack train --pairs` trains on.
    pub fn pairs_view(&self, source: &cpack_data::pairs::PairsSource) -> PathBuf {
        self.root.join("pairs").join(source.view_name())
    }

    /// Where the ort backend keeps its exports, named by the weights' fingerprint.
    pub fn onnx_cache(&self) -> PathBuf {
        self.root.join("onnx")
    }
}
