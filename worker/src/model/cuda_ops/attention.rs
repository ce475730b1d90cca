//! Attention kernels: one new token per sequence (decode) and a whole prompt (prefill).

use super::*;
use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, LaunchConfig};
use candle_core::cuda_backend::CudaDType;
use candle_core::{bail, DType, Result, Tensor};
use half::{bf16, f16};

/// Attention of one new token per sequence. `qkv` [b, 3h] (q pre-scaled, bias not yet added),
/// `qkv_bias` [3h]; `k_cache`/`v_cache` [b, heads, cap, d]: this token's k, v are written at
/// `slot` (u32 [1] on the device) and positions 0..=slot attended with `pad_bias` [b, cap] f32.
/// Returns [b, h], heads merged.
pub fn decode_attention(
    l: &Launch,
    qkv: &Tensor,
    qkv_bias: Option<&Tensor>,
    k_cache: &Tensor,
    v_cache: &Tensor,
    slot: &Tensor,
    pad_bias: &Tensor,
) -> Result<Tensor> {
    by_dtype!(qkv.dtype(), decode_attention_t, l, qkv, qkv_bias, k_cache, v_cache, slot, pad_bias)
}

fn decode_attention_t<T: CudaDType + DeviceRepr>(
    l: &Launch,
    qkv: &Tensor,
    qkv_bias: Option<&Tensor>,
    k_cache: &Tensor,
    v_cache: &Tensor,
    slot: &Tensor,
    pad_bias: &Tensor,
) -> Result<Tensor> {
    let dev = cuda_dev(qkv)?;
    let (b, three_h) = qkv.dims2()?;
    let (cb, heads, cap, d) = k_cache.dims4()?;
    let h = three_h / 3;
    if cb != b || heads * d != h || v_cache.dims() != k_cache.dims() || pad_bias.dims() != [b, cap] {
        bail!(
            "decode_attention: shapes qkv {:?}, cache {:?}/{:?}, pad_bias {:?} do not fit together",
            qkv.dims(),
            k_cache.dims(),
            v_cache.dims(),
            pad_bias.dims()
        );
    }
    if slot.dtype() != DType::U32 || pad_bias.dtype() != DType::F32 {
        bail!("decode_attention: slot must be u32 and pad_bias f32");
    }
    if let Some(bias) = qkv_bias {
        if bias.dims() != [three_h] || bias.dtype() != qkv.dtype() {
            bail!("decode_attention: qkv bias {:?} {:?} does not fit qkv {:?}", bias.dims(), bias.dtype(), qkv.dims());
        }
    }
    // Head sizes with a compiled fast kernel (16-byte loads, rows in flight); others take the
    // generic one.
    let fast = matches!(d, 16 | 32 | 64 | 128);
    let name = if fast { format!("decode_attention_d{d}_{}", suffix(qkv.dtype())?) } else { format!("decode_attention_{}", suffix(qkv.dtype())?) };
    let out = output::<T>(l, &dev, qkv.dtype(), &[b, h])?;
    let (threads, smem) = if fast {
        (256u32, fast_attention_smem::<T>(d, cap))
    } else {
        ((if d <= 128 { 128 } else { d.next_multiple_of(32).min(1024) }) as u32, (cap + d) * 4)
    };
    let cfg = LaunchConfig { grid_dim: (heads as u32, b as u32, 1), block_dim: (threads, 1, 1), shared_mem_bytes: smem as u32 };
    let mut args = vec![
        ptr::<T>(qkv, "qkv")?,
        opt_ptr::<T>(qkv_bias, "qkv_bias")?,
        ptr::<T>(k_cache, "k_cache")?,
        ptr::<T>(v_cache, "v_cache")?,
        ptr::<u32>(slot, "slot")?,
        ptr::<f32>(pad_bias, "pad_bias")?,
        ptr::<T>(&out, "out")?,
        Arg::I32(heads as i32),
    ];
    if !fast {
        args.push(Arg::I32(d as i32));
    }
    args.push(Arg::I32(cap as i32));
    // SAFETY: shapes checked above; the kernel stays inside them.
    unsafe { launch(l, &dev, &name, cfg, &args)? };
    Ok(out)
}

