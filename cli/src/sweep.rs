//! Submitting a sweep: the workload defaults (remote and `--local`), building and validating
//! the `SweepSpec` from the flags, and submit + watch + summary. Used by `commands` (remote
//! sweeps) and `local` (`tokbench sweep --local`).

use crate::args::{ServeArgs, SweepArgs};
use crate::client::Conn;
use crate::error::{CliError, CliResult};
use crate::fetch::list_runs;
use crate::output::*;
use crate::watch::{watch, WatchEnd};
use serde_json::json;
use std::path::Path;
use tokbench_core::{Backend, Catalog, JobMode, PromptSource, ServerEngineOptions, SweepPlan, Workload, WorkloadError};
use tokbench_proto::v1::*;

/// Defaults of a workload that differ between a remote sweep and `--local` (which must stay
/// small enough for a laptop CPU: three ~125-350M models in a few minutes).
#[derive(Debug, Clone, Copy)]
pub struct SweepDefaults {
    pub batch_sizes: &'static [usize],
    pub max_tokens: usize,
    pub repetitions: usize,
    pub warmup: usize,
    /// 0: the built-in prompt set.
    pub input_len: usize,
    /// 0: one prompt per batch slot.
    pub num_prompts: usize,
}

pub const REMOTE_DEFAULTS: SweepDefaults = SweepDefaults { batch_sizes: &[4], max_tokens: 128, repetitions: 3, warmup: 1, input_len: 0, num_prompts: 0 };
pub const LOCAL_DEFAULTS: SweepDefaults = SweepDefaults { batch_sizes: &[4], max_tokens: 32, repetitions: 3, warmup: 1, input_len: 32, num_prompts: 4 };

impl SweepDefaults {
    fn workload(&self) -> Workload {
        let prompts = match self.input_len {
            0 => PromptSource::Builtin { num_prompts: self.num_prompts },
            input_len => PromptSource::Synthetic { num_prompts: self.num_prompts, input_len },
        };
        Workload { prompts, max_tokens: self.max_tokens, repetitions: self.repetitions, warmup: self.warmup, ..Workload::default() }
    }
}

/// Builds the sweep from the flags and validates it with the coordinator's own rules
/// (`SweepPlan::jobs`), so bad input fails here with exit code 2 and the same message, before
/// anything is submitted.
pub fn build_spec(args: &SweepArgs, d: &SweepDefaults) -> CliResult<SweepSpec> {
    let mode: JobMode = args.serve.mode.parse().map_err(|e: WorkloadError| CliError::Usage(format!("--mode: {e}")))?;
    if mode == JobMode::Serve {
        return build_serve_spec(args);
    }
    refuse_serve_flags(args)?;
    if args.models.is_empty() {
        return Err(CliError::Usage(
            "no models given: name at least one, e.g. `tokbench sweep opt-125m gpt2` (or `tokbench sweep --local` for the default three)".into(),
        ));
    }
    for m in &args.models {
        // Catalog names, HF repo ids (org/name) and worker paths are accepted; a bare word that
        // is none of these is a typo.
        let looks_like_path_or_repo = m.contains('/') || m.starts_with('.') || Path::new(m).is_dir();
        if Catalog::get(m).is_none() && !looks_like_path_or_repo {
            return Err(CliError::Usage(Catalog::unknown_model_message(m)));
        }
    }
    let usage = |e: WorkloadError| CliError::Usage(e.to_string());
    let backend = match args.backend.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(b) => Some(b.parse::<Backend>().map_err(usage)?),
    };
    let workload = args.workload.apply(Workload { reuse_model: args.reuse_model, ..d.workload() }).map_err(usage)?;
    let plan = SweepPlan {
        models: args.models.clone(),
        batch_sizes: if args.batch_sizes.is_empty() { d.batch_sizes.to_vec() } else { args.batch_sizes.clone() },
        workload,
        backend,
        profile: args.profile,
        label: args.label.clone(),
        request_rates: Vec::new(),
    };
    plan.jobs().map_err(usage)?;
    Ok(SweepSpec::from(&plan))
}

/// Serve flags on an offline sweep are a mistake (the user forgot `--mode serve`).
fn refuse_serve_flags(args: &SweepArgs) -> CliResult<()> {
    let s = &args.serve;
    let given: Vec<&str> = [
        (s.endpoint.is_some(), "--endpoint"),
        (!s.request_rate.is_empty(), "--request-rate"),
        (s.burstiness.is_some(), "--burstiness"),
        (s.max_concurrency.is_some(), "--max-concurrency"),
        (s.dataset.is_some(), "--dataset"),
        (s.input_dist.is_some(), "--input-dist"),
        (s.output_len.is_some(), "--output-len"),
        (s.goodput.is_some(), "--goodput"),
        (s.api.is_some(), "--api"),
        (s.served_model.is_some(), "--served-model"),
        (s.request_timeout.is_some(), "--request-timeout"),
        (s.trace.is_some(), "--trace"),
        (s.api_key_env.is_some(), "--api-key-env"),
    ]
    .into_iter()
    .filter_map(|(on, flag)| on.then_some(flag))
    .chain(own_server_flags(s))
    .collect();
    if given.is_empty() {
        Ok(())
    } else {
        Err(CliError::Usage(format!("{} only apply to serving benchmarks: add --mode serve (and --endpoint URL)", given.join(", "))))
    }
}

