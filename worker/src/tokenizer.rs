//! Tokenizers: the model's own (tokenizer.json, or vocab.json + merges.txt as GPT-2's
//! byte-level BPE) when its directory has one, else an offline fallback: GPT-2's BPE as
//! shipped in tiktoken-rs (r50k_base is GPT-2's vocabulary and merges, same ids) for OPT and
//! GPT-2, and none for the other families (their prompts are then token ids, never a tokenizer
//! of another family).
//!
//! Special tokens follow the checkpoint, as transformers does: a tokenizer.json's
//! post-processor decides what is added around a prompt (Llama and Mistral's template prepends
//! `<s>`, Qwen's adds nothing), `add_bos_token` in tokenizer_config.json overrides it, and the
//! family's rule ([`ArchConfig::bos_prefix`]) applies only where the files say nothing.
//!
//! Token counts are always those of a real BPE, never a whitespace split.

use crate::error::{EngineError, Result};
use std::path::Path;
use tokbench_core::ArchConfig;

enum Inner {
    Hf(Box<tokenizers::Tokenizer>),
    Gpt2Fallback(&'static tiktoken_rs::CoreBPE),
    /// No tokenizer files and no offline stand-in of this family: prompts are token ids.
    None,
}

/// Where a prompt's leading special tokens come from.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Specials {
    /// tokenizer.json's post-processor (encode with special tokens).
    PostProcessor,
    /// Prepend this id unless the text starts with it (vocab.json tokenizers, the fallback).
    Prepend(u32),
    Nothing,
}

/// A tokenizer bound to a model config (so it knows the BOS convention and vocabulary size).
pub struct Tokenizer {
    inner: Inner,
    specials: Specials,
    /// The ids put before every prompt's text (Llama/Mistral's `<s>`, OPT's `</s>`), found by
    /// encoding a probe text with and without special tokens.
    bos: Option<u32>,
    vocab_size: usize,
    /// What goes into `ModelProperties.tokenizer`.
    description: String,
}

/// Description of the offline fallback, as recorded in reports.
pub const FALLBACK_DESCRIPTION: &str = "gpt2 fallback (tiktoken-rs r50k_base)";
/// Description of a job without a tokenizer, as recorded in reports.
pub const NO_TOKENIZER_DESCRIPTION: &str = "none (synthetic token ids)";

/// What tokenizer_config.json says about BOS (only the fields tokbench reads).
#[derive(Debug, Default)]
struct TokenizerConfig {
    add_bos_token: Option<bool>,
    bos_token: Option<String>,
}

impl TokenizerConfig {
    fn read(dir: &Path) -> Result<TokenizerConfig> {
        let path = dir.join("tokenizer_config.json");
        let Ok(text) = std::fs::read_to_string(&path) else { return Ok(TokenizerConfig::default()) };
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| EngineError::Tokenizer(format!("{} is not valid JSON: {e}. Fix or delete the file", path.display())))?;
        let token = |k: &str| match v.get(k) {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Object(o)) => o.get("content").and_then(|c| c.as_str()).map(str::to_string),
            _ => None,
        };
        Ok(TokenizerConfig { add_bos_token: v.get("add_bos_token").and_then(serde_json::Value::as_bool), bos_token: token("bos_token") })
    }
}

impl Tokenizer {
    /// The model's tokenizer from `model_dir` when it has one, else the offline fallback
    /// ([`Self::fallback`]).
    pub fn load(model_dir: Option<&Path>, config: &ArchConfig) -> Result<Tokenizer> {
        if let Some(dir) = model_dir {
            let tc = TokenizerConfig::read(dir)?;
            let json = dir.join("tokenizer.json");
            if json.is_file() {
                let t = tokenizers::Tokenizer::from_file(&json)
                    .map_err(|e| EngineError::Tokenizer(format!("cannot load {}: {e}. Delete or fix the file", json.display())))?;
                // add_bos_token in tokenizer_config.json wins over the post-processor (transformers
                // rebuilds the template from it); without it the post-processor decides.
                let bos_id = tc.bos_token.as_deref().and_then(|b| t.token_to_id(b)).or(config.bos_prefix());
                let specials = match (tc.add_bos_token, bos_id) {
                    (Some(true), Some(id)) => Specials::Prepend(id),
                    (Some(false), _) => Specials::Nothing,
                    _ => Specials::PostProcessor,
                };
                return Ok(Self::hf(t, config, specials, format!("tokenizer.json at {}", json.display())));
            }
            let (vocab, merges) = (dir.join("vocab.json"), dir.join("merges.txt"));
            if vocab.is_file() && merges.is_file() {
                let mut tok = Self::from_vocab_merges(&vocab, &merges, config)?;
                if let Some(add) = tc.add_bos_token {
                    let bos_id = tc.bos_token.as_deref().and_then(|b| tok.token_id(b)).or(config.bos_prefix());
                    tok.specials = match (add, bos_id) {
                        (true, Some(id)) => Specials::Prepend(id),
                        _ => Specials::Nothing,
                    };
                    tok.bos = tok.find_prefix()?;
                }
                return Ok(tok);
            }
        }
        Ok(Self::fallback(config))
    }

