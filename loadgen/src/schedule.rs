//! Load shapes → schedule: *when* each request is sent.
//!
//! A [`Schedule`] is a list of send offsets (seconds after the run starts), one per request, plus
//! an optional concurrency cap. It is computed entirely before the run, so the runner only has to
//! hit the times, the arrival process can be inspected and tested on its own, and a seed makes it
//! reproducible.
//!
//! Shapes ([`LoadShape`]):
//!
//! * `Poisson { rate, burstiness }`: vLLM's `--request-rate R --burstiness B`. Inter-arrival times
//!   are i.i.d. Gamma(shape = B, scale = 1/(R·B)), so their mean is always 1/R and their variance
//!   is 1/(R²·B): B = 1 is a Poisson process (exponential gaps), B < 1 burstier, B > 1 more
//!   regular. `rate = ∞` sends everything at t = 0 (vLLM's default). As in vLLM the first request
//!   goes at t = 0 and each gap follows a request. (Recent vLLM versions additionally rescale the
//!   gaps so that the whole schedule lasts exactly N/R; this one does not, so the arrival process
//!   is a genuine renewal process.)
//! * `Constant { rate }`: a fixed interval 1/R (GuideLLM's "constant" profile).
//! * A replayed [`Trace`] (arrival time, input length, output length per line).
//!
//! `max_concurrency` caps requests in flight (vLLM's `--max-concurrency`); it combines with any
//! shape: a request whose time has come waits for a free slot. Warm-up requests
//! ([`Schedule::with_warmup`]) are the first N sends: sent like the others, excluded from metrics,
//! so connection set-up and the server's first-request costs (CUDA graph capture, allocator growth)
//! do not pollute the numbers.

use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Gamma};
use serde::{Deserialize, Serialize};

use crate::dataset::{synthetic_prompt, Prompt, Request, Tokenize};
use crate::error::LoadgenError;

/// An arrival process for a fixed number of requests.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LoadShape {
    /// Gamma-distributed gaps with mean 1/`rate` (req/s) and shape `burstiness`; `burstiness` 1 is
    /// Poisson. `rate` = `f64::INFINITY` sends everything at t = 0.
    Poisson { rate: f64, burstiness: f64 },
    /// One request every 1/`rate` seconds.
    Constant { rate: f64 },
}

/// One send of the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ScheduledSend {
    /// Index into the request list passed to [`crate::run`].
    pub request: usize,
    /// Seconds after the run's start at which the request should be sent.
    pub at_s: f64,
    /// Sent, but excluded from metrics.
    pub warmup: bool,
}

/// When to send what: sends in non-decreasing `at_s` order, and the concurrency cap.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub sends: Vec<ScheduledSend>,
    /// At most this many requests in flight (`None`: unlimited).
    pub max_concurrency: Option<usize>,
}

impl Schedule {
    /// `n` sends (requests 0..n in order) following `shape`, reproducible by `seed`.
    pub fn from_shape(n: usize, shape: &LoadShape, seed: u64) -> Result<Schedule, LoadgenError> {
        let mut sends = Vec::with_capacity(n);
        match *shape {
            LoadShape::Poisson { rate, burstiness } => {
                if rate.is_nan() || rate <= 0.0 {
                    return Err(LoadgenError::Config(format!(
                        "request rate must be > 0 req/s (or infinite), got {rate}"
                    )));
                }
                if !(burstiness.is_finite() && burstiness > 0.0) {
                    return Err(LoadgenError::Config(format!(
                        "burstiness must be a finite number > 0 (1 = Poisson), got {burstiness}"
                    )));
                }
                if rate.is_infinite() {
                    sends.extend((0..n).map(|i| ScheduledSend {
                        request: i,
                        at_s: 0.0,
                        warmup: false,
                    }));
                } else {
                    let theta = 1.0 / (rate * burstiness);
                    let gamma = Gamma::new(burstiness, theta).map_err(|e| {
                        LoadgenError::Config(format!(
                            "gamma(shape={burstiness}, scale={theta}): {e}"
                        ))
                    })?;
                    let mut rng = StdRng::seed_from_u64(seed);
                    let mut t = 0.0;
                    for i in 0..n {
                        sends.push(ScheduledSend {
                            request: i,
                            at_s: t,
                            warmup: false,
                        });
                        t += gamma.sample(&mut rng);
                    }
                }
            }
            LoadShape::Constant { rate } => {
                if !(rate.is_finite() && rate > 0.0) {
                    return Err(LoadgenError::Config(format!(
                        "constant rate must be a finite number > 0 req/s, got {rate}"
                    )));
                }
                sends.extend((0..n).map(|i| ScheduledSend {
                    request: i,
                    at_s: i as f64 / rate,
                    warmup: false,
                }));
            }
        }
        Ok(Schedule {
            sends,
            max_concurrency: None,
        })
    }

