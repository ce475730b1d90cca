//! Elementwise and per-row kernels: bias epilogues, embedding, layer norm, argmax, masked
//! softmax, and the end of a decode step.

use super::*;
use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, LaunchConfig};
use candle_core::cuda_backend::CudaDType;
use candle_core::{bail, DType, Result, Tensor};
use half::{bf16, f16};

/// Activation applied by [`bias_act`].
#[derive(Debug, Clone, Copy)]
pub enum Act {
    None = 0,
    Relu = 1,
    GeluTanh = 2,
    GeluErf = 3,
}

/// `y = act(y + bias)` in place; `y` [rows, n], `bias` [n].
pub fn bias_act(l: &Launch, y: &Tensor, bias: &Tensor, act: Act) -> Result<()> {
    by_dtype!(y.dtype(), bias_act_t, l, y, bias, act)
}

fn bias_act_t<T: CudaDType + DeviceRepr>(l: &Launch, y: &Tensor, bias: &Tensor, act: Act) -> Result<()> {
    let dev = cuda_dev(y)?;
    let (rows, cols) = y.dims2()?;
    if bias.dims() != [cols] || bias.dtype() != y.dtype() {
        bail!("bias_act: bias {:?} does not fit {:?}", bias.dims(), y.dims());
    }
    let args = [ptr::<T>(y, "y")?, ptr::<T>(bias, "bias")?, Arg::I32(rows as i32), Arg::I32(cols as i32), Arg::I32(act as i32)];
    // SAFETY: rows * cols elements of y, cols of bias.
    unsafe { launch(l, &dev, &format!("bias_act_{}", suffix(y.dtype())?), grid_1d(rows * cols), &args) }
}

/// `y = (y + bias) + res` in place; `y`, `res` [rows, n], `bias` [n] or none.
pub fn bias_residual(l: &Launch, y: &Tensor, bias: Option<&Tensor>, res: &Tensor) -> Result<()> {
    by_dtype!(y.dtype(), bias_residual_t, l, y, bias, res)
}

fn bias_residual_t<T: CudaDType + DeviceRepr>(l: &Launch, y: &Tensor, bias: Option<&Tensor>, res: &Tensor) -> Result<()> {
    let dev = cuda_dev(y)?;
    let (rows, cols) = y.dims2()?;
    if res.dims() != y.dims() || res.dtype() != y.dtype() {
        bail!("bias_residual: residual {:?} does not fit {:?}", res.dims(), y.dims());
    }
    if let Some(b) = bias {
        if b.dims() != [cols] || b.dtype() != y.dtype() {
            bail!("bias_residual: bias {:?} does not fit {:?}", b.dims(), y.dims());
        }
    }
    let args = [ptr::<T>(y, "y")?, opt_ptr::<T>(bias, "bias")?, ptr::<T>(res, "residual")?, Arg::I32(rows as i32), Arg::I32(cols as i32)];
    // SAFETY: shapes checked above.
    unsafe { launch(l, &dev, &format!("bias_residual_{}", suffix(y.dtype())?), grid_1d(rows * cols), &args) }
}

/// `tok[ids] + pos[positions]`: ids, positions u32 [b]; tables [rows, h] (`pos` None: no learned
/// positions, `tok[ids]` alone). Returns [b, h].
pub fn embed(l: &Launch, ids: &Tensor, positions: &Tensor, tok: &Tensor, pos: Option<&Tensor>) -> Result<Tensor> {
    by_dtype!(tok.dtype(), embed_t, l, ids, positions, tok, pos)
}

