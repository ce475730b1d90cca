//! A sweep: one [`Workload`] run for every model × batch size. `tokbench sweep` builds it, the
//! proto's `SweepSpec` carries it (its workload as JSON), the coordinator validates it here and
//! stores it, and expands it into one job per (model, batch size).

use crate::workload::{refuse, validate_submitted_model_name, WorkloadError, MAX_BATCH_SIZE};
use crate::{Catalog, PromptSource, Workload};
use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;
use std::str::FromStr;

pub const MAX_MODELS: usize = 64;
pub const MAX_BATCH_SIZES: usize = 16;
pub const MAX_LABEL_CHARS: usize = 200;

/// Which workers may take a sweep's jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Cpu,
    Cuda,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Cpu => "cpu",
            Backend::Cuda => "cuda",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Backend {
    type Err = WorkloadError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "cpu" => Ok(Backend::Cpu),
            "cuda" => Ok(Backend::Cuda),
            _ => refuse(format!("bad backend \"{s}\": use cpu, cuda, or leave it empty for any worker")),
        }
    }
}

/// Parses "" (any backend) as None: the proto's and old stored specs' spelling.
fn backend_or_any<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Backend>, D::Error> {
    let s: Option<String> = Option::deserialize(d)?;
    match s.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(b) => b.parse().map(Some).map_err(serde::de::Error::custom),
    }
}

/// One sweep as submitted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct SweepPlan {
    /// Catalog names, HF repo ids or worker-local paths.
    pub models: Vec<String>,
    /// One job per model and batch size; empty = the workload's batch size.
    pub batch_sizes: Vec<usize>,
    /// Every job's workload; each job sets its own model and batch size, and the worker its own
    /// device. A prompt count of 0 (built-in or synthetic prompts) means one prompt per batch slot.
    pub workload: Workload,
    /// Only workers of this backend take the jobs (None: any).
    #[serde(deserialize_with = "backend_or_any")]
    pub backend: Option<Backend>,
    /// Run each job under Nsight Systems.
    pub profile: bool,
    /// Free text shown in listings.
    pub label: String,
    /// Serve sweeps (`workload.serve` set): one job per model and request rate (req/s, infinity =
    /// all at once); empty = the workload's rate. Must be empty for offline sweeps.
    #[serde(with = "crate::serve::rate_serde::vec", skip_serializing_if = "Vec::is_empty")]
    pub request_rates: Vec<f64>,
}

impl SweepPlan {
    /// Batch sizes the sweep runs: the given ones, or the workload's.
    pub fn effective_batch_sizes(&self) -> Vec<usize> {
        if self.batch_sizes.is_empty() {
            vec![self.workload.batch_size]
        } else {
            self.batch_sizes.clone()
        }
    }

    /// Checks every limit and expands the sweep into its jobs' workloads (models-major order).
    pub fn jobs(&self) -> Result<Vec<Workload>, WorkloadError> {
        if self.models.is_empty() {
            return refuse(format!("no models: list at least one model (e.g. tiny-opt). Known models: {}", Catalog::names().join(", ")));
        }
        if self.models.len() > MAX_MODELS {
            return refuse(format!("{} models given; a sweep takes at most {MAX_MODELS}: split it into several sweeps", self.models.len()));
        }
        for (i, m) in self.models.iter().enumerate() {
            validate_submitted_model_name(m)?;
            if self.models[..i].contains(m) {
                return refuse(format!("model \"{m}\" is listed twice; list each model once"));
            }
        }
        if let Some(serve) = &self.workload.serve {
            return self.serve_jobs(serve);
        }
        if !self.request_rates.is_empty() {
            return refuse("request rates are for serve sweeps: add --mode serve --endpoint URL, or leave out --request-rate".into());
        }
        let batch_sizes = self.effective_batch_sizes();
        if batch_sizes.len() > MAX_BATCH_SIZES {
            return refuse(format!("{} batch sizes given; a sweep takes at most {MAX_BATCH_SIZES}", batch_sizes.len()));
        }
        for (i, &b) in batch_sizes.iter().enumerate() {
            if !(1..=MAX_BATCH_SIZE).contains(&b) {
                return refuse(format!("batch size {b} is out of range: use 1..={MAX_BATCH_SIZE}"));
            }
            if batch_sizes[..i].contains(&b) {
                return refuse(format!("batch size {b} is listed twice; list each batch size once"));
            }
        }
        if self.label.chars().count() > MAX_LABEL_CHARS {
            return refuse(format!("label is {} characters; the limit is {MAX_LABEL_CHARS}", self.label.chars().count()));
        }
        if let Some((i, c)) = self.label.chars().enumerate().find(|(_, c)| c.is_control()) {
            return refuse(format!("label contains the control character {c:?} at character {i}; a label is one line of plain text: remove it"));
        }
        let mut jobs = Vec::with_capacity(self.models.len() * batch_sizes.len());
        for model in &self.models {
            for &batch_size in &batch_sizes {
                let prompts = match &self.workload.prompts {
                    PromptSource::Builtin { num_prompts: 0 } => PromptSource::Builtin { num_prompts: batch_size },
                    PromptSource::Synthetic { num_prompts: 0, input_len } => {
                        PromptSource::Synthetic { num_prompts: batch_size, input_len: *input_len }
                    }
                    other => other.clone(),
                };
                let job = Workload { model: model.clone(), batch_size, prompts, ..self.workload.clone() };
                job.validate()?;
                jobs.push(job);
            }
        }
        Ok(jobs)
    }

