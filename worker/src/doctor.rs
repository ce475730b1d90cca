//! `tokbench-worker doctor`: what this machine offers tokbench, on one screen or as JSON: the
//! build (CUDA compiled in or not), the NVIDIA driver and the CUDA version it supports, each GPU
//! (name, compute capability, memory) and the kernel paths tokbench takes on it, whether NVML and
//! nsys were found and where, the Hugging Face cache, and whether the Hub endpoint answers a TCP
//! connection. Never fails: what cannot be read is reported as such.

use serde::Serialize;
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

#[derive(Debug, Clone, Serialize)]
pub struct Doctor {
    pub worker_version: String,
    /// Whether this binary was built with `--features cuda`.
    pub cuda_build: bool,
    /// The compute capabilities this build has candle's kernels for, as PTX ("7.5, 8.0, 8.9,
    /// 9.0"; `CUDA_COMPUTE_CAP` at build time narrows them); None without CUDA.
    pub build_compute_capability: Option<String>,
    /// "loaded" or why not (no NVIDIA driver, libnvidia-ml not found).
    pub nvml: String,
    pub driver_version: Option<String>,
    /// CUDA version the driver supports ("13.0").
    pub cuda_driver_version: Option<String>,
    pub gpus: Vec<GpuReport>,
    /// The nsys `--profile` would use, or why none.
    pub nsys: String,
    /// The Hugging Face hub cache folder (HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub).
    pub hf_cache: String,
    pub hub: HubCheck,
}

