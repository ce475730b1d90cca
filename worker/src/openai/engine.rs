//! The engine loop: one thread owns the [`Model`] and the paged KV pool and runs continuous
//! batching. HTTP handlers never touch the model; they send a [`GenRequest`] over a channel
//! and read [`Event`]s (one per generated token, then one at the end) from their own channel.
//!
//! One iteration:
//! 1. take in new requests; retire sequences whose client went away (their receiver was
//!    dropped), freeing their blocks at once;
//! 2. admit waiting sequences first come first served while their blocks fit
//!    ([`Scheduler::admit`]);
//! 3. prefill admitted sequences in chunks, at most `max_num_batched_tokens` prompt tokens per
//!    iteration, so running sequences are never stalled longer than that much prefill (a long
//!    prompt is spread over several iterations, decode steps in between); whole prompts that
//!    fit go together in one left-padded pass (`batched_prefill`); the last chunk of a prompt
//!    yields its first token;
//! 4. one decode step for *all* decoding sequences together (a batch of ragged lengths: keys
//!    and values gathered through the block tables, left-padded and masked), one new token each;
//! 5. stream the tokens, retire finished sequences (EOS unless `ignore_eos`, after `min_tokens`;
//!    or `max_tokens`) and free their blocks.
//!
//! Sequences therefore join and leave the batch at any step. Greedy results do not depend on the
//! batch a sequence ran in (same as the offline generator up to float rounding of the batch
//! shape, which the tests show does not change the argmax for the tiny models).

pub use super::request::{Event, FinishReason, GenRequest, SamplingParams, SeqParams};
use super::kv_blocks::PagedKv;
use super::metrics::Metrics;
use super::scheduler::{Scheduler, Sequence};
use crate::error::{EngineError, Result};
use crate::model::{Model, PrefillInputs, MASKED};
use crate::sampling::sample_row;
use candle_core::{Tensor, D};
use rand::SeedableRng;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub block_size: usize,
    pub num_blocks: usize,
    pub max_num_seqs: usize,
    pub max_num_batched_tokens: usize,
    pub eos_token_ids: Vec<u32>,
    /// Decode steps read the paged KV pool in place with tokbench's fused kernels where they
    /// apply (the rotary families on CUDA: `Model::decode_paged`); off, or where they do not
    /// apply, every step gathers the blocks into a contiguous cache and runs candle's ops.
    pub paged_attention: bool,
    /// The paged decode step replayed as CUDA graphs, one per batch-size bucket (`--cuda-graphs`).
    pub cuda_graphs: bool,
    /// Whole prompts admitted together are prefilled in one left-padded forward pass
    /// (`--batched-prefill`); off, one pass per sequence.
    pub batched_prefill: bool,
}

/// The HTTP side's handle on the engine thread.
#[derive(Clone)]
pub struct EngineHandle {
    tx: std::sync::mpsc::Sender<GenRequest>,
    pub metrics: Arc<Metrics>,
    pub config: EngineConfig,
}

impl EngineHandle {
    /// Queues a request; its tokens arrive on the returned channel. Dropping the receiver cancels
    /// the request (its blocks are freed at the next iteration).
    pub fn submit(&self, prompt: Vec<u32>, params: SeqParams) -> Result<UnboundedReceiver<Event>> {
        let (events, rx) = unbounded_channel();
        self.tx
            .send(GenRequest { prompt, params, events })
            .map_err(|_| EngineError::InvalidWorkload("the engine thread has stopped".into()))?;
        Ok(rx)
    }
}

