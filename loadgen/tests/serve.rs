//! The load generator against real HTTP servers on 127.0.0.1 (the fake in `common/`): the client's
//! timing, failure accounting, token counts, concurrency cap, warm-up exclusion, cancellation and
//! the generator's own arrival-time error.
//!
//! Timing assertions are only lower bounds and orderings that follow from the server's configured
//! sleeps (a sleep never ends early, and a byte cannot be read before it is written), never exact
//! values: this machine is shared and slow.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{start, FakeConfig};
use tokbench_loadgen::*;

fn requests(prompts: &[&str], output_len: usize) -> Vec<Request> {
    prompts
        .iter()
        .enumerate()
        .map(|(i, p)| Request {
            id: format!("r{i}"),
            prompt: Prompt::Text((*p).to_owned()),
            input_len: p.split_whitespace().count(),
            output_len,
        })
        .collect()
}

fn client(url: &str) -> Client {
    Client::new(ClientConfig::new(url, "fake-model")).unwrap()
}

fn all_at_once(n: usize) -> Schedule {
    Schedule::from_shape(
        n,
        &LoadShape::Poisson {
            rate: f64::INFINITY,
            burstiness: 1.0,
        },
        0,
    )
    .unwrap()
}

/// (a) TTFT, ITL and E2EL reflect the server's sleeps: TTFT ≥ the first-token delay, E2EL ≥ first
/// delay + (n − 1) per-token delays, one ITL per gap, events in order, and a slower server gives
/// longer latencies than a fast one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latencies_reflect_server_delays() {
    let first = Duration::from_millis(60);
    let per = Duration::from_millis(15);
    let n = 6usize;
    let slow = start(FakeConfig {
        first_token_delay: first,
        per_token_delay: per,
        ..Default::default()
    })
    .await;
    let fast = start(FakeConfig::default()).await;
    let reqs = requests(
        &[
            "one two three four",
            "five six seven eight",
            "nine ten eleven twelve",
        ],
        n,
    );

    let out = run(
        &client(&slow.url),
        &reqs,
        &all_at_once(3),
        &RunOptions::default(),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let m = compute_metrics(
        &out,
        &MetricsOptions {
            include_per_request: true,
            ..Default::default()
        },
    );
    assert_eq!(m.completed, 3, "{:?}", m.failures);
    let first_ms = first.as_secs_f64() * 1e3;
    let per_ms = per.as_secs_f64() * 1e3;
    for r in &m.per_request {
        let ttft = r.ttft_ms.unwrap();
        let e2el = r.e2el_ms.unwrap();
        assert!(
            ttft >= first_ms,
            "ttft {ttft} < first-token delay {first_ms}"
        );
        assert!(
            e2el >= first_ms + (n - 1) as f64 * per_ms,
            "e2el {e2el} < {first_ms} + {} × {per_ms}",
            n - 1
        );
        assert!(e2el >= ttft);
        assert_eq!(r.itl_ms.len(), n - 1, "one gap per pair of token events");
        assert!(r.itl_ms.iter().all(|&g| g >= 0.0));
        // Sum of gaps = last − first token, so E2EL = TTFT + ΣITL exactly.
        let sum: f64 = r.itl_ms.iter().sum();
        assert!((ttft + sum - e2el).abs() < 1e-6);
        assert_eq!(r.output_tokens, n as u64);
        assert!((r.tpot_ms.unwrap() - (e2el - ttft) / (n - 1) as f64).abs() < 1e-9);
    }
    for rec in &out.records {
        assert!(rec.chunk_times_s.windows(2).all(|w| w[0] <= w[1]));
        assert!(
            rec.sent_s <= rec.chunk_times_s[0] && *rec.chunk_times_s.last().unwrap() <= rec.end_s
        );
        assert!(rec.saw_done);
    }
    // The per-token sleeps are visible in the gaps: the server waits `per` between writes and
    // TCP_NODELAY is on, so the mean gap cannot be far below it unless the client stalls.
    let itl = m.itl_ms.unwrap();
    assert!(
        itl.mean >= 0.5 * per_ms,
        "mean ITL {} vs per-token delay {per_ms}",
        itl.mean
    );

    let out_fast = run(
        &client(&fast.url),
        &reqs,
        &all_at_once(3),
        &RunOptions::default(),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let mf = compute_metrics(&out_fast, &MetricsOptions::default());
    assert_eq!(mf.completed, 3);
    assert!(
        mf.e2el_ms.unwrap().max < m.e2el_ms.unwrap().min,
        "fast server slower than slow one"
    );
    println!(
        "slow server: ttft mean {:.1} ms, itl mean {:.1} ms, e2el mean {:.1} ms; fast server e2el mean {:.2} ms",
        m.ttft_ms.unwrap().mean,
        itl.mean,
        m.e2el_ms.unwrap().mean,
        mf.e2el_ms.unwrap().mean
    );
}

/// (b) completed/failed counts and each request's error match what the server did: 500s,
/// a connection dropped mid-stream, a malformed event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_counted_and_attributed() {
    let srv = start(FakeConfig {
        per_token_delay: Duration::from_millis(2),
        ..Default::default()
    })
    .await;
    let prompts = [
        "hello world",
        "FAIL500 please",
        "a b c",
        "DROP me",
        "x y",
        "BADJSON here",
        "p q r",
        "FAIL500 again",
        "last one",
        "more words here",
    ];
    let reqs = requests(&prompts, 5);
    let out = run(
        &client(&srv.url),
        &reqs,
        &all_at_once(reqs.len()),
        &RunOptions::default(),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let m = compute_metrics(&out, &MetricsOptions::default());
    let c = srv.counters();
    assert_eq!(c.requests.load(Ordering::SeqCst), 10);
    assert_eq!(m.completed, c.completed_streams.load(Ordering::SeqCst));
    assert_eq!(m.completed, 6);
    assert_eq!(m.failed, 4);
    assert_eq!(
        m.failure_counts.get("http_status"),
        Some(&c.status_500.load(Ordering::SeqCst))
    );
    assert_eq!(
        m.failure_counts.get("connection_dropped"),
        Some(&c.dropped.load(Ordering::SeqCst))
    );
    assert_eq!(
        m.failure_counts.get("malformed_stream"),
        Some(&c.bad_json.load(Ordering::SeqCst))
    );
    for (rec, prompt) in out.records.iter().zip(prompts) {
        let expect = if prompt.contains("FAIL500") {
            Some(ErrorKind::HttpStatus)
        } else if prompt.contains("DROP") {
            Some(ErrorKind::ConnectionDropped)
        } else if prompt.contains("BADJSON") {
            Some(ErrorKind::MalformedStream)
        } else {
            None
        };
        assert_eq!(rec.error_kind, expect, "{prompt}: {:?}", rec.error);
        if prompt.contains("FAIL500") {
            assert_eq!(rec.http_status, Some(500));
            assert!(
                rec.error.as_ref().unwrap().contains("injected failure"),
                "{:?}",
                rec.error
            );
        }
        if prompt.contains("DROP") {
            assert_eq!(
                rec.chunk_times_s.len(),
                2,
                "two tokens arrived before the drop"
            );
        }
    }
    println!("failures: {:#?}", m.failures);
}

/// (c) token counts from usage equal the server's own counters; a tokenizer hook that agrees
/// flags nothing, one that disagrees flags every completed request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_token_counts_match_server_counters() {
    let srv = start(FakeConfig::default()).await;
    let mut reqs = requests(
        &[
            "alpha beta gamma",
            "delta epsilon",
            "DROP zeta",
            "eta theta iota kappa",
        ],
        1,
    );
    for (i, r) in reqs.iter_mut().enumerate() {
        r.output_len = 3 + 4 * i;
    }
    let out = run(
        &client(&srv.url),
        &reqs,
        &all_at_once(reqs.len()),
        &RunOptions::default(),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let words = |s: &str| s.split_whitespace().count();
    let m = compute_metrics(
        &out,
        &MetricsOptions {
            tokenizer: Some(&words),
            ..Default::default()
        },
    );
    let c = srv.counters();
    assert_eq!(m.completed, 3);
    assert_eq!(
        m.total_output_tokens,
        c.completion_tokens_completed.load(Ordering::SeqCst)
    );
    assert_eq!(
        m.total_input_tokens,
        c.prompt_tokens_completed.load(Ordering::SeqCst)
    );
    let usage_sum: u64 = out
        .records
        .iter()
        .filter(|r| r.success())
        .map(|r| r.completion_tokens.unwrap())
        .sum();
    assert_eq!(
        usage_sum,
        c.completion_tokens_completed.load(Ordering::SeqCst)
    );
    // Every token the server wrote before the drop was received, too.
    let received: usize = out.records.iter().map(|r| r.chunk_times_s.len()).sum();
    assert_eq!(received as u64, c.tokens_sent.load(Ordering::SeqCst));
    for r in out.records.iter().filter(|r| r.success()) {
        assert_eq!(
            r.completion_tokens,
            Some(r.output_len as u64),
            "ignore_eos: exactly max_tokens"
        );
    }
    assert_eq!(m.token_count_mismatches, 0);

    let off_by_one = |s: &str| s.split_whitespace().count() + 1;
    let m2 = compute_metrics(
        &out,
        &MetricsOptions {
            tokenizer: Some(&off_by_one),
            include_per_request: true,
            ..Default::default()
        },
    );
    assert_eq!(m2.token_count_mismatches, 3);
    let r0 = &m2.per_request[0];
    assert_eq!(r0.output_tokens_source, TokenCountSource::ServerUsage);
    assert_eq!(r0.server_output_tokens, Some(3));
    assert_eq!(r0.tokenizer_output_tokens, Some(4));
    assert!(r0.token_count_mismatch);
}

/// The request body is what vLLM's benchmark sends (stream, include_usage, max_tokens,
/// ignore_eos, temperature 0), chat uses messages/max_completion_tokens, and a bearer token is
/// sent when configured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_body_chat_and_bearer() {
    let srv = start(FakeConfig {
        require_bearer: Some("sekret".into()),
        ..Default::default()
    })
    .await;
    let reqs = requests(&["tell me a story"], 4);
    let clock = Instant::now();
    let cancel = CancellationToken::new();

    let rec = client(&srv.url).execute(0, &reqs[0], clock, &cancel).await;
    assert_eq!(rec.error_kind, Some(ErrorKind::HttpStatus));
    assert_eq!(rec.http_status, Some(401));

    let mut cfg = ClientConfig::new(format!("{}/v1/", srv.url), "fake-model");
    cfg.api_key = Some("sekret".into());
    cfg.min_tokens_equal_max = true;
    cfg.extra_body.insert("seed".into(), 7.into());
    let rec = Client::new(cfg.clone())
        .unwrap()
        .execute(0, &reqs[0], clock, &cancel)
        .await;
    assert!(rec.success(), "{:?}", rec.error);
    let body = srv.shared.last_body.lock().unwrap().clone().unwrap();
    assert_eq!(body["model"], "fake-model");
    assert_eq!(body["prompt"], "tell me a story");
    assert_eq!(body["max_tokens"], 4);
    assert_eq!(body["min_tokens"], 4);
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"]["include_usage"], true);
    assert_eq!(body["ignore_eos"], true);
    assert_eq!(body["temperature"], 0.0);
    assert_eq!(body["seed"], 7);

    cfg.api = ApiKind::ChatCompletions;
    let rec = Client::new(cfg)
        .unwrap()
        .execute(0, &reqs[0], clock, &cancel)
        .await;
    assert!(rec.success(), "{:?}", rec.error);
    assert_eq!(rec.output_text, " tok tok tok tok");
    assert_eq!(rec.completion_tokens, Some(4));
    let body = srv.shared.last_body.lock().unwrap().clone().unwrap();
    assert_eq!(body["messages"][0]["content"], "tell me a story");
    assert_eq!(body["max_completion_tokens"], 4);
}

