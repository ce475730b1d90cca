//! Launch plumbing: the PTX modules, programmatic dependent launch, kernel arguments and the one
//! launch call every launcher goes through.

use super::*;
use candle_core::cuda_backend::cudarc::driver::{result as driver_result, sys, CudaFunction, DevicePtr, DeviceRepr, LaunchConfig};
use candle_core::cuda_backend::{CudaDType, CudaDevice, WrapErr};
use candle_core::{bail, Result, Storage, Tensor};
use std::cell::RefCell;
use tokbench_core::KernelOptions;
use std::ffi::c_void;
use std::sync::OnceLock;

/// tokbench's kernels as PTX for compute 7.5 (Turing: the prefill tiles as two m16n8k8 mma, warp
/// reductions by shuffles, no bf16 arithmetic), 8.0 (Ampere and Ada: m16n8k16 mma, redux.sync)
/// and 9.0 (Hopper and newer: the same with the `griddepcontrol` instructions of programmatic
/// dependent launch compiled in). The driver JIT-compiles PTX for its own GPU, so a GPU runs the
/// newest module not newer than itself ([`module_for`]).
const PTX_SM75: &str = include_str!(concat!(env!("OUT_DIR"), "/decode_sm75.ptx"));
const PTX_SM80: &str = include_str!(concat!(env!("OUT_DIR"), "/decode_sm80.ptx"));
const PTX_SM90: &str = include_str!(concat!(env!("OUT_DIR"), "/decode_sm90.ptx"));

/// The module (name, PTX) that options `k` (as they run on a device, see [`active_kernels`])
/// launch from: compute_90 with programmatic dependent launch on, else the newest of 8.0 and
/// 7.5 not past `k.compute_cap`.
fn module_for(k: &KernelOptions) -> (&'static str, &'static str) {
    if k.pdl {
        ("tokbench_decode_sm90", PTX_SM90)
    } else if k.compute_cap.is_none_or(|c| c >= 80) {
        ("tokbench_decode_sm80", PTX_SM80)
    } else {
        ("tokbench_decode_sm75", PTX_SM75)
    }
}

/// What every launcher needs from the job, passed to each call: the job's kernel options as they
/// apply on this device, and, inside a fused decode step, the step's [`StepArena`]. The model
/// makes one per forward pass (`Model::launch`), the decoder one per step with its arena
/// (`FastDecoder`); tests make their own with [`Launch::for_device`].
#[derive(Clone, Copy)]
pub struct Launch<'a> {
    /// The options in force: the job's, with `pdl` off where the device cannot do it.
    kernels: KernelOptions,
    /// Where outputs go inside a decode step (see [`StepArena`]); None: fresh tensors.
    arena: Option<&'a RefCell<StepArena>>,
}

impl Launch<'static> {
    /// Launches with `kernels` as they are (already resolved for the device, see
    /// [`active_kernels`]), outside any step arena.
    pub fn new(kernels: KernelOptions) -> Launch<'static> {
        Launch { kernels, arena: None }
    }

    /// Launches with the options `asked` for on `device` (see [`active_kernels`]; off CUDA, no
    /// programmatic dependent launch).
    pub fn for_device(asked: &KernelOptions, device: &candle_core::Device) -> Launch<'static> {
        match device {
            candle_core::Device::Cuda(dev) => Launch::new(active_kernels(asked, dev)),
            _ => Launch::new(KernelOptions { pdl: false, ..*asked }),
        }
    }
}

impl<'a> Launch<'a> {
    /// The same options, every output taken from `arena` (a decode step's launches).
    pub fn with_arena<'b>(&self, arena: &'b RefCell<StepArena>) -> Launch<'b> {
        Launch { kernels: self.kernels, arena: Some(arena) }
    }
    /// The options in force.
    pub fn kernels(&self) -> &KernelOptions {
        &self.kernels
    }
    /// The step arena the outputs go to, if any.
    pub(super) fn arena(&self) -> Option<&'a RefCell<StepArena>> {
        self.arena
    }
}

/// The compute capability of `dev`, ×10 (90 for an H100).
pub fn device_compute_cap(dev: &CudaDevice) -> u32 {
    let stream = dev.cuda_stream();
    let ctx = stream.context();
    let major = ctx.attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR).unwrap_or(0);
    let minor = ctx.attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR).unwrap_or(0);
    (major.max(0) * 10 + minor.max(0)) as u32
}

/// The options `asked` for as they run on `dev` ([`KernelOptions::on_device`]).
pub fn active_kernels(asked: &KernelOptions, dev: &CudaDevice) -> KernelOptions {
    asked.on_device(device_compute_cap(dev))
}

/// The kernel `name` from the module that options `k` launch from ([`module_for`]).
fn function(dev: &CudaDevice, name: &str, k: &KernelOptions) -> Result<CudaFunction> {
    let (module, ptx) = module_for(k);
    Ok(dev.get_or_load_custom_func(name, module, ptx)?.into_cuda_function())
}

/// Blocks of `threads` threads and `smem` bytes of dynamic shared memory of kernel `name` that
/// are resident on the whole GPU at once (occupancy per SM × SMs): the grid of a persistent
/// kernel, launched as `l` launches. Cached per (device, module, kernel, shared memory): a fact
/// of the device and the compiled kernel, not of a job.
pub(super) fn resident_blocks(l: &Launch, dev: &CudaDevice, name: &str, threads: u32, smem: usize) -> Result<usize> {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static CACHE: OnceLock<Mutex<HashMap<(usize, &'static str, String, usize), usize>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let key = (dev.cuda_stream().context().ordinal(), module_for(&l.kernels).0, name.to_string(), smem);
    if let Some(&n) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Ok(n);
    }
    let func = function(dev, name, &l.kernels)?;
    let per_sm = func.occupancy_max_active_blocks_per_multiprocessor(threads, smem, None).w()?.max(1) as usize;
    let sms = dev.cuda_stream().context().attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT).w()?.max(1) as usize;
    let n = per_sm * sms;
    cache.lock().unwrap_or_else(|e| e.into_inner()).insert(key, n);
    Ok(n)
}

/// A kernel argument: a device pointer or a scalar.
#[derive(Clone, Copy)]
pub(super) enum Arg {
    Ptr(u64),
    I32(i32),
    F32(f32),
}

/// Launches kernel `name` on the device's stream (with programmatic dependent launch where `l`'s
/// options have it on).
///
/// SAFETY: the arguments must match the kernel's parameters in number and type, and the kernel
/// must stay inside the buffers they point to.
pub(super) unsafe fn launch(l: &Launch, dev: &CudaDevice, name: &str, cfg: LaunchConfig, args: &[Arg]) -> Result<()> {
    let pdl = l.kernels.pdl;
    let func = function(dev, name, &l.kernels)?;
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
pub(super) fn ptr<T: CudaDType + DeviceRepr>(t: &Tensor, what: &str) -> Result<Arg> {
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
pub(super) fn opt_ptr<T: CudaDType + DeviceRepr>(t: Option<&Tensor>, what: &str) -> Result<Arg> {
    t.map_or(Ok(Arg::Ptr(0)), |t| ptr::<T>(t, what))
}

pub(super) fn grid_1d(n: usize) -> LaunchConfig {
    let threads = 256u32;
    let blocks = n.div_ceil(threads as usize).clamp(1, 4096) as u32;
    LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: 0 }
}
