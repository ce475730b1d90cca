//! What device a job runs on and how much memory it has: NVML on CUDA (nvml-wrapper dlopens
//! libnvidia-ml at run time, so this builds and runs everywhere), /proc/meminfo on CPU.

use std::sync::OnceLock;
use tokbench_core::DeviceSpec;

/// The device a job runs on. Memory figures are bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceInfo {
    /// "cpu" or "cuda".
    pub backend: String,
    pub device_index: u32,
    /// GPU product name, or "none (cpu)".
    pub gpu_name: String,
    /// CUDA: device memory (NVML); CPU: host RAM (MemTotal), bytes.
    pub memory_total_bytes: u64,
    /// CUDA: free device memory (NVML); CPU: MemAvailable, bytes.
    pub memory_free_bytes: u64,
    /// NVIDIA driver version, "" when unknown (CPU, or no NVML).
    pub driver_version: String,
    /// CUDA version the driver supports ("12.4"), "" when unknown.
    pub cuda_version: String,
}

pub const CPU_GPU_NAME: &str = "none (cpu)";

/// The process-wide NVML handle, or None when libnvidia-ml cannot be loaded (no NVIDIA driver).
/// Initialised once: NVML init is slow (~100s of ms) and the handle is thread-safe.
pub fn nvml() -> Option<&'static nvml_wrapper::Nvml> {
    static NVML: OnceLock<Option<nvml_wrapper::Nvml>> = OnceLock::new();
    NVML.get_or_init(|| match nvml_wrapper::Nvml::init() {
        Ok(n) => Some(n),
        Err(e) => {
            tracing::debug!("NVML not available ({e}); GPU memory and telemetry figures will be absent");
            None
        }
    })
    .as_ref()
}

/// Describe `device`. Never fails: fields that cannot be read are empty strings / 0 bytes,
/// so a missing NVML does not stop a CUDA job (its memory figures are then unknown).
pub fn device_info(device: &DeviceSpec) -> DeviceInfo {
    match device {
        DeviceSpec::Cpu => {
            let (total, avail) = host_memory_bytes().unwrap_or((0, 0));
            DeviceInfo {
                backend: "cpu".into(),
                device_index: 0,
                gpu_name: CPU_GPU_NAME.into(),
                memory_total_bytes: total,
                memory_free_bytes: avail,
                driver_version: String::new(),
                cuda_version: String::new(),
            }
        }
        DeviceSpec::Cuda(i) => {
            let mut info = DeviceInfo {
                backend: "cuda".into(),
                device_index: *i as u32,
                gpu_name: format!("cuda:{i} (name unknown: NVML not available)"),
                memory_total_bytes: 0,
                memory_free_bytes: 0,
                driver_version: String::new(),
                cuda_version: String::new(),
            };
            if let Some(nvml) = nvml() {
                info.driver_version = nvml.sys_driver_version().unwrap_or_default();
                info.cuda_version = nvml
                    .sys_cuda_driver_version()
                    // NVML encodes 12040 for CUDA 12.4.
                    .map(|v| format!("{}.{}", v / 1000, (v % 1000) / 10))
                    .unwrap_or_default();
                if let Ok(dev) = nvml.device_by_index(*i as u32) {
                    if let Ok(name) = dev.name() {
                        info.gpu_name = name;
                    }
                    if let Ok(mem) = dev.memory_info() {
                        info.memory_total_bytes = mem.total;
                        info.memory_free_bytes = mem.free;
                    }
                }
            }
            info
        }
    }
}

/// Device memory used by this process on GPU `index` per NVML's running compute processes,
/// bytes. None when NVML is absent, the process is not listed yet, or the driver hides it
/// (containers without the host PID namespace).
pub fn process_memory_bytes(index: u32) -> Option<u64> {
    let dev = nvml()?.device_by_index(index).ok()?;
    let pid = std::process::id();
    dev.running_compute_processes().ok()?.into_iter().find(|p| p.pid == pid).and_then(|p| match p.used_gpu_memory {
        nvml_wrapper::enums::device::UsedGpuMemory::Used(b) => Some(b),
        nvml_wrapper::enums::device::UsedGpuMemory::Unavailable => None,
    })
}

/// Used device memory (all processes) on GPU `index`, bytes, or None without NVML.
pub fn device_used_bytes(index: u32) -> Option<u64> {
    let dev = nvml()?.device_by_index(index).ok()?;
    dev.memory_info().ok().map(|m| m.total.saturating_sub(m.free))
}

/// (MemTotal, MemAvailable) of the host in bytes, from /proc/meminfo (Linux).
pub fn host_memory_bytes() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_meminfo(&text)
}

fn parse_meminfo(text: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        text.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix(':')?;
            // /proc/meminfo reports kB (KiB).
            rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok().map(|kib| kib * 1024)
        })
    };
    let total = field("MemTotal")?;
    let avail = field("MemAvailable").or_else(|| field("MemFree"))?;
    Some((total, avail))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_is_parsed_in_bytes() {
        let text = "MemTotal:       24576000 kB\nMemFree:         1000 kB\nMemAvailable:   12288000 kB\n";
        assert_eq!(parse_meminfo(text), Some((24576000 * 1024, 12288000 * 1024)));
        assert_eq!(parse_meminfo("garbage"), None);
    }

    #[test]
    fn cpu_device_reports_host_ram() {
        let info = device_info(&DeviceSpec::Cpu);
        assert_eq!(info.backend, "cpu");
        assert_eq!(info.gpu_name, CPU_GPU_NAME);
        assert!(info.memory_total_bytes > 0 && info.memory_free_bytes <= info.memory_total_bytes);
    }
}