/// `--mode serve`: one job per (served model, request rate), validated like the coordinator does.
fn build_serve_spec(args: &SweepArgs) -> CliResult<SweepSpec> {
    use tokbench_core::serve::{parse_api, parse_length, parse_rate, LengthDist, ServeDataset, ServeSpec};
    let usage = |flag: &str, e: WorkloadError| CliError::Usage(format!("{flag}: {e}"));
    let s = &args.serve;
    let w = &args.workload;
    if args.models.is_empty() {
        return Err(CliError::Usage("no models given: name the model the endpoint serves, e.g. `tokbench sweep --mode serve --endpoint http://127.0.0.1:8000 Qwen/Qwen3-0.6B` (it is sent as the requests' \"model\"; --served-model overrides it)".into()));
    }
    // None: the worker serves the model with tokbench's own engine (in process).
    let endpoint = s.endpoint.clone();
    let offline_only: Vec<&str> = [
        (!args.batch_sizes.is_empty(), "--batch-sizes (use --request-rate and --max-concurrency)"),
        (w.prompts.is_some(), "--prompts (use --dataset jsonl:PATH)"),
        (w.repetitions.is_some(), "--repetitions (run the sweep again, or raise --num-prompts)"),
        (args.reuse_model, "--reuse-model"),
    ]
    .into_iter()
    .filter_map(|(on, flag)| on.then_some(flag))
    .collect();
    if !offline_only.is_empty() {
        return Err(CliError::Usage(format!("these flags are for offline sweeps and do nothing in --mode serve: {}", offline_only.join(", "))));
    }
    if s.trace.is_some() {
        // The trace says when each request arrives and how long it is.
        let clash: Vec<&str> = [
            (!s.request_rate.is_empty(), "--request-rate"),
            (s.burstiness.is_some(), "--burstiness"),
            (s.dataset.is_some(), "--dataset"),
            (s.input_dist.is_some(), "--input-dist"),
            (s.output_len.is_some(), "--output-len"),
            (w.input_len.is_some(), "--input-len"),
            (w.max_tokens.is_some(), "--max-tokens"),
            (w.num_prompts.is_some(), "--num-prompts"),
        ]
        .into_iter()
        .filter_map(|(on, flag)| on.then_some(flag))
        .collect();
        if !clash.is_empty() {
            return Err(CliError::Usage(format!(
                "--trace replays its file's arrival times and lengths, so {} cannot apply: leave them out (to run a rate sweep instead, leave out --trace)",
                clash.join(", ")
            )));
        }
    }
    let rates = s.request_rate.iter().map(|r| parse_rate(r)).collect::<Result<Vec<f64>, _>>().map_err(|e| usage("--request-rate", e))?;
    let output = match &s.output_len {
        Some(o) => parse_length(o).map_err(|e| usage("--output-len", e))?,
        None => LengthDist::Fixed { n: w.max_tokens.unwrap_or(128) },
    };
    let input = match (&s.input_dist, w.input_len) {
        (Some(d), _) => parse_length(d).map_err(|e| usage("--input-dist", e))?,
        (None, Some(n)) if n > 0 => LengthDist::Fixed { n },
        _ => LengthDist::Fixed { n: 128 },
    };
    let fixed_output = match output {
        LengthDist::Fixed { n } => Some(n),
        _ => None,
    };
    let dataset = match s.dataset.as_deref().map(ServeDataset::parse).transpose().map_err(|e| usage("--dataset", e))? {
        None | Some(ServeDataset::Synthetic { .. }) => ServeDataset::Synthetic { input, output },
        Some(ServeDataset::ShareGpt { path, .. }) => {
            if s.output_len.is_some() && fixed_output.is_none() {
                return Err(CliError::Usage("--output-len: a ShareGPT dataset takes one fixed output length (N) or none (the reference answers' lengths)".into()));
            }
            ServeDataset::ShareGpt { path, output_len: if s.output_len.is_some() || w.max_tokens.is_some() { fixed_output } else { None } }
        }
        Some(ServeDataset::Jsonl { path, .. }) => {
            if s.output_len.is_some() && fixed_output.is_none() {
                return Err(CliError::Usage("--output-len: a JSONL dataset takes one fixed default output length (N)".into()));
            }
            ServeDataset::Jsonl { path, output_len: fixed_output }
        }
    };
    let defaults = ServeSpec::default();
    let goodput = match &s.goodput {
        None => None,
        Some(g) => Some(tokbench_core::serve::parse_goodput(g).map_err(|e| CliError::Usage(format!("--goodput: {e}")))?),
    };
    let serve = ServeSpec {
        endpoint,
        api: match &s.api {
            Some(a) => parse_api(a).map_err(|e| usage("--api", e))?,
            None => defaults.api,
        },
        served_model: s.served_model.clone(),
        request_rate: rates.first().copied().unwrap_or(f64::INFINITY),
        burstiness: s.burstiness.unwrap_or(defaults.burstiness),
        max_concurrency: s.max_concurrency,
        dataset,
        num_prompts: w.num_prompts.unwrap_or(defaults.num_prompts),
        // A trace is replayed whole unless warm-up lines are asked for.
        warmup: w.warmup.unwrap_or(if s.trace.is_some() { 0 } else { defaults.warmup }),
        seed: w.seed.unwrap_or(defaults.seed),
        goodput,
        request_timeout_s: s.request_timeout.unwrap_or(defaults.request_timeout_s),
        api_key_env: s.api_key_env.clone(),
        trace: s.trace.clone(),
        server: server_engine_options(s)?,
    };
    let backend = match args.backend.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(b) => Some(b.parse::<Backend>().map_err(|e| usage("--backend", e))?),
    };
    // The weights flags set up tokbench's own engine: they apply when the worker serves the
    // model itself, and are a mistake against an endpoint (whose server chose its weights).
    let weight_flags: Vec<&str> = [(w.weights.is_some(), "--weights"), (w.offline, "--offline"), (w.weights_seed.is_some(), "--weights-seed"), (w.dtype.is_some(), "--dtype")]
        .into_iter()
        .filter_map(|(on, flag)| on.then_some(flag))
        .collect();
    if s.endpoint.is_some() && !weight_flags.is_empty() {
        return Err(CliError::Usage(format!(
            "{} set up tokbench's own engine, which a serve job with --endpoint does not run (the endpoint's server loaded its model): drop them, or drop --endpoint to serve the model with tokbench's engine",
            weight_flags.join(", ")
        )));
    }
    let k = &w.kernels;
    if k.decode.is_some() || k.pdl.is_some() || k.gemv_max_rows.is_some() || k.fused_prefill_attention.is_some() || k.lt_epilogue.is_some() || k.kernel_compute_cap.is_some() || k.fused_rotary_prefill.is_some() {
        return Err(CliError::Usage("the engine options (--decode, --pdl, --gemv-max-rows, --fused-prefill-attention, --lt-epilogue, --kernel-compute-cap, --fused-rotary-prefill) are for offline sweeps: tokbench's server runs its batches through the paged KV cache, set up with --max-num-seqs, --block-size, --max-num-batched-tokens, --gpu-memory-utilization, --paged-attention, --cuda-graphs and --batched-prefill instead".into()));
    }
    let mut workload = Workload { ignore_eos: !w.stop_at_eos, serve: Some(serve), ..Workload::default() };
    if let Some(v) = w.weights {
        workload.weights = v;
    }
    workload.offline = w.offline;
    if let Some(v) = w.weights_seed {
        workload.weights_seed = v;
    }
    workload.dtype = w.dtype;
    let plan = SweepPlan {
        models: args.models.clone(),
        batch_sizes: Vec::new(),
        workload,
        backend,
        // Each load level's server under nsys (refused with --endpoint by SweepPlan::jobs).
        profile: args.profile,
        label: args.label.clone(),
        request_rates: rates,
    };
    plan.jobs().map_err(|e| CliError::Usage(e.to_string()))?;
    Ok(SweepSpec::from(&plan))
}