    fn check_label(&self) -> Result<(), WorkloadError> {
        if self.label.chars().count() > MAX_LABEL_CHARS {
            return refuse(format!("label is {} characters; the limit is {MAX_LABEL_CHARS}", self.label.chars().count()));
        }
        if let Some((i, c)) = self.label.chars().enumerate().find(|(_, c)| c.is_control()) {
            return refuse(format!("label contains the control character {c:?} at character {i}; a label is one line of plain text: remove it"));
        }
        Ok(())
    }

    /// A serve sweep's jobs: models x request rates (models-major order).
    fn serve_jobs(&self, serve: &crate::serve::ServeSpec) -> Result<Vec<Workload>, WorkloadError> {
        if !self.batch_sizes.is_empty() {
            return refuse("batch sizes are for offline sweeps: a serve sweep's load is set by --request-rate and --max-concurrency; leave out --batch-sizes".into());
        }
        if self.profile && serve.endpoint.is_some() {
            return refuse("--profile profiles tokbench's own server, which a serve job with --endpoint does not run: drop --endpoint to serve (and profile) the model with tokbench's engine, or profile that server on its own host".into());
        }
        let rates = if self.request_rates.is_empty() { vec![serve.request_rate] } else { self.request_rates.clone() };
        if rates.len() > MAX_REQUEST_RATES {
            return refuse(format!("{} request rates given; a sweep takes at most {MAX_REQUEST_RATES}", rates.len()));
        }
        for (i, r) in rates.iter().enumerate() {
            if r.is_nan() || *r <= 0.0 {
                return refuse(format!("request rate {r} is invalid: use a number of requests per second > 0, or inf (every request at once)"));
            }
            if rates[..i].contains(r) {
                return refuse(format!("request rate {} is listed twice; list each rate once", crate::serve::rate_label(*r)));
            }
        }
        self.check_label()?;
        let mut jobs = Vec::with_capacity(self.models.len() * rates.len());
        for model in &self.models {
            for &rate in &rates {
                let job = Workload {
                    model: model.clone(),
                    batch_size: 1,
                    serve: Some(crate::serve::ServeSpec { request_rate: rate, ..serve.clone() }),
                    ..self.workload.clone()
                };
                job.validate()?;
                jobs.push(job);
            }
        }
        Ok(jobs)
    }
}

