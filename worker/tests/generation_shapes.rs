//! A job whose prompt count is not a multiple of its batch size runs two batch shapes (full
//! batches and the last, partial one). The generator keeps a KV cache (and on CUDA a captured
//! decode graph) per shape, so passes after the first allocate nothing and capture nothing:
//! a timed pass never pays for a cache allocation or a graph capture.

use std::sync::atomic::AtomicBool;

use candle_core::{DType, Device};
use tokbench_core::Catalog;
use tokbench_worker::generate::{generate_batch, GenerationParams, Generator};
use tokbench_worker::model::Model;
use tokbench_worker::weights::WeightSource;

/// Five prompts in batches of two: shapes 2, 2, 1 (lengths differ within a batch).
fn batches() -> Vec<Vec<Vec<u32>>> {
    let p = |n: usize, k: u32| (0..n as u32).map(|j| 3 + k * 11 + j * 5).collect::<Vec<u32>>();
    vec![vec![p(6, 1), p(4, 2)], vec![p(5, 3), p(6, 4)], vec![p(3, 5)]]
}

#[test]
fn passes_after_the_first_allocate_no_cache_for_a_partial_last_batch() {
    let config = Catalog::get("tiny-opt").unwrap().config();
    let model = Model::load(&config, &WeightSource::Synthetic { seed: 5 }, DType::F32, &Device::Cpu).unwrap();
    let params = GenerationParams::new(&config, "tiny-opt", 7);
    let no_cancel = AtomicBool::new(false);
    let mut generator = Generator::new(&model);

    let pass = |g: &mut Generator| batches().iter().map(|b| g.generate(b, &params, &no_cancel, &mut |_| {}).unwrap().tokens).collect::<Vec<_>>();
    let first = pass(&mut generator);
    let (caches_after_first, _) = generator.allocation_counts();
    assert_eq!(caches_after_first, 2, "one cache per batch shape (2 and 1)");
    for _ in 0..3 {
        assert_eq!(pass(&mut generator), first, "a repeated pass must generate the same tokens");
    }
    assert_eq!(generator.allocation_counts().0, caches_after_first, "later passes re-allocated a KV cache");

    // Reusing the caches changes nothing: each batch as a one-off call (fresh cache) agrees.
    for (batch, tokens) in batches().iter().zip(&first) {
        assert_eq!(&generate_batch(&model, batch, &params, &mut |_| {}).unwrap().tokens, tokens);
    }

    // A third shape replaces the least recently used one (at most two are kept).
    let three: Vec<Vec<u32>> = (0..3).map(|i| vec![7 + i, 9, 11]).collect();
    generator.generate(&three, &params, &no_cancel, &mut |_| {}).unwrap();
    assert_eq!(generator.allocation_counts().0, caches_after_first + 1);
    assert_eq!(pass(&mut generator)[2], first[2], "shape 1 was the most recently used before: still kept");
}
