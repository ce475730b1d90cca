//! NVTX ranges for Nsight Systems (`model_initialization`, `inference`, `prefill`, `decode`,
//! `output_processing`). Compiled to nothing unless the `nvtx` feature is on (the CUDA build
//! turns it on), so the default build needs no libclang.

/// An NVTX range that ends when dropped. The message carries the model name so a timeline
/// of several jobs stays readable: `inference [facebook/opt-125m]`.
pub struct Range {
    #[cfg(feature = "nvtx")]
    _inner: ::nvtx::Range,
}

impl Range {
    pub fn new(name: &str, model: &str) -> Range {
        #[cfg(feature = "nvtx")]
        {
            let _ = (name, model);
            Range { _inner: ::nvtx::Range::new(::nvtx::Str::from_str_lossy(&format!("{name} [{model}]"))) }
        }
        #[cfg(not(feature = "nvtx"))]
        {
            let _ = (name, model);
            Range {}
        }
    }
}

pub const fn enabled() -> bool {
    cfg!(feature = "nvtx")
}
