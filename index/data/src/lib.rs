//! cpack-data: the retrieval data cpack reads and the scores it reports.
//!
//! [`dataset`] loads BEIR-layout datasets (`corpus.jsonl`, `queries.jsonl`,
//! `qrels/<split>.tsv`), validating everything a later stage would trip over
//! and reporting it as `file:line: problem`. [`metrics`] scores rankings
//! against judgements as C-MTEB and BEIR do (nDCG@k, MRR@k, Recall@k).
//! [`pairs`] streams pairs files (FlagEmbedding's `query` / `pos` JSONL, or
//! any two named fields) and [`filter`] keeps the pairs that score at or
//! above a threshold, resumably, in constant memory.

pub mod dataset;
pub mod error;
pub mod filter;
pub mod metrics;
pub mod pairs;

pub use dataset::{all_qrels, Dataset, DatasetPaths, Qrels, TextTable};
pub use error::{Error, Result};
