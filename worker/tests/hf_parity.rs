//! The engine against Hugging Face transformers. The fixtures (worker/tests/fixtures/, made by
//! scripts/make_fixtures.py with transformers 5.17 / torch 2.11 on CPU) hold small random
//! checkpoints -- OPT pre-LN, OPT post-LN with project_in/out (the opt-350m layout), GPT-2 as
//! safetensors and as pytorch_model.bin; Llama (GQA, llama3 rope scaling, untied head), Qwen2
//! (qkv bias, tied), Qwen3 (q/k norm, head_dim != hidden/heads) and Mistral (one KV head) as
//! sharded safetensors with their tokenizer files -- with transformers' f32 logits for a
//! left-padded batch of three prompts and its greedy continuations. No Python is needed to run
//! these.

use candle_core::{DType, Device, Tensor};
use std::path::{Path, PathBuf};
use tokbench_core::{ArchConfig, Catalog, Sampling};
use tokbench_worker::generate::{generate_batch, FinishReason, GenerationParams};
use tokbench_worker::model::Model;
use tokbench_worker::checkpoint::save_synthetic_checkpoint;
use tokbench_worker::weights::WeightSource;

const LOGITS_TOLERANCE: f32 = 1e-4;

fn fixture_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

struct Fixture {
    config: ArchConfig,
    prompts: Vec<Vec<u32>>,
    input_ids: Vec<Vec<u32>>,
    attention_mask: Vec<Vec<u32>>,
    pad: u32,
    /// The EOS ids generation stops at (the fixture's generation_config.json list).
    eos_ids: Vec<u32>,
    max_new_tokens: usize,
    greedy_ignore_eos: Vec<Vec<u32>>,
    greedy_with_eos: Vec<Vec<u32>>,
    /// [3, T, vocab]
    logits: Tensor,
}

fn fixture(name: &str) -> Fixture {
    let dir = fixture_dir(name);
    let config = ArchConfig::from_json_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let e: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let rows = |k: &str| -> Vec<Vec<u32>> { serde_json::from_value(e[k].clone()).unwrap() };
    let mut st = candle_core::safetensors::load(dir.join("expected_logits.safetensors"), &Device::Cpu).unwrap();
    Fixture {
        config,
        prompts: rows("prompts"),
        input_ids: rows("input_ids"),
        attention_mask: rows("attention_mask"),
        pad: e["pad_token_id"].as_u64().unwrap() as u32,
        eos_ids: match e.get("eos_token_ids") {
            Some(ids) => serde_json::from_value(ids.clone()).unwrap(),
            None => vec![e["eos_token_id"].as_u64().unwrap() as u32],
        },
        max_new_tokens: e["max_new_tokens"].as_u64().unwrap() as usize,
        greedy_ignore_eos: rows("greedy_ignore_eos"),
        greedy_with_eos: rows("greedy_with_eos"),
        logits: st.remove("logits").unwrap(),
    }
}

/// The fixture's weight files: `file`, or "sharded" for every shard its index lists (found by
/// the same code that reads a user's model directory).
fn weight_files(name: &str, file: &str) -> Vec<PathBuf> {
    if file == "sharded" {
        let files = tokbench_worker::resolve::find_weight_files(&fixture_dir(name)).unwrap().expect("the fixture has weights");
        assert!(files.len() >= 2, "{name}: the fixture should be sharded, found {files:?}");
        files
    } else {
        vec![fixture_dir(name).join(file)]
    }
}

fn load(name: &str, file: &str, config: &ArchConfig) -> Model {
    Model::load(config, &WeightSource::Files(weight_files(name, file)), DType::F32, &Device::Cpu)
        .unwrap_or_else(|e| panic!("loading {name}/{file}: {e}"))
}

/// The file a fixture's other tests load: model.safetensors, or its shards.
fn main_file(name: &str) -> &'static str {
    if fixture_dir(name).join("model.safetensors").is_file() { "model.safetensors" } else { "sharded" }
}

fn tensor2(rows: &[Vec<u32>]) -> Tensor {
    Tensor::new(rows.to_vec(), &Device::Cpu).unwrap()
}

fn params(f: &Fixture, ignore_eos: bool) -> GenerationParams {
    GenerationParams {
        max_new_tokens: f.max_new_tokens,
        sampling: Sampling::default(),
        ignore_eos,
        eos_token_ids: f.eos_ids.clone(),
        pad_token_id: f.pad,
        model_name: "fixture".into(),
    }
}

