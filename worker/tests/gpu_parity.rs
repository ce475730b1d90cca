//! GPU numerics (built only with `--features cuda`, run on the GPU machine): the engine in f16
//! and bf16 on CUDA against the same engine in f32 on the CPU (which matches transformers within
//! 1e-4, see hf_parity.rs), on the committed transformers fixtures (OPT, GPT-2, and the rotary
//! families Llama, Qwen2, Qwen3, Mistral) and on full-size synthetic gpt2 / opt-125m / opt-350m /
//! smollm2-135m / qwen2.5-0.5b / qwen3-0.6b checkpoints written to disk first (so both devices
//! read identical weights).
//!
//! Bound: f16 keeps an 11-bit significand (unit roundoff u = 2^-11 ~ 4.9e-4) and bf16 an 8-bit one
//! (u = 2^-8 ~ 3.9e-3). Every matmul accumulates in f32 (cuBLAS), so the error is dominated by
//! rounding the activations/weights to the storage type once per op: a few u per layer, growing
//! roughly with sqrt(layers) over a random-weight network. We require the relative L2 error of the
//! logits at real positions, ||gpu - cpu|| / ||cpu||, to stay under 16u (8e-3 for f16, 6e-2 for bf16)
//! and the max abs error under 64u of the largest |logit| — loose enough for 12 layers of
//! rounding, tight enough that any wrong kernel, mask or position (errors of order 1) fails.
#![cfg(feature = "cuda")]

mod gpu_common;
use candle_core::{DType, Device, Tensor};
use std::path::{Path, PathBuf};
use tokbench_core::{ArchConfig, Catalog};
use tokbench_worker::model::Model;
use tokbench_worker::checkpoint::save_synthetic_checkpoint;
use tokbench_worker::weights::WeightSource;

/// The committed fixtures: next to the sources this test was built from, or, when the packed
/// test runs on another machine (scripts/gpu/run.sh), under $TOKBENCH_REPO/worker/tests/fixtures.
fn fixture_dir(name: &str) -> PathBuf {
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let base = match std::env::var_os("TOKBENCH_REPO") {
        Some(repo) if !built.exists() => PathBuf::from(repo).join("worker/tests/fixtures"),
        _ => built,
    };
    base.join(name)
}

fn batch() -> (Tensor, Tensor) {
    // Three prompts of lengths 12, 7 and 3, left-padded with id 1.
    let lens = [12usize, 7, 3];
    let t = 12;
    let mut ids = vec![vec![1u32; t]; 3];
    let mut mask = vec![vec![0u32; t]; 3];
    for (i, &n) in lens.iter().enumerate() {
        for j in 0..n {
            ids[i][t - n + j] = 5 + ((i * 31 + j * 17) % 300) as u32;
            mask[i][t - n + j] = 1;
        }
    }
    (Tensor::new(ids, &Device::Cpu).unwrap(), Tensor::new(mask, &Device::Cpu).unwrap())
}

/// A checkpoint directory's weight files (one file, or the shards its index lists).
fn weight_files(dir: &Path) -> Vec<PathBuf> {
    tokbench_worker::resolve::find_weight_files(dir).unwrap().expect("weights in the fixture")
}