fn embed_t<T: CudaDType + DeviceRepr>(l: &Launch, ids: &Tensor, positions: &Tensor, tok: &Tensor, pos: Option<&Tensor>) -> Result<Tensor> {
    let dev = cuda_dev(tok)?;
    let b = ids.elem_count();
    let (_, h) = tok.dims2()?;
    if positions.elem_count() != b || pos.is_some_and(|p| p.dim(1).ok() != Some(h)) || ids.dtype() != DType::U32 || positions.dtype() != DType::U32 {
        bail!("embed: ids {:?}, positions {:?}, tables {:?}/{:?} do not fit", ids.dims(), positions.dims(), tok.dims(), pos.map(Tensor::dims));
    }
    let out = output::<T>(l, &dev, tok.dtype(), &[b, h])?;
    let args = [
        ptr::<u32>(ids, "ids")?,
        ptr::<u32>(positions, "positions")?,
        ptr::<T>(tok, "token table")?,
        opt_ptr::<T>(pos, "position table")?,
        ptr::<T>(&out, "out")?,
        Arg::I32(h as i32),
    ];
    let cfg = LaunchConfig { grid_dim: (b as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
    // SAFETY: ids are checked against the vocabulary before they reach the device
    // (Model::check_ids) and the model's own argmax only yields valid rows.
    unsafe { launch(l, &dev, &format!("embed_{}", suffix(tok.dtype())?), cfg, &args)? };
    Ok(out)
}

/// Where a decode step's chosen ids come from.
pub enum NextIds<'a> {
    /// u32 [b] ids (from [`argmax_rows`]).
    Ids(&'a Tensor),
    /// i64 [b] argmax keys (see [`Epilogue::ArgmaxKeys`]), zeroed for the next step.
    ArgmaxKeys(&'a Tensor),
}

/// Page-locked host memory the step's chosen ids are also written to: `ptr` (a device address
/// of it) is `[b, cols]` u32, the id chosen after position p of sequence s at `s * cols + p`.
/// Made only inside the crate (`FastDecoder` owns the memory and keeps it alive while any step
/// that writes it may run).
#[derive(Debug, Clone, Copy)]
pub struct HostIds {
    pub(crate) ptr: u64,
    pub(crate) cols: usize,
}

/// End of a decode step: `ids = next`, `positions += 1`, `slot += 1` (all u32 on the device),
/// and the ids into `host` where given.
pub fn advance_step(l: &Launch, next: NextIds<'_>, ids: &Tensor, positions: &Tensor, slot: &Tensor, host: Option<HostIds>) -> Result<()> {
    let dev = cuda_dev(ids)?;
    let b = ids.elem_count();
    let (kernel, next_arg, next) = match next {
        NextIds::Ids(t) if t.dtype() == DType::U32 => ("advance_step", ptr::<u32>(t, "next")?, t),
        NextIds::ArgmaxKeys(t) if t.dtype() == DType::I64 => ("advance_step_keys", ptr::<i64>(t, "argmax keys")?, t),
        NextIds::Ids(t) | NextIds::ArgmaxKeys(t) => bail!("advance_step: next ids of dtype {:?}", t.dtype()),
    };
    if next.elem_count() != b || positions.elem_count() != b || slot.elem_count() != 1 {
        bail!("advance_step: next {:?}, ids {:?}, positions {:?}, slot {:?}", next.dims(), ids.dims(), positions.dims(), slot.dims());
    }
    for (t, what) in [(ids, "ids"), (positions, "positions"), (slot, "slot")] {
        if t.dtype() != DType::U32 {
            bail!("advance_step: {what} must be u32");
        }
    }
    let (host_ptr, host_cols) = host.map_or((0, 0), |h| (h.ptr, h.cols));
    let args = [
        next_arg,
        ptr::<u32>(ids, "ids")?,
        ptr::<u32>(positions, "positions")?,
        ptr::<u32>(slot, "slot")?,
        Arg::I32(b as i32),
        Arg::Ptr(host_ptr),
        Arg::I32(host_cols as i32),
    ];
    let cfg = LaunchConfig { grid_dim: (b.div_ceil(128) as u32, 1, 1), block_dim: (128, 1, 1), shared_mem_bytes: 0 };
    // SAFETY: b elements each, slot one; `host`, where given, holds b * cols u32 (HostIds is
    // made only by FastDecoder, from its own allocation).
    unsafe { launch(l, &dev, kernel, cfg, &args) }
}

/// Widest row [`layer_norm`] and the GEMV's fused norm take. (The kernel keeps rows of up to 256
/// 16-byte chunks in registers, 2048 values in f16/bf16, and re-reads wider ones from memory.)
pub const MAX_ROW: usize = 4096;
/// Longest row [`masked_softmax_in_place`] takes (one warp × 32 values in registers).
pub const MAX_SOFTMAX_ROW: usize = 1024;

/// Layer norm over the last dim of contiguous `x` (≤ [`MAX_ROW`] wide) with weight and bias.
pub fn layer_norm(l: &Launch, x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    by_dtype!(x.dtype(), layer_norm_t, l, x, w, b, eps)
}

fn layer_norm_t<T: CudaDType + DeviceRepr>(l: &Launch, x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    let dev = cuda_dev(x)?;
    let cols = x.dim(candle_core::D::Minus1)?;
    let rows = x.elem_count() / cols.max(1);
    if cols > MAX_ROW || w.dims() != [cols] || b.dims() != [cols] || w.dtype() != x.dtype() || b.dtype() != x.dtype() {
        bail!("layer_norm: x {:?}, weight {:?}, bias {:?} do not fit (rows up to {MAX_ROW} wide)", x.dims(), w.dims(), b.dims());
    }
    let out = output::<T>(l, &dev, x.dtype(), x.dims())?;
    let args = [ptr::<T>(x, "x")?, ptr::<T>(w, "weight")?, ptr::<T>(b, "bias")?, ptr::<T>(&out, "out")?, Arg::I32(cols as i32), Arg::F32(eps as f32)];
    let cfg = LaunchConfig { grid_dim: (rows as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
    // SAFETY: rows × cols elements, checked above.
    unsafe { launch(l, &dev, &format!("layer_norm_{}", suffix(x.dtype())?), cfg, &args)? };
    Ok(out)
}

/// Index of the largest value of each row of `x` [rows, cols] (the smallest index among
/// equals), u32 [rows].
pub fn argmax_rows(l: &Launch, x: &Tensor) -> Result<Tensor> {
    by_dtype!(x.dtype(), argmax_rows_t, l, x)
}

fn argmax_rows_t<T: CudaDType + DeviceRepr>(l: &Launch, x: &Tensor) -> Result<Tensor> {
    let dev = cuda_dev(x)?;
    let (rows, cols) = x.dims2()?;
    let out = output::<u32>(l, &dev, DType::U32, &[rows])?;
    let args = [ptr::<T>(x, "x")?, ptr::<u32>(&out, "out")?, Arg::I32(cols as i32)];
    let cfg = LaunchConfig { grid_dim: (rows as u32, 1, 1), block_dim: (1024, 1, 1), shared_mem_bytes: 0 };
    // SAFETY: rows × cols elements.
    unsafe { launch(l, &dev, &format!("argmax_rows_{}", suffix(x.dtype())?), cfg, &args)? };
    Ok(out)
}

/// softmax(scores + bias) over the last dim in f32, written over `scores` (which it returns):
/// `scores` [b, heads, t, L] contiguous, `bias` [b, 1, t, L] f32 (contiguous),
/// L ≤ [`MAX_SOFTMAX_ROW`]. In place because at prefill of a large batch the scores are the
/// largest activation; the caller hands over a tensor nothing else reads.
pub fn masked_softmax_in_place(l: &Launch, scores: Tensor, bias: &Tensor) -> Result<Tensor> {
    by_dtype!(scores.dtype(), masked_softmax_t, l, scores, bias)
}

fn masked_softmax_t<T: CudaDType + DeviceRepr>(l: &Launch, scores: Tensor, bias: &Tensor) -> Result<Tensor> {
    let dev = cuda_dev(&scores)?;
    let (b, heads, t, len) = scores.dims4()?;
    if len > MAX_SOFTMAX_ROW || bias.dims() != [b, 1, t, len] || bias.dtype() != DType::F32 || !scores.is_contiguous() {
        bail!("masked_softmax: scores {:?} and bias {:?} do not fit (contiguous, rows up to {MAX_SOFTMAX_ROW})", scores.dims(), bias.dims());
    }
    let rows = b * heads * t;
    let s = ptr::<T>(&scores, "scores")?;
    let args = [s, ptr::<f32>(bias, "bias")?, s, Arg::I32(heads as i32), Arg::I32(t as i32), Arg::I32(len as i32), Arg::I32(rows as i32)];
    // One warp per row, 8 rows per block.
    let cfg = LaunchConfig { grid_dim: (rows.div_ceil(8) as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
    // SAFETY: shapes checked above; each warp reads its whole row before it writes it.
    unsafe { launch(l, &dev, &format!("masked_softmax_{}", suffix(scores.dtype())?), cfg, &args)? };
    Ok(scores)
}

/// SwiGLU of a fused gate|up projection: `gate_up` [.., 2f] -> [.., f] = silu(gate) * up, each
/// rounded to the dtype as transformers rounds `act_fn(gate_proj(x)) * up_proj(x)`. `Ok(None)`
/// where the kernel does not apply (not contiguous, f not a multiple of 16 bytes).
pub fn swiglu(l: &Launch, gate_up: &Tensor) -> Result<Option<Tensor>> {
    by_dtype!(gate_up.dtype(), swiglu_t, l, gate_up)
}

fn swiglu_t<T: CudaDType + DeviceRepr>(l: &Launch, gate_up: &Tensor) -> Result<Option<Tensor>> {
    let dev = cuda_dev(gate_up)?;
    let dims = gate_up.dims();
    let Some((&two_f, lead)) = dims.split_last() else { return Ok(None) };
    let f = two_f / 2;
    let per = 16 / gate_up.dtype().size_in_bytes();
    if two_f % 2 != 0 || f == 0 || f % per != 0 || !gate_up.is_contiguous() {
        return Ok(None);
    }
    let x = ptr::<T>(gate_up, "gate_up")?;
    if matches!(x, Arg::Ptr(p) if p % 16 != 0) {
        return Ok(None);
    }
    let rows: usize = lead.iter().product();
    let mut shape = lead.to_vec();
    shape.push(f);
    let out = output::<T>(l, &dev, gate_up.dtype(), &shape)?;
    let args = [x, ptr::<T>(&out, "out")?, Arg::I32(rows as i32), Arg::I32(f as i32)];
    // SAFETY: contiguous [rows, 2f] in, [rows, f] out, f a multiple of the 16-byte vector.
    unsafe { launch(l, &dev, &format!("swiglu_{}", suffix(gate_up.dtype())?), grid_1d(rows * f / per), &args)? };
    Ok(Some(out))
}