/// The flags given of those that set up tokbench's own server.
fn own_server_flags(s: &ServeArgs) -> impl Iterator<Item = &'static str> {
    [
        (s.max_num_seqs.is_some(), "--max-num-seqs"),
        (s.block_size.is_some(), "--block-size"),
        (s.max_num_batched_tokens.is_some(), "--max-num-batched-tokens"),
        (s.gpu_memory_utilization.is_some(), "--gpu-memory-utilization"),
        (s.paged_attention.is_some(), "--paged-attention"),
        (s.cuda_graphs.is_some(), "--cuda-graphs"),
        (s.batched_prefill.is_some(), "--batched-prefill"),
    ]
    .into_iter()
    .filter_map(|(on, flag)| on.then_some(flag))
}

/// The serve flags for tokbench's own server (`--max-num-seqs`, `--batched-prefill`, ...) over
/// its defaults; refused with --endpoint, whose server has its own settings.
fn server_engine_options(s: &ServeArgs) -> CliResult<ServerEngineOptions> {
    let mut o = ServerEngineOptions::default();
    let given: Vec<&str> = own_server_flags(s).collect();
    if s.endpoint.is_some() && !given.is_empty() {
        return Err(CliError::Usage(format!(
            "{} set up tokbench's own server, which a serve job with --endpoint does not run (the endpoint's server has its own settings): drop them, or drop --endpoint",
            given.join(", ")
        )));
    }
    o.max_num_seqs = s.max_num_seqs.unwrap_or(o.max_num_seqs);
    o.block_size = s.block_size.unwrap_or(o.block_size);
    o.max_num_batched_tokens = s.max_num_batched_tokens.unwrap_or(o.max_num_batched_tokens);
    o.gpu_memory_utilization = s.gpu_memory_utilization.unwrap_or(o.gpu_memory_utilization);
    o.paged_attention = s.paged_attention.unwrap_or(o.paged_attention);
    o.cuda_graphs = s.cuda_graphs.unwrap_or(o.cuda_graphs);
    o.batched_prefill = s.batched_prefill.unwrap_or(o.batched_prefill);
    o.validate().map_err(|e| CliError::Usage(e.to_string()))?;
    Ok(o)
}

