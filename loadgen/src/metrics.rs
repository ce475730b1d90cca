//! Metrics: vLLM's serving metrics, under vLLM's names and definitions
//! (`vllm/benchmarks/serve.py`, `calculate_metrics`), computed from [`RequestRecord`]s.
//!
//! Per request (all times milliseconds, one monotonic clock, measured by the client):
//!
//! * `ttft_ms` (time to first token): from handing the request to the connection pool
//!   (`sent_s`) to the arrival of the first event carrying generated text. Includes network,
//!   queueing in the server, prefill and the first decode step.
//! * `itl_ms` (inter-token latency): every gap between consecutive text-carrying events. A server
//!   that sends several tokens per event produces one (longer) gap for them, as in vLLM.
//! * `e2el_ms` (end-to-end latency): from `sent_s` to the *last text-carrying event* (vLLM's
//!   `latency`; the trailing usage event and `[DONE]` are not waited for).
//! * `tpot_ms` (time per output token, excluding the first): `(e2el − ttft) / (output_tokens − 1)`,
//!   only for requests with more than one output token.
//!
//! `output_tokens` is the server's `usage.completion_tokens`; without usage, the
//! [`Tokenize`] hook's count of the generated text; without either, the number of text-carrying
//! events (one per token for vLLM/SGLang streaming). With both usage and a hook, both are kept and a
//! difference is flagged (`token_count_mismatch`): it means the server counts differently than the
//! benchmark assumes (a different tokenizer, or special tokens), so output lengths are not what
//! the dataset asked for.
//!
//! Aggregates over the *measured* requests (warm-up excluded); distributions get mean, median,
//! p90, p99, population standard deviation, min and max ([`Stats`], numpy's linear-interpolation
//! percentiles as vLLM uses). Only completed requests enter latency statistics and throughputs.
//!
//! * `duration_s`: from the first measured request's send to the last measured request's end.
//! * `request_throughput` = completed / duration (req/s); `output_throughput` = completed requests'
//!   output tokens / duration; `total_token_throughput` = (input + output tokens) / duration
//!   (tok/s). Input tokens are the server's `usage.prompt_tokens`, else the dataset's `input_len`.
//! * goodput (vLLM's `--goodput`, from DistServe): a completed request is *good* if it meets every
//!   given SLO (ttft ≤ SLO, tpot ≤ SLO, e2el ≤ SLO; a request without a tpot, i.e. one output token,
//!   meets the tpot SLO as in vLLM); `request_goodput` = good requests / duration.
//! * `arrival_error_ms`: the generator's lateness, (sent − scheduled) − queue wait (see
//!   [`crate::runner`]); `queue_wait_ms`: time spent waiting for a concurrency slot. Over all
//!   measured requests sent, failed ones included (the send happened either way).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::client::{ErrorKind, RequestRecord};
use crate::dataset::Tokenize;
use crate::error::LoadgenError;
use crate::runner::RunOutput;

/// Summary of a distribution (units of the values: milliseconds for all latency fields).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub count: usize,
    pub mean: f64,
    pub median: f64,
    pub p90: f64,
    pub p99: f64,
    /// Population standard deviation (numpy's default `ddof=0`, as vLLM reports).
    pub std: f64,
    pub min: f64,
    pub max: f64,
}

impl Stats {
    /// `None` for no values (reported as `null`, never as a fake 0).
    pub fn from_values(values: &[f64]) -> Option<Stats> {
        if values.is_empty() {
            return None;
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
        Some(Stats {
            count: v.len(),
            mean,
            median: percentile_sorted(&v, 50.0),
            p90: percentile_sorted(&v, 90.0),
            p99: percentile_sorted(&v, 99.0),
            std: var.sqrt(),
            min: v[0],
            max: v[v.len() - 1],
        })
    }
}

/// numpy's default (linear) percentile of sorted values; `p` in [0, 100].
pub fn percentile_sorted(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p / 100.0).clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64)
}

/// Service-level objectives for goodput, milliseconds; absent ones are not checked.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct GoodputSlos {
    pub ttft_ms: Option<f64>,
    pub tpot_ms: Option<f64>,
    pub e2el_ms: Option<f64>,
}

impl GoodputSlos {
    /// Whether a completed request meets every given SLO.
    pub fn met_by(&self, m: &RequestMetrics) -> bool {
        let ok = |slo: Option<f64>, v: Option<f64>, absent_ok: bool| match (slo, v) {
            (None, _) => true,
            (Some(s), Some(v)) => v <= s,
            (Some(_), None) => absent_ok,
        };
        m.success
            && ok(self.ttft_ms, m.ttft_ms, false)
            && ok(self.tpot_ms, m.tpot_ms, true)
            && ok(self.e2el_ms, m.e2el_ms, false)
    }
}

