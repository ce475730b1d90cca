//! Datasets → requests: *what* the benchmark asks the server.
//!
//! A serving benchmark's numbers depend on the prompt and output lengths as much as on the load,
//! so every source here produces the same thing: a list of [`Request`]s with the prompt, its
//! length in tokens (`input_len`) and the number of tokens to generate (`output_len`, sent as
//! `max_tokens`). Three sources, as in `vllm bench serve`:
//!
//! * [`synthetic_requests`]: lengths drawn from a [`LengthDist`] (fixed, uniform, normal) for
//!   input and output separately, prompts made of common English words;
//! * [`sharegpt_requests`]: real conversations from a ShareGPT-format JSON file, filtered the way
//!   vLLM filters them (see [`ShareGptFilter`]);
//! * [`jsonl_requests`]: one `{"prompt": ..., "output_len": n}` object per line.
//!
//! Lengths are in tokens of the server's tokenizer, which this crate does not have. A caller that
//! has it passes a [`Tokenize`] hook; without one a token is approximated by a whitespace-separated
//! word (the synthetic prompts are built from words that are one token in the common BPE
//! vocabularies, so for them the approximation is close; for natural text it undercounts by
//! roughly a third). The server's own `usage.prompt_tokens` is recorded per request anyway
//! ([`crate::RequestRecord::prompt_tokens`]), so the truth is never lost.
//!
//! Everything random takes a seed, so the same seed gives the same list (with the same `rand`
//! version: `StdRng` is ChaCha12 today, but `rand` does not promise its stream across versions).

use std::io::{BufRead, BufReader};
use std::path::Path;

use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

use crate::error::LoadgenError;

/// The prompt of a request: text, or token ids for servers that accept `prompt: [ids]` on
/// `/v1/completions` (vLLM does; it takes tokenisation out of the measurement).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    Text(String),
    TokenIds(Vec<u32>),
}

impl Prompt {
    /// The prompt as text (token ids are joined with spaces; only used for chat, which needs text).
    pub fn as_text(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Prompt::Text(t) => std::borrow::Cow::Borrowed(t),
            Prompt::TokenIds(ids) => std::borrow::Cow::Owned(
                ids.iter()
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
        }
    }
}

/// One request of a benchmark, before it is sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Stable identifier (`"<source>-<index>"`), carried into the record.
    pub id: String,
    pub prompt: Prompt,
    /// Prompt length in tokens: measured by the [`Tokenize`] hook when one was given, else the
    /// word count (or the number of ids for [`Prompt::TokenIds`]).
    pub input_len: usize,
    /// Tokens to generate: sent as `max_tokens` (and `min_tokens` when configured, see
    /// [`crate::ClientConfig::min_tokens_equal_max`]).
    pub output_len: usize,
}

/// The server's tokenizer, or an approximation of it, as a hook: tokbench's worker has real
/// tokenizers (`tokenizers`, `tiktoken-rs`) but this crate stays free of them.
///
/// Used to measure prompt lengths in datasets, to make synthetic prompts the exact length, and to
/// check the server's reported completion token counts ([`crate::MetricsOptions::tokenizer`]).
/// Any `Fn(&str) -> usize` is one.
pub trait Tokenize: Send + Sync {
    /// Number of tokens `text` encodes to, without special tokens (BOS), as vLLM's benchmark
    /// counts them.
    fn count_tokens(&self, text: &str) -> usize;
}

impl<F: Fn(&str) -> usize + Send + Sync> Tokenize for F {
    fn count_tokens(&self, text: &str) -> usize {
        self(text)
    }
}

/// Word count: the stand-in for a token count when no [`Tokenize`] hook is given.
pub fn word_count(text: &str) -> usize {
    text.split_whitespace().count()
}

fn count(text: &str, tokenizer: Option<&dyn Tokenize>) -> usize {
    match tokenizer {
        Some(t) => t.count_tokens(text),
        None => word_count(text),
    }
}

/// A distribution of lengths (tokens). Samples are rounded and never below 1, because a request
/// with no prompt or no output measures nothing.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LengthDist {
    /// Always `n`.
    Fixed { n: usize },
    /// Uniform integer in `[lo, hi]` (both inclusive).
    Uniform { lo: usize, hi: usize },
    /// Normal(mean, std), rounded, clipped to ≥ 1.
    Normal { mean: f64, std: f64 },
}

impl LengthDist {
    fn validate(&self, what: &str) -> Result<(), LoadgenError> {
        let bad = |m: String| Err(LoadgenError::Config(format!("{what} length: {m}")));
        match *self {
            LengthDist::Fixed { n: 0 } => bad("fixed length must be ≥ 1".into()),
            LengthDist::Uniform { lo, hi } if lo == 0 || lo > hi => {
                bad(format!("uniform range [{lo}, {hi}] must have 1 ≤ lo ≤ hi"))
            }
            LengthDist::Normal { mean, std }
                if !(mean.is_finite() && std.is_finite() && std >= 0.0) =>
            {
                bad(format!(
                    "normal(mean={mean}, std={std}) needs finite mean and std ≥ 0"
                ))
            }
            _ => Ok(()),
        }
    }