/// Max |a - b| over the real (non-pad) positions of a left-padded batch.
fn max_diff_at_real_positions(ours: &Tensor, theirs: &Tensor, mask: &[Vec<u32>]) -> f32 {
    let ours: Vec<Vec<Vec<f32>>> = ours.to_vec3().unwrap();
    let theirs: Vec<Vec<Vec<f32>>> = theirs.to_vec3().unwrap();
    let mut max = 0f32;
    let mut compared = 0;
    for (i, row) in mask.iter().enumerate() {
        for (j, &m) in row.iter().enumerate() {
            if m == 0 {
                continue;
            }
            compared += 1;
            for (a, b) in ours[i][j].iter().zip(&theirs[i][j]) {
                assert!(a.is_finite(), "non-finite logit at [{i}, {j}]");
                max = max.max((a - b).abs());
            }
        }
    }
    assert!(compared > 0);
    max
}

fn check_logits(name: &str, file: &str) {
    let f = fixture(name);
    let mut model = load(name, file, &f.config);
    let logits = model.forward_full(&tensor2(&f.input_ids), &tensor2(&f.attention_mask)).unwrap();
    assert_eq!(logits.dims(), f.logits.dims());
    assert_eq!(logits.dtype(), DType::F32);
    let diff = max_diff_at_real_positions(&logits, &f.logits, &f.attention_mask);
    assert!(diff <= LOGITS_TOLERANCE, "{name}/{file}: max |logit diff| {diff} > {LOGITS_TOLERANCE}");
    // The fixture's logits are far from uniform, so this comparison is meaningful.
    let spread = f.logits.max_all().unwrap().to_scalar::<f32>().unwrap() - f.logits.min_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(spread > 1.0, "{name}: fixture logits spread only {spread}");
}

/// transformers' tokens cut after the first EOS (inclusive), as the engine reports them.
fn cut_after_eos(row: &[u32], eos: &[u32]) -> Vec<u32> {
    match row.iter().position(|t| eos.contains(t)) {
        Some(k) => row[..=k].to_vec(),
        None => row.to_vec(),
    }
}

fn check_greedy(name: &str, file: &str) {
    let f = fixture(name);
    let model = load(name, file, &f.config);
    let out = generate_batch(&model, &f.prompts, &params(&f, true), &mut |_| {}).unwrap();
    assert_eq!(out.tokens, f.greedy_ignore_eos, "{name}/{file}: greedy tokens (ignore_eos) differ from transformers");
    assert!(out.finish_reasons.iter().all(|r| *r == FinishReason::Length));
    assert_eq!(out.step_latencies.len(), f.max_new_tokens - 1);

    let out = generate_batch(&model, &f.prompts, &params(&f, false), &mut |_| {}).unwrap();
    let mut stopped_early = false;
    for (i, row) in out.tokens.iter().enumerate() {
        let expected = cut_after_eos(&f.greedy_ignore_eos[i], &f.eos_ids);
        assert_eq!(row, &expected, "{name}/{file}: sequence {i} with EOS stopping");
        // transformers' with-EOS run agrees: the same tokens, then pads.
        assert_eq!(&f.greedy_with_eos[i][..row.len()], row.as_slice());
        let eos_hit = row.last().is_some_and(|t| f.eos_ids.contains(t));
        assert_eq!(out.finish_reasons[i], if eos_hit { FinishReason::Eos } else { FinishReason::Length });
        stopped_early |= row.len() < f.max_new_tokens;
    }
    assert!(stopped_early, "{name}: the fixture should make at least one sequence stop at EOS");
}

macro_rules! parity_tests {
    ($($test:ident: $name:literal, $file:literal;)*) => {
        $(
            mod $test {
                #[test]
                fn logits_match_transformers() {
                    super::check_logits($name, $file);
                }
                #[test]
                fn greedy_tokens_match_transformers() {
                    super::check_greedy($name, $file);
                }
            }
        )*
    };
}

parity_tests! {
    opt_pre_safetensors: "opt_pre", "model.safetensors";
    opt_pre_bin: "opt_pre", "pytorch_model.bin";
    opt_post_safetensors: "opt_post", "model.safetensors";
    opt_post_bin: "opt_post", "pytorch_model.bin";
    gpt2_safetensors: "gpt2", "model.safetensors";
    gpt2_bin: "gpt2", "pytorch_model.bin";
    llama_sharded: "llama", "sharded";
    qwen2_sharded: "qwen2", "sharded";
    qwen3_sharded: "qwen3", "sharded";
    mistral_sharded: "mistral", "sharded";
}

