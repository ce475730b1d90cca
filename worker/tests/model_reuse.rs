//! `Workload::reuse_model`: a job that asks for it takes the model the previous job left loaded
//! (same model, weights, seed, device, dtype), says so in its report, and generates exactly what
//! a cold load generates; a job that does not ask, or asks for another seed, loads cold.
//! The cache is the caller's (`bench::ModelCache`): one per worker.

use std::sync::atomic::AtomicBool;
use tokbench_core::{PromptSource, WeightsMode, Workload};
use tokbench_worker::bench::{run_workload, run_workload_with, ModelCache};

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
    let models = ModelCache::default();
    let run = |w: &Workload| run_workload_with(&models, w, &AtomicBool::new(false), &mut |_| {}).unwrap();
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

    // A cache belongs to its owner: another worker's cache, or none (`run_workload`), holds
    // nothing this one's jobs left.
    assert!(!run(&job(3, true)).inference_metrics.model_reused);
    let other_worker = ModelCache::default();
    let r = run_workload_with(&other_worker, &job(3, true), &AtomicBool::new(false), &mut |_| {}).unwrap();
    assert!(!r.inference_metrics.model_reused, "another worker's cache must not hold this worker's model");
    let r = run_workload(&job(3, true), &AtomicBool::new(false), &mut |_| {}).unwrap();
    assert!(!r.inference_metrics.model_reused, "run_workload keeps no model between calls");
    assert!(run(&job(3, true)).inference_metrics.model_reused, "this worker's cache still holds its model");
}
