//! cpack-run: the closed loop (ANCE, in-process) and the owner of
//! `.cpack/runs/`. Train N epochs on the current mining round, write the
//! checkpoint, re-encode the corpus with it into the run's own index (a new
//! generation beside the old one, swapped atomically), evaluate, re-mine
//! with it, and go on.
//!
//! - [`TrainRecipe`] is what `cpack train` is asked (flags and `[train]`);
//!   [`RunSpec`] is that recipe resolved and stored in `run.json`.
//! - [`RunsDir`] / [`RunDir`] name every file of a run ([`layout`]).
//! - [`run()`] is the loop ([`train_loop`]); a phase of it encodes with an
//!   [`phase::ActiveModel`] (the base model or a checkpoint), and
//!   [`passages`] decides which index its queries search.
//! - [`Report`] is `report.json`, rewritten after every epoch.
//! - [`rerank`] trains a reranker on a mined round (`.cpack/rerankers/`),
//!   through the same trainer pieces.
//!
//! Every piece is written atomically and every stage resumes, so `--resume`
//! after a kill continues from the last checkpoint: the index build and
//! mining pick up their own partial work, and the epoch's batches are a pure
//! function of (seed, epoch).

pub mod error;
pub mod layout;
pub mod passages;
pub mod phase;
pub mod recipe;
pub mod report;
pub mod rerank;
pub mod spec;
pub mod train_loop;
pub mod workspace;

pub use error::{Error, Result, StepFix};
pub use layout::{RunDir, RunsDir};
pub use recipe::{EvalSplit, LoopSettings, TrainRecipe};
pub use report::{EpochReport, EvalPoint, Report};
pub use spec::RunSpec;
pub use train_loop::run;
pub use workspace::Workspace;
