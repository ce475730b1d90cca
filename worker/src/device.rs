//! Opening the compute device and picking the candle dtype for a workload.

use crate::error::{EngineError, Result};
use candle_core::{DType, Device};
use tokbench_core::{DTypeSpec, DeviceSpec};

/// Open `spec` as a candle device. CUDA errors become `DeviceUnavailable` with a fix.
/// `kernel_cap` (a job's `KernelOptions::compute_cap`, e.g. 75) makes candle's kernels on this
/// device the PTX built for that capability, as tokbench's own follow it; None: the GPU's own
/// (see [`candle_ptx_caps`]).
pub fn open(spec: &DeviceSpec, kernel_cap: Option<u32>) -> Result<Device> {
    match spec {
        DeviceSpec::Cpu => Ok(Device::Cpu),
        DeviceSpec::Cuda(i) => {
            if !cfg!(feature = "cuda") {
                return Err(EngineError::DeviceUnavailable {
                    device: spec.to_string(),
                    detail: "this tokbench-worker was built without CUDA support. Rebuild it with `cargo build --release -p tokbench-worker --features cuda` (see README.md), or use --device cpu".into(),
                });
            }
            open_cuda(*i, kernel_cap).map_err(|e| EngineError::DeviceUnavailable {
                device: spec.to_string(),
                detail: format!(
                    "{e}. Check that an NVIDIA GPU with index {i} exists (nvidia-smi -L), that the driver is loaded and that CUDA_VISIBLE_DEVICES does not hide it"
                ),
            })
        }
    }
}

/// The engine's CUDA device: its own (non-default) stream, so a decode step can be captured as a
/// CUDA graph (capture is not allowed on the legacy default stream), and candle's cross-stream
/// event tracking off: the engine issues everything on this one stream, where the per-tensor
/// events only cost API calls, and an event recorded outside a capture breaks the capture
/// (candle issue 3002).
#[cfg(feature = "cuda")]
fn open_cuda(ordinal: usize, kernel_cap: Option<u32>) -> candle_core::Result<Device> {
    // A device loads each of candle's kernel modules when it first needs one, so the choice made
    // here holds for this device's life.
    candle_kernels::select_compute_cap(kernel_cap.unwrap_or(0));
    let dev = candle_core::cuda_backend::CudaDevice::new_with_stream(ordinal)?;
    // SAFETY: every tensor of this device is used on its single stream (see above).
    unsafe { dev.disable_event_tracking() };
    Ok(Device::Cuda(dev))
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(ordinal: usize, _kernel_cap: Option<u32>) -> candle_core::Result<Device> {
    Device::new_cuda(ordinal)
}

/// The compute capabilities (×10, oldest first) this build has candle's kernels for, as PTX
/// (third_party/candle-kernels: 7.5, 8.0, 8.9 and 9.0 unless `CUDA_COMPUTE_CAP` named others at
/// build time); empty without CUDA. A 9.0 entry is compute_90a, which runs on 9.x only.
pub fn candle_ptx_caps() -> Vec<u32> {
    #[cfg(feature = "cuda")]
    return candle_kernels::built_compute_caps().iter().map(|&(c, _)| c).collect();
    #[cfg(not(feature = "cuda"))]
    Vec::new()
}

/// The capability of candle's PTX that a GPU of capability `device_cap` loads, with `kernel_cap`
/// forced as in [`open`]: the newest built one it can run; None where none (or no CUDA build).
pub fn candle_ptx_cap_for(device_cap: u32, kernel_cap: Option<u32>) -> Option<u32> {
    let target = kernel_cap.map_or(device_cap, |k| k.min(device_cap));
    tokbench_core::kernel_options::newest_runnable_ptx(&candle_ptx_caps(), target)
}

/// The capability of the candle PTX this process loaded last (None: none loaded yet, or no
/// CUDA build): what the GPU tests check a forced capability against.
pub fn loaded_candle_ptx_cap() -> Option<u32> {
    #[cfg(feature = "cuda")]
    return Some(candle_kernels::loaded_compute_cap()).filter(|&c| c > 0);
    #[cfg(not(feature = "cuda"))]
    None
}

/// Which figure of the engine's memory pools [`engine_memory`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolFigure {
    /// Bytes in live allocations now.
    Current,
    /// The high-water mark of live bytes since the last reset.
    HighWater { reset: bool },
}

/// High-water mark of the device memory this engine has allocated (bytes), since the last
/// call with `reset` ([`engine_memory`] with [`PoolFigure::HighWater`]).
pub fn engine_memory_high_water(device: &Device, reset: bool) -> Option<u64> {
    engine_memory(device, PoolFigure::HighWater { reset })
}

