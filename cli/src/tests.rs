//! Unit tests of the report and chart code on constructed reports. The PNGs are decoded and
//! checked for real content; set TOKBENCH_KEEP_PLOTS=DIR to keep them for viewing.

use crate::fixtures::{record, report, Dev};
use crate::report::*;
use std::path::Path;

fn out_dir(name: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = match std::env::var("TOKBENCH_KEEP_PLOTS") {
        Ok(d) => Path::new(&d).join(name),
        Err(_) => tmp.path().join(name),
    };
    (tmp, dir)
}

/// Decodes a PNG and returns (width, height, distinct colours, dark pixels in the top 80 rows).
pub(crate) fn png_stats(path: &Path) -> (u32, u32, usize, usize) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let ch = info.color_type.samples();
    let px = &buf[..info.buffer_size()];
    let mut colours = std::collections::HashSet::new();
    let mut dark_top = 0;
    for (i, p) in px.chunks(ch).enumerate() {
        colours.insert(p[..3].to_vec());
        let y = i as u32 / info.width;
        if y < 80 && (p[0] as u32 + p[1] as u32 + p[2] as u32) < 200 {
            dark_top += 1;
        }
    }
    (info.width, info.height, colours.len(), dark_top)
}

fn assert_real_png(path: &Path) {
    let (w, h, colours, dark) = png_stats(path);
    assert!(w >= 800 && h >= 250, "{} is {w}x{h}", path.display());
    assert!(colours > 30, "{} has only {colours} colours: blank?", path.display());
    assert!(dark > 200, "{} has {dark} dark pixels in the title area: no title text?", path.display());
}

fn three_models_cpu() -> Vec<RunRecord> {
    vec![
        record("sweep-cpu-1", "r1", report("opt-125m", 4, Dev::Cpu, 41.5)),
        record("sweep-cpu-1", "r2", report("opt-350m", 4, Dev::Cpu, 15.2)),
        record("sweep-cpu-1", "r3", report("gpt2", 4, Dev::Cpu, 44.0)),
    ]
}

#[test]
fn cpu_report_writes_all_files_with_na_gpu_fields() {
    let (_t, dir) = out_dir("cpu");
    let opts = ReportOptions { out_dir: dir.clone(), svg: true, timestamp: Some("20261128_041500".into()), ..Default::default() };
    let w = write_report(&three_models_cpu(), None, &opts).unwrap();
    let names: Vec<String> = w.files.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    for n in [
        "comparison_table_20261128_041500.png",
        "comparison_table_20261128_041500.svg",
        "performance_graphs_20261128_041500.png",
        "performance_graphs_20261128_041500.svg",
        "report_20261128_041500.md",
        "report_20261128_041500.csv",
        "report_20261128_041500.json",
    ] {
        assert!(names.contains(&n.to_string()), "missing {n} in {names:?}");
        assert!(dir.join(n).metadata().unwrap().len() > 0);
    }
    // One batch size, no baseline: no scaling or baseline files.
    assert!(!names.iter().any(|n| n.starts_with("batch_scaling") || n.starts_with("baseline")));
    assert_real_png(&dir.join("comparison_table_20261128_041500.png"));
    assert_real_png(&dir.join("performance_graphs_20261128_041500.png"));
    let md = std::fs::read_to_string(dir.join("report_20261128_041500.md")).unwrap();
    assert!(md.contains("| opt-125m (125M, opt) |"), "{md}");
    assert!(md.contains("n/a"));
    let csv = std::fs::read_to_string(dir.join("report_20261128_041500.csv")).unwrap();
    assert_eq!(csv.lines().count(), 4);
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("report_20261128_041500.json")).unwrap()).unwrap();
    assert_eq!(json["rows"].as_array().unwrap().len(), 3);
    assert!(json["rows"][0]["gpu_memory_utilization_percent"].is_null());
    // Sorted by parameter count: gpt2 (124M) before opt-125m (125M) before opt-350m.
    let models: Vec<&str> = json["rows"].as_array().unwrap().iter().map(|r| r["model"].as_str().unwrap()).collect();
    assert_eq!(models, ["gpt2", "opt-125m", "opt-350m"]);
}

