//! The server's decode step over the paged KV pool, replayed as CUDA graphs: one graph per
//! batch-size bucket (1, 2, 4, 8, 16, 24, 32, 48, ... up to the server's `--max-num-seqs`), as
//! vLLM captures its decode step.
//!
//! Why: launched eagerly, a step of the rotary families is ~9 launches per layer, each a few
//! microseconds of host work, so at the batch sizes a server runs the GPU waits on the host.
//! Replayed, the whole step is one `cuGraphLaunch`.
//!
//! What makes the step capturable: everything it reads per step lives in fixed device buffers of
//! the bucket (token ids, rotary positions, lengths, block tables [bucket, max_blocks]), filled
//! before each replay; the outputs go to the bucket's step arena (the same buffers every replay);
//! the attention's shared memory is sized for `cap` positions, the longest sequence a graph takes.
//! A step of `b` sequences runs in the smallest bucket ≥ b; the extra rows are padding: length
//! 0, their block tables all the pool's scratch block (one block past the allocator's), so their
//! keys and values land where no sequence reads. Sequences longer than `cap` - 1, or more than the
//! largest bucket, take the eager paged step.

use super::cuda_ops::{PagedBlocks, StepArena};
use super::Model;
use crate::error::{EngineError, Result};
use candle_core::cuda_backend::cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
use candle_core::cuda_backend::cudarc::driver::CudaGraph;
use candle_core::{DType, Device, Tensor};
use std::cell::RefCell;

/// Batch sizes a graph is captured for (then every 64 up to the server's limit).
const BUCKETS: [usize; 10] = [1, 2, 4, 8, 16, 24, 32, 48, 64, 96];

/// The graphs of one server (one model, one pool).
pub(crate) struct PagedGraphs {
    /// Positions a sequence may hold in a graph step (its length + the new token ≤ cap).
    cap: usize,
    block_size: usize,
    max_blocks: usize,
    scratch_block: u32,
    buckets: Vec<Bucket>,
    /// Graph captures that failed (the bucket then runs its step eagerly).
    pub failed_captures: usize,
}

struct Bucket {
    batch: usize,
    ids: Tensor,
    positions: Tensor,
    lens: Tensor,
    tables: Tensor,
    arena: RefCell<StepArena>,
    /// The step's logits [batch, vocab] (model dtype), in the arena: rewritten by every replay.
    logits: Option<Tensor>,
    graph: Option<CudaGraph>,
    /// Steps run so far (the first runs eagerly to fill candle's parameter cache; the second is
    /// captured).
    runs: usize,
    capture_failed: bool,
}

// SAFETY: as `FastDecoder`: graphs and buffers are used by one thread at a time (the engine's).
unsafe impl Send for PagedGraphs {}

/// One decode step's inputs, on the host: per sequence its token, rotary position, length before
/// the token, and block table.
pub(crate) struct PagedStepRows<'a> {
    pub ids: &'a [u32],
    pub positions: &'a [u32],
    pub lens: &'a [u32],
    pub tables: &'a [&'a [u32]],
}

impl PagedGraphs {
    /// Graphs for batches up to `max_batch` of sequences up to `cap` positions (rounded down to
    /// whole blocks), over a pool whose block `scratch_block` no sequence uses.
    pub(crate) fn new(max_batch: usize, cap: usize, block_size: usize, scratch_block: u32) -> PagedGraphs {
        let mut sizes: Vec<usize> = BUCKETS.iter().copied().take_while(|&b| b < max_batch).collect();
        let mut next = 128;
        while sizes.last().is_some_and(|&l| l >= 96) && next < max_batch {
            sizes.push(next);
            next += 64;
        }
        sizes.push(max_batch.max(1));
        sizes.dedup();
        let max_blocks = (cap / block_size).max(1);
        let buckets = sizes
            .into_iter()
            .map(|batch| Bucket {
                batch,
                ids: Tensor::zeros(0, DType::U32, &Device::Cpu).expect("empty tensor"),
                positions: Tensor::zeros(0, DType::U32, &Device::Cpu).expect("empty tensor"),
                lens: Tensor::zeros(0, DType::U32, &Device::Cpu).expect("empty tensor"),
                tables: Tensor::zeros(0, DType::U32, &Device::Cpu).expect("empty tensor"),
                arena: Default::default(),
                logits: None,
                graph: None,
                runs: 0,
                capture_failed: false,
            })
            .collect();
        PagedGraphs { cap: max_blocks * block_size, block_size, max_blocks, scratch_block, buckets, failed_captures: 0 }
    }

    pub(crate) fn cap(&self) -> usize {
        self.cap
    }