/// Device memory this engine holds in live allocations (bytes): candle allocates every tensor
/// stream-ordered from the device's default CUDA memory pool, and a replayed CUDA graph from
/// the graph memory pool; this is the sum of both pools' `USED_MEM_CURRENT` or `USED_MEM_HIGH`
/// (bytes in live allocations, not the CUDA context, cuBLAS workspace or pool slack, which
/// NVML's per-process figure includes). None on the CPU.
pub fn engine_memory(device: &Device, figure: PoolFigure) -> Option<u64> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(d) = device {
        use candle_core::cuda_backend::cudarc::driver::sys;
        let stream = d.cuda_stream();
        let ctx = stream.context();
        ctx.bind_to_thread().ok()?;
        let cu_dev = ctx.cu_device();
        let (attr, gattr, reset) = match figure {
            PoolFigure::Current => (sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_CURRENT, sys::CUgraphMem_attribute::CU_GRAPH_MEM_ATTR_USED_MEM_CURRENT, false),
            PoolFigure::HighWater { reset } => (sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH, sys::CUgraphMem_attribute::CU_GRAPH_MEM_ATTR_USED_MEM_HIGH, reset),
        };
        // SAFETY: plain attribute queries on this context's device with valid out-pointers.
        unsafe {
            let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
            if sys::cuDeviceGetDefaultMemPool(&mut pool, cu_dev) != sys::CUresult::CUDA_SUCCESS {
                return None;
            }
            let mut pool_bytes: u64 = 0;
            if sys::cuMemPoolGetAttribute(pool, attr, (&mut pool_bytes as *mut u64).cast()) != sys::CUresult::CUDA_SUCCESS {
                return None;
            }
            let mut graph_bytes: u64 = 0;
            let _ = sys::cuDeviceGetGraphMemAttribute(cu_dev, gattr, (&mut graph_bytes as *mut u64).cast());
            if reset {
                let mut zero: u64 = 0;
                let _ = sys::cuMemPoolSetAttribute(pool, attr, (&mut zero as *mut u64).cast());
                let _ = sys::cuDeviceSetGraphMemAttribute(cu_dev, gattr, (&mut zero as *mut u64).cast());
            }
            return Some(pool_bytes + graph_bytes);
        }
    }
    let _ = (device, figure);
    None
}

pub fn dtype(spec: DTypeSpec) -> DType {
    match spec {
        DTypeSpec::F32 => DType::F32,
        DTypeSpec::F16 => DType::F16,
        DTypeSpec::Bf16 => DType::BF16,
    }
}

/// Bytes per element of `spec`.
pub fn dtype_size(spec: DTypeSpec) -> u64 {
    dtype(spec).size_in_bytes() as u64
}

/// Wait until all queued device work has finished, so wall-clock times include it.
pub fn synchronize(device: &Device) -> Result<()> {
    device.synchronize().map_err(EngineError::Candle)
}

/// Turn a candle error into the engine's: a CUDA out-of-memory becomes `OutOfMemory` with our
/// estimate of what the job needs (`needed_bytes`) and what NVML says is free now.
pub fn map_candle_error(e: candle_core::Error, spec: &DeviceSpec, needed_bytes: u64) -> EngineError {
    if is_oom_text(&e.to_string()) {
        let free = crate::gpu::device_info(spec).memory_free_bytes;
        return EngineError::OutOfMemory {
            device: spec.to_string(),
            needed_mb: needed_bytes as f64 / MIB,
            free_mb: free as f64 / MIB,
        };
    }
    EngineError::Candle(e)
}

/// Map a whole engine error: only `Candle` errors can hide an OOM.
pub fn map_engine_error(e: EngineError, spec: &DeviceSpec, needed_bytes: u64) -> EngineError {
    match e {
        EngineError::Candle(c) => map_candle_error(c, spec, needed_bytes),
        other => other,
    }
}

pub const MIB: f64 = 1024.0 * 1024.0;

/// candle surfaces CUDA OOM as a driver error string (CUDA_ERROR_OUT_OF_MEMORY) or cuBLAS
/// alloc failure; there is no typed variant to match on.
pub fn is_oom_text(text: &str) -> bool {
    let t = text.to_ascii_uppercase();
    t.contains("OUT_OF_MEMORY") || t.contains("OUT OF MEMORY") || t.contains("CUBLAS_STATUS_ALLOC_FAILED")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuda_without_feature_says_how_to_rebuild() {
        if cfg!(feature = "cuda") {
            return;
        }
        let err = open(&DeviceSpec::Cuda(0), None).unwrap_err().to_string();
        assert!(err.contains("--features cuda"), "{err}");
    }

    #[test]
    fn oom_texts_are_recognised() {
        assert!(is_oom_text("DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")"));
        assert!(!is_oom_text("shape mismatch in matmul"));
    }
}
