//! `steps.jsonl` in a run folder: one line per optimizer step with exactly
//! what it trained on (query ids, passage ids in order), the learning rate,
//! each batch's loss and the gradient norm before clipping. It is the
//! record a peer replays (`bench/peer/train_recipe.py --replay`) to check
//! cpack's training step by step, and a diary of the schedule.
//!
//! Lines are appended as steps finish and synced before each checkpoint; a
//! resumed run first drops the lines of epochs after its checkpoint, so the
//! file always describes the steps that made the newest weights.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

pub const STEPS_FILE: &str = "steps.jsonl";

/// One batch of a step: its queries, its passages (`group_size` per query,
/// the positive first), and its loss.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchRecord {
    pub queries: Vec<String>,
    pub passages: Vec<String>,
    pub loss: f32,
}

/// One optimizer step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub epoch: usize,
    /// 1-based, over the whole run.
    pub step: u64,
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    pub batches: Vec<BatchRecord>,
}

/// The open `steps.jsonl` of a run.
pub struct StepLog {
    path: PathBuf,
    out: BufWriter<File>,
}

impl StepLog {
    /// Opens `run_dir/steps.jsonl` for appending, keeping only the steps of
    /// epochs up to `kept_epochs` (those of the checkpoint being resumed).
    pub fn open(run_dir: &Path, kept_epochs: usize) -> Result<Self> {
        let path = run_dir.join(STEPS_FILE);
        if path.exists() {
            let kept: Vec<String> = read(&path)?
                .into_iter()
                .filter(|r| r.epoch <= kept_epochs)
                .map(|r| serde_json::to_string(&r).expect("a step record serialises"))
                .collect();
            let mut body = kept.join("\n");
            if !body.is_empty() {
                body.push('\n');
            }
            cpack_core::fsutil::atomic_write(&path, body.as_bytes())?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(Error::io("open", &path))?;
        Ok(StepLog {
            path,
            out: BufWriter::new(file),
        })
    }

    pub fn append(&mut self, record: &StepRecord) -> Result<()> {
        let line = serde_json::to_string(record).expect("a step record serialises");
        writeln!(self.out, "{line}").map_err(Error::io("write", &self.path))
    }

    /// Flushes and syncs what was appended (before a checkpoint is written).
    pub fn sync(&mut self) -> Result<()> {
        self.out
            .flush()
            .and_then(|_| self.out.get_ref().sync_data())
            .map_err(Error::io("sync", &self.path))
    }
}

/// The records of a `steps.jsonl`; a torn last line (a kill mid-write) is
/// dropped, any other bad line is an error naming it.
pub fn read(path: &Path) -> Result<Vec<StepRecord>> {
    parse(path, &std::fs::read(path).map_err(Error::io("read", path))?)
}

/// [`read`] of bytes already read; `path` names them in errors.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<Vec<StepRecord>> {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().collect();
    let mut records = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(line) {
            Ok(record) => records.push(record),
            Err(_) if i + 1 == lines.len() => break,
            Err(source) => {
                return Err(Error::BadStep {
                    path: path.to_path_buf(),
                    line: i + 1,
                    source,
                })
            }
        }
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(epoch: usize, step: u64) -> StepRecord {
        StepRecord {
            epoch,
            step,
            lr: 1e-5,
            grad_norm: 2.0,
            batches: vec![BatchRecord {
                queries: vec!["q1".into()],
                passages: vec!["d1".into(), "d2".into()],
                loss: 0.5,
            }],
        }
    }

    #[test]
    fn resuming_drops_the_steps_after_the_checkpoint_and_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = StepLog::open(dir.path(), 0).unwrap();
        for (epoch, step) in [(1, 1), (1, 2), (2, 3)] {
            log.append(&record(epoch, step)).unwrap();
        }
        log.sync().unwrap();
        drop(log);
        let path = dir.path().join(STEPS_FILE);
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("{\"epoch\": 2, \"st");
        std::fs::write(&path, text).unwrap();
        assert_eq!(read(&path).unwrap().len(), 3, "torn last line dropped");
        let mut log = StepLog::open(dir.path(), 1).unwrap();
        log.append(&record(2, 3)).unwrap();
        log.sync().unwrap();
        let steps: Vec<u64> = read(&path).unwrap().iter().map(|r| r.step).collect();
        assert_eq!(steps, [1, 2, 3]);
    }

    #[test]
    fn a_bad_line_in_the_middle_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STEPS_FILE);
        let good = serde_json::to_string(&record(1, 1)).unwrap();
        std::fs::write(&path, format!("{good}\nnot json\n{good}\n")).unwrap();
        let err = read(&path).unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
    }
}