fn compare(label: &str, config: &ArchConfig, dir: &Path, dtype: DType) -> (f64, f64) {
    let (ids, mask) = batch();
    let mut cpu = Model::load(config, &WeightSource::Files(weight_files(dir)), DType::F32, &Device::Cpu).unwrap();
    let want = cpu.forward_full(&ids, &mask).unwrap();
    let dev = gpu_common::cuda_device();
    let mut gpu = Model::load(config, &WeightSource::Files(weight_files(dir)), dtype, &dev).unwrap();
    gpu.set_kernel_options(gpu_common::base_kernels());
    let got = gpu
        .forward_full(&ids.to_device(&dev).unwrap(), &mask.to_device(&dev).unwrap())
        .unwrap()
        .to_device(&Device::Cpu)
        .unwrap();
    gpu_common::check_candle_ptx(&dev);
    let want: Vec<Vec<Vec<f32>>> = want.to_vec3().unwrap();
    let got: Vec<Vec<Vec<f32>>> = got.to_vec3().unwrap();
    let mask: Vec<Vec<u32>> = mask.to_vec2().unwrap();
    let (mut num, mut den, mut max_abs, mut max_ref) = (0f64, 0f64, 0f64, 0f64);
    let mut argmax_agree = (0, 0);
    for i in 0..mask.len() {
        for j in 0..mask[i].len() {
            if mask[i][j] == 0 {
                continue;
            }
            let (w, g) = (&want[i][j], &got[i][j]);
            for (a, b) in w.iter().zip(g) {
                assert!(b.is_finite(), "{label}: non-finite GPU logit");
                let d = (*a as f64 - *b as f64).abs();
                num += d * d;
                den += (*a as f64) * (*a as f64);
                max_abs = max_abs.max(d);
                max_ref = max_ref.max((*a as f64).abs());
            }
            let am = |v: &[f32]| v.iter().enumerate().max_by(|x, y| x.1.total_cmp(y.1)).unwrap().0;
            argmax_agree.1 += 1;
            if am(w) == am(g) {
                argmax_agree.0 += 1;
            }
        }
    }
    let rel = (num / den).sqrt();
    let u = if dtype == DType::F16 { 2f64.powi(-11) } else { 2f64.powi(-8) };
    println!(
        "GPU_PARITY {label} {dtype:?}: rel L2 {rel:.3e} (bound {:.1e}), max abs {max_abs:.3e} (bound {:.3e}, max |logit| {max_ref:.3}), argmax agree {}/{}",
        16.0 * u,
        64.0 * u * max_ref,
        argmax_agree.0,
        argmax_agree.1
    );
    assert!(rel <= 16.0 * u, "{label} {dtype:?}: relative L2 error {rel:.3e} > {:.1e}", 16.0 * u);
    assert!(max_abs <= 64.0 * u * max_ref, "{label} {dtype:?}: max abs error {max_abs:.3e}");
    (rel, max_abs)
}

#[test]
fn fixtures_f16_and_bf16_match_cpu_f32() {
    for name in ["opt_pre", "opt_post", "gpt2", "llama", "qwen2", "qwen3", "mistral"] {
        let dir = fixture_dir(name);
        let config = ArchConfig::from_json_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
        for dtype in gpu_common::dtypes(&[DType::F16, DType::BF16]) {
            compare(name, &config, &dir, dtype);
        }
    }
}

