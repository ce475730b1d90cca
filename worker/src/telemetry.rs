//! NVML telemetry sampled on a background thread while a job runs: device memory, this
//! process's memory, utilisation, power, SM clock, temperature and the energy counter.
//! Absent (None) when NVML is not available: we never report made-up zeros.

use crate::gpu;
use nvml_wrapper::enum_wrappers::device::{Clock, TemperatureSensor};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokbench_core::report::{TelemetryPoint, TelemetrySummary};

const MIB: f64 = 1024.0 * 1024.0;

/// One NVML reading. Each figure is None when this GPU/driver does not report it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    /// Since the sampler started.
    pub at: Duration,
    /// Device memory used by all processes, bytes.
    pub memory_used_bytes: u64,
    /// Device memory used by this process, bytes.
    pub process_memory_bytes: Option<u64>,
    /// GPU (SM) busy percentage over the driver's last sample period, 0..100.
    pub utilization_percent: Option<u32>,
    /// Board power draw, milliwatts.
    pub power_milliwatts: Option<u32>,
    pub sm_clock_mhz: Option<u32>,
    pub temperature_c: Option<u32>,
    /// Total energy since the driver was loaded, millijoules (Volta and newer).
    pub energy_millijoules: Option<u64>,
}

/// A running background sampler; `stop` joins it and summarises.
pub struct TelemetrySampler {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Vec<Sample>>>,
    interval: Duration,
    gpu_name: String,
    memory_total_bytes: u64,
}

impl TelemetrySampler {
    /// Start sampling GPU `device_index` every `interval`. None when NVML or the device is not
    /// available (CPU machine, no driver), so callers report "no telemetry" rather than zeros.
    pub fn start(device_index: u32, interval: Duration) -> Option<TelemetrySampler> {
        let nvml = gpu::nvml()?;
        let dev = nvml.device_by_index(device_index).ok()?;
        let gpu_name = dev.name().unwrap_or_else(|_| format!("cuda:{device_index}"));
        let memory_total_bytes = dev.memory_info().ok()?.total;
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = stop.clone();
        let started = Instant::now();
        let handle = std::thread::Builder::new()
            .name("tokbench-telemetry".into())
            .spawn(move || {
                let mut samples = Vec::new();
                loop {
                    let finished = stop_flag.load(Ordering::Relaxed);
                    if let Some(s) = read_sample(device_index, started) {
                        samples.push(s);
                    }
                    // One last sample after stop so the window's end (energy counter) is covered.
                    if finished {
                        break;
                    }
                    std::thread::park_timeout(interval);
                }
                samples
            })
            .ok()?;
        Some(TelemetrySampler { stop, handle: Some(handle), interval, gpu_name, memory_total_bytes })
    }

    /// Stop sampling and summarise. `output_tokens` (tokens generated while sampling) gives
    /// tokens per joule.
    pub fn stop(mut self, output_tokens: u64) -> TelemetrySummary {
        self.stop.store(true, Ordering::Relaxed);
        let samples = match self.handle.take() {
            Some(h) => {
                h.thread().unpark();
                h.join().unwrap_or_default()
            }
            None => Vec::new(),
        };
        summarize(&samples, self.interval, &self.gpu_name, self.memory_total_bytes, output_tokens)
    }
}

impl Drop for TelemetrySampler {
    fn drop(&mut self) {
        // A sampler dropped without stop (error path) must not leave its thread running.
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            h.thread().unpark();
            let _ = h.join();
        }
    }
}

fn read_sample(index: u32, started: Instant) -> Option<Sample> {
    let dev = gpu::nvml()?.device_by_index(index).ok()?;
    let mem = dev.memory_info().ok()?;
    Some(Sample {
        at: started.elapsed(),
        memory_used_bytes: mem.total.saturating_sub(mem.free),
        process_memory_bytes: gpu::process_memory_bytes(index),
        utilization_percent: dev.utilization_rates().ok().map(|u| u.gpu),
        power_milliwatts: dev.power_usage().ok(),
        sm_clock_mhz: dev.clock_info(Clock::SM).ok(),
        temperature_c: dev.temperature(TemperatureSensor::Gpu).ok(),
        energy_millijoules: dev.total_energy_consumption().ok(),
    })
}

