//! Cell text of the tables: the comparison table (shared by the PNG table, Markdown and the
//! terminal) and the small formatters they use.

use crate::report::model::ReportData;

pub fn fmt_opt(v: Option<f64>, decimals: usize) -> String {
    match v {
        Some(v) => format!("{v:.decimals$}"),
        None => "n/a".into(),
    }
}

/// The comparison table: header and cells, shared by the PNG table, Markdown and the terminal.
pub fn comparison_table(data: &ReportData) -> (Vec<&'static str>, Vec<Vec<String>>) {
    let header = vec![
        "Model",
        "Params",
        "Layers",
        "Model Size (MB)",
        "Load Time (s)",
        "Inference Time (s)",
        "Tokens/s",
        "Tok/s 95% CI",
        "GPU Mem Peak (MiB)",
        "GPU Mem Used (%)",
        "SM Util (%)",
        "TTFT p50 (ms)",
        "ITL p50 (ms)",
        "Tok/s CV (%)",
        "Tokens/J",
        "Weights",
        "Device",
        "Batch",
    ];
    let rows = data
        .rows
        .iter()
        .map(|r| {
            vec![
                r.model_label.clone(),
                r.total_parameters.to_string(),
                r.num_layers.to_string(),
                format!("{:.1}", r.model_size_mb),
                if r.model_reused { format!("{:.2} (reused)", r.model_load_time_seconds) } else { format!("{:.2}", r.model_load_time_seconds) },
                format!("{:.2}", r.total_inference_time_seconds),
                format!("{:.1}", r.tokens_per_second),
                r.tokens_per_second_ci95.map_or("n/a".into(), |[lo, hi]| format!("{lo:.1}–{hi:.1}")),
                fmt_opt(r.peak_memory_allocated_mb, 1),
                fmt_opt(r.gpu_memory_utilization_percent, 1),
                fmt_opt(r.sm_utilization_percent, 1),
                format!("{:.1}", r.ttft_p50_ms),
                format!("{:.2}", r.inter_token_latency_p50_ms),
                format!("{:.1}", r.tokens_per_second_cv_percent),
                fmt_opt(r.tokens_per_joule, 2),
                r.weights.clone(),
                r.device_display(),
                r.batch_size.to_string(),
            ]
        })
        .collect();
    (header, rows)
}

/// A kernel name cut to `max` characters (with an ellipsis) for tables and charts.
pub fn truncate_name(name: &str, max: usize) -> String {
    if name.chars().count() <= max {
        name.to_string()
    } else {
        let mut s: String = name.chars().take(max.saturating_sub(1)).collect();
        s.push('…');
        s
    }
}
