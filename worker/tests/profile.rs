//! Per-job Nsight Systems profiling without a GPU: a fake `nsys` (tests/data/nsys/fake-nsys)
//! really runs the `tokbench-worker bench` child and serves recorded `nsys stats` CSVs, so the
//! child-process path, the output handling and the parsers all run for real. The parsers are
//! also run on real nsys output saved in tests/data/nsys/real/ when it is there.
//!
//! Longer than 600 lines on purpose: one test file per subsystem, and these tests share the
//! fake-nsys harness and the recorded CSV fixtures (splitting them would copy the harness).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokbench_core::report::{GpuTimeCategory, KernelStat};
use tokbench_core::{DeviceSpec, PromptSource, Sampling, WeightsMode, Workload};
use tokbench_worker::profile::{
    classify_kernel, nvtx_base_name, parse_kernel_summary, parse_mem_summary, parse_nvtx_summary, run_profiled,
    ProfileConfig, ProfileError, ProfiledRun, StatsSummary,
};

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/nsys")
}

fn sample(report: &str) -> String {
    fs::read_to_string(data_dir().join("sample").join(format!("{report}.csv"))).unwrap()
}

fn write_executable(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// A `nsys` for this test: the committed fake in the given mode, logging its arguments.
fn fake_nsys(dir: &Path, mode: &str) -> PathBuf {
    let script = data_dir().join("fake-nsys");
    // Git may not keep the executable bit (e.g. a checkout through an archive).
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let wrapper = dir.join("nsys");
    let log = dir.join("nsys-args.log");
    write_executable(
        &wrapper,
        &format!("#!/bin/sh\nFAKE_NSYS_MODE={mode} FAKE_NSYS_LOG='{}' exec '{}' \"$@\"\n", log.display(), script.display()),
    );
    wrapper
}

fn worker_exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tokbench-worker"))
}

fn config(nsys: PathBuf, exe: PathBuf, dir: &Path) -> ProfileConfig {
    ProfileConfig { nsys_path: nsys, worker_exe: exe, work_dir: dir.join("work"), extra_ld_library_path: None }
}

fn tiny_workload() -> Workload {
    Workload {
        model: "tiny-opt".into(),
        weights: WeightsMode::Synthetic,
        device: DeviceSpec::Cpu,
        dtype: None,
        batch_size: 2,
        prompts: PromptSource::Inline { prompts: vec!["Hello, my name is".into(), "The capital of France is".into()] },
        max_tokens: 4,
        ignore_eos: true,
        sampling: Sampling::default(),
        warmup: 0,
        repetitions: 1,
        weights_seed: 0,
        reuse_model: false,
                kernels: Default::default(),
        offline: false,
        serve: None,
    }
}

/// run_profiled, retrying once when a just-written script is briefly "text file busy"
/// (another test thread forking while it was open for writing).
fn profile(w: &Workload, job: &str, cfg: &ProfileConfig, cancel: &AtomicBool) -> Result<ProfiledRun, ProfileError> {
    match run_profiled(w, job, cfg, cancel) {
        Err(ProfileError::Spawn { source, .. }) if source.raw_os_error() == Some(26) => {
            std::thread::sleep(Duration::from_millis(200));
            run_profiled(w, job, cfg, cancel)
        }
        r => r,
    }
}

// ---------------------------------------------------------------------------------------------
// Parsers on the recorded samples

#[test]
fn kernel_summary_parses_recorded_sample() {
    let kernels = parse_kernel_summary(&sample("cuda_gpu_kern_sum")).unwrap();
    let rows = sample("cuda_gpu_kern_sum").lines().filter(|l| !l.trim().is_empty()).count() - 1;
    assert_eq!(kernels.len(), rows);
    assert!(kernels.windows(2).all(|w| w[0].total_time_ns >= w[1].total_time_ns), "not sorted by total time");
    let pct: f64 = kernels.iter().map(|k| k.time_percent).sum();
    assert!((pct - 100.0).abs() < 1.0, "time shares sum to {pct}");
    for k in &kernels {
        assert!(k.min_ns as f64 <= k.avg_ns && k.avg_ns <= k.max_ns as f64, "{k:?}");
        assert!(k.instances > 0 && k.total_time_ns >= k.instances * k.min_ns, "{k:?}");
    }
    // A cuBLAS name with commas inside its template arguments stays one field.
    let gemv = kernels.iter().find(|k| k.name.starts_with("gemv2T_kernel_val<")).expect("gemv row");
    assert!(gemv.name.ends_with("(T13, T6, T6)"), "{}", gemv.name);
    assert_eq!(gemv.category, GpuTimeCategory::Gemm);
    assert_eq!(gemv.instances, 12288);
    let by_name = |n: &str| kernels.iter().find(|k| k.name == n).unwrap_or_else(|| panic!("no {n}"));
    assert_eq!(by_name("softmax_f16").category, GpuTimeCategory::Attention);
    assert_eq!(by_name("ucopy_f16").category, GpuTimeCategory::NormalizationElementwise);
    assert_eq!(by_name("asort_desc_f32").category, GpuTimeCategory::Sampling);
    let top = &kernels[0];
    assert_eq!(top.name, "nvjet_sm90_hsh_64x8_64x16_4x1_v_bz_splitK_TNT");
    assert_eq!(top.total_time_ns, 127_813_222);
    assert_eq!(top.med_ns, 5199.0);
}

#[test]
fn nvtx_and_memory_summaries_parse_recorded_samples() {
    let nvtx = parse_nvtx_summary(&sample("nvtx_sum")).unwrap();
    let names: Vec<&str> = nvtx.iter().map(|r| nvtx_base_name(&r.range)).collect();
    for want in ["model_initialization", "inference", "prefill", "decode", "output_processing"] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    // nsys 2025.3 prints ranges of the default domain with a leading ':'.
    let inference = nvtx.iter().find(|r| r.range == ":inference [facebook/opt-125m]").unwrap();
    assert_eq!((inference.instances, inference.style.as_str()), (4, "StartEnd"));
    assert_eq!(inference.med_ns, 1_030_067_336.0);

    let mem = parse_mem_summary(&sample("cuda_gpu_mem_time_sum")).unwrap();
    let ops: Vec<&str> = mem.iter().map(|m| m.operation.as_str()).collect();
    assert_eq!(
        ops,
        ["[CUDA memcpy Device-to-Device]", "[CUDA memcpy Host-to-Device]", "[CUDA memcpy Device-to-Host]", "[CUDA memset]"]
    );
    assert_eq!(mem[1].count, 199);

    let summary = StatsSummary { kernels: parse_kernel_summary(&sample("cuda_gpu_kern_sum")).unwrap(), nvtx, memory_ops: mem };
    assert_eq!(summary.inference_range_seconds(), Some(1.030067336));
    let split = summary.time_split();
    let kern_total: u64 = summary.kernels.iter().map(|k| k.total_time_ns).sum();
    let mem_total: u64 = summary.memory_ops.iter().map(|m| m.total_time_ns).sum();
    assert_eq!(split.total_ns(), kern_total + mem_total);
    assert_eq!(split.memcpy_memset_ns, mem_total);
    // GEMMs dominate this decode-heavy profile; every category but "other" is non-trivial.
    assert!(split.gemm_ns > split.attention_ns && split.gemm_ns > split.memcpy_memset_ns, "{split:?}");
    assert!(split.attention_ns > 0 && split.normalization_elementwise_ns > 0 && split.sampling_ns > 0, "{split:?}");
}

