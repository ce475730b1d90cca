//! The fused CUDA decode path (`KernelOptions::decode` = `fused`, `--decode fused`) and its
//! CUDA-graph replay (`graph`, the default) against candle's eager ops (`eager`) on the same GPU,
//! same weights, same padded batch (built only with `--features cuda`; run on the GPU machine).
//! The f32 checks run under each kernel variant (`VARIANTS`: the defaults, cuBLAS instead of the
//! GEMV, no programmatic dependent launch, the GEMV up to 8 rows), set in code as a job's
//! `KernelOptions`.
//!
//! f32: greedy tokens must be identical in all three modes (the arithmetic differs only in
//! summation order, far below the gaps between logits of random-weight models, so any wrong
//! slot, mask, position, bias or cache write shows up as a different token).
//! f16/bf16: graph and fused must be identical (same kernels, replayed), and the fused path must
//! agree with eager on the first tokens (later tokens may legitimately flip on near-ties,
//! since the fused attention keeps scores in f32 where eager rounds them to f16). Where one of
//! the first four differs, the two candidates' f32 logits after the same context must be within
//! a near-tie (1% of max |logit| for f16, 5% for bf16), or the test fails.
#![cfg(feature = "cuda")]

mod gpu_common;
use candle_core::DType;
use tokbench_core::{Catalog, KernelOptions};
use tokbench_worker::generate::{GenerationParams, Generator};
use tokbench_worker::model::{DecodeMode, Model};
use tokbench_worker::weights::WeightSource;

fn prompts() -> Vec<Vec<u32>> {
    // Three lengths, so two sequences are left-padded.
    vec![(0..13).map(|j| 100 + j * 7).collect(), (0..5).map(|j| 900 + j * 31).collect(), vec![2, 50, 60]]
}

/// The kernel variants the f32 checks run under: (label, options; `decode` is set per run).
fn variants() -> Vec<(&'static str, KernelOptions)> {
    let d = gpu_common::base_kernels();
    vec![
        ("default", d),
        ("cublas (gemv_max_rows 0)", KernelOptions { gemv_max_rows: 0, ..d }),
        ("no pdl", KernelOptions { pdl: false, ..d }),
        ("gemv up to 8 rows", KernelOptions { gemv_max_rows: 8, ..d }),
    ]
}

fn run(name: &str, dtype: DType, mode: DecodeMode, steps: usize) -> (Vec<Vec<u32>>, String) {
    run_prompts(name, dtype, KernelOptions { decode: mode, ..gpu_common::base_kernels() }, steps, &prompts())
}

/// `n` prompts of lengths 3..=14 (left padding up to the longest).
fn n_prompts(n: usize) -> Vec<Vec<u32>> {
    (0..n).map(|i| (0..3 + (i * 5) % 12).map(|j| (40 + 97 * i + 13 * j) as u32).collect()).collect()
}

fn run_prompts(name: &str, dtype: DType, kernels: KernelOptions, steps: usize, prompts: &[Vec<u32>]) -> (Vec<Vec<u32>>, String) {
    let config = Catalog::get(name).unwrap().config();
    let dev = gpu_common::cuda_device();
    let mut model = Model::load(&config, &WeightSource::Synthetic { seed: 11 }, dtype, &dev).unwrap();
    model.set_kernel_options(kernels);
    let mode = kernels.decode;
    let params = GenerationParams::new(&config, name, steps);
    // Twice: the second batch reuses the cache and (graph mode) replays the captured graph.
    let mut generator = Generator::new(&model);
    let no_cancel = std::sync::atomic::AtomicBool::new(false);
    let first = generator.generate(prompts, &params, &no_cancel, &mut |_| {}).unwrap();
    let second = generator.generate(prompts, &params, &no_cancel, &mut |_| {}).unwrap();
    assert_eq!(first.tokens, second.tokens, "{name} {dtype:?} {mode:?} {kernels:?}: a repeated batch gave other tokens");
    gpu_common::check_candle_ptx(&dev);
    (second.tokens, second.decode_path.to_string())
}