/// Per-head RMSNorms of q and k before the rotary (Qwen3): weights [d] and epsilon.
#[derive(Clone, Copy)]
pub struct QkNorm<'a> {
    pub q_weight: &'a Tensor,
    pub k_weight: &'a Tensor,
    pub eps: f64,
}

/// What the rotary kernels need besides the projection: the query heads, the rotary positions
/// (u32, one per token), the inverse frequencies (f32 [d / 2], scaling applied) and Qwen3's q/k
/// norms.
#[derive(Clone, Copy)]
pub struct RotaryHeads<'a> {
    pub heads: usize,
    pub positions: &'a Tensor,
    pub inv_freq: &'a Tensor,
    pub qk_norm: Option<QkNorm<'a>>,
}

/// Largest dynamic shared memory the decode attention kernels are launched with (the default
/// limit without an opt-in).
const ATTENTION_SMEM: usize = 48 * 1024;

/// The rotary families' decode attention (`decode_attention_rope_d*` in decode.cu): `qkv`
/// [b, (heads + 2 kv_heads) * d] (bias added, q's softmax scale folded in), `k_cache`/`v_cache`
/// [b, kv_heads, cap, d]: this token's k (normed, rotated) and v are written at `slot` (u32 [1])
/// and positions 0..=slot attended with `pad_bias` [b, cap] f32. `positions` u32 [b]: the
/// rotary positions; `inv_freq` f32 [d / 2] (scaling applied). Returns [b, heads * d], or
/// `Ok(None)` where no kernel is compiled for the head size or the scores of the cache do not fit
/// in shared memory (the caller runs candle's ops).
#[allow(clippy::too_many_arguments)]
pub fn decode_attention_rope(
    l: &Launch,
    qkv: &Tensor,
    k_cache: &Tensor,
    v_cache: &Tensor,
    slot: &Tensor,
    pad_bias: &Tensor,
    rot: RotaryHeads<'_>,
) -> Result<Option<Tensor>> {
    by_dtype!(qkv.dtype(), decode_attention_rope_t, l, qkv, k_cache, v_cache, slot, pad_bias, rot)
}

/// Whether [`decode_attention_rope`] runs for head size `d`, a cache of `cap` positions and
/// `dtype` (else it returns `Ok(None)`).
pub fn decode_attention_rope_fits(dtype: DType, d: usize, cap: usize) -> bool {
    let smem = match dtype {
        DType::F32 => fast_attention_smem::<f32>(d, cap),
        DType::F16 | DType::BF16 => fast_attention_smem::<f16>(d, cap),
        _ => return false,
    };
    matches!(d, 16 | 32 | 64 | 128) && smem <= ATTENTION_SMEM
}

/// Dynamic shared memory of `decode_attention_d*` / `decode_attention_rope_d*` for head size `d`.
fn fast_attention_smem<T>(d: usize, cap: usize) -> usize {
    let per = 16 / std::mem::size_of::<T>();
    let groups = 256 / (d / per);
    (d + groups * d + cap + 2 * d) * 4
}