#[test]
fn tables_are_found_in_console_output_between_progress_lines() {
    // The stdout form: every report in one stream, with nsys's progress and SKIPPED lines.
    let console = format!(
        "Generating SQLite file run.sqlite from run.nsys-rep\n\
         Processing [run.sqlite] with [/opt/nsys/reports/cuda_api_sum.py]... \n\n\
         SKIPPED: run.sqlite does not contain CUDA trace data.\n\n\
         Processing [run.sqlite] with [/opt/nsys/reports/nvtx_sum.py]... \n\n{}\n\
         Processing [run.sqlite] with [/opt/nsys/reports/cuda_gpu_kern_sum.py]... \n\n{}\n\
         Processing [run.sqlite] with [/opt/nsys/reports/cuda_gpu_mem_time_sum.py]... \n\n{}\n",
        sample("nvtx_sum"),
        sample("cuda_gpu_kern_sum"),
        sample("cuda_gpu_mem_time_sum")
    );
    let from_console = StatsSummary::from_outputs(None, None, None, &console).unwrap();
    let from_files = StatsSummary::from_outputs(
        Some(&sample("cuda_gpu_kern_sum")),
        Some(&sample("nvtx_sum")),
        Some(&sample("cuda_gpu_mem_time_sum")),
        "",
    )
    .unwrap();
    assert_eq!(from_console, from_files);
    assert!(!from_console.kernels.is_empty() && !from_console.nvtx.is_empty() && !from_console.memory_ops.is_empty());
}

#[test]
fn skipped_reports_are_empty_not_errors() {
    let text = "Processing [r.sqlite] with [cuda_gpu_kern_sum.py]... \n\nSKIPPED: r.sqlite does not contain CUDA kernel data.\n";
    assert!(parse_kernel_summary(text).unwrap().is_empty());
    assert!(parse_nvtx_summary(text).unwrap().is_empty());
    let s = StatsSummary::from_outputs(None, None, None, text).unwrap();
    assert!(s.notes().contains("no CUDA kernels"), "{}", s.notes());
    assert!(s.inference_range_seconds().is_none());
}

#[test]
fn other_time_units_unquoted_fields_and_separators_are_converted() {
    // Older header spelling (no space in "Time(%)"), --timeunit us, unquoted numbers, a
    // thousands separator in a quoted field, an empty StdDev, and a name with commas left
    // unquoted (rejoined: the name is the last column).
    let text = "Time(%),Total Time (us),Instances,Avg (us),Med (us),Min (us),Max (us),StdDev (us),Name\n\
                75.0,\"1,500.5\",3,500.2,500.0,499,501.5,1.0,ampere_fp16_s16816gemm_fp16_128x128_ldg8_f2f_stages_32x1_tn\n\
                25.0,500,1,500,500,500,500,,void at::native::vectorized_elementwise_kernel<4, at::native::FillFunctor<float>>(int, T2, T3)\n";
    let k = parse_kernel_summary(text).unwrap();
    assert_eq!(k.len(), 2);
    assert_eq!(k[0].total_time_ns, 1_500_500);
    assert_eq!(k[0].min_ns, 499_000);
    assert_eq!(k[0].max_ns, 501_500);
    assert_eq!(k[0].category, GpuTimeCategory::Gemm);
    assert_eq!(k[1].stddev_ns, 0.0);
    assert_eq!(k[1].name, "void at::native::vectorized_elementwise_kernel<4, at::native::FillFunctor<float>>(int, T2, T3)");
    assert_eq!(k[1].category, GpuTimeCategory::NormalizationElementwise);
}

#[test]
fn malformed_rows_are_reported_with_the_report_name() {
    let bad_number = "\"Time (%)\",\"Total Time (ns)\",\"Instances\",\"Avg (ns)\",\"Med (ns)\",\"Min (ns)\",\"Max (ns)\",\"StdDev (ns)\",\"Name\"\n\
                      \"50.0\",\"12x\",\"1\",\"1\",\"1\",\"1\",\"1\",\"0\",\"k\"\n";
    let err = parse_kernel_summary(bad_number).unwrap_err();
    assert!(matches!(err, ProfileError::StatsParse { report: "cuda_gpu_kern_sum", .. }), "{err:?}");
    assert!(err.to_string().contains("\"12x\""), "{err}");
    assert!(!err.is_retryable());

    let short_row = "\"Time (%)\",\"Total Time (ns)\",\"Count\",\"Avg (ns)\",\"Med (ns)\",\"Min (ns)\",\"Max (ns)\",\"StdDev (ns)\",\"Operation\"\n\
                     \"100.0\",\"10\",\"1\",\"10\"\n";
    let err = parse_mem_summary(short_row).unwrap_err();
    assert!(err.to_string().contains("cuda_gpu_mem_time_sum") && err.to_string().contains("4 fields"), "{err}");
}