#[test]
fn batch_scaling_and_baseline() {
    let (_t, dir) = out_dir("scaling");
    let mut cur = Vec::new();
    let mut base = Vec::new();
    for (m, k) in [("opt-125m", 1.0), ("gpt2", 1.1), ("opt-1.3b", 0.25)] {
        for (b, f) in [(1usize, 1.0), (8, 6.5), (32, 19.0)] {
            cur.push(record("sweep-new", &format!("{m}-{b}"), report(m, b, Dev::H100, 180.0 * k * f)));
            // The baseline was faster for opt-1.3b (a regression now), the same otherwise.
            let bk = if m == "opt-1.3b" { 1.25 } else { 1.01 };
            base.push(record("sweep-old", &format!("b-{m}-{b}"), report(m, b, Dev::H100, 180.0 * k * f * bk)));
        }
    }
    let opts = ReportOptions { out_dir: dir.clone(), svg: false, timestamp: Some("20261128_050000".into()), ..Default::default() };
    let w = write_report(&cur, Some(("sweep-old", &base)), &opts).unwrap();
    for n in ["batch_scaling", "baseline_comparison", "comparison_table", "performance_graphs"] {
        assert_real_png(&dir.join(format!("{n}_20261128_050000.png")));
    }
    // opt-1.3b is 20% slower at every batch size: 3 tokens/s regressions, and its ITL (derived
    // from throughput) and TTFT are 25% worse too.
    assert_eq!(w.regressions, Some(9));
    let md = std::fs::read_to_string(dir.join("baseline_comparison_20261128_050000.md")).unwrap();
    assert!(md.contains("**REGRESSION**"));
    assert!(md.contains("| opt-1.3b | 8 | NVIDIA H100 80GB HBM3 | tokens/s |"), "{md}");
    let data = ReportData::new(&cur, GroupBy::Model, "20261128_050000").unwrap();
    let cmp = compare_baseline(&data, &base, "sweep-old");
    let c = cmp.changes.iter().find(|c| c.model == "opt-1.3b" && c.batch_size == 8 && c.metric == "tokens/s").unwrap();
    assert!((c.change_percent.unwrap() - (-20.0)).abs() < 1e-6, "{c:?}");
    let c = cmp.changes.iter().find(|c| c.model == "gpt2" && c.batch_size == 1 && c.metric == "tokens/s").unwrap();
    assert!(!c.regression && c.change_percent.unwrap() < 0.0);
}

#[test]
fn several_gpus_group_by_gpu() {
    let (_t, dir) = out_dir("gpus");
    let mut runs = Vec::new();
    for (m, t) in [("opt-125m", 900.0), ("opt-350m", 520.0), ("gpt2-medium", 480.0)] {
        runs.push(record("s1", &format!("h-{m}"), report(m, 8, Dev::H100, t)));
        runs.push(record("s1", &format!("a-{m}"), report(m, 8, Dev::A10, t * 0.4)));
    }
    runs.push(record("s1", "cpu", report("opt-125m", 8, Dev::Cpu, 30.0)));
    for g in [GroupBy::Model, GroupBy::Gpu] {
        let data = ReportData::new(&runs, g, "20261128_050000").unwrap();
        let grouping = data.grouping();
        match g {
            GroupBy::Model => {
                assert_eq!(grouping.categories, ["opt-125m", "opt-350m", "gpt2-medium"]);
                assert_eq!(grouping.series, ["CPU", "NVIDIA A10", "NVIDIA H100 80GB HBM3"]);
                // opt-350m never ran on the CPU: an empty cell, not a zero.
                assert_eq!(grouping.cells[1][0], None);
            }
            GroupBy::Gpu => assert_eq!(grouping.categories, ["CPU", "NVIDIA A10", "NVIDIA H100 80GB HBM3"]),
        }
        let opts = ReportOptions { out_dir: dir.join(format!("{g:?}")), svg: false, group_by: g, timestamp: Some("20261128_050000".into()) };
        write_report(&runs, None, &opts).unwrap();
        assert_real_png(&dir.join(format!("{g:?}")).join("performance_graphs_20261128_050000.png"));
    }
}

#[test]
fn empty_selection_is_a_clear_error() {
    let err = write_report(&[], None, &ReportOptions { out_dir: "unused".into(), ..Default::default() }).unwrap_err();
    assert!(err.to_string().contains("no finished runs"), "{err}");
}

#[test]
fn human_param_counts() {
    assert_eq!(human_params(125_239_296), "125M");
    assert_eq!(human_params(1_315_758_080), "1.3B");
    assert_eq!(human_params(3_334_400), "3.3M");
}

