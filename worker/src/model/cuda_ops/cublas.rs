//! cuBLAS GEMM into an arena buffer (candle's call, candle's numbers).

use super::*;
use candle_core::cuda_backend::cudarc::driver::DeviceRepr;
use candle_core::cuda_backend::CudaDType;
use candle_core::{bail, DType, Result, Tensor};
use half::{bf16, f16};
use std::ffi::c_void;

/// `x` [m, k] @ `w`^T for contiguous `x` and `w` [n, k] by cuBLAS into a [`StepArena`] buffer
/// (fresh outside one): the same `cublasGemmStridedBatchedEx` call, operands and compute type
/// that candle's matmul makes for `x.matmul(&w.t())`, so the numbers are candle's. `Ok(None)`
/// for other layouts and dtypes (the caller uses candle then).
pub fn matmul_nt(l: &Launch, x: &Tensor, w: &Tensor) -> Result<Option<Tensor>> {
    let (Ok((m, k)), Ok((n, wk))) = (x.dims2(), w.dims2()) else { return Ok(None) };
    if wk != k || !x.is_contiguous() || !w.is_contiguous() || x.dtype() != w.dtype() || m == 0 || n == 0 || k == 0 {
        return Ok(None);
    }
    match x.dtype() {
        DType::F32 | DType::F16 | DType::BF16 => {}
        _ => return Ok(None),
    }
    by_dtype!(x.dtype(), matmul_nt_t, l, x, w, m, n, k).map(Some)
}

fn matmul_nt_t<T: CudaDType + DeviceRepr>(l: &Launch, x: &Tensor, w: &Tensor, m: usize, n: usize, k: usize) -> Result<Tensor> {
    let out = output::<T>(l, &cuda_dev(x)?, x.dtype(), &[m, n])?;
    matmul_nt_into::<T>(x, w, &out, (m, n, k))?;
    Ok(out)
}

/// [`matmul_nt`]'s cuBLAS call into `out` [m, n] (contiguous, fully overwritten).
pub(super) fn matmul_nt_into<T: CudaDType + DeviceRepr>(x: &Tensor, w: &Tensor, out: &Tensor, (m, n, k): (usize, usize, usize)) -> Result<()> {
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