/// Starts the engine thread over `model` with a pool of `config.num_blocks` blocks (allocated
/// here, so a pool that does not fit fails before the server listens).
pub fn spawn(model: Model, config: EngineConfig, metrics: Arc<Metrics>) -> Result<EngineHandle> {
    let spec = model.config().spec();
    let kv = PagedKv::new(spec.num_layers, config.num_blocks, config.block_size, spec.num_kv_heads, spec.head_dim, model.dtype(), model.device())?;
    metrics.blocks_total.store(config.num_blocks as u64, Ordering::Relaxed);
    let (tx, rx) = std::sync::mpsc::channel();
    let engine = Engine {
        sched: Scheduler::new(config.num_blocks, config.block_size, config.max_num_seqs),
        model,
        kv,
        config: config.clone(),
        metrics: metrics.clone(),
        next_id: 0,
        rate_window: std::collections::VecDeque::new(),
        paged_refused: false,
        #[cfg(feature = "cuda")]
        graphs: None,
    };
    std::thread::Builder::new()
        .name("tokbench-engine".into())
        .spawn(move || engine.run(rx))
        .map_err(|e| EngineError::InvalidWorkload(format!("cannot start the engine thread: {e}")))?;
    Ok(EngineHandle { tx, metrics, config })
}

struct Engine {
    model: Model,
    kv: PagedKv,
    sched: Scheduler,
    config: EngineConfig,
    metrics: Arc<Metrics>,
    next_id: u64,
    /// (time, generated tokens total) samples of the last few seconds, for tokens/s.
    rate_window: std::collections::VecDeque<(Instant, u64)>,
    /// The paged decode kernel refused this model (head size, length): gather from then on.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    paged_refused: bool,
    /// The decode step's CUDA graphs (made at the first paged step).
    #[cfg(feature = "cuda")]
    graphs: Option<crate::model::paged_decode::PagedGraphs>,
}

impl Engine {
    fn run(mut self, rx: std::sync::mpsc::Receiver<GenRequest>) {
        loop {
            if self.sched.is_idle() {
                self.publish();
                // Nothing to do: sleep until a request comes (or the server is gone).
                match rx.recv() {
                    Ok(r) => self.accept(r),
                    Err(_) => return,
                }
            }
            while let Ok(r) = rx.try_recv() {
                self.accept(r);
            }
            if let Err(e) = self.iteration() {
                tracing::error!("engine step failed: {e}");
                let msg = e.to_string();
                for s in &mut self.sched.running {
                    let _ = s.events.send(Event::Error(msg.clone()));
                    s.cancelled = true;
                    self.metrics.requests_failed.fetch_add(1, Ordering::Relaxed);
                }
            }
            self.retire();
            self.publish();
        }
    }

    fn accept(&mut self, r: GenRequest) {
        let id = self.next_id;
        self.next_id += 1;
        self.metrics.requests_received.fetch_add(1, Ordering::Relaxed);
        let rng = (!r.params.sampling.is_greedy())
            .then(|| rand::rngs::StdRng::seed_from_u64(r.params.sampling.seed.unwrap_or_else(rand::random)));
        self.sched.enqueue(Sequence {
            id,
            prompt_len: r.prompt.len(),
            tokens: r.prompt,
            computed: 0,
            blocks: Vec::new(),
            prefilling: false,
            params: r.params,
            rng,
            events: r.events,
            finished: None,
            cancelled: false,
            preemptions: 0,
        });
    }

    fn iteration(&mut self) -> Result<()> {
        for s in self.sched.running.iter_mut().chain(self.sched.waiting.iter_mut()) {
            if s.events.is_closed() {
                s.cancelled = true;
            }
        }
        self.retire();
        self.sched.admit();

        // Prefill, chunked under the token budget. Whole prompts that fit the budget go together
        // into one left-padded pass (`prefill_whole`), as long as the padded batch does too.
        let mut budget = self.config.max_num_batched_tokens.max(1);
        let mut whole: Vec<usize> = Vec::new();
        let mut whole_width = 0;
        for i in 0..self.sched.running.len() {
            if budget == 0 {
                break;
            }
            let s = &self.sched.running[i];
            if !s.prefilling || s.is_done() {
                continue;
            }
            let remaining = s.tokens.len() - s.computed;
            let chunk = remaining.min(budget);
            let width = whole_width.max(remaining);
            if self.config.batched_prefill && s.computed == 0 && chunk == remaining && (whole.len() + 1) * width <= self.config.max_num_batched_tokens.max(1) {
                whole.push(i);
                whole_width = width;
                budget -= chunk;
                continue;
            }
            let logits = self.prefill_chunk(i, chunk)?;
            budget -= chunk;
            let s = &mut self.sched.running[i];
            if s.computed == s.tokens.len() {
                s.prefilling = false;
                let next = self.sample(&[i], &logits)?;
                self.push_token(i, next[0]);
            }
        }
        if !whole.is_empty() {
            let logits = match whole[..] {
                [i] => self.prefill_chunk(i, self.sched.running[i].tokens.len())?,
                _ => self.prefill_whole(&whole)?,
            };
            for &i in &whole {
                self.sched.running[i].prefilling = false;
            }
            let next = self.sample(&whole, &logits)?;
            for (&i, tok) in whole.iter().zip(next) {
                self.push_token(i, tok);
            }
        }

        // One decode step for every decoding sequence.
        self.sched.reserve_decode_blocks();
        let batch: Vec<usize> = (0..self.sched.running.len()).filter(|&i| !self.sched.running[i].prefilling && !self.sched.running[i].is_done()).collect();
        if !batch.is_empty() {
            let logits = self.decode(&batch)?;
            let next = self.sample(&batch, &logits)?;
            for (&i, tok) in batch.iter().zip(next) {
                self.push_token(i, tok);
            }
        }
        Ok(())
    }

