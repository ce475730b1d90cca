//! The models tokbench knows by short name, each with its exact published `config.json`
//! (the fields that define shapes and behaviour). Synthetic weights are built from these,
//! so a synthetic opt-1.3b has exactly the shapes and FLOPs of the real one.

use crate::config::ArchConfig;

#[derive(Debug, Clone)]
pub struct CatalogEntry {
    /// Short name users type: `opt-125m`.
    pub name: &'static str,
    /// Hugging Face repository id: `facebook/opt-125m`. Tiny test models have none.
    pub hf_repo: Option<&'static str>,
    /// The published config.json (shape-defining fields), Hugging Face layout.
    pub config_json: &'static str,
    pub description: &'static str,
}

impl CatalogEntry {
    pub fn config(&self) -> ArchConfig {
        ArchConfig::from_json_str(self.config_json).expect("catalog configs are valid")
    }
    /// Name used in file names and NVTX ranges: the HF repo id with '/' replaced by '_'
    /// (`facebook_opt-125m`, as the demo named its profiles), or the short name.
    pub fn file_stem(&self) -> String {
        self.hf_repo.unwrap_or(self.name).replace('/', "_")
    }
}

const OPT_125M: &str = r#"{"model_type":"opt","vocab_size":50272,"hidden_size":768,"num_hidden_layers":12,"num_attention_heads":12,"ffn_dim":3072,"max_position_embeddings":2048,"word_embed_proj_dim":768,"do_layer_norm_before":true,"activation_function":"relu","enable_bias":true,"layer_norm_elementwise_affine":true,"pad_token_id":1,"bos_token_id":2,"eos_token_id":2}"#;
const OPT_350M: &str = r#"{"model_type":"opt","vocab_size":50272,"hidden_size":1024,"num_hidden_layers":24,"num_attention_heads":16,"ffn_dim":4096,"max_position_embeddings":2048,"word_embed_proj_dim":512,"do_layer_norm_before":false,"activation_function":"relu","enable_bias":true,"layer_norm_elementwise_affine":true,"pad_token_id":1,"bos_token_id":2,"eos_token_id":2}"#;
const OPT_1_3B: &str = r#"{"model_type":"opt","vocab_size":50272,"hidden_size":2048,"num_hidden_layers":24,"num_attention_heads":32,"ffn_dim":8192,"max_position_embeddings":2048,"word_embed_proj_dim":2048,"do_layer_norm_before":true,"activation_function":"relu","enable_bias":true,"layer_norm_elementwise_affine":true,"pad_token_id":1,"bos_token_id":2,"eos_token_id":2}"#;
const GPT2: &str = r#"{"model_type":"gpt2","vocab_size":50257,"n_positions":1024,"n_embd":768,"n_layer":12,"n_head":12,"n_inner":null,"activation_function":"gelu_new","layer_norm_epsilon":1e-05,"bos_token_id":50256,"eos_token_id":50256}"#;
const GPT2_MEDIUM: &str = r#"{"model_type":"gpt2","vocab_size":50257,"n_positions":1024,"n_embd":1024,"n_layer":24,"n_head":16,"n_inner":null,"activation_function":"gelu_new","layer_norm_epsilon":1e-05,"bos_token_id":50256,"eos_token_id":50256}"#;
const GPT2_LARGE: &str = r#"{"model_type":"gpt2","vocab_size":50257,"n_positions":1024,"n_embd":1280,"n_layer":36,"n_head":20,"n_inner":null,"activation_function":"gelu_new","layer_norm_epsilon":1e-05,"bos_token_id":50256,"eos_token_id":50256}"#;
const DISTILGPT2: &str = r#"{"model_type":"gpt2","vocab_size":50257,"n_positions":1024,"n_embd":768,"n_layer":6,"n_head":12,"n_inner":null,"activation_function":"gelu_new","layer_norm_epsilon":1e-05,"bos_token_id":50256,"eos_token_id":50256}"#;
// Tiny architectures for tests and quick checks: few layers, small width, the real vocabulary
// (so the real tokenizer's ids are all valid).
const TINY_OPT: &str = r#"{"model_type":"opt","vocab_size":50272,"hidden_size":64,"num_hidden_layers":2,"num_attention_heads":4,"ffn_dim":256,"max_position_embeddings":2048,"word_embed_proj_dim":64,"do_layer_norm_before":true,"activation_function":"relu","enable_bias":true,"layer_norm_elementwise_affine":true,"pad_token_id":1,"bos_token_id":2,"eos_token_id":2}"#;
const TINY_GPT2: &str = r#"{"model_type":"gpt2","vocab_size":50257,"n_positions":1024,"n_embd":64,"n_layer":2,"n_head":4,"n_inner":null,"activation_function":"gelu_new","layer_norm_epsilon":1e-05,"bos_token_id":50256,"eos_token_id":50256}"#;
const SMOLLM2_135M: &str = r#"{"model_type":"llama","vocab_size":49152,"hidden_size":576,"intermediate_size":1536,"num_hidden_layers":30,"num_attention_heads":9,"num_key_value_heads":3,"max_position_embeddings":8192,"rms_norm_eps":1e-05,"rope_theta":100000.0,"rope_scaling":null,"tie_word_embeddings":true,"hidden_act":"silu","bos_token_id":0,"eos_token_id":0}"#;
const SMOLLM2_360M: &str = r#"{"model_type":"llama","vocab_size":49152,"hidden_size":960,"intermediate_size":2560,"num_hidden_layers":32,"num_attention_heads":15,"num_key_value_heads":5,"max_position_embeddings":8192,"rms_norm_eps":1e-05,"rope_theta":100000.0,"rope_scaling":null,"tie_word_embeddings":true,"hidden_act":"silu","bos_token_id":0,"eos_token_id":0}"#;
const SMOLLM2_1_7B: &str = r#"{"model_type":"llama","vocab_size":49152,"hidden_size":2048,"intermediate_size":8192,"num_hidden_layers":24,"num_attention_heads":32,"num_key_value_heads":32,"max_position_embeddings":8192,"rms_norm_eps":1e-05,"rope_theta":130000.0,"rope_scaling":null,"tie_word_embeddings":true,"hidden_act":"silu","bos_token_id":0,"eos_token_id":0}"#;
const TINYLLAMA_1_1B: &str = r#"{"model_type":"llama","vocab_size":32000,"hidden_size":2048,"intermediate_size":5632,"num_hidden_layers":22,"num_attention_heads":32,"num_key_value_heads":4,"max_position_embeddings":2048,"rms_norm_eps":1e-05,"rope_theta":10000.0,"rope_scaling":null,"tie_word_embeddings":false,"hidden_act":"silu","bos_token_id":1,"eos_token_id":2}"#;
const LLAMA_3_2_1B: &str = r#"{"model_type":"llama","vocab_size":128256,"hidden_size":2048,"intermediate_size":8192,"num_hidden_layers":16,"num_attention_heads":32,"num_key_value_heads":8,"head_dim":64,"max_position_embeddings":131072,"rms_norm_eps":1e-05,"rope_theta":500000.0,"rope_scaling":{"rope_type":"llama3","factor":32.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":8192},"tie_word_embeddings":true,"hidden_act":"silu","bos_token_id":128000,"eos_token_id":128001}"#;
const LLAMA_3_2_3B: &str = r#"{"model_type":"llama","vocab_size":128256,"hidden_size":3072,"intermediate_size":8192,"num_hidden_layers":28,"num_attention_heads":24,"num_key_value_heads":8,"head_dim":128,"max_position_embeddings":131072,"rms_norm_eps":1e-05,"rope_theta":500000.0,"rope_scaling":{"rope_type":"llama3","factor":32.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":8192},"tie_word_embeddings":true,"hidden_act":"silu","bos_token_id":128000,"eos_token_id":128001}"#;
const LLAMA_3_1_8B: &str = r#"{"model_type":"llama","vocab_size":128256,"hidden_size":4096,"intermediate_size":14336,"num_hidden_layers":32,"num_attention_heads":32,"num_key_value_heads":8,"max_position_embeddings":131072,"rms_norm_eps":1e-05,"rope_theta":500000.0,"rope_scaling":{"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":8192},"tie_word_embeddings":false,"hidden_act":"silu","bos_token_id":128000,"eos_token_id":128001}"#;
const QWEN2_5_0_5B: &str = r#"{"model_type":"qwen2","vocab_size":151936,"hidden_size":896,"intermediate_size":4864,"num_hidden_layers":24,"num_attention_heads":14,"num_key_value_heads":2,"max_position_embeddings":32768,"rms_norm_eps":1e-06,"rope_theta":1000000.0,"rope_scaling":null,"tie_word_embeddings":true,"hidden_act":"silu","bos_token_id":151643,"eos_token_id":151643,"sliding_window":32768,"use_sliding_window":false}"#;
const QWEN2_5_1_5B: &str = r#"{"model_type":"qwen2","vocab_size":151936,"hidden_size":1536,"intermediate_size":8960,"num_hidden_layers":28,"num_attention_heads":12,"num_key_value_heads":2,"max_position_embeddings":131072,"rms_norm_eps":1e-06,"rope_theta":1000000.0,"rope_scaling":null,"tie_word_embeddings":true,"hidden_act":"silu","bos_token_id":151643,"eos_token_id":151643,"sliding_window":131072,"use_sliding_window":false}"#;
const QWEN2_5_7B: &str = r#"{"model_type":"qwen2","vocab_size":152064,"hidden_size":3584,"intermediate_size":18944,"num_hidden_layers":28,"num_attention_heads":28,"num_key_value_heads":4,"max_position_embeddings":131072,"rms_norm_eps":1e-06,"rope_theta":1000000.0,"rope_scaling":null,"tie_word_embeddings":false,"hidden_act":"silu","bos_token_id":151643,"eos_token_id":151643,"sliding_window":131072,"use_sliding_window":false}"#;
const QWEN3_0_6B: &str = r#"{"model_type":"qwen3","vocab_size":151936,"hidden_size":1024,"intermediate_size":3072,"num_hidden_layers":28,"num_attention_heads":16,"num_key_value_heads":8,"head_dim":128,"max_position_embeddings":40960,"rms_norm_eps":1e-06,"rope_theta":1000000.0,"rope_scaling":null,"tie_word_embeddings":true,"hidden_act":"silu","bos_token_id":151643,"eos_token_id":151645,"attention_bias":false,"sliding_window":null,"use_sliding_window":false}"#;
const QWEN3_1_7B: &str = r#"{"model_type":"qwen3","vocab_size":151936,"hidden_size":2048,"intermediate_size":6144,"num_hidden_layers":28,"num_attention_heads":16,"num_key_value_heads":8,"head_dim":128,"max_position_embeddings":40960,"rms_norm_eps":1e-06,"rope_theta":1000000.0,"rope_scaling":null,"tie_word_embeddings":true,"hidden_act":"silu","bos_token_id":151643,"eos_token_id":151645,"attention_bias":false,"sliding_window":null,"use_sliding_window":false}"#;
const QWEN3_4B: &str = r#"{"model_type":"qwen3","vocab_size":151936,"hidden_size":2560,"intermediate_size":9728,"num_hidden_layers":36,"num_attention_heads":32,"num_key_value_heads":8,"head_dim":128,"max_position_embeddings":40960,"rms_norm_eps":1e-06,"rope_theta":1000000.0,"rope_scaling":null,"tie_word_embeddings":true,"hidden_act":"silu","bos_token_id":151643,"eos_token_id":151645,"attention_bias":false,"sliding_window":null,"use_sliding_window":false}"#;
const QWEN3_8B: &str = r#"{"model_type":"qwen3","vocab_size":151936,"hidden_size":4096,"intermediate_size":12288,"num_hidden_layers":36,"num_attention_heads":32,"num_key_value_heads":8,"head_dim":128,"max_position_embeddings":40960,"rms_norm_eps":1e-06,"rope_theta":1000000.0,"rope_scaling":null,"tie_word_embeddings":false,"hidden_act":"silu","bos_token_id":151643,"eos_token_id":151645,"attention_bias":false,"sliding_window":null,"use_sliding_window":false}"#;
const MISTRAL_7B_V0_3: &str = r#"{"model_type":"mistral","vocab_size":32768,"hidden_size":4096,"intermediate_size":14336,"num_hidden_layers":32,"num_attention_heads":32,"num_key_value_heads":8,"max_position_embeddings":32768,"rms_norm_eps":1e-05,"rope_theta":1000000.0,"rope_scaling":null,"tie_word_embeddings":false,"hidden_act":"silu","bos_token_id":1,"eos_token_id":2,"sliding_window":null}"#;
const TINY_LLAMA: &str = r#"{"model_type":"llama","vocab_size":49152,"hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"max_position_embeddings":8192,"rms_norm_eps":1e-05,"rope_theta":100000.0,"rope_scaling":null,"tie_word_embeddings":true,"hidden_act":"silu","bos_token_id":0,"eos_token_id":0}"#;
const TINY_QWEN3: &str = r#"{"model_type":"qwen3","vocab_size":151936,"hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"head_dim":32,"max_position_embeddings":40960,"rms_norm_eps":1e-06,"rope_theta":1000000.0,"rope_scaling":null,"tie_word_embeddings":true,"hidden_act":"silu","bos_token_id":151643,"eos_token_id":151645,"attention_bias":false}"#;