/// Parses vLLM's `--goodput` syntax: `KEY:VALUE` pairs separated by spaces or commas, keys
/// `ttft`, `tpot`, `e2el`, values in milliseconds, non-negative. E.g. `"ttft:200 tpot:50"`.
pub fn parse_goodput(spec: &str) -> Result<GoodputSlos, LoadgenError> {
    let err = |m: String| LoadgenError::Goodput {
        spec: spec.to_owned(),
        message: m,
    };
    let mut slos = GoodputSlos::default();
    let mut any = false;
    for item in spec
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|s| !s.is_empty())
    {
        let (key, value) = item
            .split_once(':')
            .ok_or_else(|| err(format!("{item:?} is not KEY:VALUE")))?;
        let v: f64 = value
            .trim()
            .parse()
            .map_err(|_| err(format!("{value:?} (for {key}) is not a number")))?;
        if !(v.is_finite() && v >= 0.0) {
            return Err(err(format!(
                "{key}: {v} must be a non-negative number of milliseconds"
            )));
        }
        let slot = match key.trim() {
            "ttft" => &mut slos.ttft_ms,
            "tpot" => &mut slos.tpot_ms,
            "e2el" => &mut slos.e2el_ms,
            other => return Err(err(format!("unknown metric {other:?}"))),
        };
        if slot.is_some() {
            return Err(err(format!("{key} given twice")));
        }
        *slot = Some(v);
        any = true;
    }
    if !any {
        return Err(err("no SLO given".into()));
    }
    Ok(slos)
}

/// Where a request's output token count came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenCountSource {
    /// `usage.completion_tokens` from the server.
    ServerUsage,
    /// The [`Tokenize`] hook on the generated text.
    Tokenizer,
    /// The number of text-carrying stream events.
    StreamEvents,
}

/// Metrics of one request (milliseconds; `None` where undefined, e.g. for a failed request).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestMetrics {
    pub index: usize,
    pub id: String,
    pub warmup: bool,
    pub success: bool,
    pub ttft_ms: Option<f64>,
    pub tpot_ms: Option<f64>,
    pub itl_ms: Vec<f64>,
    pub e2el_ms: Option<f64>,
    /// Input tokens: server's `usage.prompt_tokens`, else the dataset's count.
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub output_tokens_source: TokenCountSource,
    /// The server's `usage.completion_tokens`.
    pub server_output_tokens: Option<u64>,
    /// The [`Tokenize`] hook's count of the generated text, when a hook was given.
    pub tokenizer_output_tokens: Option<u64>,
    /// Both counts present and different.
    pub token_count_mismatch: bool,
    /// (sent − scheduled) − queue wait, ms.
    pub arrival_error_ms: f64,
    /// Time waiting for a concurrency slot, ms.
    pub queue_wait_ms: f64,
    pub error_kind: Option<ErrorKind>,
    pub error: Option<String>,
}

impl RequestMetrics {
    /// Metrics of `r`; `tokenizer` counts the generated text when given.
    pub fn of(r: &RequestRecord, tokenizer: Option<&dyn Tokenize>) -> RequestMetrics {
        let success = r.success();
        let ms = |s: f64| s * 1000.0;
        let tokenizer_output_tokens = tokenizer.map(|t| t.count_tokens(&r.output_text) as u64);
        let (output_tokens, output_tokens_source) =
            match (r.completion_tokens, tokenizer_output_tokens) {
                (Some(c), _) => (c, TokenCountSource::ServerUsage),
                (None, Some(t)) => (t, TokenCountSource::Tokenizer),
                (None, None) => (r.chunk_times_s.len() as u64, TokenCountSource::StreamEvents),
            };
        let token_count_mismatch = matches!(
            (r.completion_tokens, tokenizer_output_tokens),
            (Some(a), Some(b)) if a != b
        );
        let (ttft_ms, e2el_ms, itl_ms, tpot_ms) = if success {
            let first = r.chunk_times_s[0];
            let last = *r.chunk_times_s.last().expect("success has chunks");
            let ttft = ms(first - r.sent_s);
            let e2el = ms(last - r.sent_s);
            let itl: Vec<f64> = r
                .chunk_times_s
                .windows(2)
                .map(|w| ms(w[1] - w[0]))
                .collect();
            let tpot = (output_tokens > 1).then(|| (e2el - ttft) / (output_tokens - 1) as f64);
            (Some(ttft), Some(e2el), itl, tpot)
        } else {
            (None, None, Vec::new(), None)
        };
        let queue_wait = r.slot_s - r.dispatched_s;
        RequestMetrics {
            index: r.index,
            id: r.id.clone(),
            warmup: r.warmup,
            success,
            ttft_ms,
            tpot_ms,
            itl_ms,
            e2el_ms,
            input_tokens: r.prompt_tokens.unwrap_or(r.input_len as u64),
            output_tokens,
            output_tokens_source,
            server_output_tokens: r.completion_tokens,
            tokenizer_output_tokens,
            token_count_mismatch,
            arrival_error_ms: ms((r.sent_s - r.scheduled_s) - queue_wait),
            queue_wait_ms: ms(queue_wait),
            error_kind: r.error_kind,
            error: r.error.clone(),
        }
    }
}

