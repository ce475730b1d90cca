//! Choosing the next token from logits: greedy (argmax on the device; only the ids travel to
//! the host) or sampling with temperature, top-k and top-p (transformers' order: temperature,
//! then top-k, then top-p) from a seeded RNG, so a seed gives the same tokens every run.
//!
//! Sampling runs on the host: the batch's logits rows (vocab * 4 bytes each) are copied per
//! step. candle has no top-k/sort kernel that would keep it on the device for a 50k vocab;
//! benchmarks default to greedy, where this cost does not exist.

use crate::error::{EngineError, Result};
use candle_core::{Tensor, D};
use rand::distr::weighted::WeightedIndex;
use rand::distr::Distribution;
use rand::SeedableRng;
use tokbench_core::Sampling;

#[derive(Debug)]
enum Mode {
    Greedy,
    Sample { temperature: f64, top_k: Option<usize>, top_p: Option<f64>, rng: Box<rand::rngs::StdRng> },
}

#[derive(Debug)]
pub struct Sampler {
    mode: Mode,
}

impl Sampler {
    /// Checks the settings (clear errors for out-of-range values) and seeds the RNG.
    pub fn new(s: &Sampling) -> Result<Sampler> {
        if !s.temperature.is_finite() || s.temperature < 0.0 {
            return Err(EngineError::InvalidWorkload(format!(
                "temperature {} is invalid: use 0 for greedy decoding or a positive number (e.g. 0.8)",
                s.temperature
            )));
        }
        if let Some(p) = s.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return Err(EngineError::InvalidWorkload(format!("top_p {p} is invalid: it must be in (0, 1], e.g. 0.95")));
            }
        }
        if s.top_k == Some(0) {
            return Err(EngineError::InvalidWorkload("top_k 0 is invalid: it must be at least 1 (or unset for no top-k)".into()));
        }
        let mode = if s.is_greedy() {
            Mode::Greedy
        } else {
            Mode::Sample {
                temperature: s.temperature,
                top_k: s.top_k,
                top_p: s.top_p,
                rng: Box::new(rand::rngs::StdRng::seed_from_u64(s.seed)),
            }
        };
        Ok(Sampler { mode })
    }

    pub fn is_greedy(&self) -> bool {
        matches!(self.mode, Mode::Greedy)
    }

    /// `logits` [b, vocab] f32 on the model's device. Returns the chosen ids as a [b] u32
    /// tensor on that device (the next input) and on the host. Reading them to the host is
    /// the step's only device synchronisation.
    pub fn next(&mut self, logits: &Tensor) -> Result<(Tensor, Vec<u32>)> {
        match &mut self.mode {
            Mode::Greedy => {
                let ids = logits.argmax(D::Minus1)?;
                let host = ids.to_vec1::<u32>()?;
                Ok((ids, host))
            }
            Mode::Sample { temperature, top_k, top_p, rng } => {
                let rows: Vec<Vec<f32>> = logits.to_vec2()?;
                let host: Vec<u32> = rows.iter().map(|r| sample_row(r, *temperature, *top_k, *top_p, rng.as_mut())).collect();
                let ids = Tensor::new(host.as_slice(), logits.device())?;
                Ok((ids, host))
            }
        }
    }
}

/// One draw from `softmax(logits / temperature)` restricted to the `top_k` highest logits,
/// then to the smallest set of highest-probability tokens whose probability reaches `top_p`
/// (at least one token is always kept). Ties are ordered by lower token id first.
pub fn sample_row(logits: &[f32], temperature: f64, top_k: Option<usize>, top_p: Option<f64>, rng: &mut impl rand::Rng) -> u32 {
    let by_logit_desc = |a: &usize, b: &usize| logits[*b].total_cmp(&logits[*a]).then(a.cmp(b));
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    if let Some(k) = top_k.filter(|&k| k < idx.len()) {
        // Partial selection: O(vocab) instead of sorting the whole vocabulary.
        idx.select_nth_unstable_by(k - 1, by_logit_desc);
        idx.truncate(k);
    }
    idx.sort_unstable_by(by_logit_desc);
    let max = logits[idx[0]] as f64;
    let mut probs: Vec<f64> = idx.iter().map(|&i| ((logits[i] as f64 - max) / temperature).exp()).collect();
    let sum: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= sum);
    if let Some(p) = top_p {
        let mut cum = 0.0;
        let mut keep = probs.len();
        for (n, q) in probs.iter().enumerate() {
            cum += q;
            if cum >= p {
                keep = n + 1;
                break;
            }
        }
        probs.truncate(keep);
        idx.truncate(keep);
    }
    match WeightedIndex::new(&probs) {
        Ok(dist) => idx[dist.sample(rng)] as u32,
        // All weights zero or not finite (NaN logits): fall back to the most likely token.
        Err(_) => idx[0] as u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_one_is_argmax() {
        let logits = [0.1f32, 2.0, -1.0, 1.9];
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..50 {
            assert_eq!(sample_row(&logits, 1.5, Some(1), None, &mut rng), 1);
        }
    }

    #[test]
    fn top_p_keeps_only_the_nucleus() {
        // probabilities ~ [0.006, 0.86, 0.0006, 0.12]: top_p 0.5 keeps only token 1;
        // top_p 0.9 keeps tokens 1 and 3.
        let logits = [-1.0f32, 4.0, -3.0, 2.0];
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for _ in 0..50 {
            assert_eq!(sample_row(&logits, 1.0, None, Some(0.5), &mut rng), 1);
        }
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..500 {
            seen.insert(sample_row(&logits, 1.0, None, Some(0.9), &mut rng));
        }
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![1, 3]);
    }

    #[test]
    fn temperature_flattens_the_distribution() {
        let logits = [0.0f32, 1.0];
        let count = |t: f64| {
            let mut rng = rand::rngs::StdRng::seed_from_u64(3);
            (0..4000).filter(|_| sample_row(&logits, t, None, None, &mut rng) == 0).count()
        };
        // P(token 0) = 1/(1+e) ~ 0.27 at T=1; ~ 0.49 at T=100.
        let cold = count(1.0);
        let hot = count(100.0);
        assert!((900..1300).contains(&cold), "{cold}");
        assert!((1800..2200).contains(&hot), "{hot}");
    }

    #[test]
    fn bad_settings_are_rejected() {
        let s = |temperature, top_p, top_k| Sampling { temperature, top_p, top_k, seed: 0 };
        assert!(Sampler::new(&s(-1.0, None, None)).unwrap_err().to_string().contains("temperature"));
        assert!(Sampler::new(&s(1.0, Some(1.5), None)).unwrap_err().to_string().contains("top_p"));
        assert!(Sampler::new(&s(1.0, None, Some(0))).unwrap_err().to_string().contains("top_k"));
        assert!(Sampler::new(&s(0.0, None, None)).unwrap().is_greedy());
    }
}