#[test]
fn kernel_classification_rules() {
    use GpuTimeCategory::*;
    let cases: &[(&str, GpuTimeCategory)] = &[
        ("nvjet_sm90_hsh_128x64_64x5_2x1_v_bz_coopA_TNN", Gemm),
        ("nvjet_sm90_tst_64x8_64x16_4x1_v_bz_splitK_TNT", Gemm),
        ("sm80_xmma_gemm_f32f32_f32f32_f32_tn_n_tilesize64x64x8_stage3_warpsize1x2x1_ffma_aligna4_alignc4_execute_kernel__5x_cublas", Gemm),
        ("ampere_h16816gemm_128x128_ldg8_stages_64x3_tn", Gemm),
        ("cutlass_80_tensorop_f16_s16816gemm_relu_f16_256x128_32x3_nn_align8", Gemm),
        ("void gemvNSP_kernel<__half, __half, __half, float, 1, 32, 4, 1024, cublasGemvParamsEx<int>>(T9)", Gemm),
        ("void cublasLt::splitKreduce_kernel<32, 16, int, float, __half>(cublasLt::cublasSplitKParams<float>)", Gemm),
        ("softmax_f16", Attention),
        ("void flash_fwd_kernel<Flash_fwd_kernel_traits<64, 128, 128, 4, false, false, cutlass::half_t>>(Flash_fwd_params)", Attention),
        ("fmha_cutlassF_f16_aligned_64x64_rf_sm80(PyTorchMemEffAttention::AttentionKernel<cutlass::half_t>::Params)", Attention),
        ("void at::native::(anonymous namespace)::cunn_SoftMaxForward<4, float, float, float>(float *, const float *, int)", Attention),
        ("ucopy_f16", NormalizationElementwise),
        ("affine_f32", NormalizationElementwise),
        ("bmul_bf16", NormalizationElementwise),
        ("badd_f16", NormalizationElementwise),
        ("layernorm_f16", NormalizationElementwise),
        ("rmsnorm_bf16", NormalizationElementwise),
        ("ugelu_f16", NormalizationElementwise),
        ("urelu_f32", NormalizationElementwise),
        ("cast_f16_f32", NormalizationElementwise),
        ("cast_f8_e4m3_f32", NormalizationElementwise),
        ("where_u8_f16", NormalizationElementwise),
        ("fill_u8", NormalizationElementwise),
        ("is_u32_f16", NormalizationElementwise),
        ("fast_max_f32", NormalizationElementwise),
        ("fast_sum_f16", NormalizationElementwise),
        ("fast_argmax_f32", Sampling),
        ("copy2d_f16", NormalizationElementwise),
        ("void at::native::(anonymous namespace)::vectorized_layer_norm_kernel<c10::Half, float>(int, float, const T1 *)", NormalizationElementwise),
        ("asort_desc_f32", Sampling),
        // tokbench's own decode kernels (worker/kernels/decode.cu).
        ("gemv_small_m1_f16", Gemm),
        ("gemv_small_m8_bf16", Gemm),
        ("decode_attention_d64_f16", Attention),
        ("decode_attention_f32", Attention),
        ("prefill_attention_mma_d64_f16", Attention),
        ("prefill_attention_d32_bf16", Attention),
        ("masked_softmax_f16", Attention),
        ("layer_norm_f16", NormalizationElementwise),
        ("bias_act_f16", NormalizationElementwise),
        ("bias_residual_bf16", NormalizationElementwise),
        ("embed_f16", NormalizationElementwise),
        ("argmax_rows_f16", Sampling),
        ("advance_step", Sampling),
        ("advance_step_keys", Sampling),
        ("spin_ns", Other),
        // Seen on the H100 with synthetic weights: cuRAND, not a normalisation ("curand_normal").
        ("void gen_sequenced<curandStateXORWOW, float2, normal_args_st, &curand_normal_scaled2<curandStateXORWOW>, rng_config<curandStateXORWOW, (curandOrdering)101>>(T1 *, T2 *, unsigned long, unsigned long, T3)", Other),
        ("void generate_seed_pseudo<rng_config<curandStateXORWOW, (curandOrdering)101>>(unsigned long long, unsigned long long, unsigned long long, curandOrdering, curandStateXORWOW *, unsigned int *)", Other),
        ("std::enable_if<!T7, void>::type internal::gemvx::kernel<int, int, __half, __half, __half, float, (bool)0, (bool)1, (bool)1, (bool)0, (int)6, (bool)0, cublasGemvParamsEx<int, cublasGemvTensorStridedBatched<const __half>, cublasGemvTensorStridedBatched<const __half>, cublasGemvTensorStridedBatched<__half>, float>>(T13)", Gemm),
        ("softmax_f32", Attention),
        ("badd_f32", NormalizationElementwise),
        ("my_custom_kernel", Other),
        // A name that merely starts like a candle op is not one: "is_" needs a dtype suffix.
        ("is_finite_checker", Other),
    ];
    for (name, want) in cases {
        assert_eq!(classify_kernel(name), *want, "{name}");
    }
}

#[test]
fn colour_codes_are_stripped_from_log_tails() {
    let line = "\u{1b}[2m2026-11-28T05:02:34Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m model loaded \u{1b}[3mseconds\u{1b}[0m\u{1b}[2m=\u{1b}[0m2.25";
    assert_eq!(tokbench_worker::profile::strip_ansi(line), "2026-11-28T05:02:34Z  INFO model loaded seconds=2.25");
}

#[test]
fn nvtx_names_lose_domain_and_model() {
    assert_eq!(nvtx_base_name("inference [facebook/opt-125m]"), "inference");
    assert_eq!(nvtx_base_name(":inference [gpt2]"), "inference");
    assert_eq!(nvtx_base_name("tokbench:decode [gpt2]"), "decode");
    assert_eq!(nvtx_base_name("prefill"), "prefill");
    assert_eq!(nvtx_base_name("inference [C:/models/opt]"), "inference");
}