#[test]
fn f32_fused_and_graph_match_eager_exactly() {
    for (label, k) in variants() {
        // smollm2-135m (head size 64, 9/3 grouped heads) and qwen2.5-0.5b (qkv bias, 14/2 heads):
        // the rotary families' fused step (RMSNorm and SwiGLU in the GEMV's prologue where the
        // rows fit it, the rotary grouped-query attention kernel).
        for name in ["tiny-gpt2", "tiny-opt", "gpt2", "opt-125m", "opt-350m", "smollm2-135m", "qwen2.5-0.5b"] {
            let with = |decode| KernelOptions { decode, ..k };
            let (eager, p0) = run_prompts(name, DType::F32, with(DecodeMode::Eager), 24, &prompts());
            let (fused, p1) = run_prompts(name, DType::F32, with(DecodeMode::Fused), 24, &prompts());
            let (graph, p2) = run_prompts(name, DType::F32, with(DecodeMode::Graph), 24, &prompts());
            println!("GPU_DECODE {name} f32 [{label}]: paths {p0}/{p1}/{p2}; eager {:?}", &eager[1]);
            assert_eq!((p0.as_str(), p1.as_str(), p2.as_str()), ("eager", "fused", "cuda-graph"), "{name} [{label}]");
            assert_eq!(fused, eager, "{name} f32 [{label}]: fused decode differs from eager");
            assert_eq!(graph, eager, "{name} f32 [{label}]: graph decode differs from eager");
        }
    }
}

#[test]
fn f16_bf16_graph_matches_fused_and_starts_like_eager() {
    for name in ["gpt2", "opt-125m", "opt-350m", "opt-1.3b", "smollm2-135m", "qwen3-0.6b", "llama-3.2-1b"] {
        for dtype in gpu_common::dtypes(&[DType::F16, DType::BF16]) {
            let (eager, _) = run(name, dtype, DecodeMode::Eager, 32);
            let (fused, _) = run(name, dtype, DecodeMode::Fused, 32);
            let (graph, path) = run(name, dtype, DecodeMode::Graph, 32);
            assert_eq!(path, "cuda-graph", "{name} {dtype:?}");
            assert_eq!(graph, fused, "{name} {dtype:?}: graph replay differs from the same kernels launched eagerly");
            let agree: usize = eager.iter().zip(&fused).map(|(a, b)| a.iter().zip(b).take_while(|(x, y)| x == y).count()).sum();
            println!("GPU_DECODE {name} {dtype:?}: fused = eager for the first {agree}/{} tokens (summed over sequences)", 32 * eager.len());
            for (i, (a, b)) in eager.iter().zip(&fused).enumerate() {
                let Some(p) = (0..4).find(|&k| a[k] != b[k]) else { continue };
                // A near-tie, or a fault? The f32 logits of both candidates after the same
                // context (the prompt and eager's tokens before the split) decide.
                let (margin, scale) = f32_margin(name, &prompts()[i], &a[..p], a[p], b[p]);
                let bound = if dtype == DType::BF16 { 0.05 } else { 0.01 } * scale;
                println!(
                    "GPU_DECODE {name} {dtype:?} sequence {i}: fused token {p} is {} where eager's is {}; in f32 their logits differ by {margin:.3e} (near-tie bound {bound:.3e}, max |logit| {scale:.3})",
                    b[p], a[p]
                );
                assert!(margin <= bound, "{name} {dtype:?} sequence {i}: fused decode's token {p} differs from eager's by more than a near-tie ({margin:.3e} > {bound:.3e})");
            }
        }
    }
}

