use std::sync::atomic::{AtomicU32, Ordering};

mod ptx {
    include!(concat!(env!("OUT_DIR"), "/ptx.rs"));
}

#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Id {
    Affine,
    Binary,
    Cast,
    Conv,
    Fill,
    Indexing,
    Quantized,
    Reduce,
    Sort,
    Ternary,
    Unary,
}

pub const ALL_IDS: [Id; 11] = [
    Id::Affine,
    Id::Binary,
    Id::Cast,
    Id::Conv,
    Id::Fill,
    Id::Indexing,
    Id::Quantized,
    Id::Reduce,
    Id::Sort,
    Id::Ternary,
    Id::Unary,
];

pub struct Module {
    index: usize,
    /// (compute capability ×10, arch-specific 'a' PTX that runs on that major version only, PTX),
    /// newest first.
    ptx: &'static [(u32, bool, &'static str)],
}

impl Module {
    pub fn index(&self) -> usize {
        self.index
    }

    /// The PTX for the capability chosen with [`select_compute_cap`], else for the GPU of the
    /// current CUDA context (device 0 when none is current): the newest built one it can run.
    pub fn ptx(&self) -> &'static str {
        let device_cap = detect::current_compute_cap();
        let target = match (SELECTED_CAP.load(Ordering::Relaxed), device_cap) {
            (0, dev) => dev.unwrap_or(0),
            (cap, Some(dev)) => cap.min(dev),
            (cap, None) => cap,
        };
        let (cap, _, ptx) = *pick(self.ptx, target);
        LOADED_CAP.store(cap, Ordering::Relaxed);
        ptx
    }
}

/// The newest entry of `table` (newest first) that a GPU of capability `target` runs: not newer
/// than it, and an arch-specific one only on its own major version; the oldest when none is.
fn pick(table: &'static [(u32, bool, &'static str)], target: u32) -> &'static (u32, bool, &'static str) {
    table
        .iter()
        .find(|(cap, arch_specific, _)| *cap <= target && (!arch_specific || cap / 10 == target / 10))
        .unwrap_or_else(|| table.last().expect("candle-kernels built for no capability"))
}

static SELECTED_CAP: AtomicU32 = AtomicU32::new(0);
static LOADED_CAP: AtomicU32 = AtomicU32::new(0);

/// Load candle's kernels for compute capability `cap` (×10, e.g. 75) from now on in this
/// process, or for the GPU's own where that is older: the newest built PTX not newer than
/// either. A device loads each module once, when it first needs it, so call this before the
/// device runs anything. 0: the GPU's own.
pub fn select_compute_cap(cap: u32) {
    SELECTED_CAP.store(cap, Ordering::Relaxed);
}

/// The capability of the PTX last loaded by any device in this process (0: none yet).
pub fn loaded_compute_cap() -> u32 {
    LOADED_CAP.load(Ordering::Relaxed)
}

/// The capabilities (×10) this build has PTX for, oldest first, and whether each is
/// arch-specific (compute_90a: 9.x only).
pub fn built_compute_caps() -> &'static [(u32, bool)] {
    ptx::BUILT
}

mod detect {
    use cudarc::driver::sys;

    /// The compute capability ×10 of the current context's device, else of device 0.
    pub fn current_compute_cap() -> Option<u32> {
        // SAFETY: plain driver queries with valid out-pointers; cuInit is idempotent.
        unsafe {
            if sys::cuInit(0) != sys::CUresult::CUDA_SUCCESS {
                return None;
            }
            let mut dev: sys::CUdevice = 0;
            if sys::cuCtxGetDevice(&mut dev) != sys::CUresult::CUDA_SUCCESS && sys::cuDeviceGet(&mut dev, 0) != sys::CUresult::CUDA_SUCCESS {
                return None;
            }
            let (mut major, mut minor) = (0i32, 0i32);
            let a = sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR;
            let b = sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR;
            if sys::cuDeviceGetAttribute(&mut major, a, dev) != sys::CUresult::CUDA_SUCCESS
                || sys::cuDeviceGetAttribute(&mut minor, b, dev) != sys::CUresult::CUDA_SUCCESS
            {
                return None;
            }
            Some((major * 10 + minor) as u32)
        }
    }
}

const fn module_index(id: Id) -> usize {
    let mut i = 0;
    while i < ALL_IDS.len() {
        if ALL_IDS[i] as u32 == id as u32 {
            return i;
        }
        i += 1;
    }
    panic!("id not found")
}

macro_rules! mdl {
    ($cst:ident, $id:ident) => {
        pub const $cst: Module = Module {
            index: module_index(Id::$id),
            ptx: ptx::table!($cst),
        };
    };
}

mdl!(AFFINE, Affine);
mdl!(BINARY, Binary);
mdl!(CAST, Cast);
mdl!(CONV, Conv);
mdl!(FILL, Fill);
mdl!(INDEXING, Indexing);
mdl!(QUANTIZED, Quantized);
mdl!(REDUCE, Reduce);
mdl!(SORT, Sort);
mdl!(TERNARY, Ternary);
mdl!(UNARY, Unary);

pub mod ffi;
