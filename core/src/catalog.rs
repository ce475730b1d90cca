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

static ENTRIES: &[CatalogEntry] = &[
    CatalogEntry { name: "opt-125m", hf_repo: Some("facebook/opt-125m"), config_json: OPT_125M, description: "OPT 125M (pre-LN)" },
    CatalogEntry { name: "opt-350m", hf_repo: Some("facebook/opt-350m"), config_json: OPT_350M, description: "OPT 350M (post-LN, 512-wide embeddings with project_in/out)" },
    CatalogEntry { name: "opt-1.3b", hf_repo: Some("facebook/opt-1.3b"), config_json: OPT_1_3B, description: "OPT 1.3B (pre-LN)" },
    CatalogEntry { name: "gpt2", hf_repo: Some("gpt2"), config_json: GPT2, description: "GPT-2 124M" },
    CatalogEntry { name: "gpt2-medium", hf_repo: Some("gpt2-medium"), config_json: GPT2_MEDIUM, description: "GPT-2 355M" },
    CatalogEntry { name: "gpt2-large", hf_repo: Some("gpt2-large"), config_json: GPT2_LARGE, description: "GPT-2 774M" },
    CatalogEntry { name: "distilgpt2", hf_repo: Some("distilgpt2"), config_json: DISTILGPT2, description: "DistilGPT2 82M" },
    CatalogEntry { name: "tiny-opt", hf_repo: None, config_json: TINY_OPT, description: "tiny OPT for tests (2 layers, hidden 64)" },
    CatalogEntry { name: "tiny-gpt2", hf_repo: None, config_json: TINY_GPT2, description: "tiny GPT-2 for tests (2 layers, hidden 64)" },
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
            "unknown model \"{name}\".{closest} Known models: {}. You can also give a Hugging Face repo id or a local directory whose config.json has model_type opt or gpt2.",
            Self::names().join(", ")
        )
    }
}

/// Parameter count implied by a config (the loaded tensors are the authority; this is for
/// placement and memory estimates before loading).
pub fn estimate_parameters(cfg: &ArchConfig) -> u64 {
    match cfg {
        ArchConfig::Opt(c) => {
            let h = c.hidden_size as u64;
            let p = c.word_embed_proj_dim() as u64;
            let f = c.ffn_dim as u64;
            let mut n = c.vocab_size as u64 * p + (c.max_position_embeddings as u64 + 2) * h;
            if p != h {
                n += 2 * p * h; // project_in, project_out (no bias)
            }
            if c.do_layer_norm_before {
                n += 2 * h; // final_layer_norm
            }
            let layer = 4 * (h * h + h) + 2 * (2 * h) + (h * f + f) + (f * h + h);
            n + c.num_hidden_layers as u64 * layer
        }
        ArchConfig::Gpt2(c) => {
            let h = c.n_embd as u64;
            let f = c.n_inner() as u64;
            let layer = 2 * h + (h * 3 * h + 3 * h) + (h * h + h) + 2 * h + (h * f + f) + (f * h + h);
            c.vocab_size as u64 * h + c.n_positions as u64 * h + c.n_layer as u64 * layer + 2 * h
        }
    }
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
    }
}