#[test]
fn workload_file_round_trips_every_field() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = tiny_workload();
    w.sampling = Sampling { temperature: 0.7, top_p: Some(0.9), top_k: Some(40), seed: 11 };
    w.ignore_eos = false;
    w.device = DeviceSpec::Cuda(1);
    w.dtype = Some(tokbench_core::DTypeSpec::Bf16);
    w.weights_seed = 5;
    w.kernels.decode = tokbench_core::DecodePath::Eager;
    w.kernels.gemv_max_rows = 4;
    // Prompts with line breaks survive (a prompt file of one prompt per line could not carry them).
    w.prompts = PromptSource::Inline { prompts: vec!["two\nlines".into(), "second".into()] };
    let path = dir.path().join("workload.json");
    tokbench_worker::bench_cli::write_workload_file(&w, &path).unwrap();
    assert_eq!(tokbench_worker::bench_cli::read_workload_file(&path).unwrap(), w);
    fs::write(&path, "{\"max_tokens\": \"many\"}").unwrap();
    let err = tokbench_worker::bench_cli::read_workload_file(&path).unwrap_err().to_string();
    assert!(err.contains("workload.json") && err.contains("not a tokbench workload"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// run_profiled with the fake nsys

fn assert_profiled(run: &ProfiledRun, job: &str, w: &Workload) {
    assert_eq!(run.file_name, format!("profile_tiny-opt_{job}.nsys-rep"));
    assert!(run.nsys_rep.is_file(), "{} missing", run.nsys_rep.display());
    assert_eq!(run.nsys_rep.file_name().unwrap().to_str().unwrap(), run.file_name);
    // The report came from the real bench child.
    let r = &run.report;
    assert_eq!(r.workload.model, w.model);
    assert_eq!(r.inference_metrics.num_prompts, 2);
    assert_eq!(r.inference_metrics.total_output_tokens, 2 * w.max_tokens);
    // ... and the profile summary from the recorded stats.
    let m = &r.nsight_metrics;
    assert_eq!(m.profile_file.as_deref(), Some(run.file_name.as_str()));
    assert_eq!(m.profile_name, format!("profile_tiny-opt_{job}"));
    assert_eq!(m.kernels.len(), 19);
    assert_eq!(m.kernels[0].name, "nvjet_sm90_hsh_64x8_64x16_4x1_v_bz_splitK_TNT");
    assert_eq!(m.nvtx.len(), 5);
    assert_eq!(m.memory_ops.len(), 4);
    assert_eq!(m.inference_range_seconds, Some(1.030067336));
    let split = m.gpu_time_split.as_ref().expect("time split");
    let all: u64 = m.kernels.iter().map(|k: &KernelStat| k.total_time_ns).sum::<u64>() + m.memory_ops.iter().map(|o| o.total_time_ns).sum::<u64>();
    assert_eq!(split.total_ns(), all);
    assert!(m.notes.contains("gemm") && m.notes.contains("memcpy Host-to-Device"), "{}", m.notes);
    // The fake's SQLite export is no database: the summary says it covers the whole process, and why.
    assert!(m.summary_scope.starts_with("whole process") && m.summary_scope.contains("SQLite"), "{}", m.summary_scope);
    // The NVTX ranges nsys saw, by base name.
    assert_eq!(m.nvtx_ranges, ["inference", "decode", "model_initialization", "prefill", "output_processing"]);
    // Only the report is left: scratch (prompt file, stats CSVs, bench JSON, logs) and the
    // SQLite export are removed.
    let leftovers: Vec<String> = fs::read_dir(run.nsys_rep.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(leftovers, std::slice::from_ref(&run.file_name));
}

#[test]
fn profiled_job_with_fake_nsys_writing_stats_files() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(fake_nsys(dir.path(), "files"), worker_exe(), dir.path());
    let w = tiny_workload();
    let run = profile(&w, "job-1", &cfg, &AtomicBool::new(false)).unwrap_or_else(|e| panic!("{e}"));
    assert_profiled(&run, "job-1", &w);
    // The command lines nsys saw.
    let log = fs::read_to_string(dir.path().join("nsys-args.log")).unwrap();
    let mut lines = log.lines();
    let profile_line = lines.next().unwrap();
    assert!(profile_line.starts_with("profile -o ") && profile_line.contains("--force-overwrite true -t cuda,nvtx -s none --cpuctxsw=none --cuda-graph-trace=node"), "{profile_line}");
    assert!(profile_line.contains(" bench --workload-file ") && profile_line.contains(" --quiet"), "{profile_line}");
    let stats_line = lines.next().unwrap();
    assert!(stats_line.starts_with("stats --force-export=true --format csv --report cuda_gpu_kern_sum,nvtx_sum,cuda_gpu_mem_time_sum"), "{stats_line}");
    assert!(stats_line.ends_with(&run.file_name), "{stats_line}");
}

/// A SQLite file in nsys's export schema (the tables and columns timed.rs reads) with a
/// made-up timeline: loading (cuRAND, a host-to-device copy), cuBLASLt tuning (`spin_ns`), a
/// warm-up pass, two timed passes (`inference` ranges, one inline-named and one a registered
/// string) whose decode kernels ran node by node from a CUDA graph, and output processing.
fn write_nsys_sqlite(path: &Path) {
    use sqlx::{ConnectOptions, Connection, Executor};
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut c = sqlx::sqlite::SqliteConnectOptions::new().filename(path).create_if_missing(true).connect().await.unwrap();
        c.execute(
            "CREATE TABLE StringIds (id INTEGER PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE NVTX_EVENTS (start INTEGER NOT NULL, end INTEGER, eventType INTEGER NOT NULL, rangeId INTEGER, category INTEGER, color INTEGER, text TEXT, globalTid INTEGER, endGlobalTid INTEGER, textId INTEGER, domainId INTEGER, uint64Value INTEGER, int64Value INTEGER, doubleValue REAL, uint32Value INTEGER, int32Value INTEGER, floatValue REAL, jsonTextId INTEGER, jsonText TEXT);
             CREATE TABLE CUPTI_ACTIVITY_KIND_KERNEL (start INTEGER NOT NULL, end INTEGER NOT NULL, deviceId INTEGER NOT NULL, contextId INTEGER NOT NULL, streamId INTEGER NOT NULL, correlationId INTEGER, globalPid INTEGER, demangledName INTEGER NOT NULL, shortName INTEGER NOT NULL, mangledName INTEGER, graphNodeId INTEGER);
             CREATE TABLE CUPTI_ACTIVITY_KIND_MEMCPY (start INTEGER NOT NULL, end INTEGER NOT NULL, deviceId INTEGER NOT NULL, contextId INTEGER NOT NULL, streamId INTEGER NOT NULL, correlationId INTEGER, globalPid INTEGER, bytes INTEGER NOT NULL, copyKind INTEGER NOT NULL);
             INSERT INTO StringIds VALUES (1, 'void gen_sequenced<curandStateXORWOW, float2>(T1 *)'), (2, 'spin_ns'), (3, 'gemv_small_m1_f16'),
               (4, 'decode_attention_d64_f16'), (5, 'advance_step_keys'), (6, 'inference [openai-community/gpt2]'), (7, 'layer_norm_f16'), (8, 'nvjet_sm90_hsh_64x8');
             INSERT INTO NVTX_EVENTS (start, end, eventType, text, textId) VALUES
               (0, 1000, 60, 'model_initialization [openai-community/gpt2]', NULL),
               (1000, 2000, 60, 'warmup [openai-community/gpt2]', NULL),
               (2000, 3000, 60, 'inference [openai-community/gpt2]', NULL),
               (2010, 2090, 60, 'prefill [openai-community/gpt2]', NULL),
               (3000, 4000, 60, NULL, 6),
               (4000, 4100, 60, 'output_processing [openai-community/gpt2]', NULL),
               (4050, NULL, 34, 'a mark', NULL);
             INSERT INTO CUPTI_ACTIVITY_KIND_KERNEL (start, end, deviceId, contextId, streamId, demangledName, shortName, graphNodeId) VALUES
               (100, 400, 0, 1, 7, 1, 1, NULL), (500, 900, 0, 1, 7, 2, 2, NULL), (1500, 1600, 0, 1, 7, 3, 3, NULL),
               (2050, 2080, 0, 1, 7, 8, 8, NULL),
               (2100, 2140, 0, 1, 7, 3, 3, 11), (2150, 2160, 0, 1, 7, 4, 4, 12), (2160, 2162, 0, 1, 7, 5, 5, 13), (2162, 2168, 0, 1, 7, 7, 7, 14),
               (3100, 3150, 0, 1, 7, 3, 3, 11), (3150, 3162, 0, 1, 7, 4, 4, 12), (3162, 3164, 0, 1, 7, 5, 5, 13), (3164, 3170, 0, 1, 7, 7, 7, 14),
               (4010, 4020, 0, 1, 7, 3, 3, NULL);
             INSERT INTO CUPTI_ACTIVITY_KIND_MEMCPY (start, end, deviceId, contextId, streamId, bytes, copyKind) VALUES
               (50, 90, 0, 1, 7, 1000000, 1), (2005, 2007, 0, 1, 7, 512, 1), (2170, 2171, 0, 1, 7, 4, 2), (3170, 3172, 0, 1, 7, 4, 2);",
        )
        .await
        .unwrap();
        c.close().await.unwrap();
    });
}