static ENTRIES: &[CatalogEntry] = &[
    CatalogEntry { name: "opt-125m", hf_repo: Some("facebook/opt-125m"), config_json: OPT_125M, description: "OPT 125M (pre-LN)" },
    CatalogEntry { name: "opt-350m", hf_repo: Some("facebook/opt-350m"), config_json: OPT_350M, description: "OPT 350M (post-LN, 512-wide embeddings with project_in/out)" },
    CatalogEntry { name: "opt-1.3b", hf_repo: Some("facebook/opt-1.3b"), config_json: OPT_1_3B, description: "OPT 1.3B (pre-LN)" },
    CatalogEntry { name: "gpt2", hf_repo: Some("gpt2"), config_json: GPT2, description: "GPT-2 124M" },
    CatalogEntry { name: "gpt2-medium", hf_repo: Some("gpt2-medium"), config_json: GPT2_MEDIUM, description: "GPT-2 355M" },
    CatalogEntry { name: "gpt2-large", hf_repo: Some("gpt2-large"), config_json: GPT2_LARGE, description: "GPT-2 774M" },
    CatalogEntry { name: "distilgpt2", hf_repo: Some("distilgpt2"), config_json: DISTILGPT2, description: "DistilGPT2 82M" },
    CatalogEntry { name: "smollm2-135m", hf_repo: Some("HuggingFaceTB/SmolLM2-135M"), config_json: SMOLLM2_135M, description: "SmolLM2 135M (Llama architecture, GQA 9/3, tied)" },
    CatalogEntry { name: "smollm2-360m", hf_repo: Some("HuggingFaceTB/SmolLM2-360M"), config_json: SMOLLM2_360M, description: "SmolLM2 360M (Llama architecture, GQA 15/5, tied)" },
    CatalogEntry { name: "smollm2-1.7b", hf_repo: Some("HuggingFaceTB/SmolLM2-1.7B"), config_json: SMOLLM2_1_7B, description: "SmolLM2 1.7B (Llama architecture, MHA, tied)" },
    CatalogEntry { name: "tinyllama-1.1b", hf_repo: Some("TinyLlama/TinyLlama-1.1B-Chat-v1.0"), config_json: TINYLLAMA_1_1B, description: "TinyLlama 1.1B chat v1.0 (Llama 2 architecture, GQA 32/4)" },
    CatalogEntry { name: "llama-3.2-1b", hf_repo: Some("meta-llama/Llama-3.2-1B"), config_json: LLAMA_3_2_1B, description: "Llama 3.2 1B (GQA 32/8, llama3 rope scaling, tied)" },
    CatalogEntry { name: "llama-3.2-3b", hf_repo: Some("meta-llama/Llama-3.2-3B"), config_json: LLAMA_3_2_3B, description: "Llama 3.2 3B (GQA 24/8, llama3 rope scaling, tied)" },
    CatalogEntry { name: "llama-3.1-8b", hf_repo: Some("meta-llama/Llama-3.1-8B"), config_json: LLAMA_3_1_8B, description: "Llama 3.1 8B (GQA 32/8, llama3 rope scaling)" },
    CatalogEntry { name: "qwen2.5-0.5b", hf_repo: Some("Qwen/Qwen2.5-0.5B"), config_json: QWEN2_5_0_5B, description: "Qwen2.5 0.5B (qkv bias, GQA 14/2, tied)" },
    CatalogEntry { name: "qwen2.5-1.5b", hf_repo: Some("Qwen/Qwen2.5-1.5B"), config_json: QWEN2_5_1_5B, description: "Qwen2.5 1.5B (qkv bias, GQA 12/2, tied)" },
    CatalogEntry { name: "qwen2.5-7b", hf_repo: Some("Qwen/Qwen2.5-7B"), config_json: QWEN2_5_7B, description: "Qwen2.5 7B (qkv bias, GQA 28/4)" },
    CatalogEntry { name: "qwen3-0.6b", hf_repo: Some("Qwen/Qwen3-0.6B"), config_json: QWEN3_0_6B, description: "Qwen3 0.6B (q/k norm, head_dim 128, GQA 16/8, tied)" },
    CatalogEntry { name: "qwen3-1.7b", hf_repo: Some("Qwen/Qwen3-1.7B"), config_json: QWEN3_1_7B, description: "Qwen3 1.7B (q/k norm, GQA 16/8, tied)" },
    CatalogEntry { name: "qwen3-4b", hf_repo: Some("Qwen/Qwen3-4B"), config_json: QWEN3_4B, description: "Qwen3 4B (q/k norm, GQA 32/8, tied)" },
    CatalogEntry { name: "qwen3-8b", hf_repo: Some("Qwen/Qwen3-8B"), config_json: QWEN3_8B, description: "Qwen3 8B (q/k norm, GQA 32/8)" },
    CatalogEntry { name: "mistral-7b-v0.3", hf_repo: Some("mistralai/Mistral-7B-v0.3"), config_json: MISTRAL_7B_V0_3, description: "Mistral 7B v0.3 (GQA 32/8, no sliding window)" },
    CatalogEntry { name: "tiny-opt", hf_repo: None, config_json: TINY_OPT, description: "tiny OPT for tests (2 layers, hidden 64)" },
    CatalogEntry { name: "tiny-gpt2", hf_repo: None, config_json: TINY_GPT2, description: "tiny GPT-2 for tests (2 layers, hidden 64)" },
    CatalogEntry { name: "tiny-llama", hf_repo: None, config_json: TINY_LLAMA, description: "tiny Llama for tests (2 layers, hidden 64, GQA 4/2, SmolLM2's vocabulary)" },
    CatalogEntry { name: "tiny-qwen3", hf_repo: None, config_json: TINY_QWEN3, description: "tiny Qwen3 for tests (2 layers, hidden 64, head_dim 32, q/k norm)" },
];