/// |logit(x) − logit(y)| and max |logit| of the next token after `prompt` + `context`, from
/// an f32 forward pass on the GPU (same synthetic weights as `run_prompts`, no padding): how
/// close the two candidate tokens are, free of f16/bf16 rounding.
fn f32_margin(name: &str, prompt: &[u32], context: &[u32], x: u32, y: u32) -> (f32, f32) {
    let config = Catalog::get(name).unwrap().config();
    let dev = gpu_common::cuda_device();
    let mut model = Model::load(&config, &WeightSource::Synthetic { seed: 11 }, DType::F32, &dev).unwrap();
    let ids: Vec<u32> = prompt.iter().chain(context).copied().collect();
    let t = ids.len();
    let ids = candle_core::Tensor::from_vec(ids, (1, t), &dev).unwrap();
    let mask = candle_core::Tensor::ones((1, t), DType::U32, &dev).unwrap();
    let logits: Vec<f32> = model.forward_full(&ids, &mask).unwrap().narrow(1, t - 1, 1).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let scale = logits.iter().fold(0f32, |m, v| m.max(v.abs()));
    ((logits[x as usize] - logits[y as usize]).abs(), scale)
}

/// Batch sizes that take other kernels: 1 row (the GEMV), 8 and 12 (cuBLAS into the step arena;
/// in the "gemv up to 8 rows" variant, 8 rows take the GEMV's largest instantiation). The rotary
/// families' batch-1 step takes the GEMV with the RMSNorm and SwiGLU prologues (qwen3-0.6b: head
/// size 128 and the q/k norms in the attention kernel).
#[test]
fn f32_graph_matches_eager_at_batch_1_8_and_12() {
    for (label, k) in variants() {
        for name in ["gpt2", "opt-125m", "smollm2-135m", "qwen3-0.6b"] {
            for n in [1, 8, 12] {
                let prompts = n_prompts(n);
                let with = |decode| KernelOptions { decode, ..k };
                let (eager, _) = run_prompts(name, DType::F32, with(DecodeMode::Eager), 16, &prompts);
                let (graph, path) = run_prompts(name, DType::F32, with(DecodeMode::Graph), 16, &prompts);
                println!("GPU_DECODE {name} f32 batch {n} [{label}]: {path}");
                assert_eq!(path, "cuda-graph", "{name} batch {n} [{label}]");
                assert_eq!(graph, eager, "{name} f32 batch {n} [{label}]: graph decode differs from eager");
            }
        }
    }
}

/// Options are per job: one model switched between variants (as a reused model is between jobs)
/// decodes as a fresh model of each variant does, and a graph captured under one set of options
/// is not replayed under another.
#[test]
fn kernel_options_switch_on_one_model() {
    let config = Catalog::get("gpt2").unwrap().config();
    let dev = gpu_common::cuda_device();
    let mut model = Model::load(&config, &WeightSource::Synthetic { seed: 11 }, DType::F32, &dev).unwrap();
    let params = GenerationParams::new(&config, "gpt2", 16);
    let (eager, _) = run("gpt2", DType::F32, DecodeMode::Eager, 16);
    // The generation state (cache, decoder, captured graph) goes from one job to the next, as a
    // reused model's does.
    let mut state = tokbench_worker::generate::GenerationState::default();
    let no_cancel = std::sync::atomic::AtomicBool::new(false);
    for (label, k) in variants().into_iter().chain(variants()) {
        model.set_kernel_options(k);
        let mut generator = Generator::with_state(&model, state);
        let out = generator.generate(&prompts(), &params, &no_cancel, &mut |_| {}).unwrap();
        state = generator.into_state();
        assert_eq!(out.decode_path, "cuda-graph", "[{label}]");
        assert_eq!(out.tokens, eager, "gpt2 f32 [{label}] on a switched model: graph decode differs from eager");
        let active = model.active_kernels().expect("CUDA");
        assert_eq!((active.gemv_max_rows, active.decode), (k.gemv_max_rows, k.decode), "[{label}]");
        assert!(!active.pdl || k.pdl, "[{label}]: PDL on though not asked for");
    }
}

