//! Launchers for the fused decode kernels in `kernels/decode.cu` (PTX built by build.rs).
//!
//! They take candle tensors, check dtype/shape/contiguity, and launch on the device's one
//! stream. `decode_attention`, `bias_act`, `bias_residual` and `advance_step` write into tensors
//! they are given (the KV cache, a fresh matmul output, the step buffers): that is their point,
//! and it is safe here because the engine runs every kernel on a single stream with candle's
//! cross-stream event tracking off (see `device::open`).

use candle_core::cuda_backend::cudarc::driver::{CudaSlice, CudaView, DeviceRepr, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaDType, CudaDevice, CudaStorage, WrapErr};
use candle_core::op::BackpropOp;
use candle_core::{bail, DType, Device, Result, Storage, Tensor};
use half::{bf16, f16};

const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/decode.ptx"));
const MODULE: &str = "tokbench_decode";

fn cuda_dev(t: &Tensor) -> Result<CudaDevice> {
    match t.device() {
        Device::Cuda(d) => Ok(d.clone()),
        other => bail!("tokbench decode kernels run on CUDA only, got a tensor on {other:?}"),
    }
}

fn suffix(dtype: DType) -> Result<&'static str> {
    Ok(match dtype {
        DType::F32 => "f32",
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        other => bail!("tokbench decode kernels: unsupported dtype {other:?}"),
    })
}

/// Runs `f` with a view of `t`'s contiguous data as `T`.
fn with_view<T: CudaDType + DeviceRepr, R>(t: &Tensor, what: &str, f: impl FnOnce(CudaView<'_, T>) -> Result<R>) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cuda(cs) = &*storage else { bail!("{what}: not a CUDA tensor") };
    let Some((a, b)) = layout.contiguous_offsets() else { bail!("{what}: must be contiguous") };
    let slice: &CudaSlice<T> = cs.as_cuda_slice::<T>()?;
    f(slice.slice(a..b))
}

fn wrap<T: CudaDType + DeviceRepr>(slice: CudaSlice<T>, dev: &CudaDevice, shape: &[usize]) -> Tensor {
    Tensor::from_storage(Storage::Cuda(CudaStorage::wrap_cuda_slice(slice, dev.clone())), shape, BackpropOp::none(), false)
}

fn grid_1d(n: usize) -> LaunchConfig {
    let threads = 256u32;
    let blocks = n.div_ceil(threads as usize).clamp(1, 4096) as u32;
    LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: 0 }
}

/// Attention of one new token per sequence. `qkv` [b, 3h] (q pre-scaled, bias not yet added),
/// `qkv_bias` [3h]; `k_cache`/`v_cache` [b, heads, cap, d]: this token's k, v are written at
/// `slot` (u32 [1] on the device) and positions 0..=slot attended with `pad_bias` [b, cap] f32.
/// Returns [b, h], heads merged.
pub fn decode_attention(
    qkv: &Tensor,
    qkv_bias: Option<&Tensor>,
    k_cache: &Tensor,
    v_cache: &Tensor,
    slot: &Tensor,
    pad_bias: &Tensor,
) -> Result<Tensor> {
    let dtype = qkv.dtype();
    match dtype {
        DType::F32 => decode_attention_t::<f32>(qkv, qkv_bias, k_cache, v_cache, slot, pad_bias),
        DType::F16 => decode_attention_t::<f16>(qkv, qkv_bias, k_cache, v_cache, slot, pad_bias),
        DType::BF16 => decode_attention_t::<bf16>(qkv, qkv_bias, k_cache, v_cache, slot, pad_bias),
        other => bail!("decode_attention: unsupported dtype {other:?}"),
    }
}

