//! The Markdown report: comparison and detail tables, the baseline comparison and where the GPU
//! time goes.

use crate::report::baseline::BaselineComparison;
use crate::report::gpu_time::{GpuTimeEntry, TOP_KERNELS};
use crate::report::model::ReportData;
use crate::report::table::{comparison_table, fmt_opt, truncate_name};
use std::fmt::Write as _;

fn md_table(out: &mut String, header: &[&str], rows: &[Vec<String>]) {
    let _ = writeln!(out, "| {} |", header.join(" | "));
    let _ = writeln!(out, "|{}", header.iter().map(|_| "---|").collect::<String>());
    for r in rows {
        let _ = writeln!(out, "| {} |", r.iter().map(|c| c.replace('|', "\\|")).collect::<Vec<_>>().join(" | "));
    }
}

pub fn markdown(data: &ReportData, baseline: Option<&BaselineComparison>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# tokbench report {}\n", data.timestamp);
    let _ = writeln!(out, "{}\n", data.subtitle());
    let _ = writeln!(out, "## Comparison\n");
    let (h, rows) = comparison_table(data);
    md_table(&mut out, &h, &rows);
    let _ = writeln!(out, "\n## Latency and throughput detail\n");
    let header = [
        "Model",
        "Batch",
        "Device",
        "TTFT p50 (ms)",
        "TTFT p90 (ms)",
        "ITL p50 (ms)",
        "ITL p90 (ms)",
        "Prefill (tok/s)",
        "Decode (tok/s)",
        "Peak Mem (MB)",
        "Dtype",
        "Prompts",
        "Max tokens",
        "Reps",
        "Run",
    ];
    let rows: Vec<Vec<String>> = data
        .rows
        .iter()
        .map(|r| {
            vec![
                r.model.clone(),
                r.batch_size.to_string(),
                r.device_display(),
                format!("{:.1}", r.ttft_p50_ms),
                format!("{:.1}", r.ttft_p90_ms),
                format!("{:.2}", r.inter_token_latency_p50_ms),
                format!("{:.2}", r.inter_token_latency_p90_ms),
                format!("{:.1}", r.prefill_tokens_per_second),
                format!("{:.1}", r.decode_tokens_per_second),
                fmt_opt(r.peak_memory_allocated_mb, 1),
                r.dtype.clone(),
                r.num_prompts.to_string(),
                r.max_tokens.to_string(),
                r.repetitions.to_string(),
                r.run_id.clone(),
            ]
        })
        .collect();
    md_table(&mut out, &header, &rows);
    if data.rows.iter().all(|r| !r.on_gpu()) {
        let _ = writeln!(out, "\nGPU columns are n/a: these runs ran on the CPU.");
    }
    if let Some(b) = baseline {
        out.push('\n');
        out.push_str(&baseline_markdown(b));
    }
    out
}

pub fn baseline_markdown(b: &BaselineComparison) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "## Change vs baseline sweep {}\n", b.baseline_sweep);
    let _ = writeln!(
        out,
        "Change = (current - baseline) / baseline, in %. **REGRESSION** = worse by more than {:.0}% (tokens/s lower; latencies, load time, memory higher) and, where both runs have two or more repetitions, significant by Welch's t-test at p < 0.05 (|t| above the critical value shown); otherwise \"no significant change\".\n",
        b.threshold_percent
    );
    let header = ["Model", "Batch", "Device", "Metric", "Baseline", "Current", "Change (%)", "Verdict"];
    let rows: Vec<Vec<String>> = b
        .changes
        .iter()
        .map(|c| {
            let test = c.welch.map(|w| format!(" (Welch |t| {:.2} vs {:.2})", w.t.abs(), w.critical)).unwrap_or_default();
            let verdict = match c.change_percent {
                None => "n/a".to_string(),
                Some(_) if c.regression => format!("**REGRESSION**{test}"),
                Some(_) if c.improvement => format!("improved{test}"),
                Some(_) if c.welch.is_some_and(|w| !w.significant) => format!("no significant change{test}"),
                Some(_) => "same (within 5%)".to_string(),
            };
            vec![
                c.model.clone(),
                c.batch_size.to_string(),
                c.device.clone(),
                c.metric.to_string(),
                fmt_opt(c.baseline, 2),
                fmt_opt(c.current, 2),
                c.change_percent.map(|p| format!("{p:+.1}")).unwrap_or_else(|| "n/a".into()),
                verdict,
            ]
        })
        .collect();
    md_table(&mut out, &header, &rows);
    let _ = writeln!(out, "\n{} regression(s).", b.regressions());
    if !b.unmatched.is_empty() {
        let _ = writeln!(out, "\nNo baseline run for: {}.", b.unmatched.join(", "));
    }
    out
}

/// The Markdown section "Where the GPU time goes" (empty when no run was profiled).
pub fn gpu_time_markdown(entries: &[GpuTimeEntry]) -> String {
    let mut out = String::new();
    if entries.is_empty() {
        return out;
    }
    let _ = writeln!(out, "## Where the GPU time goes\n");
    let _ = writeln!(
        out,
        "\"Covers\": timed passes = the GPU work that started inside the timed `inference` NVTX ranges; whole process = loading, cuBLASLt tuning and warm-up included.\n"
    );
    let mut header = vec!["Run", "Covers"];
    header.extend(tokbench_core::report::GpuTimeCategory::ALL.iter().map(|c| c.label()));
    header.push("GPU time (ms)");
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            let mut r = vec![e.label.clone(), e.scope.to_string()];
            r.extend(e.percents().iter().map(|(_, p)| format!("{p:.1}%")));
            r.push(format!("{:.2}", e.split.total_ns() as f64 / 1e6));
            r
        })
        .collect();
    md_table(&mut out, &header, &rows);
    let _ = writeln!(out, "\n### Top {TOP_KERNELS} kernels by total time\n");
    let header = ["Run", "#", "Kernel", "Category", "Total (ms)", "Calls", "% of kernel time"];
    let mut rows = Vec::new();
    for e in entries {
        for (i, k) in e.kernels.iter().enumerate() {
            rows.push(vec![
                if i == 0 { e.label.clone() } else { String::new() },
                (i + 1).to_string(),
                format!("`{}`", truncate_name(&k.name, 90).replace('`', "'")),
                k.category.label().to_string(),
                format!("{:.3}", k.total_time_ns as f64 / 1e6),
                k.instances.to_string(),
                format!("{:.1}", k.time_percent),
            ]);
        }
    }
    md_table(&mut out, &header, &rows);
    out
}