/// Each prompt alone (no padding) gives the same logits at its positions and the same greedy
/// tokens as inside the padded batch.
fn check_padded_equals_alone(name: &str) {
    let f = fixture(name);
    let mut model = load(name, main_file(name), &f.config);
    let batch_logits = model.forward_full(&tensor2(&f.input_ids), &tensor2(&f.attention_mask)).unwrap();
    let batch = generate_batch(&model, &f.prompts, &params(&f, true), &mut |_| {}).unwrap();
    let t = f.input_ids[0].len();
    for (i, p) in f.prompts.iter().enumerate() {
        let alone = model.forward_full(&tensor2(std::slice::from_ref(p)), &tensor2(&[vec![1; p.len()]])).unwrap();
        let padded = batch_logits.narrow(0, i, 1).unwrap().narrow(1, t - p.len(), p.len()).unwrap();
        let diff = (alone - padded).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff <= 1e-5, "{name}: prompt {i} alone vs padded: max |logit diff| {diff}");
        let out = generate_batch(&model, std::slice::from_ref(p), &params(&f, true), &mut |_| {}).unwrap();
        assert_eq!(out.tokens[0], batch.tokens[i], "{name}: prompt {i} alone vs padded: greedy tokens");
    }
}

#[test]
fn padded_prompt_equals_alone_opt_pre() {
    check_padded_equals_alone("opt_pre");
}
#[test]
fn padded_prompt_equals_alone_opt_post() {
    check_padded_equals_alone("opt_post");
}
#[test]
fn padded_prompt_equals_alone_gpt2() {
    check_padded_equals_alone("gpt2");
}
#[test]
fn padded_prompt_equals_alone_rotary_families() {
    for name in ["llama", "qwen2", "qwen3", "mistral"] {
        check_padded_equals_alone(name);
    }
}

/// Tokenisation follows the checkpoint's files, as transformers' AutoTokenizer does: BOS from
/// Llama's and Mistral's post-processor / add_bos_token, none for Qwen; byte fallback; NFC.
#[test]
fn tokenizer_files_encode_like_transformers() {
    for name in ["llama", "qwen2", "qwen3", "mistral"] {
        let f = fixture(name);
        let e: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture_dir(name).join("expected.json")).unwrap()).unwrap();
        let texts: Vec<String> = serde_json::from_value(e["text_prompts"].clone()).unwrap();
        let expected: Vec<Vec<u32>> = serde_json::from_value(e["text_prompt_ids"].clone()).unwrap();
        let tok = tokbench_worker::tokenizer::Tokenizer::load(Some(&fixture_dir(name)), &f.config).unwrap();
        assert!(tok.description().starts_with("tokenizer.json at"), "{}", tok.description());
        for (text, ids) in texts.iter().zip(&expected) {
            assert_eq!(&tok.encode(text).unwrap(), ids, "{name}: {text:?}");
        }
        let adds_bos = matches!(name, "llama" | "mistral");
        assert_eq!(tok.bos(), if adds_bos { Some(1) } else { None }, "{name}");
    }
}

#[test]
fn eos_ids_come_from_generation_config() {
    for name in ["llama", "qwen3"] {
        let f = fixture(name);
        let ids = tokbench_worker::generation_config::eos_token_ids(Some(&fixture_dir(name)), &f.config).unwrap();
        assert_eq!(ids, f.eos_ids, "{name}");
        assert_eq!(ids.len(), 2, "{name}: the fixture lists two EOS ids");
    }
}

#[test]
fn sampling_is_deterministic_for_a_seed_and_top_k_1_is_greedy() {
    for name in ["opt_pre", "gpt2", "llama"] {
        let f = fixture(name);
        let model = load(name, main_file(name), &f.config);
        let sampled = |model: &Model, seed: u64, top_k: Option<usize>| {
            let mut p = params(&f, true);
            p.sampling = Sampling { temperature: 1.0, top_p: Some(0.95), top_k, seed };
            generate_batch(model, &f.prompts, &p, &mut |_| {}).unwrap().tokens
        };
        let a = sampled(&model, 42, None);
        let b = sampled(&model, 42, None);
        assert_eq!(a, b, "{name}: same seed, different tokens");
        // Different seeds pick different tokens somewhere (8 tokens x 3 prompts from a
        // 512-token vocabulary at temperature 1).
        let c = sampled(&model, 43, None);
        assert_ne!(a, c, "{name}: seeds 42 and 43 gave identical samples");
        assert_ne!(a, f.greedy_ignore_eos, "{name}: sampling at temperature 1 reproduced greedy exactly");
        let k1 = sampled(&model, 7, Some(1));
        assert_eq!(k1, f.greedy_ignore_eos, "{name}: top_k = 1 must equal greedy");
    }
}