fn decode_attention_t<T: CudaDType + DeviceRepr>(
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
    let name = if fast {
        format!("decode_attention_d{d}_{}", suffix(qkv.dtype())?)
    } else {
        format!("decode_attention_{}", suffix(qkv.dtype())?)
    };
    let func = dev.get_or_load_custom_func(&name, MODULE, PTX)?;
    // SAFETY: every element is written by the kernel.
    let out = unsafe { dev.alloc::<T>(b * h)? };
    let (threads, smem) = if fast {
        let per = 16 / std::mem::size_of::<T>();
        let groups = 128 / (d / per);
        (128u32, (d + groups * d + cap) * 4)
    } else {
        ((if d <= 128 { 128 } else { d.next_multiple_of(32).min(1024) }) as u32, (cap + d) * 4)
    };
    let cfg = LaunchConfig { grid_dim: (heads as u32, b as u32, 1), block_dim: (threads, 1, 1), shared_mem_bytes: smem as u32 };
    let (heads_i, d_i, cap_i) = (heads as i32, d as i32, cap as i32);
    with_view::<T, _>(qkv, "qkv", |qkv| {
        with_view::<T, _>(k_cache, "k_cache", |kc| {
            with_view::<T, _>(v_cache, "v_cache", |vc| {
                with_view::<u32, _>(slot, "slot", |slot| {
                    with_view::<f32, _>(pad_bias, "pad_bias", |pb| {
                        let launch = |bias: Option<&CudaView<'_, T>>| -> Result<()> {
                            let mut builder = func.builder();
                            builder.arg(&qkv);
                            let null: u64 = 0;
                            match bias {
                                Some(b) => builder.arg(b),
                                None => builder.arg(&null),
                            };
                            builder.arg(&kc).arg(&vc).arg(&slot).arg(&pb).arg(&out);
                            builder.arg(&heads_i);
                            if !fast {
                                builder.arg(&d_i);
                            }
                            builder.arg(&cap_i);
                            // SAFETY: shapes checked above; the kernel stays inside them.
                            unsafe { builder.launch(cfg) }.w()?;
                            Ok(())
                        };
                        match qkv_bias {
                            Some(bias) => with_view::<T, _>(bias, "qkv_bias", |bv| launch(Some(&bv))),
                            None => launch(None),
                        }
                    })
                })
            })
        })
    })?;
    Ok(wrap(out, &dev, &[b, h]))
}

/// Activation applied by [`bias_act`].
#[derive(Debug, Clone, Copy)]
pub enum Act {
    None = 0,
    Relu = 1,
    GeluTanh = 2,
    GeluErf = 3,
}

/// `y = act(y + bias)` in place; `y` [rows, n] contiguous (a fresh matmul output), `bias` [n].
pub fn bias_act(y: &Tensor, bias: &Tensor, act: Act) -> Result<()> {
    match y.dtype() {
        DType::F32 => bias_act_t::<f32>(y, bias, act),
        DType::F16 => bias_act_t::<f16>(y, bias, act),
        DType::BF16 => bias_act_t::<bf16>(y, bias, act),
        other => bail!("bias_act: unsupported dtype {other:?}"),
    }
}

fn bias_act_t<T: CudaDType + DeviceRepr>(y: &Tensor, bias: &Tensor, act: Act) -> Result<()> {
    let dev = cuda_dev(y)?;
    let (rows, cols) = y.dims2()?;
    if bias.dims() != [cols] || bias.dtype() != y.dtype() {
        bail!("bias_act: bias {:?} does not fit {:?}", bias.dims(), y.dims());
    }
    let func = dev.get_or_load_custom_func(&format!("bias_act_{}", suffix(y.dtype())?), MODULE, PTX)?;
    let (r, c, a) = (rows as i32, cols as i32, act as i32);
    with_view::<T, _>(y, "y", |yv| {
        with_view::<T, _>(bias, "bias", |bv| {
            let mut builder = func.builder();
            builder.arg(&yv).arg(&bv).arg(&r).arg(&c).arg(&a);
            // SAFETY: rows * cols elements of y, cols of bias.
            unsafe { builder.launch(grid_1d(rows * cols)) }.w()?;
            Ok(())
        })
    })
}