/// Summarise samples (in time order). Energy: the delta of the driver's energy counter between
/// the first and last sample when available, else power integrated over time (trapezoids).
pub fn summarize(samples: &[Sample], interval: Duration, gpu_name: &str, memory_total_bytes: u64, output_tokens: u64) -> TelemetrySummary {
    let mean = |v: &[f64]| if v.is_empty() { 0.0 } else { v.iter().sum::<f64>() / v.len() as f64 };
    let max = |v: &[f64]| v.iter().copied().fold(0.0_f64, f64::max);
    let util: Vec<f64> = samples.iter().filter_map(|s| s.utilization_percent.map(f64::from)).collect();
    let watts: Vec<f64> = samples.iter().filter_map(|s| s.power_milliwatts.map(|p| p as f64 / 1000.0)).collect();

    let energy_joules = match (samples.first().and_then(|s| s.energy_millijoules), samples.last().and_then(|s| s.energy_millijoules)) {
        (Some(a), Some(b)) if samples.len() >= 2 && b >= a => Some((b - a) as f64 / 1000.0),
        _ => {
            let pts: Vec<(f64, f64)> = samples
                .iter()
                .filter_map(|s| s.power_milliwatts.map(|p| (s.at.as_secs_f64(), p as f64 / 1000.0)))
                .collect();
            (pts.len() >= 2).then(|| pts.windows(2).map(|w| (w[1].0 - w[0].0) * (w[0].1 + w[1].1) / 2.0).sum())
        }
    };
    let tokens_per_joule = energy_joules.filter(|j| *j > 0.0).map(|j| output_tokens as f64 / j);
    let process_max = samples.iter().filter_map(|s| s.process_memory_bytes).max();
    TelemetrySummary {
        samples: samples.len(),
        interval_ms: interval.as_millis() as u64,
        gpu_name: gpu_name.to_string(),
        memory_total_mb: memory_total_bytes as f64 / MIB,
        memory_used_mb_max: samples.iter().map(|s| s.memory_used_bytes).max().unwrap_or(0) as f64 / MIB,
        process_memory_mb_max: process_max.map(|b| b as f64 / MIB),
        utilization_percent_mean: mean(&util),
        utilization_percent_max: max(&util),
        power_watts_mean: mean(&watts),
        power_watts_max: max(&watts),
        energy_joules,
        tokens_per_joule,
        sm_clock_mhz_max: samples.iter().filter_map(|s| s.sm_clock_mhz).max(),
        temperature_c_max: samples.iter().filter_map(|s| s.temperature_c).max(),
        series: series(samples),
    }
}

