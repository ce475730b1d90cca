//! The shared vocabulary of tokbench. No ML, no I/O: the catalog of known models and their
//! exact published configs, the workload a benchmark job runs, and the report it produces
//! (the demo's benchmark JSON schema, extended). Every other crate speaks these types.

pub mod arch;
#[cfg(feature = "cli")]
pub mod args;
pub mod catalog;
pub mod config;
pub mod config_error;
pub mod kernel_options;
pub mod prompt_file;
pub mod report;
pub mod rotary_config;
pub mod serve;
pub mod sweep;
pub mod workload;
pub mod workload_error;

pub use catalog::{Catalog, CatalogEntry};
pub use kernel_options::{DecodePath, KernelOptions};
pub use arch::ArchSpec;
pub use config::{ArchConfig, ConfigError, Gpt2Config, OptConfig};
pub use rotary_config::{LlamaConfig, RopeScaling, RotaryFamily};
pub use report::BenchReport;
pub use serve::{JobMode, ServeDataset, ServeReport, ServeSpec, ServerEngineOptions};
pub use sweep::{Backend, SweepPlan};
pub use workload::{DeviceSpec, DTypeSpec, PromptSource, Sampling, WeightsMode, Workload, WorkloadError};

/// Version of this build, recorded in every result.
pub const TOKBENCH_VERSION: &str = env!("CARGO_PKG_VERSION");