/// Most request rates of one serve sweep.
pub const MAX_REQUEST_RATES: usize = 32;

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> SweepPlan {
        SweepPlan {
            models: vec!["tiny-opt".into(), "tiny-gpt2".into()],
            batch_sizes: vec![1, 2],
            workload: Workload { max_tokens: 4, repetitions: 1, prompts: PromptSource::Builtin { num_prompts: 0 }, ..Workload::default() },
            ..SweepPlan::default()
        }
    }

    #[test]
    fn expands_models_times_batch_sizes() {
        let jobs = plan().jobs().unwrap();
        let got: Vec<(String, usize)> = jobs.iter().map(|j| (j.model.clone(), j.batch_size)).collect();
        assert_eq!(got, vec![("tiny-opt".into(), 1), ("tiny-opt".into(), 2), ("tiny-gpt2".into(), 1), ("tiny-gpt2".into(), 2)]);
        assert_eq!(jobs[1].prompts, PromptSource::Builtin { num_prompts: 2 });
    }

    #[test]
    fn refuses_out_of_range_values_with_the_limit() {
        let with = |f: &dyn Fn(&mut SweepPlan)| {
            let mut p = plan();
            f(&mut p);
            p
        };
        let cases: Vec<(SweepPlan, &str)> = vec![
            (with(&|p| p.models.clear()), "no models"),
            (with(&|p| p.batch_sizes = vec![0]), "1..=1024"),
            (with(&|p| p.batch_sizes = vec![2000]), "1..=1024"),
            (with(&|p| p.workload.max_tokens = 9000), "1..=8192"),
            (with(&|p| p.workload.repetitions = 101), "1..=100"),
            (with(&|p| p.models = vec!["opt;rm -rf".into()]), "only letters"),
            (with(&|p| p.models = vec!["m".repeat(201)]), "limit is 200"),
            (with(&|p| p.models = (0..65).map(|i| format!("m{i}")).collect()), "at most 64"),
            (with(&|p| p.batch_sizes = (1..=17).collect()), "at most 16"),
            (with(&|p| p.workload.prompts = PromptSource::Inline { prompts: vec!["x".repeat(65 * 1024)] }), "64 KiB"),
            (with(&|p| p.workload.prompts = PromptSource::Inline { prompts: vec!["p".into(); 4097] }), "4096"),
            (with(&|p| p.workload.sampling.top_p = Some(1.5)), "top_p"),
            (with(&|p| p.workload.kernels.gemv_max_rows = 20), "gemv_max_rows"),
            (with(&|p| p.models = vec!["../../../../etc/passwd".into()]), "local:../../../../etc/passwd"),
            (with(&|p| p.models = vec!["models/../../etc".into()]), "contains a \"..\" component"),
            (with(&|p| p.models = vec!["/etc/passwd".into()]), "is an absolute path"),
            (with(&|p| p.models = vec!["tiny\0opt".into()]), "control character '\\0' at character 4"),
            (with(&|p| p.models = vec!["local:".into()]), "names no directory"),
            (with(&|p| p.models = vec!["local:/a b".into()]), "only letters"),
            (with(&|p| p.label = "nightly\u{1b}[31m".into()), "label contains the control character '\\u{1b}'"),
            (with(&|p| p.label = "two\nlines".into()), "label contains the control character '\\n'"),
            (with(&|p| p.workload.prompts = PromptSource::Inline { prompts: vec!["ok".into(), "a\0b".into()] }), "prompt 1 contains the control character '\\0' at character 1"),
            (with(&|p| p.workload.prompts = PromptSource::Inline { prompts: vec!["bell\u{7}".into()] }), "prompt 0 contains the control character"),
        ];
        for (p, needle) in cases {
            let err = p.jobs().unwrap_err().to_string();
            assert!(err.contains(needle), "expected {needle:?} in {err:?}");
        }
    }

    #[test]
    fn worker_local_models_and_prompt_whitespace_pass() {
        let mut p = plan();
        p.models = vec!["local:/models/llama".into(), "local:../models/x".into(), "./models/opt".into(), "facebook/opt-125m".into(), "tiny-opt".into()];
        p.workload.prompts = PromptSource::Inline { prompts: vec!["line one\nline two\twith a tab\r\n".into()] };
        let jobs = p.jobs().unwrap();
        assert_eq!(jobs[0].model, "local:/models/llama");
        // The worker's own check (bench runs any local path the user gives) takes absolute paths.
        assert!(Workload { model: "/abs/checkout".into(), ..Workload::default() }.validate().is_ok());
    }

    #[test]
    fn json_of_outside_clients_may_leave_fields_out() {
        let p: SweepPlan = serde_json::from_str(r#"{"models":["gpt2"],"backend":"","workload":{"max_tokens":8}}"#).unwrap();
        assert_eq!(p.backend, None);
        assert_eq!(p.workload.max_tokens, 8);
        assert_eq!(p.workload.repetitions, Workload::default().repetitions);
        let bad = serde_json::from_str::<SweepPlan>(r#"{"backend":"tpu"}"#).unwrap_err().to_string();
        assert!(bad.contains("use cpu, cuda"), "{bad}");
    }
}
