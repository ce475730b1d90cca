//! Batched generation with measurement: one prefill of a left-padded batch, then decode
//! steps against a preallocated KV cache. (Interface fixed; body filled in by the model work.)

use crate::error::Result;
use crate::model::Model;
use std::time::Duration;
use tokbench_core::Sampling;

#[derive(Debug, Clone)]
pub struct GenerationParams {
    pub max_new_tokens: usize,
    pub sampling: Sampling,
    /// true: every sequence produces exactly max_new_tokens.
    pub ignore_eos: bool,
    pub eos_token_id: u32,
    pub pad_token_id: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    Length,
    Eos,
}

#[derive(Debug, Clone)]
pub struct BatchOutput {
    /// Generated ids per sequence (prompt excluded; stops after EOS unless ignore_eos).
    pub tokens: Vec<Vec<u32>>,
    pub finish_reasons: Vec<FinishReason>,
    /// From before the prompt ids are copied to the device until the first generated
    /// token of every sequence is on the host (device synchronised) = TTFT of each request.
    pub prefill: Duration,
    /// Wall time of each decode step (one new token for every live sequence), host-synced.
    pub step_latencies: Vec<Duration>,
    /// prefill + all decode steps.
    pub total: Duration,
}

/// Generate for one batch of already tokenised prompts (lengths may differ).
/// `on_step(tokens_generated_so_far_in_this_batch)` is called after prefill and every step
/// (used for progress reporting; must be cheap).
pub fn generate_batch(
    model: &mut Model,
    prompts: &[Vec<u32>],
    params: &GenerationParams,
    on_step: &mut dyn FnMut(usize),
) -> Result<BatchOutput> {
    let _ = (model, prompts, params, on_step);
    todo!()
}
