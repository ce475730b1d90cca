//! tokbench-worker: the inference engine (OPT and GPT-2 on candle, CPU and CUDA, real and
//! synthetic weights, measured generation) and the worker process that pulls benchmark jobs
//! from the coordinator.

pub mod checkpoint;
pub mod error;
pub mod generate;
pub mod generation_config;
pub mod model;
pub mod nvtx;
pub mod sampling;
pub mod weights;

pub use error::{EngineError, Result};
pub mod bench;
pub mod device;
pub mod prompts;
pub mod resolve;
pub mod telemetry;
pub mod tokenizer;
pub mod bench_cli;
pub mod gpu;
pub mod serve;
pub mod profile;
pub mod doctor;
pub mod hub;
pub mod openai;