#[test]
fn timed_passes_are_read_from_the_sqlite_export() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("profile.sqlite");
    write_nsys_sqlite(&db);
    let t = tokbench_worker::profile::read_timed_passes(&db).unwrap();
    assert_eq!(t.pass_ns, [1000, 1000]);
    // Ranges only (a mark has no end).
    assert_eq!(t.range_names, ["model_initialization", "warmup", "inference", "prefill", "output_processing"]);
    // Only kernels that started inside an `inference` range: not cuRAND, spin_ns, the warm-up's or output processing's.
    let names: Vec<(&str, u64, u64)> = t.kernels.iter().map(|k| (k.name.as_str(), k.instances, k.total_time_ns)).collect();
    assert_eq!(names, [("gemv_small_m1_f16", 2, 90), ("nvjet_sm90_hsh_64x8", 1, 30), ("decode_attention_d64_f16", 2, 22), ("layer_norm_f16", 2, 12), ("advance_step_keys", 2, 4)]);
    let gemv = &t.kernels[0];
    assert_eq!((gemv.med_ns, gemv.min_ns, gemv.max_ns, gemv.category), (45.0, 40, 50, GpuTimeCategory::Gemm));
    assert!((gemv.time_percent - 90.0 * 100.0 / 158.0).abs() < 1e-9);
    assert_eq!(t.kernels[4].category, GpuTimeCategory::Sampling);
    // Kernel time outside: cuRAND 300 + spin_ns 400 + warm-up 100 + output processing 10.
    assert_eq!(t.outside_kernel_ns, 810);
    let ops: Vec<(&str, u64, u64)> = t.memory_ops.iter().map(|o| (o.operation.as_str(), o.count, o.total_time_ns)).collect();
    assert_eq!(ops, [("[CUDA memcpy Device-to-Host]", 2, 3), ("[CUDA memcpy Host-to-Device]", 1, 2)]);

    // Not a database, or no inference range: errors that say so.
    fs::write(dir.path().join("bad.sqlite"), "fake").unwrap();
    assert!(tokbench_worker::profile::read_timed_passes(&dir.path().join("bad.sqlite")).is_err());
}

#[test]
fn profiled_job_summarises_the_timed_passes_from_the_sqlite_export() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("export.sqlite");
    write_nsys_sqlite(&db);
    let nsys = fake_nsys(dir.path(), "files");
    // The wrapper passes FAKE_NSYS_SQLITE on to the fake.
    let text = fs::read_to_string(&nsys).unwrap().replace("exec '", &format!("FAKE_NSYS_SQLITE='{}' exec '", db.display()));
    write_executable(&nsys, &text);
    let cfg = config(nsys, worker_exe(), dir.path());
    let w = tiny_workload();
    let run = profile(&w, "job-t", &cfg, &AtomicBool::new(false)).unwrap_or_else(|e| panic!("{e}"));
    let m = &run.report.nsight_metrics;
    assert!(m.summary_scope.starts_with("timed passes") && m.summary_scope.contains("2 `inference`"), "{}", m.summary_scope);
    assert_eq!(m.kernels.len(), 5, "{:?}", m.kernels);
    assert_eq!(m.kernels[0].name, "gemv_small_m1_f16");
    assert!(!m.kernels.iter().any(|k| k.name == "spin_ns" || k.name.contains("curand")));
    let split = m.gpu_time_split.as_ref().unwrap();
    assert_eq!(split.total_ns(), 158 + 5);
    assert_eq!(split.get(GpuTimeCategory::Sampling), 4);
    assert_eq!(m.inference_range_pass_seconds, [1e-6, 1e-6]);
    assert_eq!(m.inference_range_seconds, Some(1e-6));
    let pass = run.report.inference_metrics.total_inference_time_seconds;
    assert!((m.inference_range_vs_pass_time.unwrap() - 1e-6 / pass).abs() < 1e-12);
    // What the profile saw: the CSV's ranges, then the export's others.
    for r in ["inference", "warmup", "model_initialization", "output_processing"] {
        assert!(m.nvtx_ranges.iter().any(|n| n == r), "{r} missing from {:?}", m.nvtx_ranges);
    }
    assert!(m.notes.starts_with("Summary of the timed passes only (2 passes"), "{}", m.notes);
    // The export is removed with the scratch.
    assert!(!run.nsys_rep.with_extension("sqlite").exists());
}

#[test]
fn profiled_job_with_fake_nsys_printing_stats_to_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(fake_nsys(dir.path(), "stdout"), worker_exe(), dir.path());
    let w = tiny_workload();
    let run = profile(&w, "job 2/x", &cfg, &AtomicBool::new(false)).unwrap_or_else(|e| panic!("{e}"));
    // Characters unsafe in file names are replaced.
    assert_profiled(&run, "job_2_x", &w);
}