    /// Feeds `chunk` more tokens of `running[i]`'s prompt (from its `computed` position); returns
    /// the logits of the chunk's last position, [1, vocab].
    fn prefill_chunk(&mut self, i: usize, chunk: usize) -> Result<Tensor> {
        let device = self.model.device().clone();
        let offset = self.model.position_offset();
        let s = &self.sched.running[i];
        let start = s.computed;
        let width = start + chunk;
        // Placeholders (slot 0) where this chunk's keys/values will be appended.
        let mut slots: Vec<u32> = (0..start).map(|p| self.kv.slot(&s.blocks, p)).collect();
        slots.resize(width, 0);
        let mut cache = self.kv.gather(&slots, 1, width, start)?;
        let ids = Tensor::from_slice(&s.tokens[start..width], (1, chunk), &device)?;
        let positions: Vec<u32> = (start..width).map(|p| offset + p as u32).collect();
        let positions = Tensor::from_vec(positions, (1, chunk), &device)?;
        // Causal over the whole context: query q (position start + q) sees keys 0..=start + q.
        let bias: Vec<f32> = (0..chunk).flat_map(|q| (0..width).map(move |k| if k <= start + q { 0.0 } else { MASKED })).collect();
        let bias = Tensor::from_vec(bias, (1, 1, chunk, width), &device)?;
        let logits = self.model.forward(&ids, &positions, &bias, Some(&mut cache), true)?.squeeze(1)?;
        let out: Vec<u32> = (start..width).map(|p| self.kv.slot(&s.blocks, p)).collect();
        self.kv.scatter(&cache, start, chunk, &out)?;
        self.sched.running[i].computed = width;
        self.metrics.prefill_tokens.fetch_add(chunk as u64, Ordering::Relaxed);
        self.metrics.prefill_passes.fetch_add(1, Ordering::Relaxed);
        Ok(logits)
    }

