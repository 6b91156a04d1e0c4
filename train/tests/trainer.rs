//! The trainer's tests against real models and PyTorch's numbers: one
//! test binary (`common` has the tiny model and batch they share).

mod common;

mod distill_parity;
mod dropout_gradient;
mod frozen_passages;
mod grad_cache;
mod portable_path;
mod trace_parity;
