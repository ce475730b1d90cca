//! Batched generation with measurement: one prefill of a left-padded batch, then decode
//! steps against a preallocated KV cache.
//!
//! Everything the decode loop needs that does not depend on generated tokens (the padding bias
//! for the whole cache width, the position of every future step) is built once per batch, so a
//! step allocates no masks and its only host/device synchronisation is reading the new ids.

use crate::error::{EngineError, Result};
#[cfg(feature = "cuda")]
use crate::model::fast_decode::{DecodeMode, FastDecoder};
use crate::model::{KvCache, Model, PrefillInputs, MASKED};
use crate::nvtx::Range;
use crate::sampling::Sampler;
use candle_core::Tensor;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokbench_core::{ArchConfig, Sampling};

#[derive(Debug, Clone)]
pub struct GenerationParams {
    pub max_new_tokens: usize,
    pub sampling: Sampling,
    /// true: every sequence produces exactly max_new_tokens.
    pub ignore_eos: bool,
    /// A sequence finishes at any of these (Llama 3 and Qwen checkpoints list several in
    /// generation_config.json).
    pub eos_token_ids: Vec<u32>,
    pub pad_token_id: u32,
    /// Shown in the NVTX ranges (`prefill [NAME]`, `decode [NAME]`) and in errors; use
    /// `CatalogEntry::file_stem()` style names (`facebook_opt-125m`) or the model id.
    pub model_name: String,
}

impl GenerationParams {
    /// Greedy, `ignore_eos` (the benchmark default), EOS and pad ids from the config.
    pub fn new(config: &ArchConfig, model_name: impl Into<String>, max_new_tokens: usize) -> GenerationParams {
        GenerationParams {
            max_new_tokens,
            sampling: Sampling::default(),
            ignore_eos: true,
            eos_token_ids: config.spec().eos_token_ids,
            pad_token_id: config.pad_token_id(),
            model_name: model_name.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    Length,
    Eos,
}

impl FinishReason {
    /// The report's spelling: "length" or "eos".
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Length => "length",
            FinishReason::Eos => "eos",
        }
    }
}

#[derive(Debug, Clone)]
pub struct BatchOutput {
    /// Generated ids per sequence (prompt excluded; stops after EOS unless ignore_eos).
    pub tokens: Vec<Vec<u32>>,
    pub finish_reasons: Vec<FinishReason>,
    /// From before the prompt ids are copied to the device until the first generated
    /// token of every sequence is on the host (device synchronised) = TTFT of each request.
    pub prefill: Duration,
    /// Wall time of each decode step (one new token for every live sequence), host-synced.
    pub step_latencies: Vec<Duration>,
    /// prefill + all decode steps.
    pub total: Duration,
    /// How the decode steps ran: "cpu", "eager", "fused" or "cuda-graph" (see
    /// `InferenceMetrics::decode_path`).
    pub decode_path: &'static str,
}

/// Generation's own state for one model, kept between batches: per batch shape, a KV cache and,
/// on CUDA, the fused decode path's step buffers and captured graph (valid for that cache). A
/// job whose prompt count is not a multiple of its batch size runs two shapes (full batches and
/// the remainder); keeping both means a timed pass never re-allocates a cache or re-captures a
/// graph. A [`Generator`] works with it; a job that keeps its model for a later job keeps this
/// beside it ([`Generator::into_state`], [`Generator::with_state`]).
#[derive(Default)]
pub struct GenerationState {
    /// Least recently used first; at most [`MAX_CACHED_SHAPES`].
    slots: Vec<ShapeSlot>,
    /// KV caches allocated so far (for checks that timed passes allocate none).
    cache_allocations: u64,
    /// Fused decoders built (and, in graph mode, CUDA graphs captured) so far.
    #[cfg(feature = "cuda")]
    decoder_builds: u64,
}

/// What one batch shape keeps between batches.
struct ShapeSlot {
    cache: KvCache,
    /// With the engine options it was built (and its graph captured) under: a model kept for a
    /// job with other options gets a new one.
    #[cfg(feature = "cuda")]
    decoder: Option<(tokbench_core::KernelOptions, FastDecoder)>,
}

/// Batch shapes kept at once: a job's full batches and its last, partial one.
pub const MAX_CACHED_SHAPES: usize = 2;

impl GenerationState {
    /// Bytes of the KV caches held for the next batches (0 when none is held).
    pub fn cache_bytes(&self) -> u64 {
        self.slots.iter().map(|s| s.cache.bytes()).sum()
    }

    /// KV caches allocated over this state's life.
    pub fn cache_allocations(&self) -> u64 {
        self.cache_allocations
    }

