//! Launchers for tokbench's CUDA kernels in `kernels/decode.cu` (PTX built by build.rs), and the
//! decode step's buffer arena.
//!
//! They take candle tensors, check dtype/shape/contiguity, and launch on the device's one
//! stream. `decode_attention`, `bias_act`, `bias_residual` and `advance_step` write into tensors
//! they are given (the KV cache, a fresh matmul output, the step buffers): that is their point,
//! and it is safe here because the engine runs every kernel on a single stream with candle's
//! cross-stream event tracking off (see `device::open`).
//!
//! Two things serve the CUDA-graph decode step:
//! - [`StepArena`]: while a decode step runs inside [`in_arena`], every output of these launchers
//!   (and of [`matmul_nt`], the cuBLAS call) takes the buffer the same call took in the step
//!   before, so a captured step holds no allocation nodes (no graph memory pool, and nothing
//!   between two kernels that would stop the next from starting early).
//! - Programmatic dependent launch (Hopper and newer): kernels are launched with
//!   `CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION` from a PTX built for compute_90 in
//!   which every kernel calls `griddepcontrol.wait` before it reads anything an earlier kernel
//!   of the same step may still be writing. A kernel may then start while its predecessor
//!   drains; the GEMV issues its weight loads (constant data) before the wait, so the weights of
//!   the next layer stream in while the previous kernel finishes, and the decode attention loads
//!   the cache rows of earlier steps (complete) before it. `TOKBENCH_PDL=0` turns it off.

use candle_core::cuda_backend::cudarc::driver::{result as driver_result, sys, CudaFunction, DevicePtr, DeviceRepr, LaunchConfig};
use candle_core::cuda_backend::{CudaDType, CudaDevice, CudaStorage, WrapErr};
use candle_core::op::BackpropOp;
use candle_core::{bail, DType, Device, Result, Storage, Tensor};
use half::{bf16, f16};
use std::cell::RefCell;
use std::ffi::c_void;
use std::sync::OnceLock;

const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/decode.ptx"));
const MODULE: &str = "tokbench_decode";
/// The same kernels for compute_90 with the `griddepcontrol` instructions compiled in.
const PTX_SM90: &str = include_str!(concat!(env!("OUT_DIR"), "/decode_sm90.ptx"));
const MODULE_SM90: &str = "tokbench_decode_sm90";

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

/// Whether launches use programmatic dependent launch: the device is compute capability 9.0 or
/// newer and `TOKBENCH_PDL` is not `0`. (Decided once per process: a worker drives one device.)
pub fn pdl_enabled(dev: &CudaDevice) -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        if std::env::var("TOKBENCH_PDL").is_ok_and(|v| v == "0") {
            return false;
        }
        let major = dev
            .cuda_stream()
            .context()
            .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)
            .unwrap_or(0);
        major >= 9
    })
}

/// The kernel `name` from the module [`launch`] uses on this device.
fn function(dev: &CudaDevice, name: &str) -> Result<CudaFunction> {
    let func = if pdl_enabled(dev) { dev.get_or_load_custom_func(name, MODULE_SM90, PTX_SM90)? } else { dev.get_or_load_custom_func(name, MODULE, PTX)? };
    Ok(func.into_cuda_function())
}

/// Blocks of `threads` threads and `smem` bytes of dynamic shared memory of kernel `name` that
/// are resident on the whole GPU at once (occupancy per SM × SMs): the grid of a persistent
/// kernel. Cached per (kernel, shared memory).
fn resident_blocks(dev: &CudaDevice, name: &str, threads: u32, smem: usize) -> Result<usize> {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static CACHE: OnceLock<Mutex<HashMap<(String, usize), usize>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(&n) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&(name.to_string(), smem)) {
        return Ok(n);
    }
    let func = function(dev, name)?;
    let per_sm = func.occupancy_max_active_blocks_per_multiprocessor(threads, smem, None).w()?.max(1) as usize;
    let sms = dev.cuda_stream().context().attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT).w()?.max(1) as usize;
    let n = per_sm * sms;
    cache.lock().unwrap_or_else(|e| e.into_inner()).insert((name.to_string(), smem), n);
    Ok(n)
}

/// A kernel argument: a device pointer or a scalar.
#[derive(Clone, Copy)]
enum Arg {
    Ptr(u64),
    I32(i32),
    F32(f32),
}

/// Launches kernel `name` on the device's stream (with programmatic dependent launch where
/// [`pdl_enabled`]).
///
/// SAFETY: the arguments must match the kernel's parameters in number and type, and the kernel
/// must stay inside the buffers they point to.
unsafe fn launch(dev: &CudaDevice, name: &str, cfg: LaunchConfig, args: &[Arg]) -> Result<()> {
    let pdl = pdl_enabled(dev);
    let func = function(dev, name)?;
    // Each parameter is read by the driver from the address given: 8 bytes of storage per
    // argument, a 4-byte scalar in the low bytes (little-endian).
    let mut values: Vec<u64> = args
        .iter()
        .map(|a| match *a {
            Arg::Ptr(p) => p,
            Arg::I32(v) => v as u32 as u64,
            Arg::F32(v) => v.to_bits() as u64,
        })
        .collect();
    let mut params: Vec<*mut c_void> = values.iter_mut().map(|v| v as *mut u64 as *mut c_void).collect();
    let stream = dev.cuda_stream();
    stream.context().bind_to_thread().w()?;
    if pdl {
        let mut attr: sys::CUlaunchAttribute = std::mem::zeroed();
        attr.id = sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
        attr.value.programmaticStreamSerializationAllowed = 1;
        let config = sys::CUlaunchConfig {
            gridDimX: cfg.grid_dim.0,
            gridDimY: cfg.grid_dim.1,
            gridDimZ: cfg.grid_dim.2,
            blockDimX: cfg.block_dim.0,
            blockDimY: cfg.block_dim.1,
            blockDimZ: cfg.block_dim.2,
            sharedMemBytes: cfg.shared_mem_bytes,
            hStream: stream.cu_stream(),
            attrs: &mut attr,
            numAttrs: 1,
        };
        sys::cuLaunchKernelEx(&config, func.cu_function(), params.as_mut_ptr(), std::ptr::null_mut()).result().w()?;
    } else {
        driver_result::launch_kernel(func.cu_function(), cfg.grid_dim, cfg.block_dim, cfg.shared_mem_bytes, stream.cu_stream(), &mut params)
            .w()?;
    }
    Ok(())
}