    fn token_id(&self, token: &str) -> Option<u32> {
        match &self.inner {
            Inner::Hf(t) => t.token_to_id(token),
            _ => None,
        }
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
        // vocab.json says nothing about BOS: the family's rule (tokenizer_config.json may
        // override it, see `load`).
        let specials = config.bos_prefix().map_or(Specials::Nothing, Specials::Prepend);
        Ok(Self::hf(t, config, specials, format!("vocab.json+merges.txt at {}", dir.display())))
    }

    /// Without tokenizer files: GPT-2's BPE offline for OPT and GPT-2 (for OPT, whose
    /// vocabulary is GPT-2's BPE with ids shifted, token counts match the real tokenizer but ids
    /// do not; the description says so), and no tokenizer for the other families (prompts of
    /// `--input-len` are then token ids; text prompts are refused).
    pub fn fallback(config: &ArchConfig) -> Tokenizer {
        let bpe = tiktoken_rs::r50k_base_singleton();
        let (inner, description) = match config {
            ArchConfig::Gpt2(_) => (Inner::Gpt2Fallback(bpe), FALLBACK_DESCRIPTION.to_string()),
            ArchConfig::Opt(_) => (Inner::Gpt2Fallback(bpe), format!(
                "{FALLBACK_DESCRIPTION}, with </s> prepended as OPT's tokenizer does; token counts match OPT's tokenizer, ids are GPT-2's (they differ from OPT's vocab)"
            )),
            ArchConfig::Llama(_) => (Inner::None, NO_TOKENIZER_DESCRIPTION.to_string()),
        };
        let specials = config.bos_prefix().map_or(Specials::Nothing, Specials::Prepend);
        Tokenizer { inner, specials, bos: config.bos_prefix(), vocab_size: config.vocab_size(), description }
    }

    fn hf(t: tokenizers::Tokenizer, config: &ArchConfig, specials: Specials, description: String) -> Tokenizer {
        let mut tok = Tokenizer { inner: Inner::Hf(Box::new(t)), specials, bos: None, vocab_size: config.vocab_size(), description };
        tok.bos = tok.find_prefix().unwrap_or(None);
        tok
    }

    /// The one id put before a prompt's text, if any: what encoding adds before a probe text.
    fn find_prefix(&self) -> Result<Option<u32>> {
        if let Specials::Prepend(id) = self.specials {
            return Ok(Some(id));
        }
        let probe = "hello";
        let plain = self.encode_plain(probe)?;
        let full = self.encode(probe)?;
        Ok(match full.len().checked_sub(plain.len()) {
            Some(1) if full[1..] == plain[..] => Some(full[0]),
            _ => None,
        })
    }

    /// Whether prompts can be text (false: no tokenizer, token ids only).
    pub fn has_vocabulary(&self) -> bool {
        !matches!(self.inner, Inner::None)
    }

    /// How many ids the model's vocabulary has.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    pub fn description(&self) -> &str {
        &self.description
    }

    /// The BOS id prepended to every prompt, if the model has one.
    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    /// Token ids of `text` without special tokens added.
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>> {
        self.encode_with(text, false)
    }

    fn encode_with(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let ids = match &self.inner {
            Inner::Hf(t) => t
                .encode(text, add_special_tokens)
                .map_err(|e| EngineError::Tokenizer(format!("cannot encode {text:?}: {e}")))?
                .get_ids()
                .to_vec(),
            // As HF's GPT-2 tokenizer, `<|endoftext|>` in the text is the special token 50256.
            Inner::Gpt2Fallback(bpe) => bpe.encode_with_special_tokens(text),
            Inner::None => {
                return Err(EngineError::Tokenizer(format!(
                    "prompts with text need a tokenizer, and this model has none: its directory holds no tokenizer.json                      (synthetic weights offline). Put the checkpoint's tokenizer.json next to its config.json, or use                      synthetic prompts (--input-len N), which are token ids ({NO_TOKENIZER_DESCRIPTION})"
                )))
            }
        };
        if let Some(bad) = ids.iter().find(|&&id| id as usize >= self.vocab_size) {
            return Err(EngineError::Tokenizer(format!(
                "token id {bad} is outside the model's vocabulary ({} ids): the tokenizer ({}) does not belong to this model. Put the model's tokenizer.json next to its config.json",
                self.vocab_size, self.description
            )));
        }
        Ok(ids)
    }

    /// Token ids of a prompt as the model sees it: the checkpoint's special tokens (BOS for
    /// OPT, Llama, Mistral) + the text's tokens.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        match self.specials {
            Specials::PostProcessor => self.encode_with(text, true),
            Specials::Nothing => self.encode_plain(text),
            Specials::Prepend(b) => {
                let mut ids = self.encode_plain(text)?;
                if ids.first() != Some(&b) {
                    ids.insert(0, b);
                }
                Ok(ids)
            }
        }
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
            // No vocabulary: the ids themselves.
            Inner::None => Ok(format!("{ids:?}")),
        }
    }
}
