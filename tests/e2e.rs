//! The end-to-end tests: each module drives the real `cpack` binary in
//! temporary workspaces (`common` has the helpers). One test binary, so the
//! helpers compile and the tests link once.

mod common;

mod fallbacks;
mod faults;
mod integrity;
mod messages;
mod mining;
mod onnx;
mod outputs;
mod pairs;
mod parity;
mod rerank;
mod run_state;
mod serve;
mod tasks;
mod teacher;
mod training;
mod workflow;