#[test]
fn qdstrm_only_is_an_error_naming_the_library_fix() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(fake_nsys(dir.path(), "qdstrm"), worker_exe(), dir.path());
    cfg.extra_ld_library_path = Some(dir.path().join("libs"));
    let err = profile(&tiny_workload(), "j3", &cfg, &AtomicBool::new(false)).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ProfileError::QdstrmOnly { .. }), "{err:?}");
    assert!(msg.contains("profile_tiny-opt_j3.qdstrm") && msg.contains("libdw.so.1") && msg.contains("docs/profiling.md"), "{msg}");
    assert!(msg.contains("Unable to retrieve the importer version"), "nsys output tail missing: {msg}");
    assert!(!err.is_retryable());
}

#[test]
fn missing_nsys_is_a_clear_non_retryable_error() {
    let dir = tempfile::tempdir().unwrap();
    for nsys in [dir.path().join("no-such-nsys"), PathBuf::from("tokbench-no-such-nsys-on-path")] {
        let cfg = config(nsys.clone(), worker_exe(), dir.path());
        let err = profile(&tiny_workload(), "j4", &cfg, &AtomicBool::new(false)).unwrap_err();
        assert!(matches!(err, ProfileError::NsysNotFound { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains(&nsys.display().to_string()) && msg.contains("--nsys") && msg.contains("docs/profiling.md"), "{msg}");
        assert!(!err.is_retryable());
    }
    // A file that is not executable is no nsys either.
    let plain = dir.path().join("nsys-not-executable");
    fs::write(&plain, "#!/bin/sh\n").unwrap();
    let err = profile(&tiny_workload(), "j4", &config(plain, worker_exe(), dir.path()), &AtomicBool::new(false)).unwrap_err();
    assert!(err.to_string().contains("not executable"), "{err}");
}

#[test]
fn nsys_is_found_by_flag_then_path_then_install_folders_newest_first() {
    use std::ffi::OsString;
    use tokbench_worker::profile::find_nsys_in;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let exe = |rel: &str| {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        write_executable(&p, "#!/bin/sh\n");
        p
    };
    let empty_path = OsString::new();

    // Nothing anywhere: a clear, non-retryable error naming where it looked and the docs.
    let err = find_nsys_in(None, Some(&empty_path), &root).unwrap_err();
    assert!(matches!(err, ProfileError::NsysNotInstalled), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("PATH") && msg.contains("/opt/nvidia/nsight-systems/*/bin/nsys") && msg.contains("--nsys"), "{msg}");
    assert!(msg.contains("docs/profiling.md") && !msg.contains("shared/"), "{msg}");
    assert!(!err.is_retryable());

    // Install folders: the newest version of a pattern wins (2025.10.1 over 2025.9.2 and 2024.6.2:
    // compared as numbers, not text); Nsight Systems before the CUDA toolkit and Nsight Compute.
    exe("usr/local/cuda-12.4/bin/nsys");
    exe("opt/nvidia/nsight-compute/2025.9.9/host/target-linux-x64/nsys");
    assert_eq!(find_nsys_in(None, Some(&empty_path), &root).unwrap(), root.join("usr/local/cuda-12.4/bin/nsys"));
    exe("opt/nvidia/nsight-systems/2024.6.2/bin/nsys");
    exe("opt/nvidia/nsight-systems/2025.9.2/bin/nsys");
    let newest = exe("opt/nvidia/nsight-systems/2025.10.1/bin/nsys");
    assert_eq!(find_nsys_in(None, Some(&empty_path), &root).unwrap(), newest);
    // A version folder whose nsys is not executable is skipped.
    let broken = root.join("opt/nvidia/nsight-systems/2026.1.0/bin/nsys");
    fs::create_dir_all(broken.parent().unwrap()).unwrap();
    fs::write(&broken, "not executable").unwrap();
    assert_eq!(find_nsys_in(None, Some(&empty_path), &root).unwrap(), newest);

    // PATH before the install folders.
    let bin = dir.path().join("bin");
    fs::create_dir_all(&bin).unwrap();
    write_executable(&bin.join("nsys"), "#!/bin/sh\n");
    let path_var = std::env::join_paths([dir.path().join("empty"), bin.clone()]).unwrap();
    assert_eq!(find_nsys_in(None, Some(&path_var), &root).unwrap(), bin.join("nsys"));

    // An explicit path before everything, and no fallback when it is wrong.
    let explicit = exe("elsewhere/nsys");
    assert_eq!(find_nsys_in(Some(&explicit), Some(&path_var), &root).unwrap(), explicit);
    let missing = dir.path().join("no-such-nsys");
    let err = find_nsys_in(Some(&missing), Some(&path_var), &root).unwrap_err();
    assert!(matches!(&err, ProfileError::NsysNotFound { path, .. } if *path == missing), "{err:?}");
}

#[test]
fn failing_bench_child_reports_exit_code_and_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let bench = dir.path().join("failing-bench");
    write_executable(&bench, "#!/bin/sh\nprintf '\\033[31mERROR\\033[0m weight file /x/model.safetensors is corrupt\\n' >&2\nexit 3\n");
    let cfg = config(fake_nsys(dir.path(), "files"), bench, dir.path());
    let err = profile(&tiny_workload(), "j5", &cfg, &AtomicBool::new(false)).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ProfileError::BenchFailed { .. }), "{err:?}");
    assert!(msg.contains("exit code 3") && msg.contains("ERROR weight file /x/model.safetensors is corrupt"), "{msg}");
    // Not the bench's bad-input code (2): another worker might manage.
    assert!(err.is_retryable());
}

#[test]
fn real_bench_child_failure_is_reported() {
    // The real worker binary with a model it does not know: its own error comes through.
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(fake_nsys(dir.path(), "files"), worker_exe(), dir.path());
    let mut w = tiny_workload();
    w.model = "no-such-model-xyz".into();
    let err = profile(&w, "j6", &cfg, &AtomicBool::new(false)).unwrap_err();
    assert!(matches!(err, ProfileError::BenchFailed { .. }), "{err:?}");
    assert!(err.to_string().contains("no-such-model-xyz") && err.to_string().contains("exit code 2"), "{err}");
    assert!(!err.is_retryable(), "an unknown model stays unknown on every worker");
    // Nothing of the failed attempt is left but what nsys wrote.
    let left: Vec<String> = fs::read_dir(dir.path().join("work")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(left.iter().all(|n| n.ends_with(".nsys-rep")), "{left:?}");
}

#[test]
fn bench_exiting_zero_without_json_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(fake_nsys(dir.path(), "files"), PathBuf::from("/bin/true"), dir.path());
    let err = profile(&tiny_workload(), "j7", &cfg, &AtomicBool::new(false)).unwrap_err();
    assert!(matches!(err, ProfileError::NoBenchReport { .. }), "{err:?}");
    assert!(err.to_string().contains("bench.json"), "{err}");
}