#[test]
fn sharded_safetensors_load_like_one_file() {
    let f = fixture("opt_post");
    let all = candle_core::safetensors::load(fixture_dir("opt_post").join("model.safetensors"), &Device::Cpu).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (mut a, mut b) = (std::collections::HashMap::new(), std::collections::HashMap::new());
    for (i, (k, v)) in all.into_iter().enumerate() {
        if i % 2 == 0 { a.insert(k, v) } else { b.insert(k, v) };
    }
    let shards = vec![dir.path().join("model-00001-of-00002.safetensors"), dir.path().join("model-00002-of-00002.safetensors")];
    candle_core::safetensors::save(&a, &shards[0]).unwrap();
    candle_core::safetensors::save(&b, &shards[1]).unwrap();
    let mut model = Model::load(&f.config, &WeightSource::Files(shards), DType::F32, &Device::Cpu).unwrap();
    let logits = model.forward_full(&tensor2(&f.input_ids), &tensor2(&f.attention_mask)).unwrap();
    let diff = max_diff_at_real_positions(&logits, &f.logits, &f.attention_mask);
    assert!(diff <= LOGITS_TOLERANCE, "sharded: {diff}");
}

#[test]
fn parameter_count_and_bytes_come_from_the_tensors() {
    let f = fixture("opt_post");
    let model = load("opt_post", "model.safetensors", &f.config);
    // Counted from the file: every stored tensor once (lm_head is tied, not stored).
    let stored: usize =
        candle_core::safetensors::load(fixture_dir("opt_post").join("model.safetensors"), &Device::Cpu).unwrap().values().map(|t| t.elem_count()).sum();
    assert_eq!(model.num_parameters(), stored as u64);
    assert_eq!(model.weight_bytes(), 4 * stored as u64);
    // The .bin stores lm_head.weight too (tied); it must not be counted twice.
    let bin = load("opt_post", "pytorch_model.bin", &f.config);
    assert_eq!(bin.num_parameters(), stored as u64);
    assert_eq!(model.num_parameters(), tokbench_core::catalog::estimate_parameters(&f.config));
}

#[test]
fn f16_on_cpu_stays_close_to_f32() {
    let f = fixture("opt_pre");
    let source = WeightSource::Files(vec![fixture_dir("opt_pre").join("model.safetensors")]);
    let mut model = Model::load(&f.config, &source, DType::F16, &Device::Cpu).unwrap();
    assert_eq!(model.weight_bytes(), model.num_parameters() * 2);
    let logits = model.forward_full(&tensor2(&f.input_ids), &tensor2(&f.attention_mask)).unwrap();
    assert_eq!(logits.dtype(), DType::F32);
    let diff = max_diff_at_real_positions(&logits, &f.logits, &f.attention_mask);
    // f16 has ~3 significant digits; logits here are O(10).
    assert!(diff < 0.1, "f16 logits off by {diff}");
}

fn synthetic_logits(config: &ArchConfig, seed: u64) -> Tensor {
    let mut model = Model::load(config, &WeightSource::Synthetic { seed }, DType::F32, &Device::Cpu).unwrap();
    let ids = tensor2(&[vec![2, 100, 2000, 30000], vec![1, 2, 500, 7]]);
    let mask = tensor2(&[vec![1, 1, 1, 1], vec![0, 1, 1, 1]]);
    model.forward_full(&ids, &mask).unwrap()
}

#[test]
fn synthetic_weights_are_seeded() {
    for name in ["tiny-opt", "tiny-gpt2", "tiny-llama", "tiny-qwen3"] {
        let config = Catalog::get(name).unwrap().config();
        let a = synthetic_logits(&config, 7);
        let b = synthetic_logits(&config, 7);
        let c = synthetic_logits(&config, 8);
        let max = |x: &Tensor, y: &Tensor| (x - y).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(max(&a, &b), 0.0, "{name}: same seed must give identical logits");
        assert!(max(&a, &c) > 1e-3, "{name}: different seeds gave the same logits");
    }
}