/// Device address of contiguous `t`'s first element, as `T`. Valid while `t` lives.
fn ptr<T: CudaDType + DeviceRepr>(t: &Tensor, what: &str) -> Result<Arg> {
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cuda(cs) = &*storage else { bail!("{what}: not a CUDA tensor") };
    let Some((start, _)) = layout.contiguous_offsets() else { bail!("{what}: must be contiguous") };
    let slice = cs.as_cuda_slice::<T>()?;
    let stream = slice.stream().clone();
    // (No event is recorded: event tracking is off on the engine's device.)
    let (base, _sync) = slice.device_ptr(&stream);
    Ok(Arg::Ptr(base + (start * std::mem::size_of::<T>()) as u64))
}

/// [`ptr`] of an optional tensor; a null pointer when absent.
fn opt_ptr<T: CudaDType + DeviceRepr>(t: Option<&Tensor>, what: &str) -> Result<Arg> {
    t.map_or(Ok(Arg::Ptr(0)), |t| ptr::<T>(t, what))
}

/// Buffers for the outputs of one decode step, reused by the next step: the n-th output of a
/// step takes the n-th buffer (allocated on the first step, or again when its dtype or shape
/// changed). A decode step is the same sequence of launches every time, so after the first
/// step nothing is allocated.
#[derive(Default)]
pub struct StepArena {
    buffers: Vec<Tensor>,
    next: usize,
}

impl StepArena {
    /// Bytes the arena holds on the device.
    pub fn bytes(&self) -> usize {
        self.buffers.iter().map(|t| t.elem_count() * t.dtype().size_in_bytes()).sum()
    }
}

thread_local! {
    static ARENA: RefCell<Option<StepArena>> = const { RefCell::new(None) };
}

/// Runs `f` with `arena` serving the outputs of the launchers in this module (on this thread).
pub fn in_arena<R>(arena: &mut StepArena, f: impl FnOnce() -> R) -> R {
    arena.next = 0;
    ARENA.with(|a| *a.borrow_mut() = Some(std::mem::take(arena)));
    let r = f();
    ARENA.with(|a| *arena = a.borrow_mut().take().unwrap_or_default());
    r
}

