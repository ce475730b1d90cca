//! Prefill GEMMs with bias, activation and residual in cuBLASLt's epilogue.

use super::*;
use candle_core::cuda_backend::cudarc::driver::{DevicePtr, DeviceRepr};
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::{bail, DType, Result, Tensor};
use half::{bf16, f16};
use std::ffi::c_void;
use std::sync::OnceLock;

/// Whether [`linear_lt`] runs: the job's `lt_epilogue` option; off, prefill linears take cuBLAS,
/// then tokbench's `bias_act` / `bias_residual` pass over the output.
pub fn lt_epilogue_enabled(l: &Launch) -> bool {
    l.kernels().lt_epilogue
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
pub(super) type LtAlgo = candle_core::cuda_backend::cudarc::cublaslt::sys::cublasLtMatmulAlgo_t;

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
pub fn linear_lt(l: &Launch, x: &Tensor, w: &Tensor, bias: Option<&Tensor>, epilogue: LtEpilogue) -> Result<Option<Tensor>> {
    linear_lt_mode(l, x, w, bias, epilogue, true)
}

/// [`linear_lt`] with cuBLASLt's first heuristic choice, untuned and never the plain path (where
/// cuBLASLt applies at all): for tests of the epilogues and for measurements.
pub fn linear_lt_untuned(l: &Launch, x: &Tensor, w: &Tensor, bias: Option<&Tensor>, epilogue: LtEpilogue) -> Result<Option<Tensor>> {
    linear_lt_mode(l, x, w, bias, epilogue, false)
}

fn linear_lt_mode(l: &Launch, x: &Tensor, w: &Tensor, bias: Option<&Tensor>, epilogue: LtEpilogue, tuned: bool) -> Result<Option<Tensor>> {
    if !lt_epilogue_enabled(l) || l.arena().is_some() {
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
    by_dtype!(x.dtype(), linear_lt_t, l, x, w, bias, &epilogue, (m, n, k), tuned)
}

fn linear_lt_t<T: CudaDType + DeviceRepr>(
    l: &Launch,
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
    let out = output::<T>(l, &dev, x.dtype(), &[m, n])?;
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
                    LtEpilogue::Act(act) => bias_act(l, &out, bias.expect("checked: an activation comes with a bias"), *act),
                    LtEpilogue::Residual(r) => bias_residual(l, &out, bias, r),
                }
            };
            if !tuned {
                candidates.first().copied()
            } else {
                let c = tune_linear(l, &dev, &candidates, &run, &plain, (m, n, k))?;
                choices.lock().unwrap_or_else(|e| e.into_inner()).insert(key, c);
                c
            }
        }
    };
    let Some(algo) = choice else { return Ok(None) };
    run(&algo)?;
    Ok(Some(out))
}
