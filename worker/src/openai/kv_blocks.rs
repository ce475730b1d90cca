//! Paged KV cache: the server's key/value memory is one pool of fixed-size blocks
//! (`--block-size` tokens each) shared by all sequences, as in vLLM's PagedAttention.
//!
//! Why: a per-slot cache must reserve every sequence's maximum length (prompt + max_tokens, or
//! the model's whole context) up front, so a memory budget admits `budget / max_len` sequences
//! whatever their real lengths. With blocks a sequence holds only `ceil(len / block_size)`
//! blocks, taken as it grows and given back the moment it finishes, so the same budget runs as
//! many sequences as their *actual* lengths allow ([`Capacity`] computes both figures; the
//! server logs them at start-up).
//!
//! Layout: per layer one key and one value tensor of `[num_blocks * block_size, kv_heads *
//! head_dim]` (row = one token slot, `block * block_size + offset`). A forward pass reads a
//! sequence's keys/values through its block table: [`PagedKv::gather`] turns the block tables of
//! a step's sequences into one `index_select` per layer, giving a contiguous left-padded
//! `[batch, kv_heads, width, head_dim]` [`KvCache`] that the model's attention runs over
//! unchanged (ragged lengths are masked by the attention bias, as the offline generator masks
//! left padding). The keys/values the pass appended are written back to their slots by
//! [`PagedKv::scatter`] (`scatter_set`, in place). Both are plain candle ops, so the same code
//! runs on CUDA; a fused paged-attention kernel that reads the blocks in place (no per-step
//! gather copy) is the next step there.

use crate::error::{EngineError, Result};
use crate::model::KvCache;
use candle_core::{DType, Device, Tensor};

/// Blocks of `block_size` tokens that hold `tokens` positions.
pub fn blocks_for(tokens: usize, block_size: usize) -> usize {
    tokens.div_ceil(block_size.max(1))
}

/// The free list of a pool of `total` blocks. Blocks are handed out last-freed first (a
/// finished sequence's blocks, still warm in cache, serve the next one).
#[derive(Debug, Clone)]
pub struct BlockAllocator {
    free: Vec<u32>,
    total: usize,
}

impl BlockAllocator {
    pub fn new(total: usize) -> BlockAllocator {
        // Reversed so that the first allocations get blocks 0, 1, 2, ...
        BlockAllocator { free: (0..total as u32).rev().collect(), total }
    }
    pub fn total(&self) -> usize {
        self.total
    }
    pub fn free_count(&self) -> usize {
        self.free.len()
    }
    pub fn used(&self) -> usize {
        self.total - self.free.len()
    }
    pub fn allocate(&mut self) -> Option<u32> {
        self.free.pop()
    }
    /// `n` blocks, or none at all when fewer are free.
    pub fn allocate_n(&mut self, n: usize) -> Option<Vec<u32>> {
        if n > self.free.len() {
            return None;
        }
        let at = self.free.len() - n;
        let mut blocks = self.free.split_off(at);
        blocks.reverse();
        Some(blocks)
    }
    pub fn release(&mut self, blocks: &mut Vec<u32>) {
        debug_assert!(blocks.iter().all(|b| (*b as usize) < self.total && !self.free.contains(b)), "double free of a KV block");
        self.free.extend(blocks.drain(..).rev());
    }
}

/// What a KV memory budget holds, paged vs one slot of the full length per sequence.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Capacity {
    pub budget_bytes: u64,
    pub bytes_per_token: u64,
    pub block_size: usize,
    pub num_blocks: usize,
    /// Positions a per-slot cache reserves per sequence (the model's context length).
    pub max_len: usize,
    /// Sequences a per-slot cache of `max_len` positions fits in the budget.
    pub per_slot_sequences: usize,
}

