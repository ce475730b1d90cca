//! SubmitSweep: the proto's `SweepSpec` becomes tokbench-core's `SweepPlan`, validated by the
//! same code (and with the same messages) as the CLI, then expanded into one job per (model,
//! batch size) with what the queue needs to place it.

use tokbench_core::catalog::estimate_parameters;
use tokbench_core::{Catalog, DTypeSpec, SweepPlan, Workload};
use tokbench_proto::v1::SweepSpec;

/// One job of a validated sweep.
#[derive(Debug, Clone)]
pub struct JobSpec {
    pub model: String,
    pub batch_size: u32,
    pub workload: Workload,
    /// Catalog estimate (0 = not in the catalog: unknown).
    pub est_parameters: u64,
    /// Bytes per parameter of the requested dtype (0 = left to the worker).
    pub dtype_bytes: u32,
}

#[derive(Debug, Clone)]
pub struct ValidSweep {
    /// Stored as given (`sweeps.spec_json`).
    pub spec: SweepPlan,
    /// "" (any), "cpu" or "cuda".
    pub backend: String,
    pub profile: bool,
    pub jobs: Vec<JobSpec>,
}

/// Checks every limit and expands the sweep into jobs (models-major order).
pub fn validate_sweep(spec: &SweepSpec) -> Result<ValidSweep, String> {
    let plan = SweepPlan::try_from(spec).map_err(|e| e.to_string())?;
    let workloads = plan.jobs().map_err(|e| e.to_string())?;
    let dtype_bytes = match plan.workload.dtype {
        None => 0,
        Some(DTypeSpec::F32) => 4,
        Some(DTypeSpec::F16 | DTypeSpec::Bf16) => 2,
    };
    let jobs = workloads
        .into_iter()
        .map(|workload| JobSpec {
            model: workload.model.clone(),
            batch_size: workload.batch_size as u32,
            // A serve job loads no model: any worker can take it.
            est_parameters: if workload.serve.is_some() { 0 } else { Catalog::get(&workload.model).map(|e| estimate_parameters(&e.config())).unwrap_or(0) },
            dtype_bytes: if workload.serve.is_some() { 0 } else { dtype_bytes },
            workload,
        })
        .collect();
    Ok(ValidSweep { backend: plan.backend.map(|b| b.to_string()).unwrap_or_default(), profile: plan.profile, spec: plan, jobs })
}

/// The stored plan of a sweep as the proto shows it. Sweeps stored before the workload travelled
/// whole keep their models, batch sizes, label and backend; their workload shows as the default.
pub fn stored_spec(spec_json: &str) -> SweepSpec {
    let plan: SweepPlan = serde_json::from_str(spec_json).unwrap_or_default();
    SweepSpec::from(&plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SweepSpec {
        let plan = SweepPlan {
            models: vec!["tiny-opt".into(), "tiny-gpt2".into()],
            batch_sizes: vec![1, 2],
            workload: Workload { max_tokens: 4, repetitions: 1, prompts: tokbench_core::PromptSource::Builtin { num_prompts: 0 }, ..Workload::default() },
            ..SweepPlan::default()
        };
        SweepSpec::from(&plan)
    }

    #[test]
    fn expands_models_times_batch_sizes_with_placement_estimates() {
        let v = validate_sweep(&spec()).unwrap();
        let got: Vec<(String, u32)> = v.jobs.iter().map(|j| (j.model.clone(), j.batch_size)).collect();
        assert_eq!(got, vec![("tiny-opt".into(), 1), ("tiny-opt".into(), 2), ("tiny-gpt2".into(), 1), ("tiny-gpt2".into(), 2)]);
        assert!(v.jobs[0].est_parameters > 0);
        let stored = serde_json::to_string(&v.spec).unwrap();
        assert_eq!(stored_spec(&stored), spec());
    }

    #[test]
    fn refuses_bad_json_and_backend_with_the_fix() {
        let bad_json = validate_sweep(&SweepSpec { workload_json: "{\"max_tokens\": \"many\"}".into(), ..spec() }).unwrap_err();
        assert!(bad_json.contains("workload_json is not a valid workload"), "{bad_json}");
        let bad_backend = validate_sweep(&SweepSpec { backend: "tpu".into(), ..spec() }).unwrap_err();
        assert!(bad_backend.contains("use cpu, cuda"), "{bad_backend}");
    }

    #[test]
    fn old_stored_specs_still_show_their_models() {
        let old = r#"{"models":["gpt2"],"batch_sizes":[1,8],"weights":"auto","dtype":"","num_prompts":0,"prompts":[],"input_len":0,"max_tokens":16,"repetitions":1,"warmup":0,"stop_at_eos":false,"sampling":null,"profile":false,"weights_seed":0,"label":"nightly","backend":""}"#;
        let s = stored_spec(old);
        assert_eq!((s.models, s.batch_sizes, s.label), (vec!["gpt2".to_string()], vec![1, 8], "nightly".to_string()));
    }
}