/// Timeouts and refused connections are failures of their own kind, not panics or hangs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_and_connection_refused() {
    let srv = start(FakeConfig {
        first_token_delay: Duration::from_secs(5),
        ..Default::default()
    })
    .await;
    let reqs = requests(&["slow one"], 2);
    let mut cfg = ClientConfig::new(&srv.url, "m");
    cfg.request_timeout = Duration::from_millis(200);
    let t = Instant::now();
    let rec = Client::new(cfg)
        .unwrap()
        .execute(0, &reqs[0], t, &CancellationToken::new())
        .await;
    assert_eq!(rec.error_kind, Some(ErrorKind::Timeout), "{:?}", rec.error);
    assert!(t.elapsed() < Duration::from_secs(4));

    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let rec = client(&format!("http://127.0.0.1:{port}"))
        .execute(0, &reqs[0], Instant::now(), &CancellationToken::new())
        .await;
    assert_eq!(rec.error_kind, Some(ErrorKind::Connect), "{:?}", rec.error);
}

/// (e) max concurrency is never exceeded (the server's own in-flight counter) and the reported
/// peak is the cap when the load saturates it; queued requests show a queue wait, not an
/// arrival-time error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrency_is_respected() {
    let srv = start(FakeConfig {
        per_token_delay: Duration::from_millis(10),
        ..Default::default()
    })
    .await;
    let prompts: Vec<String> = (0..20).map(|i| format!("prompt number {i}")).collect();
    let prompts: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let reqs = requests(&prompts, 8);
    let schedule = all_at_once(reqs.len()).with_max_concurrency(Some(3));
    let out = run(
        &client(&srv.url),
        &reqs,
        &schedule,
        &RunOptions::default(),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let m = compute_metrics(&out, &MetricsOptions::default());
    assert_eq!(m.completed, 20);
    let server_max = srv.counters().max_in_flight.load(Ordering::SeqCst);
    assert!(
        server_max <= 3,
        "server saw {server_max} requests in flight with a cap of 3"
    );
    assert_eq!(m.max_concurrency, Some(3));
    assert_eq!(m.peak_concurrency, 3);
    assert!(m.queue_wait_ms.unwrap().max > 0.0);
    println!(
        "server max in flight {server_max}, client peak {}",
        m.peak_concurrency
    );

    // Without a cap all 20 go at once.
    let srv2 = start(FakeConfig {
        per_token_delay: Duration::from_millis(20),
        ..Default::default()
    })
    .await;
    let out = run(
        &client(&srv2.url),
        &reqs,
        &all_at_once(20),
        &RunOptions::default(),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert!(out.peak_concurrency > 3, "peak {}", out.peak_concurrency);
    assert_eq!(out.max_concurrency, None);
}

/// (f) warm-up requests are sent but excluded: here they all fail, and the metrics show no
/// failure; the measured duration starts at the first measured send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warmup_requests_are_excluded() {
    let srv = start(FakeConfig::default()).await;
    let reqs = requests(
        &[
            "FAIL500 w1",
            "FAIL500 w2",
            "FAIL500 w3",
            "m one",
            "m two",
            "m three",
            "m four",
        ],
        3,
    );
    let schedule = Schedule::from_shape(reqs.len(), &LoadShape::Constant { rate: 50.0 }, 0)
        .unwrap()
        .with_warmup(3);
    let out = run(
        &client(&srv.url),
        &reqs,
        &schedule,
        &RunOptions::default(),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(
        srv.counters().requests.load(Ordering::SeqCst),
        7,
        "warm-ups are sent"
    );
    assert_eq!(out.records.iter().filter(|r| r.warmup).count(), 3);
    let m = compute_metrics(&out, &MetricsOptions::default());
    assert_eq!(m.warmup_requests, 3);
    assert_eq!(m.completed, 4);
    assert_eq!(m.failed, 0);
    assert!(m.failures.is_empty());
    let measured = &out.records[3..];
    let start_s = measured
        .iter()
        .map(|r| r.sent_s)
        .fold(f64::INFINITY, f64::min);
    let end_s = measured.iter().map(|r| r.end_s).fold(0.0, f64::max);
    assert!((m.duration_s - (end_s - start_s)).abs() < 1e-9);
    assert!(out.records[0].sent_s < start_s);
    assert_eq!(m.arrival_error_ms.unwrap().count, 4);
}

/// Cancellation (here: the run timeout) stops dispatching and aborts requests in flight; every
/// scheduled request is either recorded (cancelled) or counted as not sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_timeout_cancels() {
    let srv = start(FakeConfig {
        per_token_delay: Duration::from_millis(100),
        ..Default::default()
    })
    .await;
    let prompts: Vec<String> = (0..20).map(|i| format!("p {i}")).collect();
    let prompts: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let reqs = requests(&prompts, 10);
    let schedule = Schedule::from_shape(20, &LoadShape::Constant { rate: 10.0 }, 0).unwrap();
    let t = Instant::now();
    let out = run(
        &client(&srv.url),
        &reqs,
        &schedule,
        &RunOptions {
            timeout: Some(Duration::from_millis(350)),
            ..Default::default()
        },
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "run took {:?}",
        t.elapsed()
    );
    assert!(out.cancelled);
    assert_eq!(out.records.len() + out.not_sent, 20);
    assert!(out.not_sent > 0);
    assert!(!out.records.is_empty());
    for r in &out.records {
        assert_eq!(r.error_kind, Some(ErrorKind::Cancelled), "{:?}", r.error);
    }
    let m = compute_metrics(&out, &MetricsOptions::default());
    assert_eq!(m.not_sent, out.not_sent);
    assert_eq!(m.failure_counts.get("cancelled"), Some(&out.records.len()));
}