#[test]
fn gpu_time_chart_and_markdown_for_profiled_runs() {
    use crate::fixtures::profiled;
    let (_t, dir) = out_dir("gpu_time");
    // Two profiled models, one with kernels only (split derived from them), one unprofiled.
    let mut kernels_only = profiled(report("opt-350m", 8, Dev::H100, 520.0), 2.4);
    kernels_only.nsight_metrics.gpu_time_split = None;
    // An older report: no scope recorded, so its summary is taken as the whole process's.
    kernels_only.nsight_metrics.summary_scope.clear();
    let runs = vec![
        record("s1", "p1", profiled(report("opt-125m", 8, Dev::H100, 900.0), 1.0)),
        record("s1", "p2", kernels_only),
        record("s1", "p3", report("gpt2", 8, Dev::H100, 880.0)),
    ];
    let ts = "20261128_055500";
    let opts = ReportOptions { out_dir: dir.clone(), svg: true, timestamp: Some(ts.into()), ..Default::default() };
    let w = write_report(&runs, None, &opts).unwrap();
    let png = dir.join(format!("gpu_time_{ts}.png"));
    assert!(w.files.contains(&png), "{:?}", w.files);
    assert!(w.files.contains(&dir.join(format!("gpu_time_{ts}.svg"))));
    assert_real_png(&png);
    // Two bars and a kernel table: taller than the header alone, and the five category
    // colours are present.
    let (_, h, colours, _) = png_stats(&png);
    assert!(h > 400 && colours > 40, "{h} px high, {colours} colours");

    let data = ReportData::new(&runs, GroupBy::Model, ts).unwrap();
    let entries = gpu_time_entries(&runs, &data);
    assert_eq!(entries.len(), 2, "the unprofiled run has no entry");
    assert_eq!(entries[0].label, "opt-125m · bs 8");
    let gemm = entries[0].percents()[0].1;
    assert!((gemm - 61.0 / 100.0 * 100.0).abs() < 0.1, "gemm {gemm}%");
    assert!((entries[0].percents().iter().map(|p| p.1).sum::<f64>() - 100.0).abs() < 1e-6);
    // Kernels only: the split is their sum; top 5 of 6, longest first.
    assert_eq!(entries[1].kernels.len(), TOP_KERNELS);
    assert!(entries[1].kernels.windows(2).all(|k| k[0].total_time_ns >= k[1].total_time_ns));
    assert_eq!(entries[1].split.total_ns(), runs[1].report.nsight_metrics.kernels.iter().map(|k| k.total_time_ns).sum::<u64>());
    assert_eq!(entries[1].split.memcpy_memset_ns, 0);

    let md = std::fs::read_to_string(dir.join(format!("report_{ts}.md"))).unwrap();
    assert!(md.contains("## Where the GPU time goes"), "{md}");
    assert!(md.contains("| opt-125m · bs 8 | timed passes | 61.0% | 14.0% | 17.5% | 4.5% | 1.0% | 2.0% | 100.00 |"), "{md}");
    assert_eq!((entries[0].scope, entries[1].scope), ("timed passes", "whole process"));
    assert!(md.contains("`softmax_f16` | attention | 9.100 | 1152 |"), "{md}");
    assert!(!md.contains("ucopy_f16"), "only the top 5 kernels: {md}");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join(format!("report_{ts}.json"))).unwrap()).unwrap();
    assert_eq!(json["gpu_time"].as_array().unwrap().len(), 2);

    // Runs that were not profiled get no GPU time chart or section.
    let (_t2, dir2) = out_dir("no_gpu_time");
    let opts = ReportOptions { out_dir: dir2.clone(), timestamp: Some(ts.into()), ..Default::default() };
    let w = write_report(&three_models_cpu(), None, &opts).unwrap();
    assert!(!w.files.iter().any(|f| f.to_string_lossy().contains("gpu_time_")));
    assert!(!std::fs::read_to_string(dir2.join(format!("report_{ts}.md"))).unwrap().contains("Where the GPU time goes"));
}

#[test]
fn kernel_names_are_truncated() {
    assert_eq!(truncate_name("short", 10), "short");
    assert_eq!(truncate_name("abcdefghijkl", 5), "abcd…");
}

#[test]
fn a_reused_model_load_is_marked_in_the_table_and_csv() {
    let mut warm = report("opt-125m", 4, Dev::Cpu, 41.5);
    warm.inference_metrics.model_reused = true;
    let records = vec![record("s", "cold", report("gpt2", 4, Dev::Cpu, 44.0)), record("s", "warm", warm)];
    let data = ReportData::new(&records, GroupBy::Model, "20261201_000000").unwrap();
    let (header, rows) = comparison_table(&data);
    let col = header.iter().position(|h| *h == "Load Time (s)").unwrap();
    let load = |run: &str| {
        let i = data.rows.iter().position(|r| r.run_id == run).unwrap();
        rows[i][col].clone()
    };
    assert!(load("warm").ends_with("(reused)"), "{}", load("warm"));
    assert!(!load("cold").contains("reused"), "{}", load("cold"));
    let csv = String::from_utf8(csv_bytes(&data).unwrap()).unwrap();
    let mut lines = csv.lines();
    let col = lines.next().unwrap().split(',').position(|h| h == "model_reused").unwrap();
    let flags: Vec<&str> = lines.map(|l| l.split(',').nth(col).unwrap()).collect();
    assert_eq!(flags.iter().filter(|f| **f == "true").count(), 1, "{flags:?}");
}

