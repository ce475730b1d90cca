//! Tokenizers: the model's own (tokenizer.json, or vocab.json + merges.txt as GPT-2's
//! byte-level BPE) when its directory has one, else an offline fallback: GPT-2's BPE as
//! shipped in tiktoken-rs (r50k_base is GPT-2's vocabulary and merges, same ids).
//!
//! Token counts are always those of a real BPE, never a whitespace split.

use crate::error::{EngineError, Result};
use std::path::Path;
use tokbench_core::ArchConfig;

enum Inner {
    Hf(Box<tokenizers::Tokenizer>),
    Gpt2Fallback(&'static tiktoken_rs::CoreBPE),
}

/// A tokenizer bound to a model config (so it knows the BOS convention and vocabulary size).
pub struct Tokenizer {
    inner: Inner,
    /// Prepended to every prompt (OPT's tokenizer adds `</s>` = id 2).
    bos: Option<u32>,
    vocab_size: usize,
    /// What goes into `ModelProperties.tokenizer`.
    description: String,
}

/// Description of the offline fallback, as recorded in reports.
pub const FALLBACK_DESCRIPTION: &str = "gpt2 fallback (tiktoken-rs r50k_base)";

impl Tokenizer {
    /// The model's tokenizer from `model_dir` when it has one, else the GPT-2 fallback.
    pub fn load(model_dir: Option<&Path>, config: &ArchConfig) -> Result<Tokenizer> {
        if let Some(dir) = model_dir {
            let json = dir.join("tokenizer.json");
            if json.is_file() {
                let t = tokenizers::Tokenizer::from_file(&json)
                    .map_err(|e| EngineError::Tokenizer(format!("cannot load {}: {e}. Delete or fix the file", json.display())))?;
                return Ok(Self::hf(t, config, format!("tokenizer.json at {}", json.display())));
            }
            let (vocab, merges) = (dir.join("vocab.json"), dir.join("merges.txt"));
            if vocab.is_file() && merges.is_file() {
                return Self::from_vocab_merges(&vocab, &merges, config);
            }
        }
        Ok(Self::fallback(config))
    }

    /// GPT-2's byte-level BPE from `vocab.json` + `merges.txt` (what GPT2TokenizerFast builds).
    pub fn from_vocab_merges(vocab: &Path, merges: &Path, config: &ArchConfig) -> Result<Tokenizer> {
        use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
        use tokenizers::pre_tokenizers::byte_level::ByteLevel;
        let bpe = tokenizers::models::bpe::BPE::from_file(&vocab.to_string_lossy(), &merges.to_string_lossy())
            .build()
            .map_err(|e| EngineError::Tokenizer(format!("cannot build a BPE from {} and {}: {e}", vocab.display(), merges.display())))?;
        let mut t = tokenizers::Tokenizer::new(bpe);
        t.with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)));
        t.with_decoder(Some(ByteLevelDecoder::default()));
        // vocab.json has no notion of special tokens; mark the config's BOS/EOS/pad as special
        // (as GPT2Tokenizer does from special_tokens_map.json) so decoding drops them and "</s>"
        // in a prompt is the token, not three pieces. Only `<...>`-shaped entries qualify: a
        // small test vocabulary may put plain bytes at those ids.
        let mut specials: Vec<tokenizers::AddedToken> = Vec::new();
        for id in [config.eos_token_id(), config.pad_token_id()].into_iter().chain(config.bos_prefix()) {
            if let Some(tok) = t.id_to_token(id) {
                if tok.len() > 2 && tok.starts_with('<') && tok.ends_with('>') && !specials.iter().any(|s| s.content == tok) {
                    specials.push(tokenizers::AddedToken::from(tok, true));
                }
            }
        }
        t.add_special_tokens(&specials);
        let dir = vocab.parent().unwrap_or(Path::new("."));
        Ok(Self::hf(t, config, format!("vocab.json+merges.txt at {}", dir.display())))
    }

    /// The offline GPT-2 BPE. For OPT (whose vocabulary is GPT-2's BPE with ids shifted) the
    /// token counts match the real tokenizer but the ids do not; the description says so.
    pub fn fallback(config: &ArchConfig) -> Tokenizer {
        let bpe = tiktoken_rs::r50k_base_singleton();
        let description = match config {
            ArchConfig::Gpt2(_) => FALLBACK_DESCRIPTION.to_string(),
            ArchConfig::Opt(_) => format!(
                "{FALLBACK_DESCRIPTION}, with </s> prepended as OPT's tokenizer does; token counts match OPT's tokenizer, ids are GPT-2's (they differ from OPT's vocab)"
            ),
        };
        Tokenizer { inner: Inner::Gpt2Fallback(bpe), bos: config.bos_prefix(), vocab_size: config.vocab_size(), description }
    }

    fn hf(t: tokenizers::Tokenizer, config: &ArchConfig, description: String) -> Tokenizer {
        Tokenizer { inner: Inner::Hf(Box::new(t)), bos: config.bos_prefix(), vocab_size: config.vocab_size(), description }
    }

    pub fn description(&self) -> &str {
        &self.description
    }

    /// The BOS id prepended to every prompt, if the model has one.
    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    /// Token ids of `text` without BOS.
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>> {
        let ids = match &self.inner {
            // Special tokens are added by us (bos), not by the file's post-processor, so every
            // tokenizer source follows the same convention.
            Inner::Hf(t) => t
                .encode(text, false)
                .map_err(|e| EngineError::Tokenizer(format!("cannot encode {text:?}: {e}")))?
                .get_ids()
                .to_vec(),
            // As HF's GPT-2 tokenizer, `<|endoftext|>` in the text is the special token 50256.
            Inner::Gpt2Fallback(bpe) => bpe.encode_with_special_tokens(text),
        };
        if let Some(bad) = ids.iter().find(|&&id| id as usize >= self.vocab_size) {
            return Err(EngineError::Tokenizer(format!(
                "token id {bad} is outside the model's vocabulary ({} ids): the tokenizer ({}) does not belong to this model. Put the model's tokenizer.json next to its config.json",
                self.vocab_size, self.description
            )));
        }
        Ok(ids)
    }

    /// Token ids of a prompt as the model sees it: BOS (OPT) + the text's tokens.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = self.encode_plain(text)?;
        if let Some(b) = self.bos {
            if ids.first() != Some(&b) {
                ids.insert(0, b);
            }
        }
        Ok(ids)
    }

    /// Text of `ids`; special tokens (BOS/EOS/pad) are dropped.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        match &self.inner {
            Inner::Hf(t) => t.decode(ids, true).map_err(|e| EngineError::Tokenizer(format!("cannot decode ids: {e}"))),
            Inner::Gpt2Fallback(bpe) => {
                // Ids beyond GPT-2's vocabulary (OPT's padding rows 50257..50271 a random model
                // may emit, or OPT's specials) have no text; skip them rather than fail the job.
                let eot = 50256;
                let kept: Vec<u32> = ids.iter().copied().filter(|&i| i < eot && Some(i) != self.bos).collect();
                let bytes = bpe
                    .decode_bytes(&kept)
                    .map_err(|e| EngineError::Tokenizer(format!("cannot decode ids: {e:?}")))?;
                // A token can end in the middle of a UTF-8 sequence; show it as U+FFFD like HF does.
                Ok(String::from_utf8_lossy(&bytes).into_owned())
            }
        }
    }
}
