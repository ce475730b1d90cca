//! The CUDA decode step on fused kernels, replayed as a CUDA graph.
//!
//! Eager candle launches ~27 small kernels per layer per token, and at batch 1 the GPU waits on
//! the host for each. Here a step is ~10 launches per layer (`cuda_ops`), and every per-step
//! value (the input ids, their positions, the cache column) lives in a device buffer that the
//! step itself advances, so the whole step is captured once per (batch, cache) and replayed with
//! one `cuGraphLaunch`. Greedy only: the argmax and the feedback of the chosen ids into the next
//! step's input happen on the device; the host copies the ids back once per step (to keep them,
//! check EOS, and time the step with the device synchronised).
//!
//! Modes (`TOKBENCH_DECODE`): `graph` (default on CUDA), `fused` (the same kernels launched
//! eagerly every step), `eager` (candle ops, the path CPU runs). A capture that fails falls back
//! to `fused` with a warning, so a driver that cannot capture still runs.

use super::{KvCache, Model};
use crate::error::{EngineError, Result};
use candle_core::cuda_backend::cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
use candle_core::cuda_backend::cudarc::driver::CudaGraph;
use candle_core::{DType, Device, Tensor};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeMode {
    Eager,
    Fused,
    Graph,
}

impl DecodeMode {
    /// From `TOKBENCH_DECODE` (eager | fused | graph), default graph. Unknown values are an error
    /// that lists the valid ones.
    pub fn from_env() -> Result<DecodeMode> {
        match std::env::var("TOKBENCH_DECODE").as_deref() {
            Err(_) | Ok("") | Ok("graph") => Ok(DecodeMode::Graph),
            Ok("fused") => Ok(DecodeMode::Fused),
            Ok("eager") => Ok(DecodeMode::Eager),
            Ok(other) => Err(EngineError::InvalidWorkload(format!(
                "TOKBENCH_DECODE={other} is not a decode mode: use graph (default), fused or eager"
            ))),
        }
    }
}

/// What a model's fused decode step reads and writes (all on the device): `ids`, `positions`
/// u32 [b], `slot` u32 [1] (cache column of this token), `pad_bias` [b, cap] f32, the cache,
/// and the argmax keys i64 [b] the lm_head GEMV folds its greedy choice into.
#[derive(Clone, Copy)]
pub(crate) struct StepInputs<'a> {
    pub ids: &'a Tensor,
    pub positions: &'a Tensor,
    pub slot: &'a Tensor,
    pub pad_bias: &'a Tensor,
    pub cache: &'a KvCache,
    pub argmax_keys: &'a Tensor,
}

/// Step buffers, the captured graph, and the cache they belong to (by its dimensions; the
/// model drops this whenever it allocates a new cache).
pub(crate) struct FastDecoder {
    mode: DecodeMode,
    batch: usize,
    capacity: usize,
    ids: Tensor,
    positions: Tensor,
    slot: Tensor,
    pad_bias: Tensor,
    /// i64 [b]: the lm_head GEMV's argmax keys (zero between steps).
    argmax_keys: Tensor,
    /// Steps run eagerly with candle's graph parameter cache on (fills it before capture).
    warm: bool,
    /// The step's output buffers, the same every step (so a captured graph allocates nothing).
    arena: super::cuda_ops::StepArena,
    graph: Option<CudaGraph>,
}

// SAFETY: a CUDA graph (raw driver handles) may be launched from any thread that binds its
// context, which cudarc does on every call; the decoder is only ever used by one thread at a time
// (it moves with its Model, e.g. into the worker's model cache between jobs).
unsafe impl Send for FastDecoder {}

impl FastDecoder {
    pub(crate) fn new(mode: DecodeMode, batch: usize, capacity: usize, device: &Device) -> Result<FastDecoder> {
        Ok(FastDecoder {
            mode,
            batch,
            capacity,
            ids: Tensor::zeros(batch, DType::U32, device)?,
            positions: Tensor::zeros(batch, DType::U32, device)?,
            slot: Tensor::zeros(1, DType::U32, device)?,
            pad_bias: Tensor::zeros((batch, capacity), DType::F32, device)?,
            argmax_keys: Tensor::zeros(batch, DType::I64, device)?,
            warm: false,
            arena: Default::default(),
            graph: None,
        })
    }

    pub(crate) fn fits(&self, mode: DecodeMode, batch: usize, capacity: usize) -> bool {
        self.mode == mode && self.batch == batch && self.capacity == capacity
    }

    pub(crate) fn mode(&self) -> DecodeMode {
        self.mode
    }

