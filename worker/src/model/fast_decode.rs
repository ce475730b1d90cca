//! The CUDA decode step on fused kernels, replayed as a CUDA graph.
//!
//! Eager candle launches ~27 small kernels per layer per token, and at batch 1 the GPU waits on
//! the host for each. Here a step is ~10 launches per layer (`cuda_ops`), and every per-step
//! value (the input ids, their positions, the cache column) lives in a device buffer that the
//! step itself advances, so the whole step is captured once per (batch, cache) and replayed with
//! one `cuGraphLaunch`. Greedy only: the argmax and the feedback of the chosen ids into the next
//! step's input happen on the device; the host copies the ids back once per step (to keep them,
//! check EOS, and time the step), one step behind: step s + 1 is queued before step s's ids are
//! read, so the GPU does not wait for the host between steps. The ids reach the host without a
//! copy in the stream: the step's last kernel writes them into page-locked host memory.
//!
//! Modes (the job's `KernelOptions::decode`, `--decode`): `graph` (default on CUDA), `fused` (the
//! same kernels launched eagerly every step), `eager` (candle ops, the path CPU runs). A capture
//! that fails falls back to `fused` with a warning, so a driver that cannot capture still runs
//! (the batch's `decode_path` and the report say which ran).

use super::{KvCache, Model};
use crate::error::{EngineError, Result};
use candle_core::cuda_backend::cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
use candle_core::cuda_backend::cudarc::driver::{sys, CudaEvent, CudaGraph, PinnedHostSlice};
use candle_core::{DType, Device, Tensor};
use std::cell::RefCell;

/// How greedy decode steps run on CUDA: the job's `KernelOptions::decode`.
pub type DecodeMode = tokbench_core::DecodePath;

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
    /// The step's output buffers, the same every step (so a captured graph allocates nothing);
    /// lent to the step's launchers through `Launch::with_arena`.
    arena: RefCell<super::cuda_ops::StepArena>,
    graph: Option<CudaGraph>,
    /// Page-locked host memory, [batch, host_cols] u32, that each step's last kernel writes the
    /// chosen ids into (at the position each id follows), and its device address. Why: a copy
    /// back in the stream is a node the next step's graph waits behind (on an H200, nsys: a 1.4
    /// us copy, then 6 us until the next graph's first kernel).
    host_ids: PinnedHostSlice<u32>,
    host_ids_dev: u64,
    host_cols: usize,
    /// The position rows the batch started from (`start`): step k's ids are at column first + k.
    first_positions: Vec<u32>,
    /// Events recorded after steps k = 0, 1, 2, ... in turn ([`Self::record_step`]). (Our own:
    /// with candle's event tracking off, the pinned buffer's built-in event is never recorded.)
    step_done: [CudaEvent; 2],
}

// SAFETY: a CUDA graph (raw driver handles) may be launched from any thread that binds its
// context, which cudarc does on every call; the decoder is only ever used by one thread at a time
// (it moves with its generation state, e.g. into the worker's model cache between jobs).
unsafe impl Send for FastDecoder {}

impl FastDecoder {
    pub(crate) fn new(mode: DecodeMode, batch: usize, capacity: usize, device: &Device) -> Result<FastDecoder> {
        let Device::Cuda(dev) = device else {
            return Err(EngineError::InvalidWorkload("the fused decode path runs on CUDA only".into()));
        };
        let ctx = dev.cuda_stream().context().clone();
        // Position rows run up to capacity - 1 plus the model's position offset (OPT: 2).
        let host_cols = capacity + 8;
        // SAFETY: the host reads an entry only after the step that writes it has completed
        // (`copied_ids`); flags: mapped into the device's address space, cached (write-combined
        // memory is slow for the host to read).
        let host_ids = unsafe { ctx.alloc_pinned_with_flags::<u32>(batch * host_cols, sys::CU_MEMHOSTALLOC_DEVICEMAP) }
            .map_err(cuda_err)?;
        let mut host_ids_dev: sys::CUdeviceptr = 0;
        // SAFETY: the pointer is the start of the allocation above; the context is bound by the
        // allocation call on this thread.
        unsafe {
            ctx.bind_to_thread().map_err(cuda_err)?;
            let host_ptr = host_ids.as_ptr().map_err(cuda_err)? as *mut std::ffi::c_void;
            sys::cuMemHostGetDevicePointer_v2(&mut host_ids_dev, host_ptr, 0).result().map_err(cuda_err)?;
        }
        let step_done = [ctx.new_event(None).map_err(cuda_err)?, ctx.new_event(None).map_err(cuda_err)?];
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
            host_ids,
            host_ids_dev,
            host_cols,
            first_positions: vec![0; batch],
            step_done,
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
        self.first_positions = positions.to_vec();
        // Zero after a step that stopped half-way (an error between the GEMV and advance_step).
        self.argmax_keys.slice_set(&Tensor::zeros(self.batch, DType::I64, &device)?, 0, 0)?;
        Ok(())
    }