pub struct Catalog;

impl Catalog {
    pub fn entries() -> &'static [CatalogEntry] {
        ENTRIES
    }

    /// Look up by short name or by HF repo id (`opt-125m`, `facebook/opt-125m`, `gpt2`).
    pub fn get(name: &str) -> Option<&'static CatalogEntry> {
        ENTRIES
            .iter()
            .find(|e| e.name.eq_ignore_ascii_case(name) || e.hf_repo.is_some_and(|r| r.eq_ignore_ascii_case(name)))
    }

    pub fn names() -> Vec<&'static str> {
        ENTRIES.iter().map(|e| e.name).collect()
    }

    /// The known name closest to `name` (edit distance), for "did you mean" messages.
    pub fn closest(name: &str) -> Option<&'static str> {
        let lower = name.to_ascii_lowercase();
        ENTRIES
            .iter()
            .map(|e| (levenshtein(&lower, e.name), e.name))
            .min_by_key(|(d, _)| *d)
            .map(|(_, n)| n)
    }

    /// Error text for an unknown name: lists the known models and the closest match.
    pub fn unknown_model_message(name: &str) -> String {
        let closest = Self::closest(name).map(|c| format!(" Did you mean \"{c}\"?")).unwrap_or_default();
        format!(
            "unknown model \"{name}\".{closest} Known models: {}. You can also give a Hugging Face repo id or a local directory whose config.json has a supported model_type (opt, gpt2, llama, mistral, qwen2, qwen3).",
            Self::names().join(", ")
        )
    }
}