impl Capacity {
    pub fn new(budget_bytes: u64, bytes_per_token: u64, block_size: usize, max_len: usize) -> Capacity {
        let bytes_per_block = bytes_per_token * block_size as u64;
        let num_blocks = budget_bytes.checked_div(bytes_per_block).unwrap_or(0) as usize;
        let per_slot_sequences = if bytes_per_token == 0 || max_len == 0 { 0 } else { (budget_bytes / (bytes_per_token * max_len as u64)) as usize };
        Capacity { budget_bytes, bytes_per_token, block_size, num_blocks, max_len, per_slot_sequences }
    }
    pub fn bytes_per_block(&self) -> u64 {
        self.bytes_per_token * self.block_size as u64
    }
    /// Bytes the pool actually allocates (whole blocks).
    pub fn pool_bytes(&self) -> u64 {
        self.bytes_per_block() * self.num_blocks as u64
    }
    pub fn tokens(&self) -> usize {
        self.num_blocks * self.block_size
    }
    /// Sequences of `len` positions each (prompt + output) that the paged pool runs at once.
    pub fn paged_sequences(&self, len: usize) -> usize {
        let per = blocks_for(len.max(1), self.block_size);
        self.num_blocks / per
    }
    /// The start-up line: pool size and the concurrency it buys against a per-slot cache.
    pub fn describe(&self, typical_len: usize) -> String {
        format!(
            "KV cache: {} blocks x {} tokens = {} token slots ({:.1} MiB, {} bytes/token); max concurrent sequences of {} tokens: {} paged vs {} with a per-slot cache of {} positions",
            self.num_blocks,
            self.block_size,
            self.tokens(),
            self.pool_bytes() as f64 / (1024.0 * 1024.0),
            self.bytes_per_token,
            typical_len,
            self.paged_sequences(typical_len),
            self.per_slot_sequences,
            self.max_len
        )
    }
}