    /// Logits [b, vocab] f32 of one step of `rows`, through the graph of the smallest bucket that
    /// holds them; `None` where no bucket does (too many rows, a sequence too long) or the model
    /// has no paged step (the caller runs the eager one).
    pub(crate) fn step(&mut self, model: &Model, pool: &[(Tensor, Tensor)], rows: PagedStepRows<'_>) -> Result<Option<Tensor>> {
        let b = rows.ids.len();
        let longest = rows.lens.iter().copied().max().unwrap_or(0) as usize;
        if b == 0 || longest + 1 > self.cap {
            return Ok(None);
        }
        let Some(k) = self.buckets.iter().position(|bk| bk.batch >= b) else { return Ok(None) };
        let Device::Cuda(dev) = model.device() else { return Ok(None) };
        let (cap, bs, mb, scratch) = (self.cap, self.block_size, self.max_blocks, self.scratch_block);
        let bucket = &mut self.buckets[k];
        let n = bucket.batch;
        // Padded inputs; padding rows: id 0, position 0, length 0, every block the scratch block.
        let mut ids = rows.ids.to_vec();
        ids.resize(n, 0);
        let mut positions = rows.positions.to_vec();
        positions.resize(n, 0);
        let mut lens = rows.lens.to_vec();
        lens.resize(n, 0);
        let mut tables = vec![scratch; n * mb];
        for (r, t) in rows.tables.iter().enumerate() {
            let used = t.len().min(mb);
            tables[r * mb..r * mb + used].copy_from_slice(&t[..used]);
        }
        let device = model.device();
        if bucket.runs == 0 {
            bucket.ids = Tensor::from_vec(ids, n, device)?;
            bucket.positions = Tensor::from_vec(positions, n, device)?;
            bucket.lens = Tensor::from_vec(lens, n, device)?;
            bucket.tables = Tensor::from_vec(tables, (n, mb), device)?;
        } else {
            // Into the buffers the graph holds the addresses of.
            bucket.ids.slice_set(&Tensor::from_vec(ids, n, device)?, 0, 0)?;
            bucket.positions.slice_set(&Tensor::from_vec(positions, n, device)?, 0, 0)?;
            bucket.lens.slice_set(&Tensor::from_vec(lens, n, device)?, 0, 0)?;
            bucket.tables.slice_set(&Tensor::from_vec(tables, (n, mb), device)?, 0, 0)?;
        }
        let run = |bucket: &Bucket| -> Result<Option<Tensor>> {
            bucket.arena.borrow_mut().rewind();
            let l = model.launch();
            let l = l.with_arena(&bucket.arena);
            let paged = PagedBlocks { lens: &bucket.lens, block_tables: &bucket.tables, block_size: bs, cap };
            model.decode_paged_with(&l, &bucket.ids, &bucket.positions, paged, pool)
        };
        if let Some(graph) = &bucket.graph {
            graph.launch().map_err(cuda_err)?;
        } else if bucket.runs == 0 || bucket.capture_failed {
            // candle uploads small per-kernel parameter arrays from the host; with this guard
            // they are cached on the device, so the capture (next step) needs no host copies.
            let _cache = dev.enable_cuda_graph_htod_cache();
            let Some(logits) = run(bucket)? else { return Ok(None) };
            bucket.logits = Some(logits);
        } else {
            let _cache = dev.enable_cuda_graph_htod_cache();
            let stream = dev.cuda_stream();
            let captured = stream
                .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED)
                .map_err(|e| e.to_string())
                .and_then(|()| {
                    let out = run(bucket).map_err(|e| e.to_string());
                    // End the capture whatever happened, so the stream is usable again.
                    let graph = stream.end_capture(CUgraphInstantiate_flags(0)).map_err(|e| e.to_string());
                    let out = out?.ok_or_else(|| "the paged step does not apply".to_string())?;
                    Ok((out, graph?.ok_or_else(|| "the capture recorded nothing".to_string())?))
                });
            match captured {
                Ok((logits, graph)) => {
                    graph.launch().map_err(cuda_err)?;
                    bucket.logits = Some(logits);
                    bucket.graph = Some(graph);
                }
                Err(e) => {
                    tracing::warn!(error = %e, batch = n, "CUDA graph capture of the server's decode step failed; this batch size runs eagerly");
                    bucket.capture_failed = true;
                    self.failed_captures += 1;
                    let bucket = &mut self.buckets[k];
                    let Some(logits) = run(bucket)? else { return Ok(None) };
                    bucket.logits = Some(logits);
                }
            }
        }
        let bucket = &mut self.buckets[k];
        bucket.runs += 1;
        let logits = bucket.logits.as_ref().ok_or_else(|| EngineError::InvalidWorkload("a replayed decode step has no logits".into()))?;
        // A copy out of the arena (the next replay overwrites it).
        Ok(Some(logits.narrow(0, 0, b)?.to_dtype(DType::F32)?))
    }
}

fn cuda_err(e: candle_core::cuda_backend::cudarc::driver::DriverError) -> EngineError {
    EngineError::Candle(candle_core::Error::Cuda(Box::new(e)))
}