#[test]
fn failing_nsys_stats_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(fake_nsys(dir.path(), "stats-fail"), worker_exe(), dir.path());
    let err = profile(&tiny_workload(), "j8", &cfg, &AtomicBool::new(false)).unwrap_err();
    assert!(matches!(err, ProfileError::StatsFailed { .. }), "{err:?}");
    assert!(err.to_string().contains("Failed to export"), "{err}");
}

#[test]
fn cancel_stops_nsys_and_the_profiled_child() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("child.pid");
    let bench = dir.path().join("slow-bench");
    write_executable(&bench, &format!("#!/bin/sh\necho $$ > '{}'\nexec sleep 120\n", pid_file.display()));
    let cfg = config(fake_nsys(dir.path(), "files"), bench, dir.path());
    let cancel = Arc::new(AtomicBool::new(false));
    let setter = {
        let cancel = cancel.clone();
        let pid_file = pid_file.clone();
        std::thread::spawn(move || {
            // Cancel once the child is really running.
            let deadline = Instant::now() + Duration::from_secs(60);
            while !pid_file.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            std::thread::sleep(Duration::from_millis(100));
            cancel.store(true, Ordering::Relaxed);
        })
    };
    let err = profile(&tiny_workload(), "j9", &cfg, &cancel).unwrap_err();
    setter.join().unwrap();
    assert!(matches!(err, ProfileError::Cancelled), "{err:?}");
    let pid: i32 = fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    // The grandchild (nsys's application) must be gone too, not left sleeping.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat"));
        let alive = match stat {
            Ok(s) => !s.split(") ").nth(1).is_some_and(|rest| rest.starts_with('Z')),
            Err(_) => false,
        };
        if !alive {
            break;
        }
        assert!(Instant::now() < deadline, "profiled child {pid} still running after cancel");
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------------
// Real nsys output, when saved from the GPU machine (tests/data/nsys/real/README.md)

#[test]
fn real_nsys_outputs_parse() {
    let dir = data_dir().join("real");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .map(|rd| rd.map(|e| e.unwrap().path()).filter(|p| p.is_file() && p.file_name().unwrap() != "README.md").collect())
        .unwrap_or_default();
    files.sort();
    if files.is_empty() {
        eprintln!("no real nsys output in {} yet: nothing to check", dir.display());
        return;
    }
    for f in &files {
        let text = fs::read_to_string(f).unwrap();
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let (kernels, nvtx, mem) = if name.contains("cuda_gpu_kern_sum") {
            (parse_kernel_summary(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display())), vec![], vec![])
        } else if name.contains("nvtx_sum") {
            (vec![], parse_nvtx_summary(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display())), vec![])
        } else if name.contains("cuda_gpu_mem_time_sum") {
            (vec![], vec![], parse_mem_summary(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display())))
        } else {
            let s = StatsSummary::from_outputs(None, None, None, &text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            assert!(!(s.kernels.is_empty() && s.nvtx.is_empty() && s.memory_ops.is_empty()), "{}: no nsys table found", f.display());
            (s.kernels, s.nvtx, s.memory_ops)
        };
        if name.contains("cuda_gpu_kern_sum") {
            assert!(!kernels.is_empty(), "{}: no kernel rows", f.display());
        }
        let check = |pct: f64, total: u64, n: u64, min: u64, avg: f64, max: u64, what: &str| {
            assert!(n > 0 && total >= min.saturating_mul(n).saturating_sub(n) && min as f64 <= avg + 1.0 && avg <= max as f64 + 1.0, "{}: {what}", f.display());
            assert!((0.0..=100.0).contains(&pct), "{}: {what}", f.display());
        };
        for k in &kernels {
            check(k.time_percent, k.total_time_ns, k.instances, k.min_ns, k.avg_ns, k.max_ns, &k.name);
        }
        for r in &nvtx {
            check(r.time_percent, r.total_time_ns, r.instances, r.min_ns, r.avg_ns, r.max_ns, &r.range);
        }
        for m in &mem {
            check(m.time_percent, m.total_time_ns, m.count, m.min_ns, m.avg_ns, m.max_ns, &m.operation);
        }
        if !kernels.is_empty() {
            let pct: f64 = kernels.iter().map(|k| k.time_percent).sum();
            assert!((pct - 100.0).abs() < 2.0, "{}: kernel time shares sum to {pct}", f.display());
            // A transformer forward pass on a GPU runs matrix multiplies; if none is classified
            // as GEMM the classification rules have missed the real kernel names.
            assert!(kernels.iter().any(|k| k.category == GpuTimeCategory::Gemm), "{}: no GEMM kernel recognised among {:?}", f.display(), kernels.iter().map(|k| &k.name).collect::<Vec<_>>());
            // Nearly all real GPU time must land in a named category.
            let total: u64 = kernels.iter().map(|k| k.total_time_ns).sum();
            let other: u64 = kernels.iter().filter(|k| k.category == GpuTimeCategory::Other).map(|k| k.total_time_ns).sum();
            assert!(other * 10 < total, "{}: {:.1}% of kernel time unclassified: {:?}", f.display(), other as f64 * 100.0 / total as f64,
                kernels.iter().filter(|k| k.category == GpuTimeCategory::Other).map(|k| &k.name).collect::<Vec<_>>());
        }
        eprintln!("{}: {} kernels, {} NVTX ranges, {} memory operations", f.display(), kernels.len(), nvtx.len(), mem.len());
    }
}