    /// Fused decoders built over this state's life (each graph-mode build captures a CUDA
    /// graph); 0 without the CUDA feature.
    pub fn decoder_builds(&self) -> u64 {
        #[cfg(feature = "cuda")]
        return self.decoder_builds;
        #[cfg(not(feature = "cuda"))]
        0
    }
}

/// Runs batches through one model: borrows the model (weights, read only) and owns what
/// generation changes (the KV cache and the fused decoder, [`GenerationState`]). A job's data
/// flows one way: workload -> model -> generator -> report.
pub struct Generator<'m> {
    model: &'m Model,
    state: GenerationState,
}

impl<'m> Generator<'m> {
    /// A generator with no cache yet (the first batch allocates one).
    pub fn new(model: &'m Model) -> Generator<'m> {
        Generator::with_state(model, GenerationState::default())
    }

    /// A generator that goes on with `state`, which an earlier generator of the same model
    /// left ([`Self::into_state`]): its cache (and captured decode graph) are reused.
    pub fn with_state(model: &'m Model, state: GenerationState) -> Generator<'m> {
        Generator { model, state }
    }

    /// The state to keep for a later generator of the same model.
    pub fn into_state(self) -> GenerationState {
        self.state
    }

    pub fn model(&self) -> &'m Model {
        self.model
    }

    /// Frees the KV caches (and decoders) kept between batches.
    pub fn release(&mut self) {
        self.state.slots.clear();
    }

    /// The allocation and capture counts so far ([`GenerationState::cache_allocations`],
    /// [`GenerationState::decoder_builds`]).
    pub fn allocation_counts(&self) -> (u64, u64) {
        (self.state.cache_allocations(), self.state.decoder_builds())
    }

    /// The slot for `batch` sequences of up to `positions` positions: the one kept for this
    /// shape when its cache fits, else a new one (dropping a too-small cache of the same batch
    /// size, and the least recently used shape beyond [`MAX_CACHED_SHAPES`], first, so they never
    /// coexist with the new one). Give it back with [`Self::put_slot`].
    fn take_slot(&mut self, batch: usize, positions: usize) -> Result<ShapeSlot> {
        let spec = self.model.config().spec();
        let layers = spec.num_layers;
        // Only the key/value heads are cached (grouped-query attention).
        let heads = spec.num_kv_heads;
        let head_dim = spec.head_dim;
        let dtype = self.model.dtype();
        let slots = &mut self.state.slots;
        if let Some(i) = slots.iter().position(|s| s.cache.fits(layers, batch, heads, head_dim, positions, dtype)) {
            let mut slot = slots.remove(i);
            slot.cache.reset();
            return Ok(slot);
        }
        slots.retain(|s| s.cache.batch() != batch);
        while slots.len() >= MAX_CACHED_SHAPES {
            slots.remove(0);
        }
        let cache = KvCache::new(layers, batch, heads, positions, head_dim, dtype, self.model.device())?;
        self.state.cache_allocations += 1;
        Ok(ShapeSlot {
            cache,
            #[cfg(feature = "cuda")]
            decoder: None,
        })
    }

    /// Keeps `slot` as the most recently used shape.
    fn put_slot(&mut self, slot: ShapeSlot) {
        self.state.slots.push(slot);
    }

    /// The fused decode path's state for `slot`'s cache (the one kept with it when it matches,
    /// so its captured graph is replayed). Put it back in `slot.decoder` after use.
    #[cfg(feature = "cuda")]
    fn take_decoder(&mut self, mode: DecodeMode, slot: &mut ShapeSlot) -> Result<FastDecoder> {
        let (b, cap) = (slot.cache.batch(), slot.cache.capacity());
        match slot.decoder.take() {
            Some((kernels, d)) if kernels == *self.model.kernel_options() && d.fits(mode, b, cap) => Ok(d),
            _ => {
                self.state.decoder_builds += 1;
                FastDecoder::new(mode, b, cap, self.model.device())
            }
        }
    }

    /// Generates for one batch of already tokenised prompts (lengths may differ).
    /// `on_step(tokens_generated_so_far_in_this_batch)` is called after prefill and every step
    /// (used for progress reporting; must be cheap). Stops with `EngineError::Cancelled` at the
    /// next step boundary (before prefill or between decode steps) once `cancel` is set; the
    /// check is one relaxed atomic load per step, and the generator stays usable.
    pub fn generate(
        &mut self,
        prompts: &[Vec<u32>],
        params: &GenerationParams,
        cancel: &AtomicBool,
        on_step: &mut dyn FnMut(usize),
    ) -> Result<BatchOutput> {
        let model = self.model;
        let b = prompts.len();
        if b == 0 {
            return Err(EngineError::InvalidWorkload("generate_batch got an empty batch: pass at least one prompt".into()));
        }
        let max_positions = model.config().max_positions();
        let window = model.config().spec().sliding_window;
        for (index, p) in prompts.iter().enumerate() {
            if p.is_empty() {
                return Err(EngineError::InvalidWorkload(format!(
                    "prompt {index} has no tokens: every prompt needs at least one token (OPT prompts start with </s>)"
                )));
            }
            let needed = p.len() + params.max_new_tokens;
            if needed > max_positions {
                return Err(EngineError::PromptTooLong {
                    index,
                    tokens: p.len(),
                    max_tokens: params.max_new_tokens,
                    needed,
                    max_positions,
                    model: params.model_name.clone(),
                });
            }
            if let Some(window) = window.filter(|&w| needed > w) {
                return Err(EngineError::InvalidWorkload(format!(
                    "prompt {index} has {} tokens and max_tokens is {}: {needed} positions, but {} attends over a sliding window of {window}                      positions, which tokbench does not implement. Keep prompt + max_tokens within {window}",
                    p.len(),
                    params.max_new_tokens,
                    params.model_name
                )));
            }
            model.check_ids(p)?;
        }
        let mut sampler = Sampler::new(&params.sampling)?;
        let max_new = params.max_new_tokens;
        if max_new == 0 {
            return Ok(BatchOutput {
                tokens: vec![Vec::new(); b],
                finish_reasons: vec![FinishReason::Length; b],
                prefill: Duration::ZERO,
                step_latencies: Vec::new(),
                total: Duration::ZERO,
                decode_path: if model.device().is_cpu() { "cpu" } else { "eager" },
            });
        }

        // Host-side layout of the left-padded batch.
        let t = prompts.iter().map(Vec::len).max().unwrap_or(0);
        let offset = model.position_offset();
        let mut ids = Vec::with_capacity(b * t);
        let mut mask = Vec::with_capacity(b);
        for p in prompts {
            let pad = t - p.len();
            ids.extend(std::iter::repeat_n(params.pad_token_id, pad));
            ids.extend_from_slice(p);
            mask.push([vec![0u32; pad], vec![1u32; p.len()]].concat());
        }
        let prefill_inputs = PrefillInputs::new(&mask, offset);
        let steps = max_new - 1; // the prefill produces the first token
        // The last generated token is never fed back, so the cache holds t + max_new - 1 positions.
        let mut slot = self.take_slot(b, t + steps)?;
        let width = slot.cache.capacity();
        let mut decode_bias = vec![0f32; b * width];
        for (i, p) in prompts.iter().enumerate() {
            decode_bias[i * width..i * width + (t - p.len())].fill(MASKED);
        }
        // Row s: the position rows of the tokens fed at decode step s ([steps, b] so that one
        // step's row is a contiguous slice).
        let mut decode_positions = Vec::with_capacity(steps * b);
        for s in 0..steps {
            decode_positions.extend(prompts.iter().map(|p| offset + (p.len() + s) as u32));
        }

        // The padding bias on the host too, for the fused CUDA decode path's step buffers.
        #[cfg(feature = "cuda")]
        let pad_host = decode_bias.clone();
        let device = model.device().clone();
        let mut tokens: Vec<Vec<u32>> = (0..b).map(|_| Vec::with_capacity(max_new)).collect();
        let mut finished: Vec<Option<FinishReason>> = vec![None; b];
        let mut generated = 0usize;
        let keep = |tokens: &mut Vec<Vec<u32>>, finished: &mut Vec<Option<FinishReason>>, next: &[u32], generated: &mut usize| {
            for (i, &tok) in next.iter().enumerate() {
                if finished[i].is_some() {
                    continue;
                }
                tokens[i].push(tok);
                *generated += 1;
                if !params.ignore_eos && params.eos_token_ids.contains(&tok) {
                    finished[i] = Some(FinishReason::Eos);
                }
            }
        };

        if cancel.load(Ordering::Relaxed) {
            self.put_slot(slot);
            return Err(EngineError::Cancelled);
        }
        // Prefill. Work queued on the device before this call must not be billed to it.
        device.synchronize()?;
        let start = Instant::now();
        let (mut next, next_host, decode_bias, decode_positions, prefill_end) = {
            let _range = Range::new("prefill", &params.model_name);
            let ids = Tensor::from_vec(ids, (b, t), &device)?;
            let positions = prefill_inputs.positions(&device)?;
            let bias = prefill_inputs.bias(&device)?;
            let decode_bias = Tensor::from_vec(decode_bias, (b, 1, 1, width), &device)?;
            let decode_positions = if steps > 0 { Some(Tensor::from_vec(decode_positions, (steps, b), &device)?) } else { None };
            let logits = model.forward(&ids, &positions, &bias, Some(&mut slot.cache), true)?.squeeze(1)?;
            let (next, next_host) = sampler.next(&logits)?;
            (next, next_host, decode_bias, decode_positions, Instant::now())
        };
        let prefill = prefill_end - start;
        keep(&mut tokens, &mut finished, &next_host, &mut generated);
        on_step(generated);

        let mut step_latencies = Vec::with_capacity(steps);
        #[cfg(feature = "cuda")]
        if steps > 0 && sampler.is_greedy() && device.is_cuda() {
            let mode = model.decode_mode()?;
            if mode != DecodeMode::Eager {
                let mut dec = self.take_decoder(mode, &mut slot)?;
                let cache = &mut slot.cache;
                let first_positions: Vec<u32> = prompts.iter().map(|p| offset + p.len() as u32).collect();
                let run = (|| -> Result<()> {
                    dec.start(&next, &first_positions, t as u32, &pad_host)?;
                    let _range = Range::new("decode", &params.model_name);
                    // One step ahead: step s + 1 is queued before step s's ids are read (the step's
                    // last kernel writes them to page-locked host memory), so the GPU runs the steps
                    // back to back instead of idling for a copy, a host wake-up and a launch between
                    // two.
                    // When every sequence has finished, the one step queued beyond is discarded; the
                    // next batch synchronises the device before its clock starts.
                    let mut queued = 0;
                    let mut queue_step = |dec: &mut FastDecoder, k: usize| -> Result<()> {
                        dec.step(model, cache)?;
                        cache.advance(1);
                        dec.record_step(k)
                    };
                    // Timed as the eager loop below: back to back from the end of prefill, each step
                    // when its ids are on the host.
                    let mut last = prefill_end;
                    for s in 0..steps {
                        if finished.iter().all(Option::is_some) {
                            break;
                        }
                        if cancel.load(Ordering::Relaxed) {
                            return Err(EngineError::Cancelled);
                        }
                        while queued < steps && queued <= s + 1 {
                            queue_step(&mut dec, queued)?;
                            queued += 1;
                        }
                        // Waits for step s only (step s + 1 keeps running).
                        let next_host = dec.copied_ids(s)?;
                        let now = Instant::now();
                        step_latencies.push(now - last);
                        last = now;
                        keep(&mut tokens, &mut finished, &next_host, &mut generated);
                        on_step(generated);
                    }
                    Ok(())
                })();
                let decode_path = match dec.mode() {
                    DecodeMode::Graph => "cuda-graph",
                    _ => "fused",
                };
                slot.decoder = Some((*model.kernel_options(), dec));
                self.put_slot(slot);
                run?;
                let total = prefill + step_latencies.iter().sum::<Duration>();
                let finish_reasons = finished.into_iter().map(|f| f.unwrap_or(FinishReason::Length)).collect();
                return Ok(BatchOutput { tokens, finish_reasons, prefill, step_latencies, total, decode_path });
            }
        }
        {
            let _range = Range::new("decode", &params.model_name);
            // Steps are timed back to back from the end of prefill, so the host work between them
            // (bookkeeping, on_step) is billed too and prefill + steps is the batch's wall time.
            let mut last = prefill_end;
            for s in 0..steps {
                if finished.iter().all(Option::is_some) {
                    break;
                }
                if cancel.load(Ordering::Relaxed) {
                    self.put_slot(slot);
                    return Err(EngineError::Cancelled);
                }
                let ids = next.reshape((b, 1))?;
                let positions = decode_positions.as_ref().expect("steps > 0").narrow(0, s, 1)?.reshape((b, 1))?;
                let bias = decode_bias.narrow(3, 0, t + s + 1)?;
                let logits = model.forward(&ids, &positions, &bias, Some(&mut slot.cache), true)?.squeeze(1)?;
                let (n, next_host) = sampler.next(&logits)?;
                next = n;
                let now = Instant::now();
                step_latencies.push(now - last);
                last = now;
                keep(&mut tokens, &mut finished, &next_host, &mut generated);
                on_step(generated);
            }
        }
        self.put_slot(slot);

        let total = prefill + step_latencies.iter().sum::<Duration>();
        let finish_reasons = finished.into_iter().map(|f| f.unwrap_or(FinishReason::Length)).collect();
        let decode_path = if device.is_cpu() { "cpu" } else { "eager" };
        Ok(BatchOutput { tokens, finish_reasons, prefill, step_latencies, total, decode_path })
    }
}

/// One batch with a fresh [`Generator`] (a new KV cache, not cancellable): for tests and
/// one-off calls. A job runs its batches through one `Generator`.
pub fn generate_batch(model: &Model, prompts: &[Vec<u32>], params: &GenerationParams, on_step: &mut dyn FnMut(usize)) -> Result<BatchOutput> {
    Generator::new(model).generate(prompts, params, &AtomicBool::new(false), on_step)
}