    /// Marks the first `n` sends as warm-up (sent, not measured).
    pub fn with_warmup(mut self, n: usize) -> Schedule {
        for (i, s) in self.sends.iter_mut().enumerate() {
            s.warmup = i < n;
        }
        self
    }

    /// Caps requests in flight; `None` or `Some(0)` means unlimited.
    pub fn with_max_concurrency(mut self, max: Option<usize>) -> Schedule {
        self.max_concurrency = max.filter(|&m| m > 0);
        self
    }

    /// The gaps between consecutive sends, in seconds (n − 1 of them).
    pub fn inter_arrivals(&self) -> Vec<f64> {
        self.sends
            .windows(2)
            .map(|w| w[1].at_s - w[0].at_s)
            .collect()
    }

    /// Offset of the last send, seconds.
    pub fn span_s(&self) -> f64 {
        self.sends.last().map_or(0.0, |s| s.at_s)
    }
}

/// One line of a replayed trace.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TraceEntry {
    /// Arrival time, seconds (relative to the trace's first arrival after loading).
    pub at_s: f64,
    pub input_len: usize,
    pub output_len: usize,
}

/// A recorded (or hand-written) arrival trace, replayed as is: both the schedule and the request
/// lengths come from it.
///
/// File formats, by content (a line starting with `{` is JSON):
///
/// * JSONL: `{"arrival_time": s, "input_len": n, "output_len": n}`; also accepted are the Mooncake
///   / AIPerf names `{"timestamp": ms, "input_length": n, "output_length": n}` (note: milliseconds,
///   as in those traces);
/// * CSV: `arrival_time,input_len,output_len` (seconds, tokens, tokens), an optional header line,
///   `#` comments.
///
/// Entries are sorted by time and shifted so the first arrival is at t = 0 (a production trace
/// starting at hour 5 replays from now).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trace {
    pub entries: Vec<TraceEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TraceJson {
    #[serde(default)]
    arrival_time: Option<f64>,
    #[serde(default)]
    timestamp: Option<f64>,
    #[serde(default, alias = "input_length")]
    input_len: Option<usize>,
    #[serde(default, alias = "output_length")]
    output_len: Option<usize>,
    /// Mooncake's prefix-cache block hashes: accepted, not used.
    #[serde(default)]
    #[allow(dead_code)]
    hash_ids: Option<serde_json::Value>,
}

const TRACE_FIX: &str = "each line must be JSON {\"arrival_time\": <seconds>, \"input_len\": <tokens>, \"output_len\": <tokens>} or CSV \"<seconds>,<input tokens>,<output tokens>\"";