/// The whole path on a GPU machine with the real nsys: run with
/// `TOKBENCH_NSYS=/path/to/nsys
///  TOKBENCH_CUDA_WORKER=/path/to/tokbench-worker (built with --features cuda)
///  TOKBENCH_NSYS_LIBS=/dir/with/libdw (only where nsys needs it; see docs/profiling.md)
///  cargo test -p tokbench-worker --test profile real_nsys_end_to_end -- --ignored`
/// (or the built test binary with `--ignored real_nsys_end_to_end`).
#[test]
#[ignore = "needs a GPU, nsys and a CUDA build of tokbench-worker (see the doc comment)"]
fn real_nsys_end_to_end() {
    let var = |k: &str| std::env::var_os(k).map(PathBuf::from);
    let nsys = var("TOKBENCH_NSYS").expect("set TOKBENCH_NSYS to the nsys binary");
    let exe = var("TOKBENCH_CUDA_WORKER").expect("set TOKBENCH_CUDA_WORKER to a CUDA build of tokbench-worker");
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(nsys, exe, dir.path());
    cfg.extra_ld_library_path = var("TOKBENCH_NSYS_LIBS");
    // The case: gpt2 at batch 1 with the default CUDA-graph decode.
    let w = Workload {
        model: "gpt2".into(),
        device: DeviceSpec::Cuda(0),
        prompts: PromptSource::Synthetic { num_prompts: 2, input_len: 128 },
        max_tokens: 32,
        warmup: 1,
        repetitions: 3,
        batch_size: 1,
        weights: WeightsMode::Synthetic,
        ..tiny_workload()
    };
    let run = run_profiled(&w, "gpu-e2e", &cfg, &AtomicBool::new(false)).unwrap_or_else(|e| panic!("{e}"));
    let m = &run.report.nsight_metrics;
    eprintln!("{}", serde_json::to_string_pretty(m).unwrap());
    eprintln!("PROFILE_E2E scope: {}", m.summary_scope);
    for k in m.kernels.iter().take(8) {
        eprintln!("PROFILE_E2E kernel {:>6.2}% {:>8} x {:?} {}", k.time_percent, k.instances, k.category, k.name);
    }
    eprintln!(
        "PROFILE_E2E passes nvtx {:?} s, median {:?} s; worker median pass {} s; ratio {:?}",
        m.inference_range_pass_seconds, m.inference_range_seconds, run.report.inference_metrics.total_inference_time_seconds, m.inference_range_vs_pass_time
    );
    assert!(run.nsys_rep.is_file());
    assert!(m.summary_scope.starts_with("timed passes"), "{}", m.summary_scope);
    assert_eq!(m.inference_range_pass_seconds.len(), 3, "one inference range per timed pass");
    assert!(!m.kernels.is_empty(), "no kernels in the timed passes");
    // Loading and tuning are outside the timed passes.
    assert!(!m.kernels.iter().any(|k| k.name.contains("spin_ns") || k.name.contains("curand")), "{:?}", m.kernels.iter().map(|k| &k.name).collect::<Vec<_>>());
    // The top kernels are the decode step's (graph nodes traced one by one): its GEMV and
    // attention first (on an H100: gemv_small_m1_f16 79.5%, decode_attention_d64_f16 15.0%,
    // then advance_step_keys, the step's bookkeeping), and nothing unclassified near the top.
    for k in m.kernels.iter().take(2) {
        assert!(matches!(k.category, GpuTimeCategory::Gemm | GpuTimeCategory::Attention), "top kernel {} is {:?}", k.name, k.category);
    }
    for k in m.kernels.iter().take(8) {
        assert_ne!(k.category, GpuTimeCategory::Other, "unclassified kernel {} among the top 8", k.name);
    }
    assert!(m.kernels.iter().any(|k| k.name.starts_with("gemv_small_m1_")), "the batch-1 GEMV is missing: {:?}", m.kernels.iter().map(|k| &k.name).collect::<Vec<_>>());
    let ratio = m.inference_range_vs_pass_time.expect("NVTX vs worker pass time");
    assert!((ratio - 1.0).abs() <= 0.01, "NVTX per-pass time / worker pass time = {ratio}");
    let split = m.gpu_time_split.as_ref().expect("time split");
    assert!(split.gemm_ns > 0 && split.normalization_elementwise_ns > 0 && split.attention_ns > 0, "{split:?}");
    let names: Vec<&str> = m.nvtx.iter().map(|r| nvtx_base_name(&r.range)).collect();
    for want in ["model_initialization", "inference", "prefill", "decode"] {
        assert!(names.contains(&want), "NVTX range {want} missing from {names:?}");
        assert!(m.nvtx_ranges.iter().any(|r| r == want), "nvtx_ranges lacks {want}: {:?}", m.nvtx_ranges);
    }
    assert!(m.inference_range_seconds.is_some_and(|s| s > 0.0));
    // The real kernels must be recognised: little GPU time may fall into "other".
    assert!(split.percent(GpuTimeCategory::Other) < 10.0, "unclassified kernels: {:?}", m.kernels.iter().filter(|k| k.category == GpuTimeCategory::Other).map(|k| &k.name).collect::<Vec<_>>());
}

/// The H100 recording in tests/data/nsys/real/ (nsys 2025.3.1, opt-125m f16, synthetic weights,
/// batch 4, 32 new tokens, 1 warm-up + 2 timed passes): exact values, so a parser change that
/// shifts a column shows up.
#[test]
fn recorded_h100_output_values() {
    let real = data_dir().join("real");
    let read = |n: &str| fs::read_to_string(real.join(n)).unwrap();
    let files = StatsSummary::from_outputs(
        Some(&read("h100_opt125m_f16_cuda_gpu_kern_sum.csv")),
        Some(&read("h100_opt125m_f16_nvtx_sum.csv")),
        Some(&read("h100_opt125m_f16_cuda_gpu_mem_time_sum.csv")),
        "",
    )
    .unwrap();
    // The console form of the same profile holds the same tables.
    let console = StatsSummary::from_outputs(None, None, None, &read("h100_opt125m_f16_stats_stdout.txt")).unwrap();
    assert_eq!(files, console);
    assert_eq!(files.kernels.len(), 27);
    let top = &files.kernels[0];
    assert_eq!((top.name.as_str(), top.total_time_ns, top.instances), ("layernorm_f16", 34_159_366, 2400));
    assert_eq!(top.category, GpuTimeCategory::NormalizationElementwise);
    let gemv = files.kernels.iter().find(|k| k.name.contains("internal::gemvx::kernel")).unwrap();
    assert_eq!((gemv.category, gemv.instances), (GpuTimeCategory::Gemm, 1008));
    assert_eq!(files.nvtx.len(), 6);
    assert_eq!(files.nvtx[0].range, ":decode [facebook/opt-125m]");
    assert_eq!(files.inference_range_seconds(), Some(0.413524482));
    assert_eq!(files.memory_ops.iter().map(|m| m.count).collect::<Vec<_>>(), [9666, 96, 121]);
    let split = files.time_split();
    assert_eq!(split.memcpy_memset_ns, 8_051_374 + 148_930 + 126_817);
    // Only cuRAND (synthetic weight init) is left unclassified.
    let other: Vec<&str> = files.kernels.iter().filter(|k| k.category == GpuTimeCategory::Other).map(|k| k.name.as_str()).collect();
    assert_eq!(other.len(), 2, "{other:?}");
    assert!(other.iter().all(|n| n.contains("curand")), "{other:?}");
}