    /// Prefills the whole prompts of `running[rows]` (nothing computed yet) in one forward pass:
    /// left-padded to the longest with the offline generator's layout (`PrefillInputs`: padding
    /// masked, positions counted from each prompt's first token), so every row's last position
    /// is its prompt's last token. Why: one pass of b prompts reads the weights once instead of b
    /// times. Real positions' keys/values go to the sequences' blocks, padding's to the scratch
    /// block. Returns the logits of each row's last position, [rows, vocab].
    fn prefill_whole(&mut self, rows: &[usize]) -> Result<Tensor> {
        let device = self.model.device().clone();
        let b = rows.len();
        let t = rows.iter().map(|&i| self.sched.running[i].tokens.len()).max().unwrap_or(0);
        let scratch = self.kv.scratch_block() * self.kv.block_size() as u32;
        let mut ids = Vec::with_capacity(b * t);
        let mut mask = Vec::with_capacity(b);
        let mut out = Vec::with_capacity(b * t);
        for &i in rows {
            let s = &self.sched.running[i];
            let (len, pad) = (s.tokens.len(), t - s.tokens.len());
            ids.extend(std::iter::repeat_n(0u32, pad));
            ids.extend_from_slice(&s.tokens);
            mask.push([vec![0u32; pad], vec![1u32; len]].concat());
            out.extend(std::iter::repeat_n(scratch, pad));
            out.extend((0..len).map(|p| self.kv.slot(&s.blocks, p)));
        }
        let inputs = PrefillInputs::new(&mask, self.model.position_offset());
        // Placeholders: the pass appends every position of this cache.
        let mut cache = self.kv.gather(&vec![0u32; b * t], b, t, 0)?;
        let ids = Tensor::from_vec(ids, (b, t), &device)?;
        let logits = self.model.forward(&ids, &inputs.positions(&device)?, &inputs.bias(&device)?, Some(&mut cache), true)?.squeeze(1)?;
        self.kv.scatter(&cache, 0, t, &out)?;
        let mut tokens = 0;
        for &i in rows {
            let s = &mut self.sched.running[i];
            s.computed = s.tokens.len();
            tokens += s.computed;
        }
        self.metrics.prefill_tokens.fetch_add(tokens as u64, Ordering::Relaxed);
        self.metrics.prefill_passes.fetch_add(1, Ordering::Relaxed);
        Ok(logits)
    }

    /// One token for each of `running[rows]` (each feeds its last token); logits [rows, vocab].
    fn decode(&mut self, rows: &[usize]) -> Result<Tensor> {
        #[cfg(feature = "cuda")]
        if self.config.paged_attention && !self.paged_refused && self.model.device().is_cuda() {
            if let Some((logits, graph)) = self.decode_paged(rows)? {
                let counter = if graph { &self.metrics.decode_steps_graph } else { &self.metrics.decode_steps_paged };
                counter.fetch_add(1, Ordering::Relaxed);
                return Ok(logits);
            }
            self.paged_refused = true;
            tracing::warn!("the paged decode attention kernel does not apply to this model or length: decode steps gather the KV blocks from now on");
        }
        self.metrics.decode_steps_gathered.fetch_add(1, Ordering::Relaxed);
        self.decode_gathered(rows)
    }

    /// [`Self::decode`] on tokbench's kernels over the pool in place (`Model::decode_paged`):
    /// each row's token, rotary position, length and block table go to the device; the attention
    /// writes the new keys/values into the sequences' blocks itself. Replayed as the CUDA graph
    /// of the batch's bucket where `cuda_graphs` is on and it fits (then `.1` is true). `None`
    /// where the paged step does not apply.
    #[cfg(feature = "cuda")]
    fn decode_paged(&mut self, rows: &[usize]) -> Result<Option<(Tensor, bool)>> {
        let device = self.model.device().clone();
        let offset = self.model.position_offset();
        let bs = self.kv.block_size();
        let lens: Vec<u32> = rows.iter().map(|&i| self.sched.running[i].computed as u32).collect();
        let ids: Vec<u32> = rows.iter().map(|&i| *self.sched.running[i].tokens.last().expect("a decoding sequence has tokens")).collect();
        let positions: Vec<u32> = lens.iter().map(|&l| offset + l).collect();
        // Each row's blocks up to the one of its new token (reserve_decode_blocks gave it).
        let tables: Vec<&[u32]> = rows
            .iter()
            .map(|&i| {
                let s = &self.sched.running[i];
                &s.blocks[..(s.computed + 1).div_ceil(bs).min(s.blocks.len())]
            })
            .collect();
        if self.config.cuda_graphs {
            if self.graphs.is_none() {
                // Sequences up to 4096 positions (or what the attention's shared memory takes)
                // replay a graph; longer ones run the step eagerly.
                let mut cap = (4096 / bs).max(1) * bs;
                while cap > bs && !self.model.paged_decode_fits(cap) {
                    cap -= bs;
                }
                let graphs = crate::model::paged_decode::PagedGraphs::new(self.config.max_num_seqs, cap, bs, self.kv.scratch_block());
                tracing::info!(cap = graphs.cap(), "decode steps replay CUDA graphs per batch-size bucket");
                self.graphs = Some(graphs);
            }
            let step = crate::model::paged_decode::PagedStepRows { ids: &ids, positions: &positions, lens: &lens, tables: &tables };
            let graphs = self.graphs.as_mut().expect("made above");
            if let Some(logits) = graphs.step(&self.model, self.kv.layers(), step)? {
                for &i in rows {
                    self.sched.running[i].computed += 1;
                }
                return Ok(Some((logits, true)));
            }
        }
        let cap = lens.iter().copied().max().unwrap_or(0) as usize + 1;
        let max_blocks = cap.div_ceil(bs);
        let mut flat = vec![self.kv.scratch_block(); rows.len() * max_blocks];
        for (r, t) in tables.iter().enumerate() {
            flat[r * max_blocks..r * max_blocks + t.len()].copy_from_slice(t);
        }
        let b = rows.len();
        let ids = Tensor::from_vec(ids, b, &device)?;
        let positions = Tensor::from_vec(positions, b, &device)?;
        let lens = Tensor::from_vec(lens, b, &device)?;
        let block_tables = Tensor::from_vec(flat, (b, max_blocks), &device)?;
        let paged = crate::model::cuda_ops::PagedBlocks { lens: &lens, block_tables: &block_tables, block_size: bs, cap };
        let Some(logits) = self.model.decode_paged(&ids, &positions, paged, self.kv.layers())? else {
            return Ok(None);
        };
        for &i in rows {
            self.sched.running[i].computed += 1;
        }
        Ok(Some((logits, false)))
    }