    /// Records, after the steps queued so far, that step `k` (counted from `start`) is done, so
    /// that the next step can be queued before its ids are read (see `generate`: the GPU then
    /// never waits for the host between steps).
    pub(crate) fn record_step(&mut self, k: usize) -> Result<()> {
        let Device::Cuda(dev) = self.ids.device() else {
            return Err(EngineError::InvalidWorkload("the fused decode path runs on CUDA only".into()));
        };
        self.step_done[k % 2].record(&dev.cuda_stream()).map_err(cuda_err)
    }

    /// The ids step `k` chose; waits for that step (recorded by `record_step(k)`) only.
    pub(crate) fn copied_ids(&self, k: usize) -> Result<Vec<u32>> {
        self.step_done[k % 2].synchronize().map_err(cuda_err)?;
        let base = self.host_ids.as_ptr().map_err(cuda_err)?;
        (0..self.batch)
            .map(|s| {
                let col = self.first_positions[s] as usize + k;
                if col >= self.host_cols {
                    return Err(EngineError::InvalidWorkload(format!(
                        "decode step {k} of sequence {s} is past the {} positions the decoder was made for",
                        self.capacity
                    )));
                }
                // SAFETY: in bounds (checked); written by step k's last kernel, complete (its
                // event); volatile: the device wrote it behind the compiler's back.
                Ok(unsafe { std::ptr::read_volatile(base.add(s * self.host_cols + col)) })
            })
            .collect()
    }

    fn host(&self) -> super::cuda_ops::HostIds {
        super::cuda_ops::HostIds { ptr: self.host_ids_dev, cols: self.host_cols }
    }

    /// Runs one decode step (the chosen ids land in `ids` on the device and in the host buffer).
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
                tracing::warn!(error = %e, "CUDA graph capture of the decode step failed; decoding with the fused kernels without a graph (--decode fused)");
                self.mode = DecodeMode::Fused;
                // Nothing ran during the failed capture: run this step now.
                self.run_fused(model, cache)?;
            }
        }
        Ok(())
    }

    /// One step on the fused kernels, every output in this decoder's arena.
    fn run_fused(&mut self, model: &Model, cache: &KvCache) -> Result<()> {
        self.arena.get_mut().rewind();
        model.decode_step_fused(self, cache)
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
        // Every output of the step's launches goes into the decoder's arena.
        let l = &self.launch().with_arena(&dec.arena);
        let logits = match &self.arch {
            super::Arch::Opt(m) => m.decode_logits(l, &step)?,
            super::Arch::Gpt2(m) => m.decode_logits(l, &step)?,
            super::Arch::Llama(m) => m.decode_logits(l, &step)?,
        };
        // argmax in the model dtype: f16/bf16 -> f32 is exact, so this picks the same id as the
        // eager path's argmax over f32 logits (up to which of exactly equal values wins). Where
        // the lm_head GEMV applies it chose already (argmax keys), without writing the logits.
        use super::cuda_ops::{advance_step, argmax_rows, NextIds};
        match logits {
            None => advance_step(l, NextIds::ArgmaxKeys(&dec.argmax_keys), &dec.ids, &dec.positions, &dec.slot, Some(dec.host()))?,
            Some(logits) => {
                advance_step(l, NextIds::Ids(&argmax_rows(l, &logits)?), &dec.ids, &dec.positions, &dec.slot, Some(dec.host()))?
            }
        }
        Ok(())
    }
}

fn cuda_err(e: candle_core::cuda_backend::cudarc::driver::DriverError) -> EngineError {
    EngineError::Candle(candle_core::Error::Cuda(Box::new(e)))
}