/// The samples as report points, thinned evenly (first and last kept) to at most
/// `TelemetryPoint::MAX_POINTS`.
fn series(samples: &[Sample]) -> Vec<TelemetryPoint> {
    let n = samples.len();
    let keep = n.min(TelemetryPoint::MAX_POINTS);
    (0..keep)
        .map(|i| if keep <= 1 { 0 } else { i * (n - 1) / (keep - 1) })
        .map(|i| {
            let s = &samples[i];
            TelemetryPoint {
                t_ms: s.at.as_secs_f64() * 1000.0,
                memory_used_mb: s.memory_used_bytes as f64 / MIB,
                process_memory_mb: s.process_memory_bytes.map(|b| b as f64 / MIB),
                utilization_percent: s.utilization_percent,
                power_watts: s.power_milliwatts.map(|p| p as f64 / 1000.0),
                sm_clock_mhz: s.sm_clock_mhz,
                temperature_c: s.temperature_c,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(ms: u64, used_mib: u64, util: u32, watts: u32, energy_mj: Option<u64>) -> Sample {
        Sample {
            at: Duration::from_millis(ms),
            memory_used_bytes: used_mib << 20,
            process_memory_bytes: Some((used_mib - 100) << 20),
            utilization_percent: Some(util),
            power_milliwatts: Some(watts * 1000),
            sm_clock_mhz: Some(1500 + ms as u32),
            temperature_c: Some(40 + (ms / 100) as u32),
            energy_millijoules: energy_mj,
        }
    }

    #[test]
    fn energy_from_counter_delta() {
        let s = [sample(0, 1000, 50, 100, Some(5_000)), sample(100, 1200, 100, 300, Some(25_000)), sample(200, 1100, 90, 200, Some(45_000))];
        let t = summarize(&s, Duration::from_millis(100), "H100", 80 << 30, 400);
        assert_eq!(t.samples, 3);
        assert_eq!(t.energy_joules, Some(40.0));
        assert_eq!(t.tokens_per_joule, Some(10.0));
        assert_eq!(t.memory_used_mb_max, 1200.0);
        assert_eq!(t.process_memory_mb_max, Some(1100.0));
        assert_eq!(t.memory_total_mb, 80.0 * 1024.0);
        assert!((t.utilization_percent_mean - 80.0).abs() < 1e-9);
        assert_eq!(t.utilization_percent_max, 100.0);
        assert_eq!(t.power_watts_max, 300.0);
        assert_eq!(t.sm_clock_mhz_max, Some(1700));
        assert_eq!(t.temperature_c_max, Some(42));
        let p: Vec<(f64, Option<f64>, Option<u32>)> = t.series.iter().map(|p| (p.t_ms, p.power_watts, p.sm_clock_mhz)).collect();
        assert_eq!(p, vec![(0.0, Some(100.0), Some(1500)), (100.0, Some(300.0), Some(1600)), (200.0, Some(200.0), Some(1700))]);
        assert_eq!(t.series[1].memory_used_mb, 1200.0);
    }

    #[test]
    fn long_series_are_thinned_evenly_keeping_both_ends() {
        let n = TelemetryPoint::MAX_POINTS * 2 + 7;
        let s: Vec<Sample> = (0..n as u64).map(|i| sample(i, 1000, 50, 100, None)).collect();
        let t = summarize(&s, Duration::from_millis(1), "x", 1 << 30, 1);
        assert_eq!(t.samples, n);
        assert_eq!(t.series.len(), TelemetryPoint::MAX_POINTS);
        assert_eq!(t.series.first().unwrap().t_ms, 0.0);
        assert_eq!(t.series.last().unwrap().t_ms, (n - 1) as f64);
        assert!(t.series.windows(2).all(|w| w[1].t_ms > w[0].t_ms));
    }

    #[test]
    fn energy_integrates_power_without_counter() {
        // 100 W for 1 s then 300 W for 1 s, trapezoids: (100+100)/2*1 + (100+300)/2*1 = 300 J.
        let s = [sample(0, 1000, 0, 100, None), sample(1000, 1000, 0, 100, None), sample(2000, 1000, 0, 300, None)];
        let t = summarize(&s, Duration::from_secs(1), "x", 1 << 30, 600);
        assert_eq!(t.energy_joules, Some(300.0));
        assert_eq!(t.tokens_per_joule, Some(2.0));
    }

    #[test]
    fn one_sample_has_no_energy() {
        let t = summarize(&[sample(0, 1000, 10, 100, Some(1))], Duration::from_millis(50), "x", 1 << 30, 10);
        assert_eq!(t.energy_joules, None);
        assert_eq!(t.tokens_per_joule, None);
    }

    #[test]
    fn no_nvml_means_no_sampler() {
        // This test machine class has no NVIDIA driver; where one exists, a sampler must sample.
        match TelemetrySampler::start(0, Duration::from_millis(10)) {
            None => assert!(gpu::nvml().is_none() || gpu::nvml().unwrap().device_by_index(0).is_err()),
            Some(s) => assert!(s.stop(0).samples >= 1),
        }
    }
}