    /// One length from this distribution.
    pub fn sample(&self, rng: &mut impl Rng) -> usize {
        match *self {
            LengthDist::Fixed { n } => n.max(1),
            LengthDist::Uniform { lo, hi } => rng.random_range(lo..=hi).max(1),
            LengthDist::Normal { mean, std } => {
                let x = if std == 0.0 {
                    mean
                } else {
                    Normal::new(mean, std).expect("validated").sample(rng)
                };
                (x.round().max(1.0)) as usize
            }
        }
    }
}

/// Synthetic requests: lengths drawn independently for input and output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyntheticConfig {
    pub num_requests: usize,
    pub input: LengthDist,
    pub output: LengthDist,
    pub seed: u64,
    /// When set, prompts are random token ids below this vocabulary size instead of words: exact
    /// input lengths without a tokenizer, for servers that accept token-id prompts (vLLM's
    /// `random` dataset does the same). Not usable with chat completions.
    pub token_id_vocab: Option<u32>,
}

impl Default for SyntheticConfig {
    /// vLLM's `random` dataset defaults: 1024 input tokens, 128 output tokens; 100 requests.
    fn default() -> Self {
        SyntheticConfig {
            num_requests: 100,
            input: LengthDist::Fixed { n: 1024 },
            output: LengthDist::Fixed { n: 128 },
            seed: 0,
            token_id_vocab: None,
        }
    }
}

/// Words that are a single token (with their leading space) in the GPT-2, Llama-3 and Qwen
/// vocabularies, so a prompt of n of them is ≈ n tokens even without a tokenizer.
pub const WORDS: &[&str] = &[
    "the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "was", "with", "be", "by",
    "on", "not", "he", "this", "are", "or", "his", "from", "at", "which", "but", "have", "an",
    "had", "they", "you", "were", "their", "one", "all", "we", "can", "her", "has", "there",
    "been", "if", "more", "when", "will", "would", "who", "so", "no", "time", "people", "year",
    "about", "some", "them", "what", "other", "into", "new", "out", "up", "only", "also", "day",
    "world", "over", "city", "water", "house", "light", "music", "river", "story", "paper",
    "market", "school", "system", "number", "power", "table", "garden",
];

/// A prompt of ≈ `target` tokens made of [`WORDS`]. With a tokenizer, words are added or removed
/// until the count is exact (or, after a few rounds, as close as word granularity allows).
/// Returns the prompt and its measured length.
pub fn synthetic_prompt(
    target: usize,
    rng: &mut impl Rng,
    tokenizer: Option<&dyn Tokenize>,
) -> (String, usize) {
    let target = target.max(1);
    let mut words: Vec<&str> = (0..target)
        .map(|_| *WORDS.choose(rng).expect("non-empty"))
        .collect();
    let Some(tok) = tokenizer else {
        return (words.join(" "), target);
    };
    // Words are ~1 token each, so a few rounds of adding/removing the difference converge; keep
    // the closest prompt seen in case word granularity makes the count oscillate around target.
    let mut text = words.join(" ");
    let mut n = tok.count_tokens(&text);
    let mut best = (text.clone(), n);
    for _ in 0..32 {
        if n == target {
            return (text, n);
        }
        if n > target {
            let keep = words.len().saturating_sub(n - target).max(1);
            if keep == words.len() {
                break; // one word left and still too long
            }
            words.truncate(keep);
        } else {
            for _ in 0..(target - n) {
                words.push(*WORDS.choose(rng).expect("non-empty"));
            }
        }
        text = words.join(" ");
        n = tok.count_tokens(&text);
        if n.abs_diff(target) < best.1.abs_diff(target) {
            best = (text.clone(), n);
        }
    }
    if n.abs_diff(target) <= best.1.abs_diff(target) {
        (text, n)
    } else {
        best
    }
}

/// Synthetic requests, reproducible by `cfg.seed`. `input_len` is the measured length when a
/// tokenizer is given (it can differ from the drawn length by a token where word granularity does
/// not allow an exact fit).
pub fn synthetic_requests(
    cfg: &SyntheticConfig,
    tokenizer: Option<&dyn Tokenize>,
) -> Result<Vec<Request>, LoadgenError> {
    cfg.input.validate("input")?;
    cfg.output.validate("output")?;
    if cfg.token_id_vocab == Some(0) {
        return Err(LoadgenError::Config("token_id_vocab must be ≥ 1".into()));
    }
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let mut out = Vec::with_capacity(cfg.num_requests);
    for i in 0..cfg.num_requests {
        let in_len = cfg.input.sample(&mut rng);
        let out_len = cfg.output.sample(&mut rng);
        let (prompt, input_len) = match cfg.token_id_vocab {
            Some(v) => (
                Prompt::TokenIds((0..in_len).map(|_| rng.random_range(0..v)).collect()),
                in_len,
            ),
            None => {
                let (t, n) = synthetic_prompt(in_len, &mut rng, tokenizer);
                (Prompt::Text(t), n)
            }
        };
        out.push(Request {
            id: format!("synthetic-{i}"),
            prompt,
            input_len,
            output_len: out_len,
        });
    }
    Ok(out)
}

