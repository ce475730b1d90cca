//! Preallocated key/value cache: one [batch, heads, capacity, head_dim] tensor pair per layer,
//! written in place at the fill offset. Concatenating the whole cache every step (what a naive
//! `Tensor::cat` cache does) costs O(seq) copies per token and an allocation per layer per step;
//! in-place writes cost only the new token's keys and values.

use crate::error::{EngineError, Result};
use candle_core::{DType, Device, Tensor};

pub struct KvCache {
    layers: Vec<(Tensor, Tensor)>,
    batch: usize,
    heads: usize,
    head_dim: usize,
    capacity: usize,
    /// Positions filled (the same for every layer between forward passes).
    len: usize,
}

impl KvCache {
    /// Allocates `2 * num_layers` tensors of [batch, heads, capacity, head_dim] on `device`.
    pub fn new(
        num_layers: usize,
        batch: usize,
        heads: usize,
        capacity: usize,
        head_dim: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<KvCache> {
        let mut layers = Vec::with_capacity(num_layers);
        for _ in 0..num_layers {
            let k = Tensor::zeros((batch, heads, capacity, head_dim), dtype, device)?;
            let v = Tensor::zeros((batch, heads, capacity, head_dim), dtype, device)?;
            layers.push((k, v));
        }
        Ok(KvCache { layers, batch, heads, head_dim, capacity, len: 0 })
    }

    /// A cache over existing `[batch, heads, capacity, head_dim]` tensors (contiguous, one
    /// key/value pair per layer) whose first `len` positions are filled. The OpenAI server's
    /// paged cache (`openai::kv_blocks`) gathers each sequence's blocks into such tensors for
    /// one forward pass, so the model's attention runs unchanged over per-sequence caches.
    pub(crate) fn from_layers(layers: Vec<(Tensor, Tensor)>, len: usize) -> Result<KvCache> {
        let (batch, heads, capacity, head_dim) = match layers.first() {
            Some((k, _)) => k.dims4()?,
            None => return Err(EngineError::InvalidWorkload("a KV cache needs at least one layer".into())),
        };
        if len > capacity {
            return Err(EngineError::InvalidWorkload(format!("KV cache of {capacity} positions cannot have {len} filled")));
        }
        Ok(KvCache { layers, batch, heads, head_dim, capacity, len })
    }

    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn capacity(&self) -> usize {
        self.capacity
    }
    pub fn batch(&self) -> usize {
        self.batch
    }
    /// Bytes held by the cache tensors.
    pub fn bytes(&self) -> u64 {
        let per = self.batch * self.heads * self.capacity * self.head_dim;
        let dtype_size = self.layers.first().map(|(k, _)| k.dtype().size_in_bytes()).unwrap_or(0);
        (2 * self.layers.len() * per * dtype_size) as u64
    }
    /// Whether this cache can serve a batch of `batch` sequences of up to `positions` positions
    /// with these dimensions (so a model can reuse it instead of allocating a new one).
    pub fn fits(&self, num_layers: usize, batch: usize, heads: usize, head_dim: usize, positions: usize, dtype: DType) -> bool {
        self.layers.len() == num_layers
            && self.batch == batch
            && self.heads == heads
            && self.head_dim == head_dim
            && self.capacity >= positions
            && self.layers.first().is_some_and(|(k, _)| k.dtype() == dtype)
    }

    /// Forget the contents (the memory is kept and overwritten by the next prefill).
    pub fn reset(&mut self) {
        self.len = 0;
    }

    /// Writes `k`, `v` ([batch, heads, t, head_dim], contiguous) of `layer` at the fill offset and
    /// returns views of the filled prefix including them ([batch, heads, len + t, head_dim]).
    /// The views are strided (no copy); matmul reads them directly.
    pub fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let t = k.dim(2)?;
        self.check_room(t)?;
        let end = self.len + t;
        let (ck, cv) = &self.layers[layer];
        ck.slice_set(k, 2, self.len)?;
        cv.slice_set(v, 2, self.len)?;
        Ok((ck.narrow(2, 0, end)?, cv.narrow(2, 0, end)?))
    }

    /// Fails unless `t` more positions fit after the filled ones.
    pub fn check_room(&self, t: usize) -> Result<()> {
        let end = self.len + t;
        if end > self.capacity {
            return Err(EngineError::InvalidWorkload(format!(
                "KV cache overflow: {end} positions needed but the cache was allocated for {}; allocate it for prompt length + max_new_tokens",
                self.capacity
            )));
        }
        Ok(())
    }

    /// The whole [batch, heads, capacity, head_dim] key and value tensors of `layer` (the fused
    /// decode path writes and reads them itself).
    pub fn layer(&self, layer: usize) -> (&Tensor, &Tensor) {
        let (k, v) = &self.layers[layer];
        (k, v)
    }

    /// Marks `t` more positions as filled; called once per forward pass after every layer appended.
    pub fn advance(&mut self, t: usize) {
        self.len += t;
    }
}