/// Parses a byte count: `1073741824`, `512MiB`, `4GiB`, `64KB`, `2G` (K/M/G are binary).
pub fn parse_bytes(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().map_err(|_| format!("{s:?} is not a byte count: write e.g. 268435456, 256MiB or 4GiB"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown unit {other:?} in {s:?}: use B, KiB, MiB or GiB")),
    };
    Ok((value * mult as f64) as u64)
}

/// The block pool on the model's device (its allocator is the scheduler's).
pub struct PagedKv {
    /// Per layer: keys and values, `[(num_blocks + 1) * block_size, kv_heads * head_dim]` (the
    /// last block is the scratch block).
    layers: Vec<(Tensor, Tensor)>,
    block_size: usize,
    kv_heads: usize,
    head_dim: usize,
}

impl PagedKv {
    pub fn new(num_layers: usize, num_blocks: usize, block_size: usize, kv_heads: usize, head_dim: usize, dtype: DType, device: &Device) -> Result<PagedKv> {
        if num_blocks == 0 {
            return Err(EngineError::InvalidWorkload(
                "the KV memory budget holds not even one block: raise --kv-cache-memory (or --gpu-memory-utilization), or lower --block-size".into(),
            ));
        }
        // One block more than the allocator hands out: the scratch block, where the padding rows
        // of a CUDA-graph decode step write their keys and values (`scratch_block`).
        let rows = (num_blocks + 1) * block_size;
        let width = kv_heads * head_dim;
        let mut layers = Vec::with_capacity(num_layers);
        for _ in 0..num_layers {
            layers.push((Tensor::zeros((rows, width), dtype, device)?, Tensor::zeros((rows, width), dtype, device)?));
        }
        Ok(PagedKv { layers, block_size, kv_heads, head_dim })
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// The block past the allocator's: no sequence's, written only by padding rows.
    pub fn scratch_block(&self) -> u32 {
        (self.layers[0].0.dim(0).unwrap_or(self.block_size) / self.block_size - 1) as u32
    }

    /// Per layer (keys, values), `[(num_blocks + 1) * block_size, kv_heads * head_dim]`.
    pub fn layers(&self) -> &[(Tensor, Tensor)] {
        &self.layers
    }

    /// The pool row of logical position `pos` of a sequence with block table `table`.
    pub fn slot(&self, table: &[u32], pos: usize) -> u32 {
        table[pos / self.block_size] * self.block_size as u32 + (pos % self.block_size) as u32
    }

    /// A [`KvCache`] of `batch` rows × `width` positions whose position `j` of row `i` holds the
    /// keys/values of pool row `slots[i * width + j]`, with the first `len` positions marked filled
    /// (the model appends this pass's keys/values from `len` on; the slots there are placeholders,
    /// as are left-padding slots, which the attention bias masks).
    pub fn gather(&self, slots: &[u32], batch: usize, width: usize, len: usize) -> Result<KvCache> {
        debug_assert_eq!(slots.len(), batch * width);
        let device = self.layers[0].0.device();
        let index = Tensor::from_slice(slots, slots.len(), device)?;
        let shape = |t: Tensor| -> Result<Tensor> {
            Ok(t.reshape((batch, width, self.kv_heads, self.head_dim))?.transpose(1, 2)?.contiguous()?)
        };
        let mut layers = Vec::with_capacity(self.layers.len());
        for (k, v) in &self.layers {
            layers.push((shape(k.index_select(&index, 0)?)?, shape(v.index_select(&index, 0)?)?));
        }
        KvCache::from_layers(layers, len)
    }

    /// Writes positions `from..from + count` of every row of `cache` (what the forward pass
    /// appended) to pool rows `slots` (`batch * count`, row-major).
    pub fn scatter(&self, cache: &KvCache, from: usize, count: usize, slots: &[u32]) -> Result<()> {
        let batch = cache.batch();
        debug_assert_eq!(slots.len(), batch * count);
        let width = self.kv_heads * self.head_dim;
        let device = self.layers[0].0.device();
        let index = Tensor::from_slice(slots, (batch * count, 1), device)?.broadcast_as((batch * count, width))?.contiguous()?;
        let rows = |t: &Tensor| -> Result<Tensor> {
            Ok(t.narrow(2, from, count)?.transpose(1, 2)?.contiguous()?.reshape((batch * count, width))?)
        };
        for (i, (pk, pv)) in self.layers.iter().enumerate() {
            let (k, v) = cache.layer(i);
            pk.scatter_set(&index, &rows(k)?, 0)?;
            pv.scatter_set(&index, &rows(v)?, 0)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocator_hands_out_and_takes_back_blocks() {
        let mut a = BlockAllocator::new(4);
        assert_eq!(a.allocate_n(3), Some(vec![0, 1, 2]));
        assert_eq!(a.allocate_n(2), None, "all or nothing");
        let mut one = vec![a.allocate().unwrap()];
        assert_eq!(one, vec![3]);
        assert_eq!((a.used(), a.free_count()), (4, 0));
        assert_eq!(a.allocate(), None);
        a.release(&mut one);
        assert!(one.is_empty());
        assert_eq!((a.used(), a.free_count()), (3, 1));
    }

    #[test]
    fn parses_byte_counts() {
        assert_eq!(parse_bytes("1024").unwrap(), 1024);
        assert_eq!(parse_bytes("64KiB").unwrap(), 65536);
        assert_eq!(parse_bytes("1.5GiB").unwrap(), 3 << 29);
        assert!(parse_bytes("lots").is_err());
    }

    /// The gain of paging, in numbers: what one memory budget holds with blocks vs with one
    /// full-length slot per sequence (printed; run with --nocapture to see the figures).
    #[test]
    fn paged_blocks_hold_more_sequences_than_per_slot_caches() {
        // llama-3.2-1b in f16: 16 layers x 8 kv heads x 64 dims x 2 (k, v) x 2 bytes = 32 KiB/token.
        let spec = tokbench_core::Catalog::get("llama-3.2-1b").unwrap().config().spec();
        let per_token = spec.kv_bytes_per_token(2);
        assert_eq!(per_token, 32 * 1024);
        for (budget, max_len, len) in [(8u64 << 30, 8192usize, 1024usize), (8 << 30, 131072, 1024), (1 << 30, 4096, 600)] {
            let c = Capacity::new(budget, per_token, 16, max_len);
            println!(
                "budget {} GiB, per-slot length {max_len}: per-slot cache {} sequences, paged (16-token blocks) {} sequences of {len} tokens",
                budget >> 30,
                c.per_slot_sequences,
                c.paged_sequences(len)
            );
            assert!(c.paged_sequences(len) >= c.per_slot_sequences * (max_len / len.next_power_of_two()).max(1));
        }
        let c = Capacity::new(8 << 30, per_token, 16, 8192);
        assert_eq!(c.per_slot_sequences, 32);
        assert_eq!(c.paged_sequences(1024), 256);
        // Block granularity wastes at most block_size - 1 slots per sequence.
        assert_eq!(c.paged_sequences(1025), 16384 / 65);
    }

    #[test]
    fn gather_and_scatter_go_through_the_block_table() {
        let kv = PagedKv::new(1, 4, 2, 1, 2, DType::F32, &Device::Cpu).unwrap();
        // A cache of one row, 3 positions: write values 1..=6 as if a pass appended them.
        let k = Tensor::arange(1f32, 7., &Device::Cpu).unwrap().reshape((1, 1, 3, 2)).unwrap();
        let cache = KvCache::from_layers(vec![(k.clone(), k)], 3).unwrap();
        let table = [3u32, 1];
        let slots: Vec<u32> = (0..3).map(|p| kv.slot(&table, p)).collect();
        assert_eq!(slots, vec![6, 7, 2]);
        kv.scatter(&cache, 0, 3, &slots).unwrap();
        // Read back left-padded to width 5 (2 pads + 3 positions) with room for nothing more.
        let mut idx = vec![0u32, 0];
        idx.extend(&slots);
        let g = kv.gather(&idx, 1, 5, 5).unwrap();
        let got: Vec<f32> = g.layer(0).0.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(&got[4..], &[1., 2., 3., 4., 5., 6.]);
    }
}
