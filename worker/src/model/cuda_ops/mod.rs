//! Launchers for tokbench's CUDA kernels in `kernels/decode.cu` (PTX built by build.rs), and the
//! decode step's buffer arena.
//!
//! They take candle tensors, check dtype/shape/contiguity, and launch on the device's one
//! stream. `decode_attention`, `bias_act`, `bias_residual` and `advance_step` write into tensors
//! they are given (the KV cache, a fresh matmul output, the step buffers): that is their point,
//! and it is safe here because the engine runs every kernel on a single stream with candle's
//! cross-stream event tracking off (see `device::open`).
//!
//! Every launcher takes a [`Launch`]: the job's kernel options (`tokbench_core::KernelOptions`,
//! as they apply on the device) and, inside a fused decode step, the step's buffer arena. Nothing
//! here reads the environment or keeps per-job state between calls.
//!
//! Two things serve the CUDA-graph decode step:
//! - [`StepArena`]: while a decode step launches with [`Launch::with_arena`], every output of these
//!   launchers (and of [`matmul_nt`], the cuBLAS call) takes the buffer the same call took in the
//!   step before, so a captured step holds no allocation nodes (no graph memory pool, and nothing
//!   between two kernels that would stop the next from starting early). The decoder owns it.
//! - Programmatic dependent launch (Hopper and newer): kernels are launched with
//!   `CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION` from a PTX built for compute_90 in
//!   which every kernel calls `griddepcontrol.wait` before it reads anything an earlier kernel
//!   of the same step may still be writing. A kernel may then start while its predecessor
//!   drains; the GEMV issues its weight loads (constant data) before the wait, so the weights of
//!   the next layer stream in while the previous kernel finishes, and the decode attention loads
//!   the cache rows of earlier steps (complete) before it. The job's `pdl` option turns it off;
//!   on a device older than compute capability 9.0 it is off whatever the option says
//!   ([`active_kernels`]).
//!
//! Files: `launch` (modules, [`Launch`], the launch call), `arena` (the step arena), `kernels`
//! (elementwise and per-row kernels), `attention` (decode and prefill attention), `gemv` (the
//! few-row GEMV), `cublas` (cuBLAS into the arena), `cublaslt` (epilogue GEMMs) and `tuner`
//! (their per-shape choice).

use candle_core::cuda_backend::CudaDevice;
use candle_core::{bail, DType, Device, Result, Tensor};

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


mod arena;
mod attention;
mod cublas;
mod cublaslt;
mod gemv;
mod kernels;
mod launch;
mod tuner;

pub use arena::*;
pub use attention::*;
pub use cublas::*;
pub use cublaslt::*;
pub use gemv::*;
pub use kernels::*;
pub use launch::*;
use tuner::*;
