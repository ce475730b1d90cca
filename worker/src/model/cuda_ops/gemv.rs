//! The few-row GEMV of decode steps, with pre-norm, bias and epilogue fused.

use super::*;
use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, LaunchConfig};
use candle_core::cuda_backend::CudaDType;
use candle_core::{bail, DType, Result, Tensor};
use half::{bf16, f16};


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

/// What the GEMV does to its input rows as it stages them, before the product (`PRO_*` in
/// decode.cu): the layer's pre-norm, or the SwiGLU activation of the rotary families' MLP.
#[derive(Clone, Copy)]
pub enum Prologue<'a> {
    /// Layer norm with weight and bias (pre-LN OPT and GPT-2).
    LayerNorm { weight: &'a Tensor, bias: &'a Tensor, eps: f64 },
    /// transformers' RMSNorm, weight * (x * rstd).to(dtype) (the rotary families).
    RmsNorm { weight: &'a Tensor, eps: f64 },
    /// `x` is [m, 2k], gate | up; the product's input is silu(gate) * up (the down projection).
    SwiGlu,
}

impl Prologue<'_> {
    fn code(&self) -> i32 {
        match self {
            Prologue::LayerNorm { .. } => 1,
            Prologue::RmsNorm { .. } => 2,
            Prologue::SwiGlu => 3,
        }
    }
}

/// Bytes of input rows a GEMV block stages in shared memory (the fused pre-norm needs them
/// there); larger inputs are read from global memory and cannot take a fused norm.
const GEMV_SMEM_X: usize = 32 * 1024;

/// Rows up to which [`linear_small_m`] runs: the job's `gemv_max_rows` option (at most
/// [`SMALL_M`]); 0 turns it off (cuBLAS plus separate norm, bias and epilogue kernels). Default 1.
/// Why 1: on an H200 the GEMV beats cuBLAS at batch 1 (opt-1.3b 1.22 vs 1.54 ms per
/// step) but at 8 rows it is ~2× slower than cuBLAS (each weight chunk meets 8 input chunks read
/// from shared memory); 2..7 rows were not measured (engine v5, docs/performance.md).
pub fn gemv_max_rows(l: &Launch) -> usize {
    l.kernels().gemv_max_rows.min(SMALL_M)
}

/// Warps that share one output row of `chunks` 16-byte chunks, of `rows`, on a grid of
/// `resident_warps`. One warp per row when the rows alone keep nearly every resident warp busy:
/// no cross-warp sum, no block barrier per row (opt-1.3b's fc2, 2048 rows of 16 KiB: 12.7 →
/// 10.3 us per launch on an H200, engine v8). Otherwise enough warps that none has more
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

/// `x` [m, k] @ `w`^T ([n, k], k contiguous) for m ≤ [`SMALL_M`], with the prologue (`norm`: a
/// pre-norm, or SwiGLU over an `x` of [m, 2k]), the bias and the epilogue fused, as one pass over
/// the weights (`gemv_small_m*` in decode.cu). `Ok(None)` when the GEMV is off or the shapes or
/// alignment do not suit it, or a prologue was asked for that cannot be fused here (the caller
/// runs the separate kernels then).
pub fn linear_small_m(l: &Launch, x: &Tensor, w: &Tensor, bias: Option<&Tensor>, epilogue: Epilogue<'_>, norm: Option<Prologue<'_>>) -> Result<Option<Tensor>> {
    by_dtype!(x.dtype(), linear_small_m_t, l, x, w, bias, epilogue, norm)
}

fn linear_small_m_t<T: CudaDType + DeviceRepr>(
    l: &Launch,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    epilogue: Epilogue<'_>,
    norm: Option<Prologue<'_>>,
) -> Result<Option<Tensor>> {
    let per = 16 / std::mem::size_of::<T>();
    let (Ok((m, xk)), Ok((n, wk))) = (x.dims2(), w.dims2()) else { return Ok(None) };
    // SwiGLU's input holds gate and up side by side: twice the product's width.
    let k = if matches!(norm, Some(Prologue::SwiGlu)) { xk / 2 } else { xk };
    if matches!(norm, Some(Prologue::SwiGlu)) && xk % 2 != 0 {
        return Ok(None);
    }
    let aligned = |t: &Tensor| t.is_contiguous() && t.layout().start_offset() % per == 0;
    if m == 0 || m > gemv_max_rows(l) || wk != k || k % per != 0 || !aligned(x) || !aligned(w) || w.dtype() != x.dtype() {
        return Ok(None);
    }
    let x_bytes = m * k * std::mem::size_of::<T>();
    let x_in_smem = x_bytes <= GEMV_SMEM_X;
    if let Some(pro) = &norm {
        let fits = |t: &Tensor| t.dims() == [k] && t.dtype() == x.dtype() && t.is_contiguous() && matches!(ptr::<T>(t, "norm"), Ok(Arg::Ptr(p)) if p % 16 == 0);
        let params_fit = match pro {
            Prologue::LayerNorm { weight, bias, .. } => k <= MAX_ROW && fits(weight) && fits(bias),
            Prologue::RmsNorm { weight, .. } => k <= MAX_ROW && fits(weight),
            Prologue::SwiGlu => true,
        };
        // Every prologue stages x in shared memory (SwiGLU: only the product's input, k wide).
        if !x_in_smem || !params_fit {
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
    let out = if mode == 3 { res.expect("keys").clone() } else { output::<T>(l, &dev, x.dtype(), &[m, n])? };
    let name = format!("gemv_small_m{m}_{}", suffix(x.dtype())?);
    let smem = if x_in_smem { x_bytes } else { 0 };
    // Persistent grid: every block resident at once, each taking groups of 8 / wpr rows in turn.
    let resident = resident_blocks(l, &dev, &name, 256, smem)?;
    let wpr = warps_per_row(k / per, n, resident * 8);
    let groups = n.div_ceil(8 / wpr);
    let blocks = groups.min(resident);
    let cfg = LaunchConfig { grid_dim: (blocks as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: smem as u32 };
    let args = [
        ptr::<T>(x, "x")?,
        ptr::<T>(w, "weight")?,
        opt_ptr::<T>(bias, "bias")?,
        if mode == 3 { opt_ptr::<i64>(res, "argmax keys")? } else { opt_ptr::<T>(res, "residual")? },
        opt_ptr::<T>(
            match norm {
                Some(Prologue::LayerNorm { weight, .. } | Prologue::RmsNorm { weight, .. }) => Some(weight),
                _ => None,
            },
            "norm weight",
        )?,
        opt_ptr::<T>(if let Some(Prologue::LayerNorm { bias, .. }) = norm { Some(bias) } else { None }, "norm bias")?,
        Arg::F32(match norm {
            Some(Prologue::LayerNorm { eps, .. } | Prologue::RmsNorm { eps, .. }) => eps as f32,
            _ => 0.0,
        }),
        if mode == 3 { Arg::Ptr(0) } else { ptr::<T>(&out, "out")? },
        Arg::I32(n as i32),
        Arg::I32(k as i32),
        Arg::I32(wpr as i32),
        Arg::I32(mode),
        Arg::I32(act),
        Arg::I32(x_in_smem as i32),
        Arg::I32(norm.map_or(0, |p| p.code())),
    ];
    // SAFETY: shapes and alignment checked above; shared memory sized for x.
    unsafe { launch(l, &dev, &name, cfg, &args)? };
    Ok(Some(out))
}