#[test]
fn synthetic_parameter_counts_match_the_catalog_estimate() {
    for name in ["tiny-opt", "tiny-gpt2", "tiny-llama", "tiny-qwen3"] {
        let config = Catalog::get(name).unwrap().config();
        let model = Model::load(&config, &WeightSource::Synthetic { seed: 1 }, DType::F32, &Device::Cpu).unwrap();
        assert_eq!(model.num_parameters(), tokbench_core::catalog::estimate_parameters(&config), "{name}");
        assert_eq!(model.weight_bytes(), 4 * model.num_parameters(), "{name}");
    }
    // The opt-350m layout (post-LN, project_in/out, no final norm) at tiny size.
    let config = ArchConfig::from_json_str(
        r#"{"model_type":"opt","vocab_size":1000,"hidden_size":64,"num_hidden_layers":2,"num_attention_heads":4,"ffn_dim":128,"max_position_embeddings":128,"word_embed_proj_dim":32,"do_layer_norm_before":false}"#,
    )
    .unwrap();
    let model = Model::load(&config, &WeightSource::Synthetic { seed: 1 }, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(model.num_parameters(), tokbench_core::catalog::estimate_parameters(&config));
}

#[test]
fn synthetic_checkpoint_round_trips_through_safetensors() {
    for name in ["tiny-opt", "tiny-gpt2", "tiny-llama", "tiny-qwen3"] {
        let config = Catalog::get(name).unwrap().config();
        let dir = tempfile::tempdir().unwrap();
        save_synthetic_checkpoint(&config, 11, dir.path()).unwrap();
        let written = ArchConfig::from_json_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap()).unwrap();
        assert_eq!(written, config);
        let mut from_file =
            Model::load(&written, &WeightSource::Files(vec![dir.path().join("model.safetensors")]), DType::F32, &Device::Cpu).unwrap();
        let ids = tensor2(&[vec![2, 100, 2000, 30000]]);
        let mask = tensor2(&[vec![1, 1, 1, 1]]);
        let a = from_file.forward_full(&ids, &mask).unwrap();
        let mut synthetic = Model::load(&config, &WeightSource::Synthetic { seed: 11 }, DType::F32, &Device::Cpu).unwrap();
        let b = synthetic.forward_full(&ids, &mask).unwrap();
        let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(diff, 0.0, "{name}: checkpoint written from seed 11 differs from synthetic seed 11");
    }
}

#[test]
fn cached_decode_equals_full_recompute() {
    // 16 greedy steps with the KV cache against re-running the whole sequence without a cache
    // each step (argmax of the last position), for a left-padded batch.
    for name in ["tiny-opt", "tiny-gpt2", "tiny-llama", "tiny-qwen3"] {
        let config = Catalog::get(name).unwrap().config();
        let mut model = Model::load(&config, &WeightSource::Synthetic { seed: 3 }, DType::F32, &Device::Cpu).unwrap();
        let prompts = vec![vec![2u32, 31414, 232, 328], vec![2u32, 100]];
        let p = GenerationParams::new(&config, name, 16);
        let out = generate_batch(&model, &prompts, &p, &mut |_| {}).unwrap();
        for (i, prompt) in prompts.iter().enumerate() {
            let mut seq = prompt.clone();
            for _ in 0..16 {
                let logits = model.forward_full(&tensor2(&[seq.clone()]), &tensor2(&[vec![1; seq.len()]])).unwrap();
                let last = logits.narrow(1, seq.len() - 1, 1).unwrap().flatten_all().unwrap();
                seq.push(last.argmax(0).unwrap().to_scalar::<u32>().unwrap());
            }
            assert_eq!(out.tokens[i], seq[prompt.len()..], "{name}: prompt {i}");
        }
    }
}

#[test]
fn cancel_stops_generation_between_steps() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokbench_worker::generate::Generator;
    let config = Catalog::get("tiny-gpt2").unwrap().config();
    let model = Model::load(&config, &WeightSource::Synthetic { seed: 1 }, DType::F32, &Device::Cpu).unwrap();
    let params = GenerationParams::new(&config, "tiny-gpt2", 50);
    let mut generator = Generator::new(&model);
    let cancel = AtomicBool::new(false);
    let mut calls = 0;
    let err = generator
        .generate(&[vec![5, 6, 7]], &params, &cancel, &mut |n| {
            calls += 1;
            if n >= 3 {
                cancel.store(true, Ordering::Relaxed);
            }
        })
        .unwrap_err();
    assert!(matches!(err, tokbench_worker::EngineError::Cancelled), "{err:?}");
    assert_eq!(calls, 3, "cancel must take effect at the next step");
    // The generator (and its cache) stays usable after a cancelled batch.
    let out = generator.generate(&[vec![5, 6, 7]], &params, &AtomicBool::new(false), &mut |_| {}).unwrap();
    assert_eq!(out.tokens[0].len(), 50);
}