/// How to compute metrics.
#[derive(Clone, Copy, Default)]
pub struct MetricsOptions<'a> {
    /// SLOs for goodput (`None`: no goodput reported).
    pub goodput: Option<GoodputSlos>,
    /// Checks the server's output token counts (see [`RequestMetrics::token_count_mismatch`]).
    pub tokenizer: Option<&'a dyn Tokenize>,
    /// Keep every request's metrics in [`BenchmarkMetrics::per_request`] (large for long runs).
    pub include_per_request: bool,
}

/// One failed request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestFailure {
    pub index: usize,
    pub id: String,
    pub kind: Option<ErrorKind>,
    pub message: String,
}

/// The result of a serving benchmark (warm-up excluded throughout).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchmarkMetrics {
    /// Measured requests that completed.
    pub completed: usize,
    /// Measured requests that were sent and failed.
    pub failed: usize,
    /// Warm-up requests sent (not counted anywhere else).
    pub warmup_requests: usize,
    /// Requests never sent (run cancelled or timed out).
    pub not_sent: usize,
    /// Every failure, in schedule order.
    pub failures: Vec<RequestFailure>,
    /// Failures per kind.
    pub failure_counts: BTreeMap<String, usize>,
    /// First measured send to last measured end, seconds.
    pub duration_s: f64,
    pub total_input_tokens: u64,
    pub total_output_tokens: u64,
    /// req/s.
    pub request_throughput: f64,
    /// Output tok/s.
    pub output_throughput: f64,
    /// (Input + output) tok/s.
    pub total_token_throughput: f64,
    pub ttft_ms: Option<Stats>,
    pub tpot_ms: Option<Stats>,
    pub itl_ms: Option<Stats>,
    pub e2el_ms: Option<Stats>,
    /// The configured cap (`None`: unlimited).
    pub max_concurrency: Option<usize>,
    /// Most requests in flight at once, over the whole run (warm-up included: it shares the
    /// server).
    pub peak_concurrency: usize,
    pub goodput_slos: Option<GoodputSlos>,
    /// Completed requests meeting every SLO.
    pub good_requests: Option<usize>,
    /// good requests / duration, req/s.
    pub request_goodput: Option<f64>,
    /// Generator lateness per request, ms.
    pub arrival_error_ms: Option<Stats>,
    /// Wait for a concurrency slot per request, ms.
    pub queue_wait_ms: Option<Stats>,
    /// Completed requests whose server and tokenizer output counts differ.
    pub token_count_mismatches: usize,
    /// What makes these numbers less than they seem, in words with the fix (see
    /// [`steady_state_warning`]). Empty when nothing was noticed.
    #[serde(default)]
    pub warnings: Vec<String>,
    pub per_request: Vec<RequestMetrics>,
}

/// How many median request lifetimes the arrivals must span before a run counts as a sustained
/// load: under it, most requests meet a server that is still filling up or already draining.
pub const STEADY_STATE_LIFETIMES: f64 = 3.0;

/// A warning when the measured requests' scheduled arrivals span less than
/// [`STEADY_STATE_LIFETIMES`] median end-to-end latencies. Such a run measures the ramp up to the
/// load and the drain after it more than the load itself: at a rate the server cannot sustain,
/// its latencies come out far lower (the queue never builds) and its "saturation" rate far higher
/// than a long run's. Seen on an H100: 64 requests at 64 req/s met TTFT p99 ≤ 200 ms and TPOT p99
/// ≤ 20 ms, while 400 at the same rate gave TTFT p99 4.9 s and TPOT p50 54 ms. None for
/// arrivals at one instant (`inf`, a burst by design, or a concurrency-capped run).
pub fn steady_state_warning(scheduled_s: &[f64], median_e2el_s: Option<f64>) -> Option<String> {
    let first = scheduled_s.iter().copied().fold(f64::INFINITY, f64::min);
    let last = scheduled_s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let span = last - first;
    let e2el = median_e2el_s?;
    if scheduled_s.len() < 2 || !(span > 0.0) || !(e2el > 0.0) || span >= STEADY_STATE_LIFETIMES * e2el {
        return None;
    }
    let rate = (scheduled_s.len() - 1) as f64 / span;
    let needed = (STEADY_STATE_LIFETIMES * e2el * rate).ceil() as usize + 1;
    Some(format!(
        "not a sustained load: the {} measured requests arrived over {span:.2} s, less than {STEADY_STATE_LIFETIMES}× their median end-to-end latency ({e2el:.2} s), so most of them met a server filling up or draining rather than one under this rate; latencies read low and the sustainable rate high. Give at least {needed} requests at this rate (--num-prompts)",
        scheduled_s.len()
    ))
}