    /// Loads a batch's starting state: `first` [b] u32 on the device (the ids prefill chose),
    /// `positions` the position-table rows of those tokens, `slot` the cache column they go to,
    /// `pad_bias` [b * capacity] (0 or MASKED). Copies into the existing buffers, whose
    /// addresses the graph holds.
    pub(crate) fn start(&mut self, first: &Tensor, positions: &[u32], slot: u32, pad_bias: &[f32]) -> Result<()> {
        let device = self.ids.device().clone();
        self.ids.slice_set(&first.flatten_all()?.to_dtype(DType::U32)?, 0, 0)?;
        self.positions.slice_set(&Tensor::from_slice(positions, self.batch, &device)?, 0, 0)?;
        self.slot.slice_set(&Tensor::from_slice(&[slot], 1, &device)?, 0, 0)?;
        self.pad_bias.slice_set(&Tensor::from_slice(pad_bias, (self.batch, self.capacity), &device)?, 0, 0)?;
        // Zero after a step that stopped half-way (an error between the GEMV and advance_step).
        self.argmax_keys.slice_set(&Tensor::zeros(self.batch, DType::I64, &device)?, 0, 0)?;
        Ok(())
    }

    /// The current input ids [b] (after a step: the ids that step chose).
    pub(crate) fn ids(&self) -> &Tensor {
        &self.ids
    }

    /// Runs one decode step (the chosen ids land in [`Self::ids`]).
    pub(crate) fn step(&mut self, model: &Model, cache: &KvCache) -> Result<()> {
        let Device::Cuda(dev) = model.device() else {
            return Err(EngineError::InvalidWorkload("the fused decode path runs on CUDA only".into()));
        };
        if self.mode == DecodeMode::Fused {
            return self.run_fused(model, cache);
        }
        if let Some(graph) = &self.graph {
            graph.launch().map_err(|e| EngineError::Candle(candle_core::Error::Cuda(Box::new(e))))?;
            return Ok(());
        }
        // candle uploads small per-kernel parameter arrays (dims, strides) from the host; with
        // this guard they are cached on the device, and a first eager step fills the cache so
        // the capture needs no host copies.
        let _cache = dev.enable_cuda_graph_htod_cache();
        if !self.warm {
            self.run_fused(model, cache)?;
            self.warm = true;
            return Ok(());
        }
        let stream = dev.cuda_stream();
        let captured = stream
            .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED)
            .map_err(|e| e.to_string())
            .and_then(|()| {
                let run = self.run_fused(model, cache).map_err(|e| e.to_string());
                // End the capture whatever happened, so the stream is usable again.
                let graph = stream.end_capture(CUgraphInstantiate_flags(0)).map_err(|e| e.to_string());
                run?;
                graph?.ok_or_else(|| "the capture recorded nothing".to_string())
            });
        match captured {
            Ok(graph) => {
                graph.launch().map_err(|e| EngineError::Candle(candle_core::Error::Cuda(Box::new(e))))?;
                self.graph = Some(graph);
            }
            Err(e) => {
                tracing::warn!(error = %e, "CUDA graph capture of the decode step failed; decoding with the fused kernels without a graph (TOKBENCH_DECODE=fused)");
                self.mode = DecodeMode::Fused;
                // Nothing ran during the failed capture: run this step now.
                self.run_fused(model, cache)?;
            }
        }
        Ok(())
    }

    /// One step on the fused kernels, every output in this decoder's arena.
    fn run_fused(&mut self, model: &Model, cache: &KvCache) -> Result<()> {
        let mut arena = std::mem::take(&mut self.arena);
        let r = super::cuda_ops::in_arena(&mut arena, || model.decode_step_fused(self, cache));
        self.arena = arena;
        r
    }
}

impl Model {
    /// One greedy decode step on the fused kernels: reads ids/positions/slot from `dec`, writes
    /// this token's keys/values at the slot, and advances ids (to the argmax), positions and slot.
    pub(crate) fn decode_step_fused(&self, dec: &FastDecoder, cache: &KvCache) -> Result<()> {
        let step = StepInputs {
            ids: &dec.ids,
            positions: &dec.positions,
            slot: &dec.slot,
            pad_bias: &dec.pad_bias,
            cache,
            argmax_keys: &dec.argmax_keys,
        };
        let logits = match &self.arch {
            super::Arch::Opt(m) => m.decode_logits(&step)?,
            super::Arch::Gpt2(m) => m.decode_logits(&step)?,
        };
        // argmax in the model dtype: f16/bf16 -> f32 is exact, so this picks the same id as the
        // eager path's argmax over f32 logits (up to which of exactly equal values wins). Where
        // the lm_head GEMV applies it chose already (argmax keys), without writing the logits.
        use super::cuda_ops::{advance_step, argmax_rows, NextIds};
        match logits {
            None => advance_step(NextIds::ArgmaxKeys(&dec.argmax_keys), &dec.ids, &dec.positions, &dec.slot)?,
            Some(logits) => advance_step(NextIds::Ids(&argmax_rows(&logits)?), &dec.ids, &dec.positions, &dec.slot)?,
        }
        Ok(())
    }
}
