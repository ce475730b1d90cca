//! What the GPU tests (gpu_parity, gpu_decode) share: the kernel options they run under.
//!
//! `TOKBENCH_TEST_KERNEL_COMPUTE_CAP` (75, 80 or 90) forces tokbench's kernels of that compute
//! capability (`KernelOptions::compute_cap`), which is how an older GPU's code paths run on a
//! newer one: `TOKBENCH_TEST_KERNEL_COMPUTE_CAP=75 gpu_decode` on an H100 runs the compute_75 PTX
//! (JIT-compiled for the H100), without programmatic dependent launch and without bf16, which
//! those paths refuse (the bf16 cases are then skipped, and say so).
//! candle's kernels follow it too: [`cuda_device`] opens the GPU with candle's PTX of that
//! capability (third_party/candle-kernels builds one per capability), and
//! [`check_candle_ptx`] asserts that is the PTX that loaded.
//! `TOKBENCH_TEST_FUSED_ROTARY_PREFILL=0` turns the rotary families' fused prefill kernels off.

use candle_core::{DType, Device};
use tokbench_core::KernelOptions;

/// The default kernel options with the rotary fused prefill on, and the forced compute
/// capability if one is set.
pub fn base_kernels() -> KernelOptions {
    let cap = std::env::var("TOKBENCH_TEST_KERNEL_COMPUTE_CAP").ok().map(|v| {
        v.trim().parse::<u32>().unwrap_or_else(|_| panic!("TOKBENCH_TEST_KERNEL_COMPUTE_CAP={v}: give 75, 80 or 90"))
    });
    // The rotary families' fused prefill kernels are on by default (as in every job);
    // TOKBENCH_TEST_FUSED_ROTARY_PREFILL=0 runs the tests with them off, to tell their effect apart.
    let fused_rotary_prefill = std::env::var("TOKBENCH_TEST_FUSED_ROTARY_PREFILL").map_or(true, |v| v.trim() != "0");
    if !fused_rotary_prefill {
        println!("GPU_TEST rotary fused prefill off");
    }
    let k = KernelOptions { compute_cap: cap, fused_rotary_prefill, ..KernelOptions::default() };
    k.validate().unwrap_or_else(|e| panic!("TOKBENCH_TEST_KERNEL_COMPUTE_CAP: {e}"));
    if let Some(c) = cap {
        println!("GPU_TEST kernels forced to compute {}.{}", c / 10, c % 10);
    }
    k
}

/// `dtypes` without bf16 where the forced kernels have none.
pub fn dtypes(dtypes: &[DType]) -> Vec<DType> {
    let bf16 = base_kernels().bf16_supported();
    if !bf16 && dtypes.contains(&DType::BF16) {
        println!("GPU_TEST bf16 skipped: the forced kernels have no bf16 (compute 8.0+)");
    }
    dtypes.iter().copied().filter(|&d| bf16 || d != DType::BF16).collect()
}

/// CUDA device 0, its candle kernels of the forced capability (the GPU's own when none is).
pub fn cuda_device() -> Device {
    tokbench_worker::device::open(&tokbench_core::DeviceSpec::Cuda(0), base_kernels().compute_cap).expect("CUDA device 0")
}

/// After a test ran candle ops on [`cuda_device`]: candle's PTX that loaded is the one the forced
/// capability (or the GPU's own) selects, and a forced 7.5 or 8.0 really ran 7.5's or 8.0's.
pub fn check_candle_ptx(dev: &Device) {
    let Device::Cuda(cuda) = dev else { panic!("not a CUDA device") };
    let gpu = tokbench_worker::model::cuda_ops::device_compute_cap(cuda);
    let forced = base_kernels().compute_cap;
    let want = tokbench_worker::device::candle_ptx_cap_for(gpu, forced);
    let loaded = tokbench_worker::device::loaded_candle_ptx_cap();
    println!(
        "GPU_TEST candle kernels: built for {:?}, GPU compute {gpu}, forced {forced:?}, loaded the compute_{} PTX",
        tokbench_worker::device::candle_ptx_caps(),
        loaded.map_or("?".into(), |c| c.to_string())
    );
    assert_eq!(loaded, want, "candle loaded the PTX of another capability than the one selected");
    if let Some(f) = forced {
        assert!(loaded.is_some_and(|c| c <= f), "forced compute {f}, but candle loaded {loaded:?}");
    }
}