/// vLLM's `is_valid_sequence` rule for ShareGPT pairs (`vllm/benchmarks/datasets.py`), with its
/// defaults. A pair (prompt of `p` tokens, reference answer of `o` tokens) is kept only if
///
/// * `p ≥ min_len` and `o ≥ min_len` (too-short pairs measure little but overhead; the output
///   check is skipped when the output length is overridden), and
/// * `p ≤ max_prompt_len`, and
/// * `p + o ≤ max_total_len` (so the request fits a 2048-token context, the smallest common one).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ShareGptFilter {
    pub min_len: usize,
    pub max_prompt_len: usize,
    pub max_total_len: usize,
}

impl Default for ShareGptFilter {
    fn default() -> Self {
        ShareGptFilter {
            min_len: 4,
            max_prompt_len: 1024,
            max_total_len: 2048,
        }
    }
}

impl ShareGptFilter {
    /// vLLM's `is_valid_sequence`.
    pub fn keeps(&self, prompt_len: usize, output_len: usize, output_overridden: bool) -> bool {
        let prompt_too_short = prompt_len < self.min_len;
        let output_too_short = !output_overridden && output_len < self.min_len;
        let prompt_too_long = prompt_len > self.max_prompt_len;
        let combined_too_long = prompt_len + output_len > self.max_total_len;
        !(prompt_too_short || output_too_short || prompt_too_long || combined_too_long)
    }
}

/// How to sample a ShareGPT file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShareGptConfig {
    pub num_requests: usize,
    pub seed: u64,
    /// Generate this many tokens for every request instead of the reference answer's length
    /// (vLLM's `--sharegpt-output-len`); also disables the output-too-short check, as in vLLM.
    pub output_len: Option<usize>,
    pub filter: ShareGptFilter,
}

impl Default for ShareGptConfig {
    fn default() -> Self {
        ShareGptConfig {
            num_requests: 1000,
            seed: 0,
            output_len: None,
            filter: ShareGptFilter::default(),
        }
    }
}

#[derive(Deserialize)]
struct ShareGptEntry {
    #[serde(default)]
    conversations: Option<Vec<ShareGptTurn>>,
}

#[derive(Deserialize)]
struct ShareGptTurn {
    #[serde(default)]
    from: String,
    #[serde(default)]
    value: String,
}

fn is_human(from: &str) -> bool {
    matches!(from, "human" | "user")
}