#[allow(clippy::too_many_arguments)]
fn decode_attention_rope_t<T: CudaDType + DeviceRepr>(
    l: &Launch,
    qkv: &Tensor,
    k_cache: &Tensor,
    v_cache: &Tensor,
    slot: &Tensor,
    pad_bias: &Tensor,
    rot: RotaryHeads<'_>,
) -> Result<Option<Tensor>> {
    let heads = rot.heads;
    let dev = cuda_dev(qkv)?;
    let (b, width) = qkv.dims2()?;
    let (cb, kv_heads, cap, d) = k_cache.dims4()?;
    if cb != b || kv_heads == 0 || heads % kv_heads != 0 || width != (heads + 2 * kv_heads) * d || v_cache.dims() != k_cache.dims() || pad_bias.dims() != [b, cap] {
        bail!(
            "decode_attention_rope: shapes qkv {:?}, cache {:?}/{:?}, pad_bias {:?} do not fit {heads} heads",
            qkv.dims(),
            k_cache.dims(),
            v_cache.dims(),
            pad_bias.dims()
        );
    }
    if slot.dtype() != DType::U32 || pad_bias.dtype() != DType::F32 {
        bail!("decode_attention_rope: slot must be u32 and pad_bias f32");
    }
    check_rotary("decode_attention_rope", &rot, b, d, qkv.dtype())?;
    if !decode_attention_rope_fits(qkv.dtype(), d, cap) {
        return Ok(None);
    }
    let (out, cfg) = rotary_attention_out::<T>(l, &dev, qkv.dtype(), b, heads, d, cap)?;
    let mut args = vec![ptr::<T>(qkv, "qkv")?, ptr::<T>(k_cache, "k_cache")?, ptr::<T>(v_cache, "v_cache")?, ptr::<u32>(slot, "slot")?, ptr::<f32>(pad_bias, "pad_bias")?];
    args.extend(rotary_args::<T>(&rot)?);
    args.extend([ptr::<T>(&out, "out")?, Arg::I32(heads as i32), Arg::I32(kv_heads as i32), Arg::I32(cap as i32)]);
    let name = format!("decode_attention_rope_d{d}_{}", suffix(qkv.dtype())?);
    // SAFETY: shapes and dtypes checked above; the kernel stays inside them.
    unsafe { launch(l, &dev, &name, cfg, &args)? };
    Ok(Some(out))
}

/// What both rotary decode attention kernels take of `rot`: positions u32 [b], `inv_freq` f32
/// [d / 2], Qwen3's q/k norm weights [d] in the model's dtype.
fn check_rotary(what: &str, rot: &RotaryHeads<'_>, b: usize, d: usize, dtype: DType) -> Result<()> {
    if rot.positions.dtype() != DType::U32 || rot.positions.elem_count() != b {
        bail!("{what}: positions must be u32 [{b}], got {:?} {:?}", rot.positions.dtype(), rot.positions.dims());
    }
    if rot.inv_freq.dtype() != DType::F32 || rot.inv_freq.elem_count() != d / 2 {
        bail!("{what}: inv_freq must be f32 [{}], got {:?} {:?}", d / 2, rot.inv_freq.dtype(), rot.inv_freq.dims());
    }
    if let Some(n) = &rot.qk_norm {
        for w in [n.q_weight, n.k_weight] {
            if w.dims() != [d] || w.dtype() != dtype {
                bail!("{what}: q/k norm weight {:?} {:?} does not fit head size {d}", w.dims(), w.dtype());
            }
        }
    }
    Ok(())
}

/// The rotary arguments of both kernels, in their order: positions, inv_freq, q norm, k norm, eps.
fn rotary_args<T: CudaDType + DeviceRepr>(rot: &RotaryHeads<'_>) -> Result<[Arg; 5]> {
    let qk_norm = rot.qk_norm;
    Ok([
        ptr::<u32>(rot.positions, "positions")?,
        ptr::<f32>(rot.inv_freq, "inv_freq")?,
        opt_ptr::<T>(qk_norm.map(|n| n.q_weight), "q norm")?,
        opt_ptr::<T>(qk_norm.map(|n| n.k_weight), "k norm")?,
        Arg::F32(qk_norm.map_or(0.0, |n| n.eps as f32)),
    ])
}

/// The output [b, heads * d] and the launch shape (a block per head and sequence, the scores of
/// `cap` positions in shared memory) of both kernels.
fn rotary_attention_out<T: CudaDType + DeviceRepr>(l: &Launch, dev: &CudaDevice, dtype: DType, b: usize, heads: usize, d: usize, cap: usize) -> Result<(Tensor, LaunchConfig)> {
    let smem = fast_attention_smem::<T>(d, cap);
    let out = output::<T>(l, dev, dtype, &[b, heads * d])?;
    Ok((out, LaunchConfig { grid_dim: (heads as u32, b as u32, 1), block_dim: (256, 1, 1), shared_mem_bytes: smem as u32 }))
}

/// The server's paged KV cache as [`decode_attention_rope_paged`] reads it: per sequence of the
/// step its length before this token (`lens` u32 [b]: the token's k/v go to that position) and
/// its block table (`block_tables` u32 [b, max_blocks], unused entries anything), pool rows
/// `block * block_size + offset`; `cap` ≥ the longest length + 1 (the scores' shared memory).
#[derive(Clone, Copy)]
pub struct PagedBlocks<'a> {
    pub lens: &'a Tensor,
    pub block_tables: &'a Tensor,
    pub block_size: usize,
    pub cap: usize,
}

