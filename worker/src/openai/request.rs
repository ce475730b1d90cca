//! What a generation request is, and what its channel receives: the vocabulary the HTTP side,
//! the scheduler and the engine loop share (below all three, so none depends on another's
//! internals).

use tokio::sync::mpsc::UnboundedSender;

/// How the next token is chosen. `temperature` 0 is greedy (argmax; the default here, unlike
/// OpenAI's 1.0, so that a request without sampling settings is reproducible).
#[derive(Debug, Clone, Default)]
pub struct SamplingParams {
    pub temperature: f64,
    pub top_p: Option<f64>,
    pub top_k: Option<usize>,
    pub seed: Option<u64>,
}

impl SamplingParams {
    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0 || self.top_k == Some(1)
    }
}

#[derive(Debug, Clone)]
pub struct SeqParams {
    pub max_tokens: usize,
    /// EOS does not end the sequence before this many tokens.
    pub min_tokens: usize,
    pub ignore_eos: bool,
    pub sampling: SamplingParams,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// An EOS token.
    Stop,
    /// `max_tokens` reached.
    Length,
}

impl FinishReason {
    /// OpenAI's `finish_reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// What a request's channel receives.
#[derive(Debug, Clone)]
pub enum Event {
    Token(u32),
    Finished { reason: FinishReason, prompt_tokens: usize, completion_tokens: usize },
    /// The engine failed (e.g. out of memory); nothing more follows.
    Error(String),
}

pub struct GenRequest {
    pub prompt: Vec<u32>,
    pub params: SeqParams,
    pub events: UnboundedSender<Event>,
}