/// `y = (y + bias) + res` in place; `y`, `res` [rows, n], `bias` [n] or none.
pub fn bias_residual(y: &Tensor, bias: Option<&Tensor>, res: &Tensor) -> Result<()> {
    match y.dtype() {
        DType::F32 => bias_residual_t::<f32>(y, bias, res),
        DType::F16 => bias_residual_t::<f16>(y, bias, res),
        DType::BF16 => bias_residual_t::<bf16>(y, bias, res),
        other => bail!("bias_residual: unsupported dtype {other:?}"),
    }
}

fn bias_residual_t<T: CudaDType + DeviceRepr>(y: &Tensor, bias: Option<&Tensor>, res: &Tensor) -> Result<()> {
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
    let func = dev.get_or_load_custom_func(&format!("bias_residual_{}", suffix(y.dtype())?), MODULE, PTX)?;
    let (r, c) = (rows as i32, cols as i32);
    with_view::<T, _>(y, "y", |yv| {
        with_view::<T, _>(res, "residual", |rv| {
            let launch = |bv: Option<&CudaView<'_, T>>| -> Result<()> {
                let mut builder = func.builder();
                builder.arg(&yv);
                let null: u64 = 0;
                match bv {
                    Some(b) => builder.arg(b),
                    None => builder.arg(&null),
                };
                builder.arg(&rv).arg(&r).arg(&c);
                // SAFETY: shapes checked above.
                unsafe { builder.launch(grid_1d(rows * cols)) }.w()?;
                Ok(())
            };
            match bias {
                Some(b) => with_view::<T, _>(b, "bias", |bv| launch(Some(&bv))),
                None => launch(None),
            }
        })
    })
}

/// `tok[ids] + pos[positions]`: ids, positions u32 [b]; tables [rows, h]. Returns [b, h].
pub fn embed(ids: &Tensor, positions: &Tensor, tok: &Tensor, pos: &Tensor) -> Result<Tensor> {
    match tok.dtype() {
        DType::F32 => embed_t::<f32>(ids, positions, tok, pos),
        DType::F16 => embed_t::<f16>(ids, positions, tok, pos),
        DType::BF16 => embed_t::<bf16>(ids, positions, tok, pos),
        other => bail!("embed: unsupported dtype {other:?}"),
    }
}