/// (i) the generator measured against itself: a null endpoint (the whole response at once) at
/// 200 req/s Poisson for 2 s. Prints the arrival-time error; asserts only that it was measured
/// for every request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arrival_time_error_against_null_endpoint() {
    let srv = start(FakeConfig {
        null: true,
        ..Default::default()
    })
    .await;
    let rate = 200.0;
    let n = 400;
    let reqs = synthetic_requests(
        &SyntheticConfig {
            num_requests: n,
            input: LengthDist::Fixed { n: 32 },
            output: LengthDist::Fixed { n: 1 },
            seed: 1,
            token_id_vocab: None,
        },
        None,
    )
    .unwrap();
    let schedule = Schedule::from_shape(
        n,
        &LoadShape::Poisson {
            rate,
            burstiness: 1.0,
        },
        1,
    )
    .unwrap();
    let out = run(
        &client(&srv.url),
        &reqs,
        &schedule,
        &RunOptions::default(),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let m = compute_metrics(
        &out,
        &MetricsOptions {
            include_per_request: true,
            ..Default::default()
        },
    );
    assert_eq!(out.records.len(), n);
    assert_eq!(out.not_sent, 0);
    let err = m.arrival_error_ms.expect("measured");
    assert_eq!(err.count, n);
    assert!(m.per_request.iter().all(|r| r.arrival_error_ms.is_finite()));
    assert_eq!(srv.counters().requests.load(Ordering::SeqCst), n);
    println!(
        "null endpoint, {rate} req/s Poisson, {n} requests over {:.2} s scheduled: arrival-time error mean {:.3} ms, median {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, max {:.3} ms, min {:.3} ms; completed {}, failed {}, request throughput {:.1} req/s, e2el median {:.3} ms, peak concurrency {}",
        schedule.span_s(),
        err.mean,
        err.median,
        err.p90,
        err.p99,
        err.max,
        err.min,
        m.completed,
        m.failed,
        m.request_throughput,
        m.e2el_ms.map_or(f64::NAN, |s| s.median),
        m.peak_concurrency,
    );
}