/// The rotary families (Llama, Qwen3) decode through their static step (device-side ids,
/// positions and cache column) captured as a CUDA graph. In f32 its greedy tokens equal the
/// eager path's on the same GPU and the CPU's from the same checkpoint (grouped-query attention,
/// rotary and RMSNorm on the GPU against the path checked against transformers).
#[test]
fn rotary_families_graph_decode_matches_eager_and_the_cpu() {
    use candle_core::Device;
    for name in ["tiny-llama", "tiny-qwen3"] {
        let config = Catalog::get(name).unwrap().config();
        let dir = std::env::temp_dir().join(format!("tokbench-gpu-decode-{name}-{}", std::process::id()));
        tokbench_worker::checkpoint::save_synthetic_checkpoint(&config, 5, &dir).unwrap();
        let files = WeightSource::Files(vec![dir.join("model.safetensors")]);
        let params = GenerationParams::new(&config, name, 16);
        let cpu = Model::load(&config, &files, DType::F32, &Device::Cpu).unwrap();
        let cpu_out = tokbench_worker::generate::generate_batch(&cpu, &prompts(), &params, &mut |_| {}).unwrap();
        let dev = gpu_common::cuda_device();
        let mut gpu = Model::load(&config, &files, DType::F32, &dev).unwrap();
        let no_cancel = std::sync::atomic::AtomicBool::new(false);
        let mut by_mode = Vec::new();
        for mode in [DecodeMode::Eager, DecodeMode::Fused, DecodeMode::Graph] {
            gpu.set_kernel_options(KernelOptions { decode: mode, ..gpu_common::base_kernels() });
            // Twice: the second batch replays the captured graph.
            let mut generator = Generator::new(&gpu);
            let first = generator.generate(&prompts(), &params, &no_cancel, &mut |_| {}).unwrap();
            let second = generator.generate(&prompts(), &params, &no_cancel, &mut |_| {}).unwrap();
            println!("GPU_DECODE {name} {mode:?}: path {} tokens {:?}", second.decode_path, second.tokens);
            assert_eq!(first.tokens, second.tokens, "{name} {mode:?}: a repeated batch gave other tokens");
            by_mode.push((mode, second.decode_path, second.tokens));
        }
        let _ = std::fs::remove_dir_all(&dir);
        println!("GPU_DECODE {name} cpu f32 tokens {:?}", cpu_out.tokens);
        assert_eq!(by_mode[2].1, "cuda-graph", "{name}: the graph decode should have been captured");
        for (mode, _, tokens) in &by_mode {
            assert_eq!(tokens, &cpu_out.tokens, "{name} {mode:?}: CUDA f32 greedy tokens differ from the CPU's");
        }
    }
}

/// Five prompts in batches of two (shapes 2, 2, 1): after the first pass, graph replay
/// captures no graph and allocates no cache (the partial last batch keeps its own).
#[test]
fn graph_mode_captures_once_per_batch_shape() {
    let config = Catalog::get("gpt2").unwrap().config();
    let dev = gpu_common::cuda_device();
    let model = Model::load(&config, &WeightSource::Synthetic { seed: 11 }, DType::F16, &dev).unwrap();
    let params = GenerationParams::new(&config, "gpt2", 16);
    let no_cancel = std::sync::atomic::AtomicBool::new(false);
    let prompts = n_prompts(5);
    let mut generator = Generator::new(&model);
    let pass = |g: &mut Generator| prompts.chunks(2).map(|b| g.generate(b, &params, &no_cancel, &mut |_| {}).unwrap().tokens).collect::<Vec<_>>();
    let first = pass(&mut generator);
    let counts = generator.allocation_counts();
    // At least one per shape (more when a later batch of the same size has longer prompts and
    // needs a larger cache: the first pass grows it once).
    assert!(counts.0 >= 2 && counts.1 >= 2, "one cache and one captured graph per batch shape at least: {counts:?}");
    assert_eq!(pass(&mut generator), first);
    assert_eq!(pass(&mut generator), first);
    assert_eq!(generator.allocation_counts(), counts, "timed passes must not re-allocate caches or re-capture graphs");
}