    /// [`Self::decode`] by gathering: the rows' keys/values copied out of their blocks into one
    /// left-padded contiguous cache, candle's forward pass over it, the new keys/values scattered
    /// back.
    fn decode_gathered(&mut self, rows: &[usize]) -> Result<Tensor> {
        let device = self.model.device().clone();
        let offset = self.model.position_offset();
        let b = rows.len();
        let lens: Vec<usize> = rows.iter().map(|&i| self.sched.running[i].computed).collect();
        let w = lens.iter().copied().max().unwrap_or(0);
        let width = w + 1;
        let mut slots = Vec::with_capacity(b * width);
        let mut bias = vec![0f32; b * width];
        let mut ids = Vec::with_capacity(b);
        let mut positions = Vec::with_capacity(b);
        let mut out = Vec::with_capacity(b);
        for (r, (&i, &len)) in rows.iter().zip(&lens).enumerate() {
            let s = &self.sched.running[i];
            debug_assert_eq!(len + 1, s.tokens.len());
            // Left padding (masked), the sequence's cached positions, the new token's placeholder.
            slots.extend(std::iter::repeat_n(0u32, w - len));
            slots.extend((0..len).map(|p| self.kv.slot(&s.blocks, p)));
            slots.push(0);
            bias[r * width..r * width + (w - len)].fill(MASKED);
            ids.push(*s.tokens.last().expect("a decoding sequence has tokens"));
            positions.push(offset + len as u32);
            out.push(self.kv.slot(&s.blocks, len));
        }
        let mut cache = self.kv.gather(&slots, b, width, w)?;
        let ids = Tensor::from_vec(ids, (b, 1), &device)?;
        let positions = Tensor::from_vec(positions, (b, 1), &device)?;
        let bias = Tensor::from_vec(bias, (b, 1, 1, width), &device)?;
        let logits = self.model.forward(&ids, &positions, &bias, Some(&mut cache), true)?.squeeze(1)?;
        self.kv.scatter(&cache, w, 1, &out)?;
        for &i in rows {
            self.sched.running[i].computed += 1;
        }
        Ok(logits)
    }