#[test]
fn full_size_synthetic_f16_and_bf16_match_cpu_f32() {
    let tmp = std::env::temp_dir().join(format!("tokbench-gpu-parity-{}", std::process::id()));
    for name in ["gpt2", "opt-125m", "opt-350m", "smollm2-135m", "qwen2.5-0.5b", "qwen3-0.6b"] {
        let config = Catalog::get(name).unwrap().config();
        let dir = tmp.join(name);
        save_synthetic_checkpoint(&config, 7, &dir).unwrap();
        for dtype in gpu_common::dtypes(&[DType::F16, DType::BF16]) {
            compare(name, &config, &dir, dtype);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    let _ = std::fs::remove_dir_all(&tmp);
}

/// The fused prefill attention kernels (tensor cores for f16/bf16 at head size 64, CUDA cores for
/// f32 and head size 32) against attention computed here in f64 from the same
/// inputs: softmax(q·kᵀ + bias)·v per (sequence, head, query), with the bias built as the engine
/// builds it (causal ⊕ key padding, MASKED = f32::MIN) and a fully masked query row (a padding
/// position before the first token) averaging v over all t keys, as softmax over equal scores
/// does. Prompt lengths cross the kernel's 64-key staging rounds and 64-query tiles; one row has
/// a hole in its mask. The cache must hold this prompt's keys and values in rows 0..t and keep
/// the rows after them.
#[test]
fn prefill_attention_kernel_matches_f64_reference() {
    use tokbench_worker::model::cuda_ops::{prefill_attention, Launch};
    let dev = gpu_common::cuda_device();
    let l = &Launch::for_device(&gpu_common::base_kernels(), &dev);
    for (d, heads, t) in [(64usize, 3usize, 130usize), (32, 2, 70), (64, 2, 5)] {
        let b = 3;
        let h = heads * d;
        // Sequence 0 full, 1 left-padded, 2 left-padded with a hole after its first token.
        let mut mask = vec![vec![1u32; t]; b];
        for j in 0..t / 3 {
            mask[1][j] = 0;
        }
        for j in 0..t / 2 {
            mask[2][j] = 0;
        }
        if t > 4 {
            mask[2][t / 2 + 1] = 0;
        }
        let masked = f32::MIN;
        let mut bias = vec![0f32; b * t * t];
        for s in 0..b {
            for q in 0..t {
                for k in 0..t {
                    if k > q || mask[s][k] == 0 {
                        bias[(s * t + q) * t + k] = masked;
                    }
                }
            }
        }
        let mut qkv = vec![0f32; b * t * 3 * h];
        let mut x = 12345u64;
        for (n, v) in qkv.iter_mut().enumerate() {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            *v = ((x >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0;
            // q comes pre-scaled by head_dim^-0.5, as the engine folds it into W_q.
            if n % (3 * h) < h {
                *v /= (d as f32).sqrt();
            }
        }
        // f64 reference.
        let at = |s: usize, pos: usize, part: usize, hd: usize, i: usize| qkv[(s * t + pos) * 3 * h + part * h + hd * d + i] as f64;
        let mut want = vec![0f64; b * t * h];
        for s in 0..b {
            let first_real = (0..t).find(|&k| mask[s][k] != 0).unwrap_or(t);
            for hd in 0..heads {
                for q in 0..t {
                    let o = &mut want[(s * t + q) * h + hd * d..(s * t + q) * h + hd * d + d];
                    if q < first_real {
                        for k in 0..t {
                            for i in 0..d {
                                o[i] += at(s, k, 2, hd, i) / t as f64;
                            }
                        }
                        continue;
                    }
                    let keys: Vec<usize> = (0..=q).filter(|&k| mask[s][k] != 0).collect();
                    let scores: Vec<f64> = keys.iter().map(|&k| (0..d).map(|i| at(s, q, 0, hd, i) * at(s, k, 1, hd, i)).sum()).collect();
                    let mx = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = scores.iter().map(|s| (s - mx).exp()).collect();
                    let sum: f64 = e.iter().sum();
                    for (&k, &w) in keys.iter().zip(&e) {
                        for i in 0..d {
                            o[i] += w / sum * at(s, k, 2, hd, i);
                        }
                    }
                }
            }
        }
        for dtype in gpu_common::dtypes(&[DType::F32, DType::F16, DType::BF16]) {
            let qkv_t = Tensor::from_slice(&qkv, (b, t, 3 * h), &dev).unwrap().to_dtype(dtype).unwrap();
            let bias_t = Tensor::from_slice(&bias, (b, 1, t, t), &dev).unwrap();
            let cap = t + 3;
            let sentinel = 7.0f64;
            let kc = (Tensor::ones((b, heads, cap, d), dtype, &dev).unwrap() * sentinel).unwrap();
            let vc = (Tensor::ones((b, heads, cap, d), dtype, &dev).unwrap() * sentinel).unwrap();
            let got = prefill_attention(l, &qkv_t, &bias_t, Some((&kc, &vc)), heads).unwrap().expect("the kernel applies to this shape");
            let got: Vec<f32> = got.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            let (mut num, mut den, mut max_abs) = (0f64, 0f64, 0f64);
            for (g, w) in got.iter().zip(&want) {
                assert!(g.is_finite(), "non-finite output");
                let e = (*g as f64 - w).abs();
                num += e * e;
                den += w * w;
                max_abs = max_abs.max(e);
            }
            let rel = (num / den).sqrt();
            // f32: only the summation order differs (inputs exact); f16/bf16: q, k, v rounded once
            // to the storage type (unit roundoff u) and the output once, amplified by the
            // softmax: the model-level bound of 16u (see the header); a wrong mask, key or
            // position gives errors of order 1.
            let bound = match dtype {
                DType::F32 => 1e-5,
                DType::F16 => 16.0 * 2f64.powi(-11),
                _ => 16.0 * 2f64.powi(-8),
            };
            println!("PREFILL_ATTENTION d={d} heads={heads} t={t} {dtype:?}: rel L2 {rel:.3e} (bound {bound:.1e}), max abs {max_abs:.3e}");
            assert!(rel <= bound, "d={d} t={t} {dtype:?}: relative L2 error {rel:.3e} > {bound:.1e}");
            // Cache: rows 0..t hold the prompt's keys/values exactly (in dtype), rows t.. untouched.
            let qkv_r: Vec<f32> = qkv_t.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            for (part, cache) in [(1usize, &kc), (2, &vc)] {
                let c: Vec<f32> = cache.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1().unwrap();
                for s in 0..b {
                    for hd in 0..heads {
                        for pos in 0..cap {
                            for i in 0..d {
                                let got = c[((s * heads + hd) * cap + pos) * d + i];
                                let want = if pos < t { qkv_r[(s * t + pos) * 3 * h + part * h + hd * d + i] } else { sentinel as f32 };
                                assert_eq!(got, want, "cache part {part} seq {s} head {hd} row {pos} elem {i} ({dtype:?})");
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The prefill linears' cuBLASLt path (`cuda_ops::linear_lt`): the product with bias, ReLU,
/// tanh-GELU or a residual applied in the GEMM's epilogue, against an f64 reference computed from
/// the same rounded inputs. The epilogue works on the f32 accumulator, so the only rounding to
/// the storage type is the output's: the relative L2 error stays within ~u; a wrong bias row,
/// activation, transpose or residual gives errors of order 1. Shapes are odd on purpose (m = 37
/// rows, n = 72 output features).
#[test]
fn cublaslt_epilogues_match_f64_reference() {
    use tokbench_worker::model::cuda_ops::{linear_lt, linear_lt_untuned, Act, Launch, LtEpilogue};
    let dev = gpu_common::cuda_device();
    let l = &Launch::for_device(&gpu_common::base_kernels(), &dev);
    let (m, k, n) = (37usize, 96usize, 72usize);
    let mut seed = 99u64;
    let mut rand = |len: usize, scale: f32| -> Vec<f32> {
        (0..len)
            .map(|_| {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0 * scale
            })
            .collect()
    };
    let (x, w, b, r) = (rand(m * k, 1.0), rand(n * k, 0.2), rand(n, 0.5), rand(m * n, 1.0));
    let gelu_tanh = |v: f64| 0.5 * v * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (v + 0.044715 * v * v * v)).tanh());
    for dtype in gpu_common::dtypes(&[DType::F16, DType::BF16]) {
        let t = |v: &[f32], shape: &[usize]| Tensor::from_slice(v, shape, &dev).unwrap().to_dtype(dtype).unwrap();
        let back = |t: &Tensor| -> Vec<f64> { t.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap().into_iter().map(f64::from).collect() };
        let (xt, wt, bt, rt) = (t(&x, &[m, k]), t(&w, &[n, k]), t(&b, &[n]), t(&r, &[m, n]));
        let (xr, wr, br, rr) = (back(&xt), back(&wt), back(&bt), back(&rt));
        let product: Vec<f64> = (0..m * n).map(|i| (0..k).map(|j| xr[(i / n) * k + j] * wr[(i % n) * k + j]).sum()).collect();
        let cases: Vec<(&str, LtEpilogue, bool, Box<dyn Fn(usize) -> f64>)> = vec![
            ("bias", LtEpilogue::Act(Act::None), true, Box::new(|i| product[i] + br[i % n])),
            ("bias+relu", LtEpilogue::Act(Act::Relu), true, Box::new(|i| (product[i] + br[i % n]).max(0.0))),
            ("bias+gelu_tanh", LtEpilogue::Act(Act::GeluTanh), true, Box::new(|i| gelu_tanh(product[i] + br[i % n]))),
            ("bias+residual", LtEpilogue::Residual(&rt), true, Box::new(|i| product[i] + br[i % n] + rr[i])),
            ("residual", LtEpilogue::Residual(&rt), false, Box::new(|i| product[i] + rr[i])),
        ];
        let u = if dtype == DType::F16 { 2f64.powi(-11) } else { 2f64.powi(-8) };
        let check = |label: &str, got: &Tensor, want: &dyn Fn(usize) -> f64| {
            assert_eq!(got.dims(), &[m, n]);
            let (mut num, mut den) = (0f64, 0f64);
            for (i, g) in back(got).iter().enumerate() {
                let e = g - want(i);
                num += e * e;
                den += want(i) * want(i);
            }
            let rel = (num / den).sqrt();
            println!("CUBLASLT {label} {dtype:?}: rel L2 {rel:.3e} (bound {:.1e})", 2.0 * u);
            assert!(rel <= 2.0 * u, "{label} {dtype:?}: relative L2 error {rel:.3e} > {:.1e}", 2.0 * u);
        };
        for (label, epilogue, with_bias, want) in cases {
            let b = with_bias.then_some(&bt);
            let lt_epilogue = || match &epilogue {
                LtEpilogue::Act(a) => LtEpilogue::Act(*a),
                LtEpilogue::Residual(r) => LtEpilogue::Residual(r),
            };
            let got = linear_lt_untuned(l, &xt, &wt, b, lt_epilogue()).unwrap().unwrap_or_else(|| panic!("{label} {dtype:?}: cuBLASLt path did not apply"));
            check(label, &got, &*want);
            // The tuned entry point: cuBLASLt's fastest candidate, or None where the plain path
            // measured faster (the caller then runs it); either way, right when it answers.
            match linear_lt(l, &xt, &wt, b, lt_epilogue()).unwrap() {
                Some(got) => check(&format!("{label} (tuned: cuBLASLt)"), &got, &*want),
                None => println!("CUBLASLT {label} {dtype:?}: tuned choice is the plain path"),
            }
        }
        // Exact GELU has no cuBLASLt epilogue: the caller's plain path runs instead.
        assert!(linear_lt_untuned(l, &xt, &wt, Some(&bt), LtEpilogue::Act(Act::GeluErf)).unwrap().is_none());
    }
}