/// The server's decode step (`serve-openai`'s engine): tokbench's fused kernels reading the
/// paged KV blocks in place, launched one by one (`--paged-attention true --cuda-graphs false`)
/// and replayed as CUDA graphs per batch-size bucket (the default), give exactly the tokens of
/// candle's ops over blocks gathered per step (`--paged-attention false`), in f32, for sequences of
/// ragged lengths that join the running batch at different steps (so the batch moves between
/// graph buckets, with padding rows), with blocks of 4 tokens (every sequence spans several,
/// handed out interleaved between sequences). The engine's counters show which path ran.
#[test]
fn server_paged_decode_matches_gathered_exactly() {
    use std::sync::Arc;
    use tokbench_worker::openai::engine::{spawn, EngineConfig, Event, SamplingParams, SeqParams};
    use tokbench_worker::openai::metrics::Metrics;
    let serve = |name: &str, paged: bool, graphs: bool| -> (Vec<Vec<u32>>, [u64; 3]) {
        let config = Catalog::get(name).unwrap().config();
        let dev = gpu_common::cuda_device();
        let mut model = Model::load(&config, &WeightSource::Synthetic { seed: 11 }, DType::F32, &dev).unwrap();
        model.set_kernel_options(gpu_common::base_kernels());
        let engine = EngineConfig {
            block_size: 4,
            num_blocks: 512,
            max_num_seqs: 16,
            max_num_batched_tokens: 2048,
            eos_token_ids: vec![],
            paged_attention: paged,
            cuda_graphs: graphs,
            batched_prefill: true,
        };
        let metrics = Arc::new(Metrics::default());
        let handle = spawn(model, engine, metrics.clone()).unwrap();
        let params = |n: usize| SeqParams { max_tokens: n, min_tokens: 0, ignore_eos: true, sampling: SamplingParams::default() };
        let read = |rx: &mut tokio::sync::mpsc::UnboundedReceiver<Event>, want: usize| -> Vec<u32> {
            let mut out = Vec::new();
            while out.len() < want {
                match rx.blocking_recv() {
                    Some(Event::Token(t)) => out.push(t),
                    Some(Event::Error(e)) => panic!("{name} paged={paged} graphs={graphs}: the engine failed: {e}"),
                    Some(Event::Finished { .. }) | None => break,
                }
            }
            out
        };
        let prompts = n_prompts(7);
        // Three sequences first (bucket 4 with a padding row); the other four join once the first
        // has 5 tokens (bucket 8), and leave at different steps (max_tokens 24 - 4 i).
        let len = |i: usize| 24 - 2 * i;
        let mut rx: Vec<_> = prompts[..3].iter().enumerate().map(|(i, p)| handle.submit(p.clone(), params(len(i))).unwrap()).collect();
        let mut tokens = vec![read(&mut rx[0], 5)];
        rx.extend(prompts[3..].iter().enumerate().map(|(i, p)| handle.submit(p.clone(), params(len(i + 3))).unwrap()));
        tokens[0].extend(read(&mut rx[0], len(0) - 5));
        for (i, r) in rx.iter_mut().enumerate().skip(1) {
            tokens.push(read(r, len(i)));
        }
        for (i, t) in tokens.iter().enumerate() {
            assert_eq!(t.len(), len(i), "{name} paged={paged} graphs={graphs}: sequence {i} got {} tokens", t.len());
        }
        let get = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        (tokens, [get(&metrics.decode_steps_graph), get(&metrics.decode_steps_paged), get(&metrics.decode_steps_gathered)])
    };
    for name in ["tiny-llama", "tiny-qwen3", "smollm2-135m"] {
        let (gathered, c0) = serve(name, false, false);
        let (paged, c1) = serve(name, true, false);
        let (graph, c2) = serve(name, true, true);
        println!(
            "GPU_TEST {name} server f32: steps [graph, paged, gathered] gathered run {c0:?}, paged run {c1:?}, graph run {c2:?}; paged = gathered: {}, graph = gathered: {}",
            paged == gathered,
            graph == gathered
        );
        assert!(c0[0] == 0 && c0[1] == 0 && c0[2] > 0, "{name}: the gathered run took another path: {c0:?}");
        assert!(c1[0] == 0 && c1[1] > 0 && c1[2] == 0, "{name}: the paged run took another path: {c1:?}");
        assert!(c2[0] > 0 && c2[2] == 0, "{name}: the graph run took another path: {c2:?}");
        assert_eq!(paged, gathered, "{name}: the paged kernels' tokens differ from the gathered path's");
        assert_eq!(graph, gathered, "{name}: the replayed graphs' tokens differ from the gathered path's");
    }
}