/// [`decode_attention_rope`] over the server's paged KV pool (`decode_attention_rope_paged_d*`):
/// `k_pool`/`v_pool` [num_blocks * block_size, kv_heads * d] of one layer, read in place through
/// the block tables (no gathered copy), this token's k and v written at its slot. Ragged lengths
/// need no padding: each sequence attends over its own `lens[i] + 1` positions. `Ok(None)` where
/// no kernel applies (head size, the longest sequence's scores past shared memory).
pub fn decode_attention_rope_paged(l: &Launch, qkv: &Tensor, k_pool: &Tensor, v_pool: &Tensor, paged: PagedBlocks<'_>, rot: RotaryHeads<'_>) -> Result<Option<Tensor>> {
    by_dtype!(qkv.dtype(), decode_attention_rope_paged_t, l, qkv, k_pool, v_pool, paged, rot)
}

fn decode_attention_rope_paged_t<T: CudaDType + DeviceRepr>(
    l: &Launch,
    qkv: &Tensor,
    k_pool: &Tensor,
    v_pool: &Tensor,
    paged: PagedBlocks<'_>,
    rot: RotaryHeads<'_>,
) -> Result<Option<Tensor>> {
    let heads = rot.heads;
    let PagedBlocks { lens, block_tables, block_size, cap } = paged;
    let dev = cuda_dev(qkv)?;
    let (b, width) = qkv.dims2()?;
    let (rows, kv_width) = k_pool.dims2()?;
    let (tb, max_blocks) = block_tables.dims2()?;
    // width = (heads + 2 kv_heads) d and kv_width = kv_heads d.
    let d = if heads == 0 { 0 } else { width.saturating_sub(2 * kv_width) / heads };
    let kv_heads = if d == 0 { 0 } else { kv_width / d };
    if d == 0 || kv_heads == 0 || heads % kv_heads != 0 || width != (heads + 2 * kv_heads) * d || kv_width != kv_heads * d || v_pool.dims() != k_pool.dims() {
        bail!("decode_attention_rope_paged: qkv {:?} and pools {:?}/{:?} do not fit {heads} heads", qkv.dims(), k_pool.dims(), v_pool.dims());
    }
    if block_size == 0 || rows % block_size != 0 || tb != b || lens.elem_count() != b {
        bail!("decode_attention_rope_paged: {b} rows with block tables {:?}, lens {:?}, block size {block_size}", block_tables.dims(), lens.dims());
    }
    if lens.dtype() != DType::U32 || block_tables.dtype() != DType::U32 {
        bail!("decode_attention_rope_paged: lens and block tables must be u32");
    }
    if cap > max_blocks * block_size {
        bail!("decode_attention_rope_paged: cap {cap} past the block tables' {max_blocks} blocks of {block_size}");
    }
    check_rotary("decode_attention_rope_paged", &rot, b, d, qkv.dtype())?;
    if !decode_attention_rope_fits(qkv.dtype(), d, cap) {
        return Ok(None);
    }
    let (out, cfg) = rotary_attention_out::<T>(l, &dev, qkv.dtype(), b, heads, d, cap)?;
    let mut args = vec![ptr::<T>(qkv, "qkv")?, ptr::<T>(k_pool, "k_pool")?, ptr::<T>(v_pool, "v_pool")?, ptr::<u32>(lens, "lens")?, ptr::<u32>(block_tables, "block_tables")?];
    args.extend(rotary_args::<T>(&rot)?);
    args.extend([ptr::<T>(&out, "out")?, Arg::I32(heads as i32), Arg::I32(kv_heads as i32), Arg::I32(cap as i32), Arg::I32(max_blocks as i32), Arg::I32(block_size as i32)]);
    let name = format!("decode_attention_rope_paged_d{d}_{}", suffix(qkv.dtype())?);
    // SAFETY: shapes and dtypes checked above; the caller guarantees every table entry below
    // lens[i] / block_size + 1 names a block of the pool and lens[i] < cap.
    unsafe { launch(l, &dev, &name, cfg, &args)? };
    Ok(Some(out))
}

