//! Prompts of a job: from a file (one per line), the demo's built-in set, or synthetic prompts
//! of an exact token length; tokenised and checked against the model's positions.

use crate::error::{EngineError, Result};
use crate::tokenizer::Tokenizer;
use std::path::Path;
use tokbench_core::{ArchConfig, PromptSource};

/// The demo's prompts (vLLM's quickstart set) first, then a few more of the same kind.
pub const BUILTIN_PROMPTS: &[&str] = &[
    "Hello, my name is",
    "The president of the United States is",
    "The capital of France is",
    "The future of AI is",
    "The best way to learn a new language is",
    "Once upon a time, in a small village,",
    "The most important scientific discovery of the last century was",
    "In the year 2050, cities will",
];

/// Words that are one GPT-2 token each with a leading space; synthetic prompts cycle through
/// them so their text is readable and their length in tokens is exact.
pub const SYNTHETIC_WORDS: &[&str] = &[
    " the", " quick", " brown", " fox", " jumps", " over", " lazy", " dog", " and", " runs", " into", " forest", " where",
    " many", " trees", " grow", " under", " bright", " sun", " while", " birds", " sing", " songs", " of", " summer", " light",
];

/// Length of the token-id prompts that stand in for the built-in texts when a model has no
/// tokenizer (the built-in prompts are 5 to 11 tokens in GPT-2's BPE).
pub const BUILTIN_IDS_LEN: usize = 8;

/// A prompt ready for generation.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedPrompt {
    pub text: String,
    /// As the model sees them (BOS included for OPT).
    pub ids: Vec<u32>,
}

/// `n` built-in prompts, cycling the set.
pub fn builtin(n: usize) -> Vec<String> {
    BUILTIN_PROMPTS.iter().cycle().take(n).map(|s| s.to_string()).collect()
}

/// Read a prompt file: UTF-8, one prompt per line, empty (whitespace-only) lines skipped.
pub fn read_prompt_file(path: &Path) -> Result<Vec<String>> {
    let err = |detail: String| EngineError::PromptFile { path: path.to_path_buf(), detail };
    let bytes = std::fs::read(path).map_err(|e| err(format!("cannot read it: {e}")))?;
    parse_prompts(&bytes).map_err(err)
}

/// Split file contents into prompts (tokbench-core's prompt-file rules, shared with the CLI).
pub fn parse_prompts(bytes: &[u8]) -> std::result::Result<Vec<String>, String> {
    tokbench_core::prompt_file::parse_prompt_file(bytes)
}

/// Tokenise the job's prompts and check each fits the model with `max_tokens` new tokens.
pub fn prepare(source: &PromptSource, tok: &Tokenizer, config: &ArchConfig, max_tokens: usize, model: &str) -> Result<Vec<PreparedPrompt>> {
    let prompts = match source {
        // Without a tokenizer the built-in texts cannot be encoded: token-id prompts of about
        // their length instead (the report's tokenizer says "none (synthetic token ids)").
        PromptSource::Builtin { num_prompts } if !tok.has_vocabulary() => {
            tracing::warn!("{model} has no tokenizer files: the built-in prompts become {num_prompts} prompts of {BUILTIN_IDS_LEN} synthetic token ids");
            synthetic(*num_prompts, BUILTIN_IDS_LEN, tok)?
        }
        PromptSource::Builtin { num_prompts } => encode_all(&builtin(*num_prompts), tok)?,
        PromptSource::Inline { prompts } => encode_all(prompts, tok)?,
        PromptSource::Synthetic { num_prompts, input_len } => synthetic(*num_prompts, *input_len, tok)?,
    };
    if prompts.is_empty() {
        return Err(EngineError::InvalidWorkload("no prompts: num_prompts must be at least 1".into()));
    }
    let max_positions = config.max_positions();
    for (index, p) in prompts.iter().enumerate() {
        let needed = p.ids.len() + max_tokens;
        if needed > max_positions {
            return Err(EngineError::PromptTooLong {
                index,
                tokens: p.ids.len(),
                max_tokens,
                needed,
                max_positions,
                model: model.to_string(),
            });
        }
    }
    Ok(prompts)
}

fn encode_all(texts: &[String], tok: &Tokenizer) -> Result<Vec<PreparedPrompt>> {
    texts.iter().map(|t| Ok(PreparedPrompt { text: t.clone(), ids: tok.encode(t)? })).collect()
}

/// `n` prompts of exactly `input_len` token ids each (BOS included), deterministic: prompt i
/// cycles the word list starting at word i, so prompts differ but are reproducible.
pub fn synthetic(n: usize, input_len: usize, tok: &Tokenizer) -> Result<Vec<PreparedPrompt>> {
    if !tok.has_vocabulary() {
        return synthetic_ids(n, input_len, tok);
    }
    let bos_len = usize::from(tok.bos().is_some());
    if input_len <= bos_len {
        return Err(EngineError::InvalidWorkload(format!(
            "input_len {input_len} is too short: it must be at least {} (the model's BOS token counts as one)",
            bos_len + 1
        )));
    }
    // Each word must be exactly one token in this tokenizer, or the length would not be exact.
    let mut words = Vec::new();
    for w in SYNTHETIC_WORDS {
        if let [id] = tok.encode_plain(w)?.as_slice() {
            words.push(*id);
        }
    }
    if words.is_empty() {
        return Err(EngineError::Tokenizer(format!(
            "the tokenizer ({}) has no single-token English words, so synthetic prompts of exact length cannot be built; use --prompts FILE",
            tok.description()
        )));
    }
    (0..n)
        .map(|i| {
            let body: Vec<u32> = (0..input_len - bos_len).map(|k| words[(i + k) % words.len()]).collect();
            let text = tok.decode(&body)?;
            let mut ids = Vec::with_capacity(input_len);
            ids.extend(tok.bos());
            ids.extend(body);
            Ok(PreparedPrompt { text, ids })
        })
        .collect()
}

/// Without a tokenizer: `n` prompts of `input_len` token ids drawn deterministically (prompt i
/// from its own splitmix64 stream) from the model's vocabulary, after its BOS when the family
/// has one. Low ids (where vocabularies keep their special tokens) are skipped.
fn synthetic_ids(n: usize, input_len: usize, tok: &Tokenizer) -> Result<Vec<PreparedPrompt>> {
    let bos_len = usize::from(tok.bos().is_some());
    if input_len <= bos_len {
        return Err(EngineError::InvalidWorkload(format!("input_len {input_len} is too short: it must be at least {}", bos_len + 1)));
    }
    let vocab = tok.vocab_size() as u64;
    let low = 256.min(vocab / 2);
    (0..n)
        .map(|i| {
            let mut state = 0x9E37_79B9_7F4A_7C15u64.wrapping_mul(i as u64 + 1);
            let mut next = || {
                // splitmix64
                state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = state;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^ (z >> 31)
            };
            let mut ids = Vec::with_capacity(input_len);
            ids.extend(tok.bos());
            ids.extend((bos_len..input_len).map(|_| (low + next() % (vocab - low)) as u32));
            Ok(PreparedPrompt { text: format!("[{input_len} synthetic token ids]"), ids })
        })
        .collect()
}