impl Trace {
    /// Reads a JSONL or CSV trace (see [`Trace`]).
    pub fn load(path: &Path) -> Result<Trace, LoadgenError> {
        let text = std::fs::read_to_string(path).map_err(|source| LoadgenError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses trace text; `path` only names the source in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Trace, LoadgenError> {
        let mut entries = Vec::new();
        let mut first_data_line = true;
        for (i, raw) in text.lines().enumerate() {
            let lineno = i + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let entry = if line.starts_with('{') {
                let j: TraceJson = serde_json::from_str(line).map_err(|e| {
                    LoadgenError::parse(path, lineno, format!("bad trace line: {e}"), TRACE_FIX)
                })?;
                let at_s =
                    match (j.arrival_time, j.timestamp) {
                        (Some(s), None) => s,
                        (None, Some(ms)) => ms / 1000.0,
                        (Some(_), Some(_)) => {
                            return Err(LoadgenError::parse(
                                path,
                                lineno,
                                "both \"arrival_time\" (s) and \"timestamp\" (ms) given",
                                "keep one of them",
                            ))
                        }
                        (None, None) => return Err(LoadgenError::parse(
                            path,
                            lineno,
                            "no arrival time",
                            "add \"arrival_time\": <seconds> (or \"timestamp\": <milliseconds>)",
                        )),
                    };
                let need = |v: Option<usize>, name: &str| {
                    v.ok_or_else(|| {
                        LoadgenError::parse(path, lineno, format!("no \"{name}\""), TRACE_FIX)
                    })
                };
                TraceEntry {
                    at_s,
                    input_len: need(j.input_len, "input_len")?,
                    output_len: need(j.output_len, "output_len")?,
                }
            } else {
                let fields: Vec<&str> = line.split(',').map(str::trim).collect();
                if first_data_line && fields.first().is_some_and(|f| f.parse::<f64>().is_err()) {
                    // A header line.
                    first_data_line = false;
                    continue;
                }
                if fields.len() != 3 {
                    return Err(LoadgenError::parse(
                        path,
                        lineno,
                        format!("expected 3 comma-separated fields, found {}", fields.len()),
                        TRACE_FIX,
                    ));
                }
                let at_s: f64 = fields[0].parse().map_err(|_| {
                    LoadgenError::parse(
                        path,
                        lineno,
                        format!("arrival time {:?} is not a number", fields[0]),
                        TRACE_FIX,
                    )
                })?;
                let int = |s: &str, name: &str| {
                    s.parse::<usize>().map_err(|_| {
                        LoadgenError::parse(
                            path,
                            lineno,
                            format!("{name} {s:?} is not a non-negative integer"),
                            TRACE_FIX,
                        )
                    })
                };
                TraceEntry {
                    at_s,
                    input_len: int(fields[1], "input length")?,
                    output_len: int(fields[2], "output length")?,
                }
            };
            first_data_line = false;
            if !(entry.at_s.is_finite() && entry.at_s >= 0.0) {
                return Err(LoadgenError::parse(
                    path,
                    lineno,
                    format!("arrival time {} is not a finite number ≥ 0", entry.at_s),
                    TRACE_FIX,
                ));
            }
            if entry.input_len == 0 || entry.output_len == 0 {
                return Err(LoadgenError::parse(
                    path,
                    lineno,
                    "input and output lengths must be ≥ 1",
                    TRACE_FIX,
                ));
            }
            entries.push(entry);
        }
        if entries.is_empty() {
            return Err(LoadgenError::parse(
                path,
                0,
                "the trace has no entries",
                TRACE_FIX,
            ));
        }
        entries.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
        let t0 = entries[0].at_s;
        for e in &mut entries {
            e.at_s -= t0;
        }
        Ok(Trace { entries })
    }

    /// Synthetic prompts of the trace's input lengths (seeded), one request per entry, in order:
    /// text (measured with `tokenizer` when given), or, with `token_id_vocab` (a server whose
    /// model has no tokenizer, e.g. synthetic weights), token ids drawn below it.
    pub fn requests(&self, seed: u64, tokenizer: Option<&dyn Tokenize>, token_id_vocab: Option<u32>) -> Vec<Request> {
        let mut rng = StdRng::seed_from_u64(seed);
        self.entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let (prompt, n) = match token_id_vocab {
                    Some(v) => (Prompt::TokenIds((0..e.input_len).map(|_| rng.random_range(0..v.max(1))).collect()), e.input_len),
                    None => {
                        let (text, n) = synthetic_prompt(e.input_len, &mut rng, tokenizer);
                        (Prompt::Text(text), n)
                    }
                };
                Request {
                    id: format!("trace-{i}"),
                    prompt,
                    input_len: n,
                    output_len: e.output_len,
                }
            })
            .collect()
    }

    /// The trace's arrival times as a schedule for [`Trace::requests`].
    pub fn schedule(&self) -> Schedule {
        Schedule {
            sends: self
                .entries
                .iter()
                .enumerate()
                .map(|(i, e)| ScheduledSend {
                    request: i,
                    at_s: e.at_s,
                    warmup: false,
                })
                .collect(),
            max_concurrency: None,
        }
    }
}