fn at_times(times: &[f64]) -> Schedule {
    Schedule {
        sends: times
            .iter()
            .enumerate()
            .map(|(request, &at_s)| ScheduledSend {
                request,
                at_s,
                warmup: false,
            })
            .collect(),
        max_concurrency: None,
    }
}

/// A run whose arrivals span less than three median request lifetimes is flagged as not a
/// sustained load, with the request count that would make it one; a long enough run and a burst
/// at one instant are not.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn runs_too_short_for_a_sustained_load_are_flagged() {
    // Each request of the slow server lives at least 4 × 60 ms.
    let slow = start(FakeConfig {
        per_token_delay: Duration::from_millis(60),
        ..FakeConfig::default()
    })
    .await;
    let fast = start(FakeConfig::default()).await;
    let prompts = ["a b", "c d", "e f", "g h", "i j", "k l"];
    let reqs = requests(&prompts, 4);

    // Six arrivals within 50 ms: far under 3 × 240 ms.
    let short = at_times(&[0.0, 0.01, 0.02, 0.03, 0.04, 0.05]);
    let out = run(&client(&slow.url), &reqs, &short, &RunOptions::default(), CancellationToken::new())
        .await
        .unwrap();
    let m = compute_metrics(&out, &MetricsOptions::default());
    assert_eq!(m.completed, 6);
    assert_eq!(m.warnings.len(), 1, "{:?}", m.warnings);
    let w = &m.warnings[0];
    assert!(
        w.contains("not a sustained load") && w.contains("--num-prompts") && w.contains("6 measured requests"),
        "{w}"
    );
    println!("{w}");

    // The same server, all at once: a burst by design, not flagged.
    let out = run(&client(&slow.url), &reqs, &all_at_once(6), &RunOptions::default(), CancellationToken::new())
        .await
        .unwrap();
    assert!(compute_metrics(&out, &MetricsOptions::default()).warnings.is_empty());

    // Four arrivals over 3 s at a server answering in milliseconds: a sustained load.
    let long = at_times(&[0.0, 1.0, 2.0, 3.0]);
    let out = run(&client(&fast.url), &reqs[..4], &long, &RunOptions::default(), CancellationToken::new())
        .await
        .unwrap();
    let m = compute_metrics(&out, &MetricsOptions::default());
    assert_eq!(m.completed, 4);
    assert!(m.warnings.is_empty(), "{:?}", m.warnings);
}

/// The count it asks for: enough requests at the run's own arrival rate to span three median
/// lifetimes.
#[test]
fn the_steady_state_warning_names_the_requests_needed() {
    // 11 arrivals over 1 s (10 req/s), median lifetime 1 s: 3 s at 10 req/s = 30 gaps, 31 requests.
    let times: Vec<f64> = (0..11).map(|i| i as f64 * 0.1).collect();
    let w = steady_state_warning(&times, Some(1.0)).unwrap();
    assert!(w.contains("at least 31 requests"), "{w}");
    assert!(w.contains("over 1.00 s"), "{w}");
    // Exactly three lifetimes, no lifetime known, or one arrival: nothing to say.
    assert!(steady_state_warning(&times, Some(1.0 / 3.0)).is_none());
    assert!(steady_state_warning(&times, None).is_none());
    assert!(steady_state_warning(&[0.5], Some(1.0)).is_none());
}