    /// The next token of each of `running[rows]` from `logits` [rows, vocab]: argmax on the
    /// device for greedy rows; sampled rows copy their logits to the host (`sample_row`, the
    /// offline generator's sampler) with the sequence's own seeded RNG.
    fn sample(&mut self, rows: &[usize], logits: &Tensor) -> Result<Vec<u32>> {
        let mut next = logits.argmax(D::Minus1)?.to_vec1::<u32>()?;
        if rows.iter().all(|&i| self.sched.running[i].params.sampling.is_greedy()) {
            return Ok(next);
        }
        let host: Vec<Vec<f32>> = logits.to_vec2()?;
        for (r, &i) in rows.iter().enumerate() {
            let s = &mut self.sched.running[i];
            let p = &s.params.sampling;
            if let (false, Some(rng)) = (p.is_greedy(), s.rng.as_mut()) {
                next[r] = sample_row(&host[r], p.temperature, p.top_k, p.top_p, rng);
            }
        }
        Ok(next)
    }

    fn push_token(&mut self, i: usize, tok: u32) {
        let eos = self.config.eos_token_ids.contains(&tok);
        let s = &mut self.sched.running[i];
        s.tokens.push(tok);
        self.metrics.generation_tokens.fetch_add(1, Ordering::Relaxed);
        s.emit(Event::Token(tok));
        let n = s.generated();
        if !s.params.ignore_eos && eos && n >= s.params.min_tokens {
            s.finished = Some(FinishReason::Stop);
        } else if n >= s.params.max_tokens {
            s.finished = Some(FinishReason::Length);
        }
    }