/// GPU runs carry their NVML readings over time: the report draws them (one line per run, four
/// panels) and CPU runs, which have none, get no telemetry chart.
#[test]
fn telemetry_chart_for_runs_with_readings() {
    use tokbench_core::report::TelemetryPoint;
    let (_t, dir) = out_dir("telemetry");
    let series = |watts: f64| -> Vec<TelemetryPoint> {
        (0..50)
            .map(|i| TelemetryPoint {
                t_ms: i as f64 * 100.0,
                memory_used_mb: 3000.0 + 20.0 * i as f64,
                process_memory_mb: Some(2500.0),
                utilization_percent: Some(if i < 5 { 10 } else { 95 }),
                power_watts: Some(watts + i as f64),
                sm_clock_mhz: Some(1980),
                temperature_c: Some(50),
            })
            .collect()
    };
    let mut runs = Vec::new();
    for (m, w) in [("opt-125m", 200.0), ("opt-1.3b", 450.0)] {
        let mut r = report(m, 8, Dev::H100, 1000.0);
        r.telemetry.as_mut().expect("GPU fixtures have telemetry").series = series(w);
        runs.push(record("s1", &format!("r-{m}"), r));
    }
    let lines = crate::report::charts::telemetry_lines(&runs);
    assert_eq!(lines.iter().map(|l| l.label.as_str()).collect::<Vec<_>>(), ["opt-125m b8", "opt-1.3b b8"]);
    let ts = "20261206_190000";
    let opts = ReportOptions { out_dir: dir.clone(), svg: true, timestamp: Some(ts.into()), ..Default::default() };
    let w = write_report(&runs, None, &opts).unwrap();
    let png = dir.join(format!("telemetry_{ts}.png"));
    assert!(w.files.contains(&png) && w.files.contains(&dir.join(format!("telemetry_{ts}.svg"))), "{:?}", w.files);
    assert_real_png(&png);
    let svg = std::fs::read_to_string(dir.join(format!("telemetry_{ts}.svg"))).unwrap();
    for text in ["Power draw", "SM clock", "Device memory used", "SM utilisation", "opt-1.3b b8"] {
        assert!(svg.contains(text), "the telemetry SVG lacks {text:?}");
    }

    let (_t2, dir2) = out_dir("no_telemetry");
    let opts = ReportOptions { out_dir: dir2, timestamp: Some(ts.into()), ..Default::default() };
    let w = write_report(&three_models_cpu(), None, &opts).unwrap();
    assert!(!w.files.iter().any(|f| f.to_string_lossy().contains("telemetry_")), "{:?}", w.files);
}

/// With repetitions on both sides, a change beyond 5% counts only when Welch's t-test finds it
/// significant: a noisy 8% drop is "no significant change", a steady 20% drop a regression.
#[test]
fn baseline_verdicts_need_statistical_significance() {
    use tokbench_core::report::RepetitionMetrics;
    let with_runs = |run: &str, sweep: &str, tps: &[f64]| {
        let mean = tps.iter().sum::<f64>() / tps.len() as f64;
        let mut r = report("gpt2", 1, Dev::H100, mean);
        r.repetitions = tps
            .iter()
            .enumerate()
            .map(|(index, &t)| RepetitionMetrics {
                index,
                total_inference_time_seconds: 1.0,
                tokens_per_second: t,
                prefill_seconds: 0.1,
                decode_seconds: 0.9,
                total_output_tokens: 100,
                ttft_ms: vec![],
                step_latencies_ms: vec![],
            })
            .collect();
        record(sweep, run, r)
    };
    let verdict = |base: &[f64], cur: &[f64]| {
        let current = vec![with_runs("c", "new", cur)];
        let data = ReportData::new(&current, GroupBy::Model, "20261206_000000").unwrap();
        let cmp = compare_baseline(&data, &[with_runs("b", "old", base)], "old");
        cmp.changes.into_iter().find(|c| c.metric == "tokens/s").unwrap()
    };
    let noisy = verdict(&[100.0, 130.0, 70.0, 100.0], &[92.0, 120.0, 64.0, 92.0]);
    assert!(noisy.change_percent.unwrap() < -5.0, "{noisy:?}");
    assert!(!noisy.regression && !noisy.welch.unwrap().significant, "{noisy:?}");
    let steady = verdict(&[100.0, 101.0, 99.0, 100.0], &[80.0, 81.0, 79.0, 80.0]);
    assert!(steady.regression && steady.welch.unwrap().significant, "{steady:?}");
    let faster = verdict(&[100.0, 101.0, 99.0, 100.0], &[120.0, 121.0, 119.0, 120.0]);
    assert!(faster.improvement && !faster.regression, "{faster:?}");
}