#[derive(Debug, Clone, Serialize)]
pub struct GpuReport {
    pub index: u32,
    pub name: String,
    /// "9.0"; None when NVML does not say.
    pub compute_capability: Option<String>,
    pub memory_total_mib: Option<u64>,
    pub memory_free_mib: Option<u64>,
    /// What tokbench runs on this GPU (see [`kernel_paths`]).
    pub kernel_paths: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HubCheck {
    /// HF_ENDPOINT, else https://huggingface.co.
    pub endpoint: String,
    /// None: not checked (HF_HUB_OFFLINE set).
    pub reachable: Option<bool>,
    pub detail: String,
}

/// The compute capabilities (×10, oldest first) this build has candle's kernels for; None in a
/// build without CUDA.
pub fn build_compute_caps() -> Option<Vec<u32>> {
    cfg!(feature = "cuda").then(crate::device::candle_ptx_caps)
}

fn caps_text(caps: &[u32]) -> String {
    caps.iter().map(|c| format!("{}.{}", c / 10, c % 10)).collect::<Vec<_>>().join(", ")
}

/// The kernel paths tokbench takes on a GPU of compute capability `major.minor`, as the engine
/// chooses them (`KernelOptions::on_device`, and for candle's kernels the newest built PTX the
/// GPU runs, `newest_runnable_ptx`), for a build with candle's kernels for `build_caps` (None:
/// built without CUDA).
pub fn kernel_paths(major: u32, minor: u32, build_caps: Option<&[u32]>) -> Vec<String> {
    let Some(build_caps) = build_caps else {
        return vec!["none: this worker was built without CUDA (cargo build --features cuda, see docs/cuda.md)".into()];
    };
    let cap = major * 10 + minor;
    if cap < 75 {
        return vec![format!("unsupported: tokbench needs compute capability 7.5 (Turing) or newer; this GPU is {major}.{minor}")];
    }
    let Some(candle_cap) = tokbench_core::kernel_options::newest_runnable_ptx(build_caps, cap) else {
        return vec![format!(
            "unsupported by this build: its candle kernels are for compute {} only (CUDA_COMPUTE_CAP at build time); rebuild with CUDA_COMPUTE_CAP unset (every capability) or ={cap} (docs/cuda.md)",
            caps_text(build_caps)
        )];
    };
    let k = tokbench_core::KernelOptions::default().on_device(cap);
    let kcap = k.compute_cap.unwrap_or(cap);
    let mut paths = vec![
        format!("tokbench's kernels: the compute_{kcap} PTX, JIT-compiled by the driver for this GPU"),
        format!("candle's kernels: the compute_{candle_cap} PTX (this build has {})", caps_text(build_caps)),
        "decode: fused GEMV + attention kernels replayed as a CUDA graph".to_string(),
    ];
    if kcap >= 80 {
        paths.push("prefill attention on tensor cores (mma.sync m16n8k16, f16/bf16)".into());
    } else {
        paths.push("prefill attention on tensor cores (mma.sync m16n8k8, f16; bf16 has no mma before 8.0)".into());
    }
    if kcap >= 80 && candle_cap >= 80 {
        paths.push("dtypes: f32, f16, bf16".into());
    } else if kcap >= 80 {
        paths.push(format!("dtypes: f32, f16 (no bf16: the candle kernels this GPU runs are compute {}.{}'s)", candle_cap / 10, candle_cap % 10));
    } else {
        paths.push("dtypes: f32, f16 (bf16 needs compute 8.0; --dtype bf16 is refused)".into());
    }
    if k.pdl {
        paths.push("programmatic dependent launch between the decode step's kernels (compute_90 PTX)".into());
    } else {
        paths.push("no programmatic dependent launch (needs compute 9.0)".into());
    }
    paths
}

/// Looks at this machine (NVML, PATH, environment, one TCP connect to the Hub with `timeout`).
pub fn examine(timeout: Duration) -> Doctor {
    let cuda_build = cfg!(feature = "cuda");
    let (nvml_state, driver, cuda_driver, gpus) = match crate::gpu::nvml() {
        None => ("not found: no NVIDIA driver, or libnvidia-ml.so.1 is not on the library path".to_string(), None, None, Vec::new()),
        Some(nvml) => {
            let driver = nvml.sys_driver_version().ok();
            let cuda = nvml.sys_cuda_driver_version().ok().map(|v| format!("{}.{}", v / 1000, (v % 1000) / 10));
            let count = nvml.device_count().unwrap_or(0);
            let gpus = (0..count)
                .filter_map(|i| nvml.device_by_index(i).ok().map(|d| (i, d)))
                .map(|(i, d)| {
                    let cc = d.cuda_compute_capability().ok();
                    let mem = d.memory_info().ok();
                    GpuReport {
                        index: i,
                        name: d.name().unwrap_or_else(|e| format!("unknown ({e})")),
                        compute_capability: cc.as_ref().map(|c| format!("{}.{}", c.major, c.minor)),
                        memory_total_mib: mem.as_ref().map(|m| m.total >> 20),
                        memory_free_mib: mem.as_ref().map(|m| m.free >> 20),
                        kernel_paths: match cc {
                            Some(c) => kernel_paths(c.major as u32, c.minor as u32, build_compute_caps().as_deref()),
                            None => vec!["unknown: NVML did not report the compute capability".into()],
                        },
                    }
                })
                .collect();
            ("loaded".to_string(), driver, cuda, gpus)
        }
    };
    let nsys = match crate::profile::find_nsys(None) {
        Ok(p) => p.display().to_string(),
        Err(e) => e.to_string(),
    };
    Doctor {
        worker_version: env!("CARGO_PKG_VERSION").to_string(),
        cuda_build,
        build_compute_capability: build_compute_caps().map(|c| caps_text(&c)),
        nvml: nvml_state,
        driver_version: driver,
        cuda_driver_version: cuda_driver,
        gpus,
        nsys,
        hf_cache: crate::hub::hf_cache().path().display().to_string(),
        hub: check_hub(timeout),
    }
}


use crate::hub::host_port;

fn check_hub(timeout: Duration) -> HubCheck {
    let endpoint = std::env::var("HF_ENDPOINT").ok().filter(|e| !e.is_empty()).unwrap_or_else(|| "https://huggingface.co".into());
    let offline = crate::hub::offline_from_env();
    if offline {
        return HubCheck { endpoint, reachable: None, detail: "not checked: HF_HUB_OFFLINE is set".into() };
    }
    let Some((host, port)) = host_port(&endpoint) else {
        return HubCheck { endpoint, reachable: Some(false), detail: "HF_ENDPOINT is not an http:// or https:// URL".into() };
    };
    let addrs = match (host.as_str(), port).to_socket_addrs() {
        Ok(a) => a.collect::<Vec<_>>(),
        Err(e) => {
            return HubCheck { endpoint, reachable: Some(false), detail: format!("cannot resolve {host}: {e} (offline? use cached models, --weights synthetic, or set HF_ENDPOINT)") };
        }
    };
    let mut last = String::from("no address");
    for a in &addrs {
        match TcpStream::connect_timeout(a, timeout) {
            Ok(_) => return HubCheck { endpoint, reachable: Some(true), detail: format!("TCP connection to {a} accepted") },
            Err(e) => last = format!("{a}: {e}"),
        }
    }
    HubCheck { endpoint, reachable: Some(false), detail: format!("no TCP connection to {host}:{port} ({last}); offline? use cached models, --weights synthetic, or set HF_ENDPOINT") }
}

impl std::fmt::Display for Doctor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let or = |o: &Option<String>| o.clone().unwrap_or_else(|| "unknown".into());
        match &self.build_compute_capability {
            Some(c) if self.cuda_build => writeln!(f, "tokbench-worker {} (CUDA build, candle kernels as PTX for compute {c}; a GPU runs the newest not newer than itself)", self.worker_version)?,
            _ => writeln!(f, "tokbench-worker {} ({})", self.worker_version, if self.cuda_build { "CUDA build" } else { "CPU-only build" })?,
        }
        writeln!(f, "NVML:      {}", self.nvml)?;
        writeln!(f, "driver:    {} (supports CUDA {})", or(&self.driver_version), or(&self.cuda_driver_version))?;
        if self.gpus.is_empty() {
            writeln!(f, "GPUs:      none found")?;
        }
        for g in &self.gpus {
            let mib = |m: Option<u64>| m.map_or("?".to_string(), |v| v.to_string());
            writeln!(
                f,
                "GPU {}:     {}, compute {}, {} MiB ({} MiB free)",
                g.index,
                g.name,
                or(&g.compute_capability),
                mib(g.memory_total_mib),
                mib(g.memory_free_mib)
            )?;
            for p in &g.kernel_paths {
                writeln!(f, "           - {p}")?;
            }
        }
        writeln!(f, "nsys:      {}", self.nsys)?;
        writeln!(f, "HF cache:  {}", self.hf_cache)?;
        let hub = match self.hub.reachable {
            Some(true) => "reachable",
            Some(false) => "NOT reachable",
            None => "not checked",
        };
        write!(f, "Hub:       {} {} ({})", self.hub.endpoint, hub, self.hub.detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_paths_follow_the_capability() {
        let all: &[u32] = &[75, 80, 89, 90];
        assert!(kernel_paths(7, 0, Some(all))[0].starts_with("unsupported: tokbench needs compute capability 7.5"));
        let turing = kernel_paths(7, 5, Some(all)).join("\n");
        assert!(turing.contains("compute_75 PTX") && turing.contains("m16n8k8") && turing.contains("--dtype bf16 is refused"), "{turing}");
        let ampere_on_turing_build = kernel_paths(8, 6, Some(&[75])).join("\n");
        assert!(ampere_on_turing_build.contains("candle's kernels: the compute_75 PTX") && ampere_on_turing_build.contains("no bf16: the candle kernels"), "{ampere_on_turing_build}");
        let ampere = kernel_paths(8, 6, Some(all)).join("\n");
        assert!(ampere.contains("candle's kernels: the compute_80 PTX") && ampere.contains("no programmatic dependent launch") && ampere.contains("f16, bf16"), "{ampere}");
        let ada = kernel_paths(8, 9, Some(all)).join("\n");
        assert!(ada.contains("candle's kernels: the compute_89 PTX") && ada.contains("tokbench's kernels: the compute_80 PTX"), "{ada}");
        let ada_on_hopper_build = kernel_paths(8, 9, Some(&[90])).join("\n");
        assert!(ada_on_hopper_build.contains("rebuild with CUDA_COMPUTE_CAP unset (every capability) or =89"), "{ada_on_hopper_build}");
        let hopper = kernel_paths(9, 0, Some(all)).join("\n");
        assert!(hopper.contains("programmatic dependent launch between") && hopper.contains("candle's kernels: the compute_90 PTX"), "{hopper}");
        let blackwell = kernel_paths(10, 0, Some(all)).join("\n");
        assert!(blackwell.contains("candle's kernels: the compute_89 PTX"), "{blackwell}");
        assert!(kernel_paths(9, 0, None)[0].starts_with("none: this worker was built without CUDA"));
    }

    #[test]
    fn endpoints_parse_to_host_and_port() {
        assert_eq!(host_port("https://huggingface.co"), Some(("huggingface.co".into(), 443)));
        assert_eq!(host_port("http://127.0.0.1:8080/mirror"), Some(("127.0.0.1".into(), 8080)));
        assert_eq!(host_port("http://hub.local/"), Some(("hub.local".into(), 80)));
        assert_eq!(host_port("http://[::1]:9000"), Some(("::1".into(), 9000)));
        assert_eq!(host_port("ftp://x"), None);
        assert_eq!(host_port("https://"), None);
    }
}