fn embed_t<T: CudaDType + DeviceRepr>(ids: &Tensor, positions: &Tensor, tok: &Tensor, pos: &Tensor) -> Result<Tensor> {
    let dev = cuda_dev(tok)?;
    let b = ids.elem_count();
    let (_, h) = tok.dims2()?;
    if positions.elem_count() != b || pos.dim(1)? != h || ids.dtype() != DType::U32 || positions.dtype() != DType::U32 {
        bail!("embed: ids {:?}, positions {:?}, tables {:?}/{:?} do not fit", ids.dims(), positions.dims(), tok.dims(), pos.dims());
    }
    let func = dev.get_or_load_custom_func(&format!("embed_{}", suffix(tok.dtype())?), MODULE, PTX)?;
    // SAFETY: every element written by the kernel.
    let out = unsafe { dev.alloc::<T>(b * h)? };
    let hi = h as i32;
    with_view::<u32, _>(ids, "ids", |iv| {
        with_view::<u32, _>(positions, "positions", |pv| {
            with_view::<T, _>(tok, "token table", |tv| {
                with_view::<T, _>(pos, "position table", |qv| {
                    let mut builder = func.builder();
                    builder.arg(&iv).arg(&pv).arg(&tv).arg(&qv).arg(&out).arg(&hi);
                    let cfg = LaunchConfig { grid_dim: (b as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
                    // SAFETY: ids are checked against the vocabulary before they reach the device
                    // (Model::check_ids) and the model's own argmax only yields valid rows.
                    unsafe { builder.launch(cfg) }.w()?;
                    Ok(())
                })
            })
        })
    })?;
    Ok(wrap(out, &dev, &[b, h]))
}

/// End of a decode step: `ids = next`, `positions += 1`, `slot += 1` (all u32 on the device).
pub fn advance_step(next: &Tensor, ids: &Tensor, positions: &Tensor, slot: &Tensor) -> Result<()> {
    let dev = cuda_dev(ids)?;
    let b = ids.elem_count();
    if next.elem_count() != b || positions.elem_count() != b || slot.elem_count() != 1 {
        bail!("advance_step: next {:?}, ids {:?}, positions {:?}, slot {:?}", next.dims(), ids.dims(), positions.dims(), slot.dims());
    }
    for (t, what) in [(next, "next"), (ids, "ids"), (positions, "positions"), (slot, "slot")] {
        if t.dtype() != DType::U32 {
            bail!("advance_step: {what} must be u32");
        }
    }
    let func = dev.get_or_load_custom_func("advance_step", MODULE, PTX)?;
    let bi = b as i32;
    with_view::<u32, _>(next, "next", |nv| {
        with_view::<u32, _>(ids, "ids", |iv| {
            with_view::<u32, _>(positions, "positions", |pv| {
                with_view::<u32, _>(slot, "slot", |sv| {
                    let mut builder = func.builder();
                    builder.arg(&nv).arg(&iv).arg(&pv).arg(&sv).arg(&bi);
                    let cfg = LaunchConfig { grid_dim: (b.div_ceil(128) as u32, 1, 1), block_dim: (128, 1, 1), shared_mem_bytes: 0 };
                    // SAFETY: b elements each, slot one.
                    unsafe { builder.launch(cfg) }.w()?;
                    Ok(())
                })
            })
        })
    })
}

macro_rules! by_dtype {
    ($dtype:expr, $f:ident, $($arg:expr),*) => {
        match $dtype {
            DType::F32 => $f::<f32>($($arg),*),
            DType::F16 => $f::<f16>($($arg),*),
            DType::BF16 => $f::<bf16>($($arg),*),
            other => bail!("tokbench kernels: unsupported dtype {other:?}"),
        }
    };
}

/// Widest row [`layer_norm`] takes (256 threads × 16 values in registers).
pub const MAX_ROW: usize = 4096;
/// Longest row [`masked_softmax`] takes (one warp × 32 values in registers).
pub const MAX_SOFTMAX_ROW: usize = 1024;

/// Layer norm over the last dim of contiguous `x` (≤ [`MAX_ROW`] wide) with weight and bias.
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    by_dtype!(x.dtype(), layer_norm_t, x, w, b, eps)
}

fn layer_norm_t<T: CudaDType + DeviceRepr>(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    let dev = cuda_dev(x)?;
    let cols = x.dim(candle_core::D::Minus1)?;
    let rows = x.elem_count() / cols.max(1);
    if cols > MAX_ROW || w.dims() != [cols] || b.dims() != [cols] || w.dtype() != x.dtype() || b.dtype() != x.dtype() {
        bail!("layer_norm: x {:?}, weight {:?}, bias {:?} do not fit (rows up to {MAX_ROW} wide)", x.dims(), w.dims(), b.dims());
    }
    let func = dev.get_or_load_custom_func(&format!("layer_norm_{}", suffix(x.dtype())?), MODULE, PTX)?;
    // SAFETY: every element is written by the kernel.
    let out = unsafe { dev.alloc::<T>(rows * cols)? };
    let (c, e) = (cols as i32, eps as f32);
    with_view::<T, _>(x, "x", |xv| {
        with_view::<T, _>(w, "weight", |wv| {
            with_view::<T, _>(b, "bias", |bv| {
                let mut builder = func.builder();
                builder.arg(&xv).arg(&wv).arg(&bv).arg(&out).arg(&c).arg(&e);
                let cfg = LaunchConfig { grid_dim: (rows as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
                // SAFETY: rows × cols elements, checked above.
                unsafe { builder.launch(cfg) }.w()?;
                Ok(())
            })
        })
    })?;
    Ok(wrap(out, &dev, x.dims()))
}

/// Index of the largest value of each row of `x` [rows, cols] (the smallest index among
/// equals), u32 [rows].
pub fn argmax_rows(x: &Tensor) -> Result<Tensor> {
    by_dtype!(x.dtype(), argmax_rows_t, x)
}

fn argmax_rows_t<T: CudaDType + DeviceRepr>(x: &Tensor) -> Result<Tensor> {
    let dev = cuda_dev(x)?;
    let (rows, cols) = x.dims2()?;
    let func = dev.get_or_load_custom_func(&format!("argmax_rows_{}", suffix(x.dtype())?), MODULE, PTX)?;
    // SAFETY: every element is written by the kernel.
    let out = unsafe { dev.alloc::<u32>(rows)? };
    let c = cols as i32;
    with_view::<T, _>(x, "x", |xv| {
        let mut builder = func.builder();
        builder.arg(&xv).arg(&out).arg(&c);
        let cfg = LaunchConfig { grid_dim: (rows as u32, 1, 1), block_dim: (1024, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: rows × cols elements.
        unsafe { builder.launch(cfg) }.w()?;
        Ok(())
    })?;
    Ok(wrap(out, &dev, &[rows]))
}

/// softmax(scores + bias) over the last dim in f32, written as the scores' dtype: `scores`
/// [b, heads, t, L], `bias` [b, 1, t, L] f32 (contiguous), L ≤ [`MAX_SOFTMAX_ROW`].
pub fn masked_softmax(scores: &Tensor, bias: &Tensor) -> Result<Tensor> {
    by_dtype!(scores.dtype(), masked_softmax_t, scores, bias)
}

fn masked_softmax_t<T: CudaDType + DeviceRepr>(scores: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let dev = cuda_dev(scores)?;
    let (b, heads, t, l) = scores.dims4()?;
    if l > MAX_SOFTMAX_ROW || bias.dims() != [b, 1, t, l] || bias.dtype() != DType::F32 {
        bail!("masked_softmax: scores {:?} and bias {:?} do not fit (rows up to {MAX_SOFTMAX_ROW})", scores.dims(), bias.dims());
    }
    let func = dev.get_or_load_custom_func(&format!("masked_softmax_{}", suffix(scores.dtype())?), MODULE, PTX)?;
    let rows = b * heads * t;
    // SAFETY: every element is written by the kernel.
    let out = unsafe { dev.alloc::<T>(rows * l)? };
    let (h, ti, li, ri) = (heads as i32, t as i32, l as i32, rows as i32);
    with_view::<T, _>(scores, "scores", |sv| {
        with_view::<f32, _>(bias, "bias", |bv| {
            let mut builder = func.builder();
            builder.arg(&sv).arg(&bv).arg(&out).arg(&h).arg(&ti).arg(&li).arg(&ri);
            // One warp per row, 8 rows per block.
            let cfg = LaunchConfig { grid_dim: (rows.div_ceil(8) as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
            // SAFETY: shapes checked above.
            unsafe { builder.launch(cfg) }.w()?;
            Ok(())
        })
    })?;
    Ok(wrap(out, &dev, &[b, heads, t, l]))
}

/// Rows up to which [`linear_small_m`] replaces cuBLAS (decode steps).
pub const SMALL_M: usize = 8;

/// Epilogue of [`linear_small_m`].
pub enum Epilogue<'a> {
    /// x @ W^T only.
    None,
    /// act(x @ W^T + bias).
    Act(Act),
    /// (x @ W^T + bias) + residual [m, n].
    Residual(&'a Tensor),
}

/// `x` [m, k] @ `w`^T ([n, k], k contiguous) for m ≤ [`SMALL_M`], bias and epilogue fused, as
/// one pass over the weights (`gemv_small_m` in decode.cu). `Ok(None)` when the shapes or
/// alignment do not suit it (the caller uses cuBLAS then).
pub fn linear_small_m(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, epilogue: Epilogue<'_>) -> Result<Option<Tensor>> {
    by_dtype!(x.dtype(), linear_small_m_t, x, w, bias, epilogue)
}

/// `TOKBENCH_GEMV=1` turns [`linear_small_m`] on. Off by default: on an H200 its first version
/// ran a decode step slower than cuBLAS (opt-1.3b batch 1: 2.29 vs 1.63 ms/step under graph
/// replay; see bench/NOTES.md), so cuBLAS stays the default until the kernel beats it.
fn gemv_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("TOKBENCH_GEMV").is_ok_and(|v| v == "1"))
}

fn linear_small_m_t<T: CudaDType + DeviceRepr>(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, epilogue: Epilogue<'_>) -> Result<Option<Tensor>> {
    if !gemv_enabled() {
        return Ok(None);
    }
    let per = 16 / std::mem::size_of::<T>();
    let (Ok((m, k)), Ok((n, wk))) = (x.dims2(), w.dims2()) else { return Ok(None) };
    let aligned = |t: &Tensor| t.is_contiguous() && t.layout().start_offset() % per == 0;
    if m == 0 || m > SMALL_M || wk != k || k % per != 0 || !aligned(x) || !aligned(w) || w.dtype() != x.dtype() {
        return Ok(None);
    }
    if let Some(b) = bias {
        if b.dims() != [n] || b.dtype() != x.dtype() || !b.is_contiguous() {
            return Ok(None);
        }
    }
    let (mode, act, res) = match epilogue {
        Epilogue::None => (0, 0, None),
        Epilogue::Act(a) => (1, a as i32, None),
        Epilogue::Residual(r) => {
            if r.dims() != [m, n] || r.dtype() != x.dtype() || !r.is_contiguous() {
                return Ok(None);
            }
            (2, 0, Some(r))
        }
    };
    let dev = cuda_dev(x)?;
    let func = dev.get_or_load_custom_func(&format!("gemv_small_m_{}", suffix(x.dtype())?), MODULE, PTX)?;
    // SAFETY: every element is written by the kernel.
    let out = unsafe { dev.alloc::<T>(m * n)? };
    let (mi, ni, ki) = (m as i32, n as i32, k as i32);
    let cfg = LaunchConfig { grid_dim: (n.div_ceil(8) as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
    let null: u64 = 0;
    with_view::<T, _>(x, "x", |xv| {
        with_view::<T, _>(w, "weight", |wv| {
            let launch = |bv: Option<&CudaView<'_, T>>, rv: Option<&CudaView<'_, T>>| -> Result<()> {
                let mut builder = func.builder();
                builder.arg(&xv).arg(&wv);
                match bv {
                    Some(b) => builder.arg(b),
                    None => builder.arg(&null),
                };
                match rv {
                    Some(r) => builder.arg(r),
                    None => builder.arg(&null),
                };
                builder.arg(&out).arg(&mi).arg(&ni).arg(&ki).arg(&mode).arg(&act);
                // SAFETY: shapes and alignment checked above.
                unsafe { builder.launch(cfg) }.w()?;
                Ok(())
            };
            match (bias, res) {
                (Some(b), Some(r)) => with_view::<T, _>(b, "bias", |bv| with_view::<T, _>(r, "residual", |rv| launch(Some(&bv), Some(&rv)))),
                (Some(b), None) => with_view::<T, _>(b, "bias", |bv| launch(Some(&bv), None)),
                (None, Some(r)) => with_view::<T, _>(r, "residual", |rv| launch(None, Some(&rv))),
                (None, None) => launch(None, None),
            }
        })
    })?;
    Ok(Some(wrap(out, &dev, &[m, n])))
}
