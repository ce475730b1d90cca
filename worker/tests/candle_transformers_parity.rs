//! The rotary families against a second, independent implementation: candle-transformers'
//! own Llama, Qwen2, Qwen3 and Mistral (the crate tokbench's engine does not use), on the same
//! fixture weights as `hf_parity.rs` (which checks them against transformers). Each prompt runs
//! unpadded through both; the last position's logits must agree (f32, CPU).

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::{llama, mistral, qwen2, qwen3};
use std::path::{Path, PathBuf};
use tokbench_core::{ArchConfig, LlamaConfig, RopeScaling};
use tokbench_worker::model::Model;
use tokbench_worker::weights::WeightSource;

const TOLERANCE: f32 = 1e-4;

fn fixture_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn prompts(name: &str) -> Vec<Vec<u32>> {
    let e: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture_dir(name).join("expected.json")).unwrap()).unwrap();
    serde_json::from_value(e["prompts"].clone()).unwrap()
}

/// candle-transformers' model of one family, as a function from ids [1, t] to last logits.
type Reference = Box<dyn FnMut(&Tensor) -> Tensor>;

fn reference(name: &str, c: &LlamaConfig, files: &[PathBuf]) -> Reference {
    let vb = || unsafe { VarBuilder::from_mmaped_safetensors(files, DType::F32, &Device::Cpu).unwrap() };
    let (theta, scaling) = c.rope().unwrap();
    let (h, f, v, layers, heads, kv) =
        (c.hidden_size, c.intermediate_size, c.vocab_size, c.num_hidden_layers, c.num_attention_heads, c.num_kv_heads());
    match name {
        "llama" => {
            let RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings } = scaling else {
                panic!("the llama fixture has llama3 rope scaling")
            };
            assert_eq!(c.head_dim(), h / heads, "candle-transformers' Llama derives head_dim");
            let cfg = llama::Config {
                hidden_size: h,
                intermediate_size: f,
                vocab_size: v,
                num_hidden_layers: layers,
                num_attention_heads: heads,
                num_key_value_heads: kv,
                use_flash_attn: false,
                rms_norm_eps: c.rms_norm_eps,
                rope_theta: theta as f32,
                bos_token_id: None,
                eos_token_id: None,
                rope_scaling: Some(llama::Llama3RopeConfig {
                    factor: factor as f32,
                    low_freq_factor: low_freq_factor as f32,
                    high_freq_factor: high_freq_factor as f32,
                    original_max_position_embeddings,
                    rope_type: llama::Llama3RopeType::Llama3,
                }),
                max_position_embeddings: c.max_position_embeddings,
                tie_word_embeddings: c.tied_embeddings(),
            };
            let model = llama::Llama::load(vb(), &cfg).unwrap();
            Box::new(move |ids| {
                let mut cache = llama::Cache::new(false, DType::F32, &cfg, &Device::Cpu).unwrap();
                model.forward(ids, 0, &mut cache).unwrap()
            })
        }
        "qwen2" => {
            let cfg = qwen2::Config {
                vocab_size: v,
                hidden_size: h,
                intermediate_size: f,
                num_hidden_layers: layers,
                num_attention_heads: heads,
                num_key_value_heads: kv,
                max_position_embeddings: c.max_position_embeddings,
                sliding_window: c.max_position_embeddings,
                max_window_layers: layers,
                tie_word_embeddings: c.tied_embeddings(),
                rope_theta: theta,
                rms_norm_eps: c.rms_norm_eps,
                use_sliding_window: false,
                hidden_act: candle_nn::Activation::Silu,
            };
            let mut model = qwen2::ModelForCausalLM::new(&cfg, vb()).unwrap();
            Box::new(move |ids| {
                model.clear_kv_cache();
                model.forward(ids, 0).unwrap().squeeze(1).unwrap()
            })
        }
        "qwen3" => {
            let cfg = qwen3::Config {
                vocab_size: v,
                hidden_size: h,
                intermediate_size: f,
                num_hidden_layers: layers,
                num_attention_heads: heads,
                head_dim: c.head_dim(),
                attention_bias: false,
                num_key_value_heads: kv,
                max_position_embeddings: c.max_position_embeddings,
                sliding_window: None,
                max_window_layers: layers,
                tie_word_embeddings: c.tied_embeddings(),
                rope_theta: theta,
                rms_norm_eps: c.rms_norm_eps,
                use_sliding_window: false,
                hidden_act: candle_nn::Activation::Silu,
            };
            let mut model = qwen3::ModelForCausalLM::new(&cfg, vb()).unwrap();
            Box::new(move |ids| {
                model.clear_kv_cache();
                model.forward(ids, 0).unwrap().squeeze(1).unwrap()
            })
        }
        "mistral" => {
            let cfg = mistral::Config {
                vocab_size: v,
                hidden_size: h,
                intermediate_size: f,
                num_hidden_layers: layers,
                num_attention_heads: heads,
                head_dim: Some(c.head_dim()),
                num_key_value_heads: kv,
                hidden_act: candle_nn::Activation::Silu,
                max_position_embeddings: c.max_position_embeddings,
                rms_norm_eps: c.rms_norm_eps,
                rope_theta: theta,
                sliding_window: None,
                use_flash_attn: false,
            };
            let mut model = mistral::Model::new(&cfg, vb()).unwrap();
            Box::new(move |ids| {
                model.clear_kv_cache();
                model.forward(ids, 0).unwrap().squeeze(1).unwrap()
            })
        }
        other => panic!("no candle-transformers reference for {other}"),
    }
}

fn check(name: &str) {
    let dir = fixture_dir(name);
    let config = ArchConfig::from_json_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let ArchConfig::Llama(c) = &config else { panic!("{name} is a rotary family") };
    let files = tokbench_worker::resolve::find_weight_files(&dir).unwrap().unwrap();
    let mut theirs = reference(name, c, &files);
    let mut ours = Model::load(&config, &WeightSource::Files(files.clone()), DType::F32, &Device::Cpu).unwrap();
    for (i, p) in prompts(name).iter().enumerate() {
        let ids = Tensor::new(p.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        let mask = Tensor::new(vec![1u32; p.len()].as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        let our_last = ours.forward_full(&ids, &mask).unwrap().narrow(1, p.len() - 1, 1).unwrap().flatten_all().unwrap();
        let their_last = theirs(&ids).flatten_all().unwrap().to_dtype(DType::F32).unwrap();
        assert_eq!(our_last.dims(), their_last.dims(), "{name}");
        let diff = (&our_last - &their_last).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff <= TOLERANCE, "{name}: prompt {i}: max |logit diff| against candle-transformers {diff} > {TOLERANCE}");
        let spread = their_last.max_all().unwrap().to_scalar::<f32>().unwrap() - their_last.min_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(spread > 1.0, "{name}: logits spread only {spread}: the comparison would be weak");
    }
}

#[test]
fn llama_matches_candle_transformers() {
    check("llama");
}
#[test]
fn qwen2_matches_candle_transformers() {
    check("qwen2");
}
#[test]
fn qwen3_matches_candle_transformers() {
    check("qwen3");
}
#[test]
fn mistral_matches_candle_transformers() {
    check("mistral");
}
