//! GPU numerics (built only with `--features cuda`, run on the GPU machine): the engine in f16
//! and bf16 on CUDA against the same engine in f32 on the CPU (which matches transformers within
//! 1e-4, see hf_parity.rs), on the committed transformers fixtures and on full-size synthetic
//! gpt2 / opt-125m checkpoints written to disk first (so both devices read identical weights).
//!
//! Bound: f16 keeps an 11-bit significand (unit roundoff u = 2^-11 ~ 4.9e-4) and bf16 an 8-bit one
//! (u = 2^-8 ~ 3.9e-3). Every matmul accumulates in f32 (cuBLAS), so the error is dominated by
//! rounding the activations/weights to the storage type once per op: a few u per layer, growing
//! roughly with sqrt(layers) over a random-weight network. We require the relative L2 error of the
//! logits at real positions, ||gpu - cpu|| / ||cpu||, to stay under 16u (8e-3 for f16, 6e-2 for bf16)
//! and the max abs error under 64u of the largest |logit| — loose enough for 12 layers of
//! rounding, tight enough that any wrong kernel, mask or position (errors of order 1) fails.
#![cfg(feature = "cuda")]

use candle_core::{DType, Device, Tensor};
use std::path::{Path, PathBuf};
use tokbench_core::{ArchConfig, Catalog};
use tokbench_worker::model::Model;
use tokbench_worker::weights::{save_synthetic_checkpoint, WeightSource};

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

fn compare(label: &str, config: &ArchConfig, file: &Path, dtype: DType) -> (f64, f64) {
    let (ids, mask) = batch();
    let mut cpu = Model::load(config, &WeightSource::Files(vec![file.to_path_buf()]), DType::F32, &Device::Cpu).unwrap();
    let want = cpu.forward_full(&ids, &mask).unwrap();
    let dev = Device::new_cuda(0).expect("CUDA device 0");
    let mut gpu = Model::load(config, &WeightSource::Files(vec![file.to_path_buf()]), dtype, &dev).unwrap();
    let got = gpu
        .forward_full(&ids.to_device(&dev).unwrap(), &mask.to_device(&dev).unwrap())
        .unwrap()
        .to_device(&Device::Cpu)
        .unwrap();
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
    for name in ["opt_pre", "opt_post", "gpt2"] {
        let dir = fixture_dir(name);
        let config = ArchConfig::from_json_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
        for dtype in [DType::F16, DType::BF16] {
            compare(name, &config, &dir.join("model.safetensors"), dtype);
        }
    }
}

#[test]
fn full_size_synthetic_f16_and_bf16_match_cpu_f32() {
    let tmp = std::env::temp_dir().join(format!("tokbench-gpu-parity-{}", std::process::id()));
    for name in ["gpt2", "opt-125m", "opt-350m"] {
        let config = Catalog::get(name).unwrap().config();
        let dir = tmp.join(name);
        save_synthetic_checkpoint(&config, 7, &dir).unwrap();
        for dtype in [DType::F16, DType::BF16] {
            compare(name, &config, &dir.join("model.safetensors"), dtype);
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
}