/// The rotary families' prefill head split (`rotary_split_*` in decode.cu): from `qkv`
/// [b, t, (heads + 2 kv_heads) * d] (bias added), q and k through the per-head norms (`qk_norm`)
/// and the rotary at `positions` [b, t] u32 with `inv_freq` f32 [d / 2]; k and v written into
/// `k_dst`/`v_dst` [b, kv_heads, cap, d] at rows `offset..offset + t`. Returns q [b, heads, t, d],
/// or `Ok(None)` where the kernel does not apply (layouts, head size over 256).
pub fn rotary_split(l: &Launch, qkv: &Tensor, rot: RotaryHeads<'_>, k_dst: &Tensor, v_dst: &Tensor, offset: usize) -> Result<Option<Tensor>> {
    by_dtype!(qkv.dtype(), rotary_split_t, l, qkv, rot, k_dst, v_dst, offset)
}

fn rotary_split_t<T: CudaDType + DeviceRepr>(l: &Launch, qkv: &Tensor, rot: RotaryHeads<'_>, k_dst: &Tensor, v_dst: &Tensor, offset: usize) -> Result<Option<Tensor>> {
    let RotaryHeads { heads, positions, inv_freq, qk_norm } = rot;
    let dev = cuda_dev(qkv)?;
    let (b, t, width) = qkv.dims3()?;
    let (kb, kv_heads, cap, d) = k_dst.dims4()?;
    if kb != b || kv_heads == 0 || heads % kv_heads != 0 || width != (heads + 2 * kv_heads) * d || v_dst.dims() != k_dst.dims() {
        bail!("rotary_split: qkv {:?} and cache {:?}/{:?} do not fit {heads} heads", qkv.dims(), k_dst.dims(), v_dst.dims());
    }
    if offset + t > cap {
        bail!("rotary_split: rows {offset}..{} past the cache's {cap}", offset + t);
    }
    let contiguous = [qkv, positions, inv_freq, k_dst, v_dst].iter().all(|x| x.is_contiguous());
    let norm_fits = qk_norm.is_none_or(|n| [n.q_weight, n.k_weight].iter().all(|w| w.dims() == [d] && w.dtype() == qkv.dtype() && w.is_contiguous()));
    if !contiguous
        || !norm_fits
        || d > 256
        || d % 2 != 0
        || positions.dims() != [b, t]
        || positions.dtype() != DType::U32
        || inv_freq.dtype() != DType::F32
        || inv_freq.elem_count() != d / 2
        || k_dst.dtype() != qkv.dtype()
    {
        return Ok(None);
    }
    let q = output::<T>(l, &dev, qkv.dtype(), &[b, heads, t, d])?;
    const WARPS: usize = 4;
    let cfg = LaunchConfig { grid_dim: (t as u32, b as u32, 1), block_dim: (32 * WARPS as u32, 1, 1), shared_mem_bytes: (WARPS * d * 4) as u32 };
    let args = [
        ptr::<T>(qkv, "qkv")?,
        ptr::<u32>(positions, "positions")?,
        ptr::<f32>(inv_freq, "inv_freq")?,
        opt_ptr::<T>(qk_norm.map(|n| n.q_weight), "q norm")?,
        opt_ptr::<T>(qk_norm.map(|n| n.k_weight), "k norm")?,
        Arg::F32(qk_norm.map_or(0.0, |n| n.eps as f32)),
        ptr::<T>(&q, "q")?,
        ptr::<T>(k_dst, "k")?,
        ptr::<T>(v_dst, "v")?,
        Arg::I32(heads as i32),
        Arg::I32(kv_heads as i32),
        Arg::I32(d as i32),
        Arg::I32(t as i32),
        Arg::I32(cap as i32),
        Arg::I32(offset as i32),
    ];
    // SAFETY: shapes, dtypes and contiguity checked above; the kernel stays inside them.
    unsafe { launch(l, &dev, &format!("rotary_split_{}", suffix(qkv.dtype())?), cfg, &args)? };
    Ok(Some(q))
}