/// Parameter count implied by a config (the loaded tensors are the authority; this is for
/// placement and memory estimates before loading).
pub fn estimate_parameters(cfg: &ArchConfig) -> u64 {
    cfg.spec().parameters()
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_entries_parse() {
        for e in Catalog::entries() {
            let _ = e.config();
        }
    }

    #[test]
    fn lookup_by_repo_and_name() {
        assert_eq!(Catalog::get("facebook/opt-350m").unwrap().name, "opt-350m");
        assert_eq!(Catalog::get("GPT2").unwrap().name, "gpt2");
        assert!(Catalog::get("llama-7b").is_none());
    }

    #[test]
    fn unknown_model_suggests_closest() {
        let msg = Catalog::unknown_model_message("opt-125");
        assert!(msg.contains("Did you mean \"opt-125m\""), "{msg}");
        assert!(msg.contains("distilgpt2"), "{msg}");
    }

    #[test]
    fn published_parameter_counts() {
        // Published counts (transformers num_parameters(), tied lm_head counted once).
        let count = |n: &str| estimate_parameters(&Catalog::get(n).unwrap().config());
        assert_eq!(count("gpt2"), 124_439_808);
        assert_eq!(count("opt-125m"), 125_239_296);
        assert_eq!(count("opt-350m"), 331_196_416);
        assert_eq!(count("distilgpt2"), 81_912_576);
        // The rotary families (unique weights; Hugging Face's safetensors totals except where a
        // tied lm_head is stored twice, as in Qwen3-0.6B's file).
        assert_eq!(count("llama-3.2-1b"), 1_235_814_400);
        assert_eq!(count("qwen3-0.6b"), 596_049_920);
        assert_eq!(count("smollm2-135m"), 134_515_008);
        assert_eq!(count("llama-3.2-3b"), 3_212_749_824);
        assert_eq!(count("llama-3.1-8b"), 8_030_261_248);
        assert_eq!(count("qwen2.5-0.5b"), 494_032_768);
        assert_eq!(count("qwen2.5-1.5b"), 1_543_714_304);
        assert_eq!(count("qwen2.5-7b"), 7_615_616_512);
        assert_eq!(count("mistral-7b-v0.3"), 7_248_023_552);
        assert_eq!(count("tinyllama-1.1b"), 1_100_048_384);
        assert_eq!(count("smollm2-360m"), 361_821_120);
        assert_eq!(count("smollm2-1.7b"), 1_711_376_384);
        assert_eq!(count("qwen3-1.7b"), 1_720_574_976);
        assert_eq!(count("qwen3-4b"), 4_022_468_096);
        assert_eq!(count("qwen3-8b"), 8_190_735_360);
    }

    #[test]
    fn every_family_is_in_the_catalog_with_its_spec() {
        let spec = |n: &str| Catalog::get(n).unwrap().config().spec();
        assert_eq!(spec("llama-3.2-1b").num_kv_heads, 8);
        assert_eq!(spec("qwen3-0.6b").head_dim, 128);
        assert!(spec("qwen3-0.6b").qk_norm && !spec("qwen3-0.6b").qkv_bias);
        assert!(spec("qwen2.5-0.5b").qkv_bias && spec("qwen2.5-0.5b").tied_embeddings);
        assert_eq!(spec("mistral-7b-v0.3").sliding_window, None);
        assert_eq!(spec("qwen2.5-7b").sliding_window, None, "use_sliding_window is false");
        let families: std::collections::BTreeSet<_> = Catalog::entries().iter().map(|e| e.config().model_type()).collect();
        for f in ["opt", "gpt2", "llama", "mistral", "qwen2", "qwen3"] {
            assert!(families.contains(f), "{f}");
        }
    }
}