/// An output tensor: the arena's buffer for this call when a step runs in one, else fresh.
fn output<T: CudaDType + DeviceRepr>(dev: &CudaDevice, dtype: DType, shape: &[usize]) -> Result<Tensor> {
    let fresh = || -> Result<Tensor> {
        let n: usize = shape.iter().product();
        // SAFETY: every caller's kernel writes every element before anything reads it.
        let slice = unsafe { dev.alloc::<T>(n)? };
        Ok(Tensor::from_storage(Storage::Cuda(CudaStorage::wrap_cuda_slice(slice, dev.clone())), shape, BackpropOp::none(), false))
    };
    ARENA.with(|a| {
        let mut a = a.borrow_mut();
        let Some(arena) = a.as_mut() else { return fresh() };
        let i = arena.next;
        arena.next += 1;
        if let Some(t) = arena.buffers.get(i) {
            if t.dtype() == dtype && t.dims() == shape {
                return Ok(t.clone());
            }
        }
        let t = fresh()?;
        if i < arena.buffers.len() {
            arena.buffers[i] = t.clone();
        } else {
            arena.buffers.push(t.clone());
        }
        Ok(t)
    })
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
    by_dtype!(qkv.dtype(), decode_attention_t, qkv, qkv_bias, k_cache, v_cache, slot, pad_bias)
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
    let name = if fast { format!("decode_attention_d{d}_{}", suffix(qkv.dtype())?) } else { format!("decode_attention_{}", suffix(qkv.dtype())?) };
    let out = output::<T>(&dev, qkv.dtype(), &[b, h])?;
    let (threads, smem) = if fast {
        let per = 16 / std::mem::size_of::<T>();
        let groups = 256 / (d / per);
        (256u32, (d + groups * d + cap + 2 * d) * 4)
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
    unsafe { launch(&dev, &name, cfg, &args)? };
    Ok(out)
}

/// Activation applied by [`bias_act`].
#[derive(Debug, Clone, Copy)]
pub enum Act {
    None = 0,
    Relu = 1,
    GeluTanh = 2,
    GeluErf = 3,
}

/// `y = act(y + bias)` in place; `y` [rows, n], `bias` [n].
pub fn bias_act(y: &Tensor, bias: &Tensor, act: Act) -> Result<()> {
    by_dtype!(y.dtype(), bias_act_t, y, bias, act)
}

fn bias_act_t<T: CudaDType + DeviceRepr>(y: &Tensor, bias: &Tensor, act: Act) -> Result<()> {
    let dev = cuda_dev(y)?;
    let (rows, cols) = y.dims2()?;
    if bias.dims() != [cols] || bias.dtype() != y.dtype() {
        bail!("bias_act: bias {:?} does not fit {:?}", bias.dims(), y.dims());
    }
    let args = [ptr::<T>(y, "y")?, ptr::<T>(bias, "bias")?, Arg::I32(rows as i32), Arg::I32(cols as i32), Arg::I32(act as i32)];
    // SAFETY: rows * cols elements of y, cols of bias.
    unsafe { launch(&dev, &format!("bias_act_{}", suffix(y.dtype())?), grid_1d(rows * cols), &args) }
}

/// `y = (y + bias) + res` in place; `y`, `res` [rows, n], `bias` [n] or none.
pub fn bias_residual(y: &Tensor, bias: Option<&Tensor>, res: &Tensor) -> Result<()> {
    by_dtype!(y.dtype(), bias_residual_t, y, bias, res)
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
    let args = [ptr::<T>(y, "y")?, opt_ptr::<T>(bias, "bias")?, ptr::<T>(res, "residual")?, Arg::I32(rows as i32), Arg::I32(cols as i32)];
    // SAFETY: shapes checked above.
    unsafe { launch(&dev, &format!("bias_residual_{}", suffix(y.dtype())?), grid_1d(rows * cols), &args) }
}

/// `tok[ids] + pos[positions]`: ids, positions u32 [b]; tables [rows, h]. Returns [b, h].
pub fn embed(ids: &Tensor, positions: &Tensor, tok: &Tensor, pos: &Tensor) -> Result<Tensor> {
    by_dtype!(tok.dtype(), embed_t, ids, positions, tok, pos)
}

fn embed_t<T: CudaDType + DeviceRepr>(ids: &Tensor, positions: &Tensor, tok: &Tensor, pos: &Tensor) -> Result<Tensor> {
    let dev = cuda_dev(tok)?;
    let b = ids.elem_count();
    let (_, h) = tok.dims2()?;
    if positions.elem_count() != b || pos.dim(1)? != h || ids.dtype() != DType::U32 || positions.dtype() != DType::U32 {
        bail!("embed: ids {:?}, positions {:?}, tables {:?}/{:?} do not fit", ids.dims(), positions.dims(), tok.dims(), pos.dims());
    }
    let out = output::<T>(&dev, tok.dtype(), &[b, h])?;
    let args = [
        ptr::<u32>(ids, "ids")?,
        ptr::<u32>(positions, "positions")?,
        ptr::<T>(tok, "token table")?,
        ptr::<T>(pos, "position table")?,
        ptr::<T>(&out, "out")?,
        Arg::I32(h as i32),
    ];
    let cfg = LaunchConfig { grid_dim: (b as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
    // SAFETY: ids are checked against the vocabulary before they reach the device
    // (Model::check_ids) and the model's own argmax only yields valid rows.
    unsafe { launch(&dev, &format!("embed_{}", suffix(tok.dtype())?), cfg, &args)? };
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
pub fn advance_step(next: NextIds<'_>, ids: &Tensor, positions: &Tensor, slot: &Tensor, host: Option<HostIds>) -> Result<()> {
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
    unsafe { launch(&dev, kernel, cfg, &args) }
}

/// Widest row [`layer_norm`] and the GEMV's fused norm take. (The kernel keeps rows of up to 256
/// 16-byte chunks in registers, 2048 values in f16/bf16, and re-reads wider ones from memory.)
pub const MAX_ROW: usize = 4096;
/// Longest row [`masked_softmax_in_place`] takes (one warp × 32 values in registers).
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
    let out = output::<T>(&dev, x.dtype(), x.dims())?;
    let args = [ptr::<T>(x, "x")?, ptr::<T>(w, "weight")?, ptr::<T>(b, "bias")?, ptr::<T>(&out, "out")?, Arg::I32(cols as i32), Arg::F32(eps as f32)];
    let cfg = LaunchConfig { grid_dim: (rows as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
    // SAFETY: rows × cols elements, checked above.
    unsafe { launch(&dev, &format!("layer_norm_{}", suffix(x.dtype())?), cfg, &args)? };
    Ok(out)
}

/// Index of the largest value of each row of `x` [rows, cols] (the smallest index among
/// equals), u32 [rows].
pub fn argmax_rows(x: &Tensor) -> Result<Tensor> {
    by_dtype!(x.dtype(), argmax_rows_t, x)
}

fn argmax_rows_t<T: CudaDType + DeviceRepr>(x: &Tensor) -> Result<Tensor> {
    let dev = cuda_dev(x)?;
    let (rows, cols) = x.dims2()?;
    let out = output::<u32>(&dev, DType::U32, &[rows])?;
    let args = [ptr::<T>(x, "x")?, ptr::<u32>(&out, "out")?, Arg::I32(cols as i32)];
    let cfg = LaunchConfig { grid_dim: (rows as u32, 1, 1), block_dim: (1024, 1, 1), shared_mem_bytes: 0 };
    // SAFETY: rows × cols elements.
    unsafe { launch(&dev, &format!("argmax_rows_{}", suffix(x.dtype())?), cfg, &args)? };
    Ok(out)
}

/// softmax(scores + bias) over the last dim in f32, written over `scores` (which it returns):
/// `scores` [b, heads, t, L] contiguous, `bias` [b, 1, t, L] f32 (contiguous),
/// L ≤ [`MAX_SOFTMAX_ROW`]. In place because at prefill of a large batch the scores are the
/// largest activation; the caller hands over a tensor nothing else reads.
pub fn masked_softmax_in_place(scores: Tensor, bias: &Tensor) -> Result<Tensor> {
    by_dtype!(scores.dtype(), masked_softmax_t, scores, bias)
}

fn masked_softmax_t<T: CudaDType + DeviceRepr>(scores: Tensor, bias: &Tensor) -> Result<Tensor> {
    let dev = cuda_dev(&scores)?;
    let (b, heads, t, l) = scores.dims4()?;
    if l > MAX_SOFTMAX_ROW || bias.dims() != [b, 1, t, l] || bias.dtype() != DType::F32 || !scores.is_contiguous() {
        bail!("masked_softmax: scores {:?} and bias {:?} do not fit (contiguous, rows up to {MAX_SOFTMAX_ROW})", scores.dims(), bias.dims());
    }
    let rows = b * heads * t;
    let s = ptr::<T>(&scores, "scores")?;
    let args = [s, ptr::<f32>(bias, "bias")?, s, Arg::I32(heads as i32), Arg::I32(t as i32), Arg::I32(l as i32), Arg::I32(rows as i32)];
    // One warp per row, 8 rows per block.
    let cfg = LaunchConfig { grid_dim: (rows.div_ceil(8) as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
    // SAFETY: shapes checked above; each warp reads its whole row before it writes it.
    unsafe { launch(&dev, &format!("masked_softmax_{}", suffix(scores.dtype())?), cfg, &args)? };
    Ok(scores)
}

/// Whether [`prefill_attention`] runs: `TOKBENCH_PREFILL_ATTENTION=0` turns it off (the
/// unfused candle path: head-split copies, two batched cuBLAS matmuls, [`masked_softmax_in_place`]).
pub fn prefill_attention_enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| !std::env::var("TOKBENCH_PREFILL_ATTENTION").is_ok_and(|v| v == "0"))
}

/// Attention of a whole prompt in one kernel (`prefill_attention_mma_d64` on tensor cores for
/// f16/bf16, else `prefill_attention_d*`, in decode.cu): `qkv`
/// [b, t, 3h] (q pre-scaled, bias added), `bias` [b, 1, t, t] f32, the prefill's causal ⊕
/// key-padding bias (`PrefillInputs::bias`; the kernel relies on that structure); `cache`: the
/// layer's empty key and value tensors [b, heads, cap, d] (cap ≥ t), into whose rows 0..t this
/// prompt's keys and values are written. Returns [b, t, h], heads merged. `Ok(None)` where the
/// kernel does not apply (head size other than 32 or 64, or layouts it does not take): the
/// caller runs the unfused path.
pub fn prefill_attention(qkv: &Tensor, bias: &Tensor, cache: Option<(&Tensor, &Tensor)>, heads: usize) -> Result<Option<Tensor>> {
    by_dtype!(qkv.dtype(), prefill_attention_t, qkv, bias, cache, heads)
}

fn prefill_attention_t<T: CudaDType + DeviceRepr>(qkv: &Tensor, bias: &Tensor, cache: Option<(&Tensor, &Tensor)>, heads: usize) -> Result<Option<Tensor>> {
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
    let out = output::<T>(&dev, qkv.dtype(), &[b, t, h])?;
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
    unsafe { launch(&dev, &name, cfg, &args)? };
    Ok(Some(out))
}

/// `x` [m, k] @ `w`^T for contiguous `x` and `w` [n, k] by cuBLAS into a [`StepArena`] buffer
/// (fresh outside one): the same `cublasGemmStridedBatchedEx` call, operands and compute type
/// that candle's matmul makes for `x.matmul(&w.t())`, so the numbers are candle's. `Ok(None)`
/// for other layouts and dtypes (the caller uses candle then).
pub fn matmul_nt(x: &Tensor, w: &Tensor) -> Result<Option<Tensor>> {
    let (Ok((m, k)), Ok((n, wk))) = (x.dims2(), w.dims2()) else { return Ok(None) };
    if wk != k || !x.is_contiguous() || !w.is_contiguous() || x.dtype() != w.dtype() || m == 0 || n == 0 || k == 0 {
        return Ok(None);
    }
    match x.dtype() {
        DType::F32 | DType::F16 | DType::BF16 => {}
        _ => return Ok(None),
    }
    by_dtype!(x.dtype(), matmul_nt_t, x, w, m, n, k).map(Some)
}

fn matmul_nt_t<T: CudaDType + DeviceRepr>(x: &Tensor, w: &Tensor, m: usize, n: usize, k: usize) -> Result<Tensor> {
    let out = output::<T>(&cuda_dev(x)?, x.dtype(), &[m, n])?;
    matmul_nt_into::<T>(x, w, &out, (m, n, k))?;
    Ok(out)
}

/// [`matmul_nt`]'s cuBLAS call into `out` [m, n] (contiguous, fully overwritten).
fn matmul_nt_into<T: CudaDType + DeviceRepr>(x: &Tensor, w: &Tensor, out: &Tensor, (m, n, k): (usize, usize, usize)) -> Result<()> {
    use candle_core::cuda_backend::cudarc::cublas::{result as blas, sys as bsys};
    let dev = cuda_dev(x)?;
    let (Arg::Ptr(xp), Arg::Ptr(wp), Arg::Ptr(yp)) = (ptr::<T>(x, "x")?, ptr::<T>(w, "weight")?, ptr::<T>(out, "out")?) else {
        unreachable!("ptr returns pointers")
    };
    let (data_type, compute) = match x.dtype() {
        DType::F32 if candle_core::cuda::gemm_reduced_precision_f32() => (bsys::cudaDataType_t::CUDA_R_32F, bsys::cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_TF32),
        DType::F32 => (bsys::cudaDataType_t::CUDA_R_32F, bsys::cublasComputeType_t::CUBLAS_COMPUTE_32F),
        DType::F16 if candle_core::cuda::gemm_reduced_precision_f16() => (bsys::cudaDataType_t::CUDA_R_16F, bsys::cublasComputeType_t::CUBLAS_COMPUTE_16F),
        DType::F16 => (bsys::cudaDataType_t::CUDA_R_16F, bsys::cublasComputeType_t::CUBLAS_COMPUTE_32F),
        DType::BF16 if candle_core::cuda::gemm_reduced_precision_bf16() => (bsys::cudaDataType_t::CUDA_R_16BF, bsys::cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_16BF),
        _ => (bsys::cudaDataType_t::CUDA_R_16BF, bsys::cublasComputeType_t::CUBLAS_COMPUTE_32F),
    };
    // alpha/beta: f16 values for a 16F compute type, else f32.
    let (alpha32, beta32) = (1f32, 0f32);
    let (alpha16, beta16) = (f16::ONE, f16::ZERO);
    let (alpha, beta): (*const c_void, *const c_void) = if compute == bsys::cublasComputeType_t::CUBLAS_COMPUTE_16F {
        (&alpha16 as *const f16 as *const c_void, &beta16 as *const f16 as *const c_void)
    } else {
        (&alpha32 as *const f32 as *const c_void, &beta32 as *const f32 as *const c_void)
    };
    let blas_handle = dev.cublas_handle();
    // Column-major view (as candle): C[n, m] = op(A)[n, k] · B[k, m] with A = w (k-major rows:
    // transposed, lda = k), B = x (lda = k), C = y (ldc = n).
    // SAFETY: pointers to live contiguous tensors of the sizes given; one stream.
    unsafe {
        blas::gemm_strided_batched_ex(
            *blas_handle.handle(),
            bsys::cublasOperation_t::CUBLAS_OP_T,
            bsys::cublasOperation_t::CUBLAS_OP_N,
            n as i32,
            m as i32,
            k as i32,
            alpha,
            wp as *const c_void,
            data_type,
            k as i32,
            (n * k) as i64,
            xp as *const c_void,
            data_type,
            k as i32,
            (m * k) as i64,
            beta,
            yp as *mut c_void,
            data_type,
            n as i32,
            (m * n) as i64,
            1,
            compute,
            bsys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT_TENSOR_OP,
        )
        .map_err(|e| candle_core::Error::Msg(format!("cuBLAS matmul [{m}, {k}] x [{n}, {k}]^T: {e:?}")))?;
    }
    Ok(())
}

/// Whether [`linear_lt`] runs: `TOKBENCH_LT_EPILOGUE=0` turns it off (cuBLAS, then tokbench's
/// `bias_act` / `bias_residual` pass over the output).
pub fn lt_epilogue_enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| !std::env::var("TOKBENCH_LT_EPILOGUE").is_ok_and(|v| v == "0"))
}

/// What [`linear_lt`] does after the product, inside the GEMM's epilogue.
pub enum LtEpilogue<'a> {
    /// act(x @ W^T + bias) (bias required; `Act::GeluErf` is not offered by cuBLASLt).
    Act(Act),
    /// (x @ W^T + bias) + residual [m, n] (bias optional).
    Residual(&'a Tensor),
}

/// Workspace bytes per [`linear_lt`] call: enough for the algorithms cuBLASLt's heuristic picks
/// at prefill sizes, and small against the memory the engine reports (the 32 MiB NVIDIA suggests
/// for Hopper would add 6% to gpt2 at batch 32).
const LT_WORKSPACE: usize = 4 << 20;

/// A cuBLASLt algorithm (a plain value: cached per shape, passed to each call).
type LtAlgo = candle_core::cuda_backend::cudarc::cublaslt::sys::cublasLtMatmulAlgo_t;

/// One cuBLASLt handle per device ordinal, for the life of the process (a worker drives one
/// device; the handle holds no per-call state).
fn lt_handle(dev: &CudaDevice) -> Result<usize> {
    use candle_core::cuda_backend::cudarc::cublaslt::result as lt;
    use std::collections::HashMap;
    use std::sync::Mutex;
    static HANDLES: OnceLock<Mutex<HashMap<usize, usize>>> = OnceLock::new();
    let ordinal = dev.cuda_stream().context().ordinal();
    let mut handles = HANDLES.get_or_init(|| Mutex::new(HashMap::new())).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(&h) = handles.get(&ordinal) {
        return Ok(h);
    }
    dev.cuda_stream().context().bind_to_thread().w()?;
    let h = lt::create_handle().map_err(|e| candle_core::Error::Msg(format!("cuBLASLt handle: {e:?}")))? as usize;
    handles.insert(ordinal, h);
    Ok(h)
}

/// `x` [m, k] @ `w`^T for contiguous f16/bf16 `x` and `w` [n, k], with the bias and activation
/// (or the bias and a residual) applied in the GEMM's epilogue by cuBLASLt: one kernel and one
/// write of the [m, n] output, where the plain path writes it, then reads and writes it again in
/// `bias_act` / `bias_residual`. The epilogue works on the f32 accumulator, so the bias is added
/// before the one rounding to f16/bf16 (the plain path rounds, adds, rounds again). Compute type
/// f32, as candle's matmul with its default (full-precision) reductions.
///
/// `Ok(None)` where it does not apply, and the caller takes the plain path: switched off
/// ([`lt_epilogue_enabled`]), f32, inside a decode step's arena (the captured graph keeps the
/// path it was verified with), no bias for an activation, exact (erf) GELU, a pointer not
/// 16-byte aligned, or where the plain path measured faster for this shape ([`tune_linear`]).
pub fn linear_lt(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, epilogue: LtEpilogue) -> Result<Option<Tensor>> {
    linear_lt_mode(x, w, bias, epilogue, true)
}

/// [`linear_lt`] with cuBLASLt's first heuristic choice, untuned and never the plain path (where
/// cuBLASLt applies at all): for tests of the epilogues and for measurements.
pub fn linear_lt_untuned(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, epilogue: LtEpilogue) -> Result<Option<Tensor>> {
    linear_lt_mode(x, w, bias, epilogue, false)
}

fn linear_lt_mode(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, epilogue: LtEpilogue, tuned: bool) -> Result<Option<Tensor>> {
    if !lt_epilogue_enabled() || ARENA.with(|a| a.borrow().is_some()) {
        return Ok(None);
    }
    let (Ok((m, k)), Ok((n, wk))) = (x.dims2(), w.dims2()) else { return Ok(None) };
    if wk != k || !x.is_contiguous() || !w.is_contiguous() || x.dtype() != w.dtype() || m == 0 || n == 0 || k == 0 {
        return Ok(None);
    }
    if !matches!(x.dtype(), DType::F16 | DType::BF16) {
        return Ok(None);
    }
    if let Some(b) = bias {
        if b.dims() != [n] || b.dtype() != x.dtype() || !b.is_contiguous() {
            return Ok(None);
        }
    }
    match &epilogue {
        LtEpilogue::Act(Act::GeluErf) => return Ok(None),
        LtEpilogue::Act(_) if bias.is_none() => return Ok(None),
        LtEpilogue::Residual(r) if r.dims() != [m, n] || r.dtype() != x.dtype() || !r.is_contiguous() => return Ok(None),
        _ => {}
    }
    by_dtype!(x.dtype(), linear_lt_t, x, w, bias, &epilogue, (m, n, k), tuned)
}

fn linear_lt_t<T: CudaDType + DeviceRepr>(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    epilogue: &LtEpilogue,
    (m, n, k): (usize, usize, usize),
    tuned: bool,
) -> Result<Option<Tensor>> {
    use candle_core::cuda_backend::cudarc::cublaslt::{result as lt, sys as lts};
    use std::collections::HashMap;
    use std::sync::Mutex;

    let addr = |a: Arg| match a {
        Arg::Ptr(p) => p,
        _ => unreachable!("ptr returns pointers"),
    };
    let xp = addr(ptr::<T>(x, "x")?);
    let wp = addr(ptr::<T>(w, "weight")?);
    let bp = addr(opt_ptr::<T>(bias, "bias")?);
    let rp = match epilogue {
        LtEpilogue::Residual(r) => addr(ptr::<T>(r, "residual")?),
        LtEpilogue::Act(_) => 0,
    };
    // cuBLASLt's algorithms assume 16-byte aligned operands unless told otherwise.
    if [xp, wp, bp, rp].iter().any(|p| p % 16 != 0) {
        return Ok(None);
    }
    let epi = match (epilogue, bias.is_some()) {
        (LtEpilogue::Act(Act::Relu), _) => lts::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_RELU_BIAS,
        // cuBLASLt's GELU is the tanh approximation (transformers' gelu_new).
        (LtEpilogue::Act(Act::GeluTanh), _) => lts::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_GELU_BIAS,
        (LtEpilogue::Act(_), _) | (LtEpilogue::Residual(_), true) => lts::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_BIAS,
        (LtEpilogue::Residual(_), false) => lts::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_DEFAULT,
    };
    let data_type = if x.dtype() == DType::F16 { lts::cudaDataType_t::CUDA_R_16F } else { lts::cudaDataType_t::CUDA_R_16BF };
    let err = |what: &str, e: lt::CublasError| candle_core::Error::Msg(format!("cuBLASLt {what} for [{m}, {k}] x [{n}, {k}]^T: {e:?}"));

    let dev = cuda_dev(x)?;
    let handle = lt_handle(&dev)? as lts::cublasLtHandle_t;
    let out = output::<T>(&dev, x.dtype(), &[m, n])?;
    let yp = addr(ptr::<T>(&out, "out")?);

    /// Destroys the descriptors when the call returns (they are host objects; the launched
    /// kernel does not need them).
    struct Descs {
        desc: lts::cublasLtMatmulDesc_t,
        layouts: Vec<lts::cublasLtMatrixLayout_t>,
    }
    impl Drop for Descs {
        fn drop(&mut self) {
            // SAFETY: created below, destroyed once.
            unsafe {
                for l in &self.layouts {
                    let _ = lt::destroy_matrix_layout(*l);
                }
                if !self.desc.is_null() {
                    let _ = lt::destroy_matmul_desc(self.desc);
                }
            }
        }
    }
    let mut d = Descs { desc: std::ptr::null_mut(), layouts: Vec::new() };
    // Column-major view (as matmul_nt): D[n, m] = op(A)[n, k] · B[k, m], A = w ([k, n], ld k,
    // transposed), B = x ([k, m], ld k), C = the residual and D = out ([n, m], ld n). The bias
    // has one value per row of D, i.e. per output feature.
    let a_layout = lt::create_matrix_layout(data_type, k as u64, n as u64, k as i64).map_err(|e| err("layout", e))?;
    d.layouts.push(a_layout);
    let b_layout = lt::create_matrix_layout(data_type, k as u64, m as u64, k as i64).map_err(|e| err("layout", e))?;
    d.layouts.push(b_layout);
    let c_layout = lt::create_matrix_layout(data_type, n as u64, m as u64, n as i64).map_err(|e| err("layout", e))?;
    d.layouts.push(c_layout);
    d.desc = lt::create_matmul_desc(lts::cublasComputeType_t::CUBLAS_COMPUTE_32F, lts::cudaDataType_t::CUDA_R_32F).map_err(|e| err("descriptor", e))?;
    let trans_a = candle_core::cuda_backend::cudarc::cublas::sys::cublasOperation_t::CUBLAS_OP_T;
    let set = |attr: lts::cublasLtMatmulDescAttributes_t, value: *const c_void, size: usize, what: &str| {
        // SAFETY: `d.desc` is live; callers pass a value of the size and type cuBLASLt documents
        // for `attr`.
        unsafe { lt::set_matmul_desc_attribute(d.desc, attr, value, size) }.map_err(|e| err(what, e))
    };
    set(lts::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSA, &trans_a as *const _ as *const c_void, std::mem::size_of_val(&trans_a), "transa")?;
    set(lts::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_EPILOGUE, &epi as *const _ as *const c_void, std::mem::size_of_val(&epi), "epilogue")?;
    if bp != 0 {
        set(lts::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bp as *const u64 as *const c_void, std::mem::size_of::<u64>(), "bias pointer")?;
    }
    let beta_one = rp != 0;

    // SAFETY: a fresh buffer of LT_WORKSPACE bytes, used only by this call on this stream.
    let workspace = unsafe { dev.alloc::<u8>(LT_WORKSPACE)? };
    let stream = dev.cuda_stream();
    let (wsp, _sync) = workspace.device_ptr(&stream);
    let (alpha, beta) = (1f32, if beta_one { 1f32 } else { 0f32 });
    let run = |algo: &LtAlgo| -> Result<()> {
        stream.context().bind_to_thread().w()?;
        // SAFETY: pointers to live contiguous tensors of the sizes the layouts give; the output
        // is fresh; one stream.
        unsafe {
            lt::matmul(
                handle,
                d.desc,
                &alpha as *const f32 as *const c_void,
                &beta as *const f32 as *const c_void,
                wp as *const c_void,
                a_layout,
                xp as *const c_void,
                b_layout,
                (if beta_one { rp } else { yp }) as *const c_void,
                c_layout,
                yp as *mut c_void,
                c_layout,
                algo,
                wsp as *mut c_void,
                LT_WORKSPACE,
                stream.cu_stream() as lts::cudaStream_t,
            )
        }
        .map_err(|e| err("matmul", e))
    };

    // Which way this shape runs fastest, measured once per process (see `tune_linear`).
    type Key = (usize, i32, usize, usize, usize, u32, bool);
    static CHOICES: OnceLock<Mutex<HashMap<Key, Option<LtAlgo>>>> = OnceLock::new();
    let key: Key = (dev.cuda_stream().context().ordinal(), data_type as i32, m, n, k, epi as u32, beta_one);
    let choices = CHOICES.get_or_init(|| Mutex::new(HashMap::new()));
    let cached = if tuned { choices.lock().unwrap_or_else(|e| e.into_inner()).get(&key).copied() } else { None };
    let choice = match cached {
        Some(c) => c,
        None => {
            // The heuristic's candidates (up to 16 that fit the workspace).
            let pref = lt::create_matmul_pref().map_err(|e| err("preference", e))?;
            let max_ws = LT_WORKSPACE as u64;
            let mut found = vec![unsafe { std::mem::zeroed::<lts::cublasLtMatmulHeuristicResult_t>() }; 16];
            let mut count = 0i32;
            // SAFETY: pref created above and destroyed here; layouts and desc live in `d`;
            // `found` has room for the 16 results asked for.
            let status = unsafe {
                let r = lt::set_matmul_pref_attribute(
                    pref,
                    lts::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                    &max_ws as *const u64 as *const c_void,
                    std::mem::size_of::<u64>(),
                )
                .and_then(|_| {
                    lts::cublasLtMatmulAlgoGetHeuristic(handle, d.desc, a_layout, b_layout, c_layout, c_layout, pref, 16, found.as_mut_ptr(), &mut count)
                        .result()
                });
                let _ = lt::destroy_matmul_pref(pref);
                r
            };
            let candidates: Vec<LtAlgo> = match status {
                Ok(()) => found[..count.clamp(0, 16) as usize]
                    .iter()
                    .filter(|h| h.state == lts::cublasStatus_t::CUBLAS_STATUS_SUCCESS && h.workspaceSize <= LT_WORKSPACE)
                    .map(|h| h.algo)
                    .collect(),
                Err(_) => Vec::new(),
            };
            // The plain path, into `out` too: tuning allocates nothing beyond the call's own
            // output and workspace (the engine's peak memory stays that of the workload).
            let plain = || -> Result<()> {
                matmul_nt_into::<T>(x, w, &out, (m, n, k))?;
                match epilogue {
                    LtEpilogue::Act(act) => bias_act(&out, bias.expect("checked: an activation comes with a bias"), *act),
                    LtEpilogue::Residual(r) => bias_residual(&out, bias, r),
                }
            };
            if !tuned {
                candidates.first().copied()
            } else {
                let c = tune_linear(&dev, &candidates, &run, &plain, (m, n, k))?;
                choices.lock().unwrap_or_else(|e| e.into_inner()).insert(key, c);
                c
            }
        }
    };
    let Some(algo) = choice else { return Ok(None) };
    run(&algo)?;
    Ok(Some(out))
}

/// Picks how a prefill linear of one shape runs: each cuBLASLt candidate and the plain path
/// (cuBLAS, then the bias kernel) once to warm up, then 5 times between two CUDA events queued
/// behind a 1 ms `spin_ns` kernel, so that the events time the GPU work and not the host's
/// launch rate (at 128 rows a launch takes the host longer than the GPU; timed without the
/// spin, the choice among candidates was noise and opt-1.3b's batch-1 TTFT varied 2.0–4.1 ms
/// between runs on the H200). The fastest wins (`None`: the plain path). Runs once per shape and
/// process (the first prefill of a shape, i.e. a benchmark's warm-up), synchronizing the stream;
/// never inside a captured decode step (see `linear_lt`).
fn tune_linear(
    dev: &CudaDevice,
    candidates: &[LtAlgo],
    run: &dyn Fn(&LtAlgo) -> Result<()>,
    plain: &dyn Fn() -> Result<()>,
    (m, n, k): (usize, usize, usize),
) -> Result<Option<LtAlgo>> {
    let stream = dev.cuda_stream();
    let ctx = stream.context().clone();
    let time = |f: &dyn Fn() -> Result<()>| -> Result<Option<f32>> {
        if f().is_err() {
            return Ok(None); // a candidate that does not launch is not a candidate
        }
        let start = ctx.new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT)).w()?;
        let end = ctx.new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT)).w()?;
        let one = LaunchConfig { grid_dim: (1, 1, 1), block_dim: (1, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: spin_ns takes one 64-bit value and touches no memory.
        unsafe { launch(dev, "spin_ns", one, &[Arg::Ptr(1_000_000)])? };
        start.record(&stream).w()?;
        for _ in 0..5 {
            f()?;
        }
        end.record(&stream).w()?;
        Ok(Some(start.elapsed_ms(&end).w()? / 5.0))
    };
    let mut best: Option<(f32, Option<_>)> = None;
    let plain_ms = time(plain)?;
    if let Some(t) = plain_ms {
        best = Some((t, None));
    }
    let mut lt_best = f32::INFINITY;
    for algo in candidates {
        if let Some(t) = time(&|| run(algo))? {
            lt_best = lt_best.min(t);
            if best.is_none_or(|(b, _)| t < b) {
                best = Some((t, Some(*algo)));
            }
        }
    }
    tracing::debug!(m, n, k, candidates = candidates.len(), plain_ms = ?plain_ms, cublaslt_best_ms = lt_best, chose_cublaslt = best.is_some_and(|(_, a)| a.is_some()), "prefill linear tuned");
    Ok(best.and_then(|(_, a)| a))
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
    /// No output: each row's largest value (smallest index among equals) goes into these i64
    /// [m] argmax keys, zero beforehand (read and re-zeroed by [`advance_step`]).
    ArgmaxKeys(&'a Tensor),
}

/// A layer norm applied to the GEMV's input rows before the product (pre-LN layers).
#[derive(Clone, Copy)]
pub struct PreNorm<'a> {
    pub weight: &'a Tensor,
    pub bias: &'a Tensor,
    pub eps: f64,
}

/// Bytes of input rows a GEMV block stages in shared memory (the fused pre-norm needs them
/// there); larger inputs are read from global memory and cannot take a fused norm.
const GEMV_SMEM_X: usize = 32 * 1024;

/// Rows up to which [`linear_small_m`] runs: `TOKBENCH_GEMV=0` turns it off (cuBLAS plus
/// separate norm, bias and epilogue kernels); `TOKBENCH_GEMV_MAX_M` (1..=8) sets the limit,
/// default 1. Why 1: on an H200 the GEMV beats cuBLAS at batch 1 (opt-1.3b 1.22 vs 1.54 ms per
/// step) but at 8 rows it is ~2× slower than cuBLAS (each weight chunk meets 8 input chunks read
/// from shared memory); 2..7 rows were not measured (bench/NOTES.md, v5).
pub fn gemv_max_rows() -> usize {
    static MAX: OnceLock<usize> = OnceLock::new();
    *MAX.get_or_init(|| {
        if std::env::var("TOKBENCH_GEMV").is_ok_and(|v| v == "0") {
            return 0;
        }
        std::env::var("TOKBENCH_GEMV_MAX_M").ok().and_then(|v| v.parse::<usize>().ok()).map_or(1, |m| m.min(SMALL_M))
    })
}

/// Warps that share one output row of `chunks` 16-byte chunks, of `rows`, on a grid of
/// `resident_warps`. One warp per row when the rows alone keep nearly every resident warp busy:
/// no cross-warp sum, no block barrier per row (opt-1.3b's fc2, 2048 rows of 16 KiB: 12.7 →
/// 10.3 us per launch on an H200, bench/NOTES.md v8). Otherwise enough warps that none has more
/// than 256 chunks of a row (8 loads per lane, all issued before any arithmetic).
fn warps_per_row(chunks: usize, rows: usize, resident_warps: usize) -> usize {
    if rows * 10 >= resident_warps * 9 {
        return 1;
    }
    let mut wpr = 1;
    while wpr < 8 && chunks > 256 * wpr {
        wpr *= 2;
    }
    wpr
}

/// `x` [m, k] @ `w`^T ([n, k], k contiguous) for m ≤ [`SMALL_M`], with the pre-norm (`norm`),
/// the bias and the epilogue fused, as one pass over the weights (`gemv_small_m*` in decode.cu).
/// `Ok(None)` when the GEMV is off or the shapes or alignment do not suit it, or a norm was asked
/// for that cannot be fused here (the caller runs the separate kernels then).
pub fn linear_small_m(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, epilogue: Epilogue<'_>, norm: Option<PreNorm<'_>>) -> Result<Option<Tensor>> {
    by_dtype!(x.dtype(), linear_small_m_t, x, w, bias, epilogue, norm)
}

fn linear_small_m_t<T: CudaDType + DeviceRepr>(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    epilogue: Epilogue<'_>,
    norm: Option<PreNorm<'_>>,
) -> Result<Option<Tensor>> {
    let per = 16 / std::mem::size_of::<T>();
    let (Ok((m, k)), Ok((n, wk))) = (x.dims2(), w.dims2()) else { return Ok(None) };
    let aligned = |t: &Tensor| t.is_contiguous() && t.layout().start_offset() % per == 0;
    if m == 0 || m > gemv_max_rows() || wk != k || k % per != 0 || !aligned(x) || !aligned(w) || w.dtype() != x.dtype() {
        return Ok(None);
    }
    let x_bytes = m * k * std::mem::size_of::<T>();
    let x_in_smem = x_bytes <= GEMV_SMEM_X;
    if let Some(nm) = &norm {
        let fits = |t: &Tensor| t.dims() == [k] && t.dtype() == x.dtype() && t.is_contiguous();
        if !x_in_smem || k > MAX_ROW || !fits(nm.weight) || !fits(nm.bias) {
            return Ok(None);
        }
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
        Epilogue::ArgmaxKeys(keys) => {
            if keys.dims() != [m] || keys.dtype() != DType::I64 || !keys.is_contiguous() {
                return Ok(None);
            }
            (3, 0, Some(keys))
        }
    };
    let dev = cuda_dev(x)?;
    // (Mode 3 writes no output: the keys are the result.)
    let out = if mode == 3 { res.expect("keys").clone() } else { output::<T>(&dev, x.dtype(), &[m, n])? };
    let name = format!("gemv_small_m{m}_{}", suffix(x.dtype())?);
    let smem = if x_in_smem { x_bytes } else { 0 };
    // Persistent grid: every block resident at once, each taking groups of 8 / wpr rows in turn.
    let resident = resident_blocks(&dev, &name, 256, smem)?;
    let wpr = warps_per_row(k / per, n, resident * 8);
    let groups = n.div_ceil(8 / wpr);
    let blocks = groups.min(resident);
    let cfg = LaunchConfig { grid_dim: (blocks as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: smem as u32 };
    let args = [
        ptr::<T>(x, "x")?,
        ptr::<T>(w, "weight")?,
        opt_ptr::<T>(bias, "bias")?,
        if mode == 3 { opt_ptr::<i64>(res, "argmax keys")? } else { opt_ptr::<T>(res, "residual")? },
        opt_ptr::<T>(norm.map(|nm| nm.weight), "norm weight")?,
        opt_ptr::<T>(norm.map(|nm| nm.bias), "norm bias")?,
        Arg::F32(norm.map_or(0.0, |nm| nm.eps as f32)),
        if mode == 3 { Arg::Ptr(0) } else { ptr::<T>(&out, "out")? },
        Arg::I32(n as i32),
        Arg::I32(k as i32),
        Arg::I32(wpr as i32),
        Arg::I32(mode),
        Arg::I32(act),
        Arg::I32(x_in_smem as i32),
    ];
    // SAFETY: shapes and alignment checked above; shared memory sized for x.
    unsafe { launch(&dev, &name, cfg, &args)? };
    Ok(Some(out))
}