/// Whether [`prefill_attention`] runs: the job's `fused_prefill_attention` option; off, the model
/// takes the unfused candle path (head-split copies, two batched cuBLAS matmuls,
/// [`masked_softmax_in_place`]).
pub fn prefill_attention_enabled(l: &Launch) -> bool {
    l.kernels().fused_prefill_attention
}

/// Attention of a whole prompt in one kernel (`prefill_attention_mma_d64` on tensor cores for
/// f16/bf16, else `prefill_attention_d*`, in decode.cu): `qkv`
/// [b, t, 3h] (q pre-scaled, bias added), `bias` [b, 1, t, t] f32, the prefill's causal ⊕
/// key-padding bias (`PrefillInputs::bias`; the kernel relies on that structure); `cache`: the
/// layer's empty key and value tensors [b, heads, cap, d] (cap ≥ t), into whose rows 0..t this
/// prompt's keys and values are written. Returns [b, t, h], heads merged. `Ok(None)` where the
/// kernel does not apply (head size other than 32 or 64, or layouts it does not take): the
/// caller runs the unfused path.
pub fn prefill_attention(l: &Launch, qkv: &Tensor, bias: &Tensor, cache: Option<(&Tensor, &Tensor)>, heads: usize) -> Result<Option<Tensor>> {
    by_dtype!(qkv.dtype(), prefill_attention_t, l, qkv, bias, cache, heads)
}

fn prefill_attention_t<T: CudaDType + DeviceRepr>(l: &Launch, qkv: &Tensor, bias: &Tensor, cache: Option<(&Tensor, &Tensor)>, heads: usize) -> Result<Option<Tensor>> {
    let dev = cuda_dev(qkv)?;
    let (b, t, three_h) = qkv.dims3()?;
    let h = three_h / 3;
    if heads == 0 || h % heads != 0 || three_h != 3 * h || t == 0 {
        return Ok(None);
    }
    let d = h / heads;
    if !matches!(d, 32 | 64) || !qkv.is_contiguous() || !bias.is_contiguous() || bias.dims() != [b, 1, t, t] || bias.dtype() != DType::F32 {
        return Ok(None);
    }
    let q = ptr::<T>(qkv, "qkv")?;
    if matches!(q, Arg::Ptr(p) if p % 16 != 0) {
        return Ok(None);
    }
    let (kc, vc, cap) = match cache {
        Some((k, v)) => {
            let (cb, ch, cap, cd) = k.dims4()?;
            if (cb, ch, cd) != (b, heads, d) || v.dims() != k.dims() || k.dtype() != qkv.dtype() || v.dtype() != qkv.dtype() {
                bail!("prefill_attention: cache {:?}/{:?} does not fit qkv {:?} with {heads} heads", k.dims(), v.dims(), qkv.dims());
            }
            if cap < t {
                bail!("prefill_attention: the cache holds {cap} positions, the prompt has {t}");
            }
            let (kp, vp) = (ptr::<T>(k, "k_cache")?, ptr::<T>(v, "v_cache")?);
            if matches!(kp, Arg::Ptr(p) if p % 16 != 0) || matches!(vp, Arg::Ptr(p) if p % 16 != 0) {
                return Ok(None);
            }
            (kp, vp, cap)
        }
        None => (Arg::Ptr(0), Arg::Ptr(0), t),
    };
    let out = output::<T>(l, &dev, qkv.dtype(), &[b, t, h])?;
    // f16/bf16 with 64-wide heads: the tensor-core kernel (4 warps, 16 queries each); else the
    // CUDA-core one (one query per thread). Both take 64 queries per block.
    const QUERIES_PER_BLOCK: u32 = 64;
    let sfx = suffix(qkv.dtype())?;
    let (name, threads) = if d == 64 && qkv.dtype() != DType::F32 {
        (format!("prefill_attention_mma_d64_{sfx}"), 128)
    } else {
        (format!("prefill_attention_d{d}_{sfx}"), QUERIES_PER_BLOCK)
    };
    let cfg = LaunchConfig {
        grid_dim: (heads as u32, b as u32, (t as u32).div_ceil(QUERIES_PER_BLOCK)),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    };
    let args = [q, ptr::<f32>(bias, "bias")?, kc, vc, ptr::<T>(&out, "out")?, Arg::I32(heads as i32), Arg::I32(t as i32), Arg::I32(cap as i32)];
    // SAFETY: shapes, dtypes and 16-byte alignment checked above (rows of d = 32 or 64 values
    // keep every 16-byte access aligned); the kernel stays inside them.
    unsafe { launch(l, &dev, &name, cfg, &args)? };
    Ok(Some(out))
}