/// Submits, watches, prints the summary. `local` changes the Ctrl-C text (the embedded
/// coordinator stops with the process). Returns the exit code and the final sweep when watched.
pub async fn submit_and_watch(conn: &mut Conn, spec: SweepSpec, detach: bool, ui: &Ui, local: bool) -> CliResult<(u8, Option<Sweep>)> {
    let resp = conn
        .client
        .submit_sweep(SubmitSweepRequest { spec: Some(spec) })
        .await
        .map_err(|s| conn.status_error(s, "submitting the sweep"))?
        .into_inner();
    let id = resp.sweep_id.clone();
    if detach {
        if ui.json {
            ui.print_json(&json!({"sweep_id": id, "jobs": resp.jobs.iter().map(job_json).collect::<Vec<_>>()}));
        } else {
            println!("submitted sweep {id} ({} jobs)", resp.jobs.len());
            println!("follow it: tokbench watch {id}\ncancel it: tokbench cancel {id}\nreport:    tokbench report --sweep {id}");
        }
        return Ok((0, None));
    }
    if !ui.json {
        eprintln!("sweep {id}: {} jobs", resp.jobs.len());
    }
    let hint = if local {
        format!("stopped. Sweep {id} stays in the local database; jobs not finished were left queued. Run `tokbench sweep --local` again for a fresh sweep.")
    } else {
        format!("detached; sweep {id} keeps running on the coordinator.\nreattach: tokbench watch {id}\ncancel:   tokbench cancel {id}")
    };
    match watch(conn, &id, ui, &hint).await? {
        WatchEnd::Detached => Ok((if local { 130 } else { 0 }, None)),
        WatchEnd::Done(sweep) => {
            let code = finish_summary(conn, &sweep, ui).await?;
            Ok((code, Some(sweep)))
        }
    }
}

/// Prints the runs of a finished sweep and its failures; 1 when a job failed.
pub async fn finish_summary(conn: &mut Conn, sweep: &Sweep, ui: &Ui) -> CliResult<u8> {
    // Serve runs' reports carry the load generator's warnings (a run too short to be a
    // sustained load, ...), which belong on screen with the table, so fetch them whole.
    let serve = sweep.jobs.iter().any(|j| j.request_rate != 0.0 || !j.serve_load.is_empty());
    let runs = list_runs(conn, &sweep.sweep_id, "", &[], serve).await?;
    let failed: Vec<&Job> = sweep.jobs.iter().filter(|j| j.state == JobState::Failed as i32).collect();
    let summaries: Vec<RunSummary> = runs.iter().filter_map(|r| r.summary.clone()).collect();
    if ui.json {
        ui.print_json(&json!({"sweep": sweep_json(sweep), "runs": summaries.iter().map(run_summary_json).collect::<Vec<_>>()}));
    } else {
        println!("\nsweep {}: {} ({}/{} jobs done)", sweep.sweep_id, sweep.state, sweep.jobs_done, sweep.jobs_total);
        if !summaries.is_empty() {
            println!("{}", runs_table(ui, &summaries));
        }
        for run in runs.iter().filter(|r| !r.report_json.is_empty()) {
            let Some(summary) = &run.summary else { continue };
            let Ok(report) = crate::fetch::parse_report(&summary.run_id, &run.report_json) else { continue };
            let Some(s) = &report.serve else { continue };
            for w in &s.metrics.warnings {
                println!("WARNING {} {} (run {}): {w}", report.model, s.spec.load_label(), summary.run_id);
            }
        }
        for j in &failed {
            println!("FAILED {} {}: {}", j.model, job_load(j), j.last_error);
        }
    }
    Ok(if failed.is_empty() { 0 } else { 1 })
}