/// Requests from a ShareGPT-format JSON file: a JSON array of
/// `{"conversations": [{"from": "human", "value": ...}, {"from": "gpt", "value": ...}, ...]}`.
///
/// As vLLM's `ShareGPTDataset`: entries with fewer than two turns are dropped, the rest are
/// shuffled with the seed, and they are taken in order: the prompt is the first human turn, the
/// output length is the length of the turn that answers it (vLLM takes turns 0 and 1, which in
/// ShareGPT are the first human turn and its answer), pairs that fail [`ShareGptFilter::keeps`]
/// are skipped, until `num_requests` are found. If the file has fewer valid pairs, the valid ones
/// are repeated (sampled with replacement, seeded), as vLLM's oversampling does, with a warning.
pub fn sharegpt_requests(
    path: &Path,
    cfg: &ShareGptConfig,
    tokenizer: Option<&dyn Tokenize>,
) -> Result<Vec<Request>, LoadgenError> {
    let file = std::fs::File::open(path).map_err(|source| LoadgenError::Io {
        path: path.to_owned(),
        source,
    })?;
    let entries: Vec<ShareGptEntry> = serde_json::from_reader(BufReader::new(file)).map_err(|e| {
        LoadgenError::parse(
            path,
            e.line(),
            format!("not a ShareGPT JSON array: {e}"),
            "the file must be one JSON array of {\"conversations\": [{\"from\": \"human\", \"value\": \"...\"}, {\"from\": \"gpt\", \"value\": \"...\"}]} objects (e.g. ShareGPT_V3_unfiltered_cleaned_split.json); for one object per line use the JSONL loader",
        )
    })?;
    let mut pairs: Vec<(String, String)> = entries
        .into_iter()
        .filter_map(|e| {
            let turns = e.conversations?;
            if turns.len() < 2 {
                return None;
            }
            let h = turns.iter().position(|t| is_human(&t.from)).unwrap_or(0);
            let answer = turns.get(h + 1)?;
            if is_human(&answer.from) {
                return None;
            }
            Some((turns[h].value.clone(), answer.value.clone()))
        })
        .collect();
    if pairs.is_empty() {
        return Err(LoadgenError::parse(
            path,
            0,
            "no conversation with a human turn followed by an answer",
            "check the file is ShareGPT format (\"conversations\" lists with \"from\"/\"value\" turns)",
        ));
    }
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    pairs.shuffle(&mut rng);
    let mut out = Vec::with_capacity(cfg.num_requests);
    let mut skipped = 0usize;
    for (prompt, answer) in &pairs {
        if out.len() >= cfg.num_requests {
            break;
        }
        let p = count(prompt, tokenizer);
        let o = match cfg.output_len {
            Some(n) => n,
            None => count(answer, tokenizer),
        };
        if !cfg.filter.keeps(p, o, cfg.output_len.is_some()) {
            skipped += 1;
            continue;
        }
        out.push(Request {
            id: format!("sharegpt-{}", out.len()),
            prompt: Prompt::Text(prompt.clone()),
            input_len: p,
            output_len: o,
        });
    }
    tracing::debug!(path = %path.display(), kept = out.len(), skipped, "ShareGPT pairs filtered");
    if out.is_empty() {
        return Err(LoadgenError::parse(
            path,
            0,
            format!("all {} conversation pairs were filtered out", pairs.len()),
            format!(
                "pairs need prompt and answer ≥ {} tokens, prompt ≤ {}, prompt + answer ≤ {}; relax ShareGptFilter or set output_len",
                cfg.filter.min_len, cfg.filter.max_prompt_len, cfg.filter.max_total_len
            ),
        ));
    }
    oversample(&mut out, cfg.num_requests, &mut rng, "sharegpt", path);
    Ok(out)
}

fn oversample(out: &mut Vec<Request>, n: usize, rng: &mut StdRng, source: &str, path: &Path) {
    if out.len() >= n || out.is_empty() {
        return;
    }
    tracing::warn!(
        path = %path.display(),
        valid = out.len(),
        wanted = n,
        "fewer valid requests than asked for: repeating requests drawn at random (seeded)"
    );
    let base = out.len();
    while out.len() < n {
        let mut r = out[rng.random_range(0..base)].clone();
        r.id = format!("{source}-{}", out.len());
        out.push(r);
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonlLine {
    prompt: Prompt,
    #[serde(default)]
    output_len: Option<usize>,
    #[serde(default)]
    id: Option<String>,
}

/// Requests from a JSONL file: one `{"prompt": "text" | [token ids], "output_len": n, "id": "..."}`
/// object per line (`output_len` and `id` optional; blank lines skipped). Lines without
/// `output_len` get `default_output_len`; without either, the line is an error. All lines are
/// used, in file order (no sampling: the file *is* the benchmark).
pub fn jsonl_requests(
    path: &Path,
    default_output_len: Option<usize>,
    tokenizer: Option<&dyn Tokenize>,
) -> Result<Vec<Request>, LoadgenError> {
    let file = std::fs::File::open(path).map_err(|source| LoadgenError::Io {
        path: path.to_owned(),
        source,
    })?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let lineno = i + 1;
        let line = line.map_err(|source| LoadgenError::Io {
            path: path.to_owned(),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed: JsonlLine = serde_json::from_str(&line).map_err(|e| {
            LoadgenError::parse(
                path,
                lineno,
                format!("bad request line: {e}"),
                "each line must be one JSON object {\"prompt\": \"...\" or [token ids], \"output_len\": <tokens>} (optional \"id\")",
            )
        })?;
        let output_len = match parsed.output_len.or(default_output_len) {
            Some(0) => {
                return Err(LoadgenError::parse(
                    path,
                    lineno,
                    "output_len is 0",
                    "output_len must be ≥ 1",
                ))
            }
            Some(n) => n,
            None => {
                return Err(LoadgenError::parse(
                    path,
                    lineno,
                    "no \"output_len\" on this line and no default output length given",
                    "add \"output_len\": <tokens> to the line or pass a default output length",
                ))
            }
        };
        let input_len = match &parsed.prompt {
            Prompt::Text(t) => count(t, tokenizer),
            Prompt::TokenIds(ids) => ids.len(),
        };
        out.push(Request {
            id: parsed.id.unwrap_or_else(|| format!("jsonl-{}", out.len())),
            prompt: parsed.prompt,
            input_len,
            output_len,
        });
    }
    if out.is_empty() {
        return Err(LoadgenError::parse(
            path,
            0,
            "no requests in the file",
            "add one JSON object per line",
        ));
    }
    Ok(out)
}