/// The rotary families' prompt attention in one tensor-core kernel
/// (`prefill_attention_gqa_mma_d{64,128}` in decode.cu): `q` [b, heads, t, d] from
/// [`rotary_split`] (rotary applied, softmax scale folded in), `k_cache`/`v_cache`
/// [b, kv_heads, cap, d] holding this prompt's keys and values at rows 0..t (an empty cache
/// before this pass: the kernel attends only to the prompt itself), `bias` [b, 1, t, t] f32,
/// the prefill's causal ⊕ key-padding bias (`PrefillInputs::bias`). Query head h reads key/value
/// head h / (heads / kv_heads). Returns [b, t, heads * d], heads merged. `Ok(None)` where it does
/// not apply (f32, head size other than 64 or 128, layouts): the caller runs candle's matmuls.
pub fn prefill_attention_gqa(l: &Launch, q: &Tensor, k_cache: &Tensor, v_cache: &Tensor, bias: &Tensor) -> Result<Option<Tensor>> {
    match q.dtype() {
        DType::F16 => prefill_attention_gqa_t::<f16>(l, q, k_cache, v_cache, bias),
        DType::BF16 => prefill_attention_gqa_t::<bf16>(l, q, k_cache, v_cache, bias),
        _ => Ok(None),
    }
}

fn prefill_attention_gqa_t<T: CudaDType + DeviceRepr>(l: &Launch, q: &Tensor, k_cache: &Tensor, v_cache: &Tensor, bias: &Tensor) -> Result<Option<Tensor>> {
    let dev = cuda_dev(q)?;
    let (b, heads, t, d) = q.dims4()?;
    let (kb, kv_heads, cap, kd) = k_cache.dims4()?;
    if kb != b || kd != d || kv_heads == 0 || heads % kv_heads != 0 || v_cache.dims() != k_cache.dims() || cap < t || t == 0 {
        bail!("prefill_attention_gqa: q {:?} and cache {:?}/{:?} do not fit together", q.dims(), k_cache.dims(), v_cache.dims());
    }
    let fits = matches!(d, 64 | 128)
        && [q, k_cache, v_cache, bias].iter().all(|x| x.is_contiguous())
        && k_cache.dtype() == q.dtype()
        && v_cache.dtype() == q.dtype()
        && bias.dims() == [b, 1, t, t]
        && bias.dtype() == DType::F32;
    if !fits {
        return Ok(None);
    }
    let args = [ptr::<T>(q, "q")?, ptr::<f32>(bias, "bias")?, ptr::<T>(k_cache, "k_cache")?, ptr::<T>(v_cache, "v_cache")?];
    if args.iter().any(|a| matches!(a, Arg::Ptr(p) if p % 16 != 0)) {
        return Ok(None);
    }
    let out = output::<T>(l, &dev, q.dtype(), &[b, t, heads * d])?;
    const QUERIES_PER_BLOCK: u32 = 64;
    let cfg = LaunchConfig { grid_dim: (heads as u32, b as u32, (t as u32).div_ceil(QUERIES_PER_BLOCK)), block_dim: (128, 1, 1), shared_mem_bytes: 0 };
    let [qa, ba, ka, va] = args;
    let args = [qa, ba, ka, va, ptr::<T>(&out, "out")?, Arg::I32(heads as i32), Arg::I32(kv_heads as i32), Arg::I32(t as i32), Arg::I32(cap as i32)];
    // SAFETY: shapes, dtypes, contiguity and 16-byte alignment checked above (rows of 64 or 128
    // values keep every 16-byte access aligned); the kernel reads rows 0..t of the cache only.
    unsafe { launch(l, &dev, &format!("prefill_attention_gqa_mma_d{d}_{}", suffix(q.dtype())?), cfg, &args)? };
    Ok(Some(out))
}
