//! `Workload::reuse_model`: a job that asks for it takes the model the previous job left loaded
//! (same model, weights, seed, device, dtype), says so in its report, and generates exactly what
//! a cold load generates; a job that does not ask, or asks for another seed, loads cold.
//! One test in its own binary: the cache is per process.

use std::sync::atomic::AtomicBool;
use tokbench_core::{PromptSource, WeightsMode, Workload};
use tokbench_worker::bench::run_workload;

fn job(seed: u64, reuse: bool) -> Workload {
    Workload {
        model: "tiny-opt".into(),
        weights: WeightsMode::Synthetic,
        weights_seed: seed,
        batch_size: 2,
        prompts: PromptSource::Synthetic { num_prompts: 2, input_len: 6 },
        max_tokens: 5,
        warmup: 0,
        repetitions: 1,
        reuse_model: reuse,
        ..Workload::default()
    }
}

#[test]
fn reuse_model_keeps_the_model_between_jobs_and_says_so() {
    let run = |w: &Workload| run_workload(w, &AtomicBool::new(false), &mut |_| {}).unwrap();
    let tokens = |r: &tokbench_core::BenchReport| r.outputs.iter().map(|o| o.generated_token_ids.clone()).collect::<Vec<_>>();

    let cold = run(&job(3, false));
    assert!(!cold.inference_metrics.model_reused);

    // First job asking for reuse: nothing cached yet (the cold job above did not ask), loads cold.
    let first = run(&job(3, true));
    assert!(!first.inference_metrics.model_reused, "nothing was cached before");
    // Second: takes the cached model.
    let second = run(&job(3, true));
    assert!(second.inference_metrics.model_reused, "the model the previous job left should be reused");
    assert_eq!(tokens(&second), tokens(&cold), "a reused model must generate what a cold load generates");
    assert_eq!(second.model_properties.total_parameters, cold.model_properties.total_parameters);

    // Another seed is other weights: not reused, and it evicts the cached model.
    let other = run(&job(4, true));
    assert!(!other.inference_metrics.model_reused, "different weights seed must not reuse");
    assert_ne!(tokens(&other), tokens(&cold), "seed 4 weights should generate differently from seed 3");
    let back = run(&job(3, true));
    assert!(!back.inference_metrics.model_reused, "seed 3 was evicted when seed 4 loaded");

    // A job that does not ask never takes the cached one.
    let again_cold = run(&job(3, false));
    assert!(!again_cold.inference_metrics.model_reused);
}