/// Aggregates a run's records (see the module documentation for every definition).
pub fn compute_metrics(run: &RunOutput, options: &MetricsOptions<'_>) -> BenchmarkMetrics {
    let all: Vec<RequestMetrics> = run
        .records
        .iter()
        .map(|r| RequestMetrics::of(r, options.tokenizer))
        .collect();
    let measured_records: Vec<&RequestRecord> = run.records.iter().filter(|r| !r.warmup).collect();
    let measured: Vec<&RequestMetrics> = all.iter().filter(|m| !m.warmup).collect();
    let done: Vec<&RequestMetrics> = measured.iter().copied().filter(|m| m.success).collect();

    let start = measured_records
        .iter()
        .map(|r| r.sent_s)
        .fold(f64::INFINITY, f64::min);
    let end = measured_records
        .iter()
        .map(|r| r.end_s)
        .fold(f64::NEG_INFINITY, f64::max);
    let duration_s = if measured_records.is_empty() {
        0.0
    } else {
        (end - start).max(0.0)
    };
    let per_s = |x: f64| {
        if duration_s > 0.0 {
            x / duration_s
        } else {
            0.0
        }
    };

    let total_input_tokens: u64 = done.iter().map(|m| m.input_tokens).sum();
    let total_output_tokens: u64 = done.iter().map(|m| m.output_tokens).sum();
    let collect = |f: &dyn Fn(&RequestMetrics) -> Option<f64>| -> Vec<f64> {
        done.iter().filter_map(|m| f(m)).collect()
    };
    let itl: Vec<f64> = done.iter().flat_map(|m| m.itl_ms.iter().copied()).collect();

    let failures: Vec<RequestFailure> = measured
        .iter()
        .filter(|m| !m.success)
        .map(|m| RequestFailure {
            index: m.index,
            id: m.id.clone(),
            kind: m.error_kind,
            message: m.error.clone().unwrap_or_else(|| "unknown failure".into()),
        })
        .collect();
    let mut failure_counts = BTreeMap::new();
    for f in &failures {
        let key = f
            .kind
            .and_then(|k| serde_json::to_value(k).ok())
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| "unknown".into());
        *failure_counts.entry(key).or_insert(0) += 1;
    }

    // Computed once: reported, and the steady-state check reads its median.
    let e2el_ms = Stats::from_values(&collect(&|m| m.e2el_ms));

    let good_requests = options
        .goodput
        .map(|slos| done.iter().filter(|m| slos.met_by(m)).count());

    BenchmarkMetrics {
        completed: done.len(),
        failed: failures.len(),
        warmup_requests: all.len() - measured.len(),
        not_sent: run.not_sent,
        failure_counts,
        failures,
        duration_s,
        total_input_tokens,
        total_output_tokens,
        request_throughput: per_s(done.len() as f64),
        output_throughput: per_s(total_output_tokens as f64),
        total_token_throughput: per_s((total_input_tokens + total_output_tokens) as f64),
        ttft_ms: Stats::from_values(&collect(&|m| m.ttft_ms)),
        tpot_ms: Stats::from_values(&collect(&|m| m.tpot_ms)),
        itl_ms: Stats::from_values(&itl),
        e2el_ms,
        max_concurrency: run.max_concurrency,
        peak_concurrency: run.peak_concurrency,
        goodput_slos: options.goodput,
        good_requests,
        request_goodput: good_requests.map(|g| per_s(g as f64)),
        arrival_error_ms: Stats::from_values(
            &measured
                .iter()
                .map(|m| m.arrival_error_ms)
                .collect::<Vec<_>>(),
        ),
        queue_wait_ms: Stats::from_values(
            &measured.iter().map(|m| m.queue_wait_ms).collect::<Vec<_>>(),
        ),
        token_count_mismatches: done.iter().filter(|m| m.token_count_mismatch).count(),
        warnings: steady_state_warning(
            &measured_records.iter().map(|r| r.scheduled_s).collect::<Vec<_>>(),
            e2el_ms.map(|s| s.median / 1e3),
        )
        .into_iter()
        .collect(),
        per_request: if options.include_per_request {
            all
        } else {
            Vec::new()
        },
    }
}
