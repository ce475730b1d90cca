//! `SweepSpec` <-> `tokbench_core::SweepPlan`: the proto carries the plan's sweep-level fields
//! as fields and its workload whole, as JSON.

use crate::v1::SweepSpec;
use tokbench_core::{SweepPlan, Workload, WorkloadError};

impl From<&SweepPlan> for SweepSpec {
    fn from(plan: &SweepPlan) -> Self {
        SweepSpec {
            models: plan.models.clone(),
            batch_sizes: plan.batch_sizes.iter().map(|&b| b as u32).collect(),
            profile: plan.profile,
            label: plan.label.clone(),
            backend: plan.backend.map(|b| b.to_string()).unwrap_or_default(),
            workload_json: serde_json::to_string(&plan.workload).expect("a Workload serialises"),
            request_rates: plan.request_rates.clone(),
        }
    }
}

impl TryFrom<&SweepSpec> for SweepPlan {
    type Error = WorkloadError;
    /// Parses (does not validate: see [`SweepPlan::jobs`]).
    fn try_from(spec: &SweepSpec) -> Result<Self, Self::Error> {
        let workload: Workload = if spec.workload_json.trim().is_empty() {
            Workload::default()
        } else {
            Workload::from_json(&spec.workload_json).map_err(|e| {
                WorkloadError(format!(
                    "workload_json is not a valid workload: {e}. Send tokbench-core's Workload as JSON, e.g. {{\"max_tokens\":64,\"repetitions\":3}}"
                ))
            })?
        };
        let backend = match spec.backend.trim() {
            "" => None,
            b => Some(b.parse()?),
        };
        Ok(SweepPlan {
            models: spec.models.clone(),
            batch_sizes: spec.batch_sizes.iter().map(|&b| b as usize).collect(),
            workload,
            backend,
            profile: spec.profile,
            label: spec.label.clone(),
            request_rates: spec.request_rates.clone(),
        })
    }
}