    /// Frees finished and cancelled sequences and tells finished ones' clients.
    fn retire(&mut self) {
        for mut s in self.sched.take_done() {
            match s.finished {
                Some(reason) if !s.cancelled => {
                    let (prompt_tokens, completion_tokens) = (s.prompt_len, s.generated());
                    s.emit(Event::Finished { reason, prompt_tokens, completion_tokens });
                    self.metrics.requests_finished.fetch_add(1, Ordering::Relaxed);
                    self.metrics.prompt_tokens.fetch_add(prompt_tokens as u64, Ordering::Relaxed);
                    self.metrics.completion_tokens.fetch_add(completion_tokens as u64, Ordering::Relaxed);
                    let counter = match reason {
                        FinishReason::Stop => &self.metrics.finished_stop,
                        FinishReason::Length => &self.metrics.finished_length,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                _ => {
                    tracing::debug!(seq = s.id, generated = s.generated(), "cancelled by its client");
                    self.metrics.requests_cancelled.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    fn publish(&mut self) {
        let m = &self.metrics;
        m.waiting.store(self.sched.waiting.len() as u64, Ordering::Relaxed);
        m.running.store(self.sched.running.len() as u64, Ordering::Relaxed);
        m.blocks_used.store(self.sched.alloc.used() as u64, Ordering::Relaxed);
        m.preemptions.store(self.sched.preemptions_total, Ordering::Relaxed);
        // Generated tokens per second over the last ~10 s.
        let now = Instant::now();
        let total = m.generation_tokens.load(Ordering::Relaxed);
        self.rate_window.push_back((now, total));
        while self.rate_window.len() > 2 && now.duration_since(self.rate_window[0].0) > Duration::from_secs(10) {
            self.rate_window.pop_front();
        }
        let (t0, n0) = self.rate_window[0];
        let secs = now.duration_since(t0).as_secs_f64();
        let rate = if secs > 0.0 { (total - n0) as f64 / secs } else { 0.0 };
        m.set_tokens_per_second(rate);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::WeightSource;
    use candle_core::{DType, Device};

    /// An engine over a tiny model on the CPU, driven by hand (no thread), so an iteration's
    /// batch is exactly the requests accepted before it.
    fn engine(model: &str, batched_prefill: bool, max_num_batched_tokens: usize) -> Engine {
        let config = tokbench_core::Catalog::get(model).unwrap().config();
        let model = Model::load(&config, &WeightSource::Synthetic { seed: 3 }, DType::F32, &Device::Cpu).unwrap();
        let spec = model.config().spec();
        let (num_blocks, block_size) = (64, 4);
        let kv = PagedKv::new(spec.num_layers, num_blocks, block_size, spec.num_kv_heads, spec.head_dim, model.dtype(), model.device()).unwrap();
        let config = EngineConfig {
            block_size,
            num_blocks,
            max_num_seqs: 16,
            max_num_batched_tokens,
            eos_token_ids: vec![],
            paged_attention: true,
            cuda_graphs: true,
            batched_prefill,
        };
        Engine {
            sched: Scheduler::new(num_blocks, block_size, 16),
            model,
            kv,
            config,
            metrics: Default::default(),
            next_id: 0,
            rate_window: Default::default(),
            paged_refused: false,
            #[cfg(feature = "cuda")]
            graphs: None,
        }
    }

    /// Accepts every prompt before the first iteration, runs to the end; each request's tokens
    /// and the number of prefill passes.
    fn run(e: &mut Engine, prompts: &[Vec<u32>], max_tokens: usize) -> (Vec<Vec<u32>>, u64) {
        let mut rxs = Vec::new();
        for p in prompts {
            let (events, rx) = unbounded_channel();
            let params = SeqParams { max_tokens, min_tokens: 0, ignore_eos: true, sampling: SamplingParams::default() };
            e.accept(GenRequest { prompt: p.clone(), params, events });
            rxs.push(rx);
        }
        while !e.sched.is_idle() {
            e.iteration().unwrap();
            e.retire();
        }
        let tokens = rxs
            .iter_mut()
            .map(|rx| {
                let mut out = Vec::new();
                while let Ok(ev) = rx.try_recv() {
                    match ev {
                        Event::Token(t) => out.push(t),
                        Event::Finished { completion_tokens, .. } => assert_eq!(completion_tokens, out.len()),
                        Event::Error(e) => panic!("{e}"),
                    }
                }
                out
            })
            .collect();
        (tokens, e.metrics.prefill_passes.load(Ordering::Relaxed))
    }

    fn prompts() -> Vec<Vec<u32>> {
        (0..5u32).map(|i| (0..2 + 5 * i).map(|j| (11 + 17 * i + 3 * j) % 200 + 3).collect()).collect()
    }

    /// Five prompts of 2..22 tokens admitted together: one left-padded pass with
    /// `batched_prefill`, five without, and the same greedy tokens both ways, equal to the
    /// offline generator's for each prompt alone. For a rotary family (positions from the
    /// rotary table) and a learned-position one (GPT-2, OPT's offset of 2).
    #[test]
    fn whole_prompts_admitted_together_prefill_in_one_pass_with_unchanged_tokens() {
        for name in ["tiny-llama", "tiny-gpt2", "tiny-opt"] {
            let p = prompts();
            let (batched, passes) = run(&mut engine(name, true, 2048), &p, 6);
            assert_eq!(passes, 1, "{name}");
            let (single, passes) = run(&mut engine(name, false, 2048), &p, 6);
            assert_eq!(passes, 5, "{name}");
            assert_eq!(batched, single, "{name}");
            let config = tokbench_core::Catalog::get(name).unwrap().config();
            let m = Model::load(&config, &WeightSource::Synthetic { seed: 3 }, DType::F32, &Device::Cpu).unwrap();
            for (prompt, got) in p.iter().zip(&batched) {
                let params = crate::generate::GenerationParams::new(&config, "reference", 6);
                let want = crate::generate::generate_batch(&m, std::slice::from_ref(prompt), &params, &mut |_| {}).unwrap().tokens.remove(0);
                assert_eq!(got, &want, "{name}, prompt of {} tokens", prompt.len());
            }
        }
    }

    /// The padded batch stays within `max_num_batched_tokens`: prompts of 2 and 20 tokens fit a
    /// budget of 24 (22 tokens) but their padded pass (2 × 20) does not, so they take two
    /// passes; with a budget of 40 they share one. The tokens are the same.
    #[test]
    fn a_batch_whose_padding_overflows_the_token_budget_is_split() {
        let p = vec![vec![5, 9], (0..20).map(|j| 3 + 7 * j).collect::<Vec<u32>>()];
        let (split, passes) = run(&mut engine("tiny-llama", true, 24), &p, 4);
        assert_eq!(passes, 2);
        let (shared, passes) = run(&mut engine("tiny-llama", true, 40), &p, 4);
        assert_eq!(passes, 1);
        assert_eq!(split, shared);
    }
}
