//! Synthetic checkpoints on disk: the synthetic weights of a config written as a Hugging Face
//! checkpoint folder (`config.json` + `model.safetensors`) that transformers can load, for
//! parity tests and `tokbench-worker export-weights`.
//!
//! This sits above both [`crate::model`] (which builds the weights) and [`crate::weights`]
//! (which hands them out), so neither depends on the other's caller.

use crate::error::{EngineError, Result};
use crate::model::Model;
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;
use tokbench_core::ArchConfig;

/// A tensor as raw little-endian bytes for the safetensors writer.
struct RawTensor {
    dtype: safetensors::Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl safetensors::View for &RawTensor {
    fn dtype(&self) -> safetensors::Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// Writes the synthetic weights of `config` for `seed` (f32, the values `Model::load` with
/// `WeightSource::Synthetic { seed }` gives on the CPU) as a safetensors file with Hugging Face's
/// names (`model.decoder.*` for OPT, `transformer.*` for GPT-2; lm_head tied, not stored), so
/// transformers' `from_pretrained` on a folder with this file as `model.safetensors` plus
/// `config.json` loads the same model.
pub fn save_synthetic_safetensors(config: &ArchConfig, seed: u64, path: &Path) -> Result<()> {
    let tensors = Model::synthetic_tensors(config, seed)?;
    let mut raw = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let values: Vec<f32> = t.flatten_all()?.to_vec1()?;
        let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        raw.push((name, RawTensor { dtype: safetensors::Dtype::F32, shape: t.dims().to_vec(), data }));
    }
    // transformers 4.x refuses safetensors without format=pt metadata.
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file(raw.iter().map(|(n, r)| (n.as_str(), r)), Some(metadata), path)
        .map_err(|e| EngineError::Io(std::io::Error::other(format!("writing {}: {e}", path.display()))))?;
    Ok(())
}

/// Writes a checkpoint folder transformers can load: `dir/config.json` (the config in HF layout,
/// with `architectures`) and `dir/model.safetensors` (see [`save_synthetic_safetensors`]).
pub fn save_synthetic_checkpoint(config: &ArchConfig, seed: u64, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut cfg = config.to_json_value();
    // Unset optional fields are written as null by serde; transformers would take a null
    // (e.g. tie_word_embeddings) literally instead of using its default.
    if let Some(obj) = cfg.as_object_mut() {
        obj.retain(|_, v| !v.is_null());
    }
    let arch = match config {
        ArchConfig::Opt(_) => "OPTForCausalLM",
        ArchConfig::Gpt2(_) => "GPT2LMHeadModel",
        ArchConfig::Llama(c) => c.family.hf_class(),
    };
    cfg["architectures"] = serde_json::json!([arch]);
    let text = serde_json::to_string_pretty(&cfg).map_err(|e| EngineError::Io(std::io::Error::other(e)))?;
    std::fs::write(dir.join("config.json"), text)?;
    save_synthetic_safetensors(config, seed, &dir.join("model.safetensors"))
}

/// The special tokens' texts a word-level tokenizer gives the config's BOS and EOS ids.
pub const WORD_TOKENIZER_BOS: &str = "<|begin_of_text|>";
pub const WORD_TOKENIZER_EOS: &str = "<|end_of_text|>";

/// Writes `tokenizer.json` and `tokenizer_config.json` into a checkpoint folder of `config`: a
/// word-level tokenizer of exactly the config's vocabulary size, so that servers which only take
/// text (`transformers serve`, and any other) can serve synthetic weights and count the same
/// tokens as tokbench. Its words: the ones tokbench's synthetic prompts are made of (the load
/// generator's and `bench`'s), then fillers `w<id>`; the config's BOS and EOS ids get
/// [`WORD_TOKENIZER_BOS`] / [`WORD_TOKENIZER_EOS`], and the BOS (if the family has one) is put
/// before every encoding, as Llama 3's tokenizer does. Words split on whitespace and
/// punctuation; decoding joins them with spaces. Built and saved with the `tokenizers` crate,
/// then read back as a check.
pub fn save_word_tokenizer(config: &ArchConfig, dir: &Path) -> Result<()> {
    use tokenizers::decoders::wordpiece::WordPiece;
    use tokenizers::models::wordlevel::WordLevel;
    use tokenizers::pre_tokenizers::whitespace::Whitespace;
    use tokenizers::processors::template::TemplateProcessing;
    use tokenizers::{AddedToken, Tokenizer};
    let err = |what: &str, e: &dyn std::fmt::Display| EngineError::Tokenizer(format!("word-level tokenizer: {what}: {e}"));
    let spec = config.spec();
    let vocab_size = spec.vocab_size;
    let bos = spec.bos_token_id;
    let eos = spec.eos_token_ids.first().copied();
    let mut specials: Vec<(u32, &str)> = Vec::new();
    if let Some(b) = bos {
        specials.push((b, WORD_TOKENIZER_BOS));
    }
    if let Some(e) = eos.filter(|e| Some(*e) != bos) {
        specials.push((e, WORD_TOKENIZER_EOS));
    }
    let special_ids: Vec<u32> = specials.iter().map(|(i, _)| *i).collect();
    if special_ids.iter().any(|&i| i as usize >= vocab_size) {
        return Err(EngineError::Tokenizer(format!("word-level tokenizer: the config's BOS/EOS ids {special_ids:?} lie outside its vocabulary of {vocab_size}")));
    }
    let mut words: Vec<&str> = Vec::new();
    for w in tokbench_loadgen::SYNTHETIC_PROMPT_WORDS.iter().chain(crate::prompts::SYNTHETIC_WORDS).map(|w| w.trim()) {
        if !words.contains(&w) {
            words.push(w);
        }
    }
    let mut free = (0..vocab_size as u32).filter(|i| !special_ids.contains(i));
    let mut vocab = tokenizers::models::bpe::Vocab::default();
    for w in std::iter::once("<unk>").chain(words.iter().copied()) {
        let id = free.next().ok_or_else(|| EngineError::Tokenizer(format!("word-level tokenizer: a vocabulary of {vocab_size} is too small for {} words", words.len() + 1)))?;
        vocab.insert(w.to_string(), id);
    }
    for id in free {
        vocab.insert(format!("w{id}"), id);
    }
    for (id, text) in &specials {
        vocab.insert(text.to_string(), *id);
    }
    let model = WordLevel::builder().vocab(vocab).unk_token("<unk>".into()).build().map_err(|e| err("model", &e))?;
    let mut tok = Tokenizer::new(model);
    tok.with_pre_tokenizer(Some(Whitespace));
    tok.with_decoder(Some(WordPiece::new("##".into(), false)));
    if let Some(bos_id) = bos {
        let template = TemplateProcessing::builder()
            .try_single(format!("{WORD_TOKENIZER_BOS} $A"))
            .map_err(|e| err("template", &e))?
            .try_pair(format!("{WORD_TOKENIZER_BOS} $A $B"))
            .map_err(|e| err("template", &e))?
            .special_tokens(vec![(WORD_TOKENIZER_BOS, bos_id)])
            .build()
            .map_err(|e| err("template", &e))?;
        tok.with_post_processor(Some(template));
    }
    let added: Vec<AddedToken> = specials.iter().map(|(_, t)| AddedToken::from(t.to_string(), true)).collect();
    tok.add_special_tokens(&added);
    std::fs::create_dir_all(dir)?;
    let path = dir.join("tokenizer.json");
    tok.save(&path, false).map_err(|e| err("save", &e))?;
    let back = Tokenizer::from_file(&path).map_err(|e| err("reading it back", &e))?;
    if back.get_vocab_size(true) != vocab_size {
        return Err(EngineError::Tokenizer(format!("word-level tokenizer: {} entries written, the config has {vocab_size}", back.get_vocab_size(true))));
    }
    let mut tc = serde_json::json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": spec.max_positions,
        "clean_up_tokenization_spaces": false,
    });
    if bos.is_some() {
        tc["bos_token"] = WORD_TOKENIZER_BOS.into();
    }
    if let Some(e) = eos {
        tc["eos_token"] = if Some(e) == bos { WORD_TOKENIZER_BOS } else { WORD_TOKENIZER_EOS }.into();
    }
    let text = serde_json::to_string_pretty(&tc).map_err(|e| EngineError::Io(std::io::Error::other(e)))?;
    std::fs::write(dir.join("tokenizer_config.json"), text)?;
    Ok(())
}
