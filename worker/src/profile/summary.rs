//! The parsed `nsys stats` tables of one profile, and what goes from them into the report's
//! `nsight_metrics` (GPU time split by kind of work, NVTX range medians, notes).

use tokbench_core::report::{GpuTimeCategory, GpuTimeSplit, KernelStat, MemOpStat, NvtxRangeStat};

use super::csv::{parse_kernel_summary, parse_mem_summary, parse_nvtx_summary};
use super::{ProfileError, TOP_KERNELS};

/// The three summaries of one profile, parsed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatsSummary {
    /// All kernels, by total time descending.
    pub kernels: Vec<KernelStat>,
    pub nvtx: Vec<NvtxRangeStat>,
    pub memory_ops: Vec<MemOpStat>,
}

impl StatsSummary {
    /// Parses the per-report files where present, else looks for each table in `console`
    /// (the stdout/stderr of `nsys stats`). A report absent from both means nsys had no data
    /// of that kind (it prints "SKIPPED: ... does not contain ..."): an empty list.
    pub fn from_outputs(kern: Option<&str>, nvtx: Option<&str>, mem: Option<&str>, console: &str) -> Result<StatsSummary, ProfileError> {
        Ok(StatsSummary {
            kernels: parse_kernel_summary(kern.unwrap_or(console))?,
            nvtx: parse_nvtx_summary(nvtx.unwrap_or(console))?,
            memory_ops: parse_mem_summary(mem.unwrap_or(console))?,
        })
    }

    /// GPU busy time by category over all kernels and memory operations.
    pub fn time_split(&self) -> GpuTimeSplit {
        let mut split = GpuTimeSplit::default();
        for k in &self.kernels {
            split.add(k.category, k.total_time_ns);
        }
        for m in &self.memory_ops {
            split.add(GpuTimeCategory::MemcpyMemset, m.total_time_ns);
        }
        split
    }

    /// Median duration (s) of the `inference [...]` NVTX range.
    pub fn inference_range_seconds(&self) -> Option<f64> {
        self.nvtx.iter().find(|r| nvtx_base_name(&r.range) == "inference").map(|r| r.med_ns / 1e9)
    }

    /// Human-readable summary for `nsight_metrics.notes` (the demo's notes were about memory
    /// transfers; these add where GPU time went).
    pub fn notes(&self) -> String {
        let mut parts = Vec::new();
        let split = self.time_split();
        if split.total_ns() == 0 {
            parts.push("no CUDA kernels or memory operations in the profile (did the job run on the CPU?)".to_string());
        } else {
            let shares: Vec<String> = GpuTimeCategory::ALL
                .iter()
                .filter(|c| split.get(**c) > 0)
                .map(|c| format!("{} {:.1}%", c.label(), split.percent(*c)))
                .collect();
            parts.push(format!("GPU time {:.3} ms: {}", split.total_ns() as f64 / 1e6, shares.join(", ")));
        }
        if let Some(top) = self.kernels.first() {
            parts.push(format!(
                "{} distinct kernels, {} launches; top kernel {} ({:.1}% of kernel time, {} launches)",
                self.kernels.len(),
                self.kernels.iter().map(|k| k.instances).sum::<u64>(),
                top.name,
                top.time_percent,
                top.instances
            ));
        }
        if !self.memory_ops.is_empty() {
            let ops: Vec<String> = self
                .memory_ops
                .iter()
                .map(|m| format!("{} x{} {:.3} ms", m.operation.trim_matches(|c| c == '[' || c == ']'), m.count, m.total_time_ns as f64 / 1e6))
                .collect();
            parts.push(format!("memory operations: {}", ops.join("; ")));
        }
        if let Some(s) = self.inference_range_seconds() {
            parts.push(format!("inference NVTX range median {s:.4} s"));
        } else if !self.nvtx.is_empty() {
            parts.push("no inference NVTX range".into());
        } else {
            parts.push("no NVTX ranges (worker built without the nvtx feature?)".into());
        }
        parts.join(". ")
    }

    /// Writes the summary into `m` (kernels truncated to TOP_KERNELS).
    pub fn fill(&self, m: &mut tokbench_core::report::NsightMetrics) {
        m.gpu_time_split = Some(self.time_split()).filter(|s| s.total_ns() > 0);
        m.inference_range_seconds = self.inference_range_seconds();
        // Keep what the bench wrote (how transfers happen in this engine) after the measured summary.
        let summary = self.notes();
        m.notes = if m.notes.is_empty() { summary } else { format!("{summary}. {}", m.notes) };
        m.kernels = self.kernels.iter().take(TOP_KERNELS).cloned().collect();
        m.nvtx = self.nvtx.clone();
        m.memory_ops = self.memory_ops.clone();
        // What nsys saw, by base name (`inference [gpt2]` -> `inference`), first-seen order.
        m.nvtx_ranges.clear();
        for r in &self.nvtx {
            let base = nvtx_base_name(&r.range).to_string();
            if !m.nvtx_ranges.contains(&base) {
                m.nvtx_ranges.push(base);
            }
        }
    }
}

/// `inference [facebook/opt-125m]` -> `inference`; a leading `:` (empty NVTX domain, as
/// nsys prints push/pop ranges) or `domain:` is dropped.
pub fn nvtx_base_name(range: &str) -> &str {
    let r = range.trim();
    let r = match r.split_once(':') {
        // Only treat it as a domain prefix when it comes before the bracketed model name.
        Some((dom, rest)) if !dom.contains('[') => rest,
        _ => r,
    };
    r.split(" [").next().unwrap_or(r).trim()
}
