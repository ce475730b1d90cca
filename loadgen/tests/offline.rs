//! The parts that need no server: datasets, schedules, traces, goodput parsing, metrics on
//! hand-made records, the SSE parser.

use std::io::Write;
use std::path::Path;

use tokbench_loadgen::*;

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::File::create(&p)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    p
}

fn mean_var(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let m = x.iter().sum::<f64>() / n;
    (
        m,
        x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (n - 1.0),
    )
}

// ---------------------------------------------------------------- (d) schedules

/// Poisson arrivals: the mean gap is 1/R within 5 standard errors, the squared coefficient of
/// variation is 1/burstiness (gamma: var = shape·scale² = 1/(R²·B)), for B = 1 (Poisson), 0.25
/// (bursty) and 4 (regular), with the mean unchanged.
#[test]
fn poisson_schedule_statistics() {
    let rate = 50.0;
    let n = 20_001;
    for (burstiness, seed) in [(1.0, 11u64), (0.25, 12), (4.0, 13)] {
        let s = Schedule::from_shape(n, &LoadShape::Poisson { rate, burstiness }, seed).unwrap();
        assert_eq!(s.sends.len(), n);
        assert_eq!(s.sends[0].at_s, 0.0, "first request at t = 0, as vLLM");
        let gaps = s.inter_arrivals();
        assert!(gaps.iter().all(|&g| g >= 0.0));
        let (mean, var) = mean_var(&gaps);
        let expect_mean = 1.0 / rate;
        let expect_var = 1.0 / (rate * rate * burstiness);
        let se = expect_var.sqrt() / (gaps.len() as f64).sqrt();
        assert!(
            (mean - expect_mean).abs() < 5.0 * se,
            "B={burstiness}: mean gap {mean} vs {expect_mean} (±{})",
            5.0 * se
        );
        // Sample variance of gamma gaps: relative standard error √((2 + 6/B)/n) ≤ 3.6% here.
        let rel = (var - expect_var).abs() / expect_var;
        assert!(
            rel < 0.2,
            "B={burstiness}: variance {var} vs {expect_var} ({:.1}% off)",
            rel * 100.0
        );
        let cv2 = var / (mean * mean);
        println!("burstiness {burstiness}: mean gap {mean:.5} s (1/R = {expect_mean}), CV² {cv2:.3} (1/B = {:.3})", 1.0 / burstiness);
    }
}

#[test]
fn schedules_are_seeded_and_shapes_validated() {
    let shape = LoadShape::Poisson {
        rate: 10.0,
        burstiness: 1.0,
    };
    let a = Schedule::from_shape(100, &shape, 42).unwrap();
    let b = Schedule::from_shape(100, &shape, 42).unwrap();
    let c = Schedule::from_shape(100, &shape, 43).unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);

    let inf = Schedule::from_shape(
        5,
        &LoadShape::Poisson {
            rate: f64::INFINITY,
            burstiness: 1.0,
        },
        0,
    )
    .unwrap();
    assert!(inf.sends.iter().all(|s| s.at_s == 0.0));
    let k = Schedule::from_shape(4, &LoadShape::Constant { rate: 4.0 }, 0).unwrap();
    assert_eq!(
        k.sends.iter().map(|s| s.at_s).collect::<Vec<_>>(),
        vec![0.0, 0.25, 0.5, 0.75]
    );

    for bad in [
        LoadShape::Poisson {
            rate: 0.0,
            burstiness: 1.0,
        },
        LoadShape::Poisson {
            rate: -1.0,
            burstiness: 1.0,
        },
        LoadShape::Poisson {
            rate: f64::NAN,
            burstiness: 1.0,
        },
        LoadShape::Poisson {
            rate: 1.0,
            burstiness: 0.0,
        },
        LoadShape::Constant {
            rate: f64::INFINITY,
        },
    ] {
        assert!(
            matches!(
                Schedule::from_shape(3, &bad, 0),
                Err(LoadgenError::Config(_))
            ),
            "{bad:?}"
        );
    }

    let w = a.clone().with_warmup(3).with_max_concurrency(Some(0));
    assert_eq!(w.sends.iter().filter(|s| s.warmup).count(), 3);
    assert!(w.sends[..3].iter().all(|s| s.warmup));
    assert_eq!(w.max_concurrency, None, "0 means unlimited");
    // JSON round trip (serde_json parses floats to within an ulp, not always bit-exactly).
    let back: Schedule = serde_json::from_str(&serde_json::to_string(&w).unwrap()).unwrap();
    assert_eq!(back.sends.len(), w.sends.len());
    assert!(back
        .sends
        .iter()
        .zip(&w.sends)
        .all(|(a, b)| a.request == b.request
            && a.warmup == b.warmup
            && (a.at_s - b.at_s).abs() < 1e-12));
}

// ---------------------------------------------------------------- (g) traces

#[test]
fn trace_formats_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let csv = write(
        dir.path(),
        "t.csv",
        "arrival_time,input_len,output_len\n# comment\n10.5,100,20\n10.0,50,10\n\n12.0,7,3\n",
    );
    let t = Trace::load(&csv).unwrap();
    assert_eq!(
        t.entries,
        vec![
            TraceEntry {
                at_s: 0.0,
                input_len: 50,
                output_len: 10
            },
            TraceEntry {
                at_s: 0.5,
                input_len: 100,
                output_len: 20
            },
            TraceEntry {
                at_s: 2.0,
                input_len: 7,
                output_len: 3
            },
        ],
        "sorted by time and shifted to start at 0"
    );
    let reqs = t.requests(5, None, None);
    assert_eq!(
        reqs.iter()
            .map(|r| (r.input_len, r.output_len))
            .collect::<Vec<_>>(),
        vec![(50, 10), (100, 20), (7, 3)]
    );
    match &reqs[2].prompt {
        Prompt::Text(p) => assert_eq!(p.split_whitespace().count(), 7),
        other => panic!("{other:?}"),
    }
    assert_eq!(t.requests(5, None, None), reqs, "seeded");
    // A server without a tokenizer gets token ids of exactly the trace's lengths, below the vocab.
    let ids = t.requests(5, None, Some(16));
    assert_eq!(ids.iter().map(|r| r.input_len).collect::<Vec<_>>(), vec![50, 100, 7]);
    for r in &ids {
        match &r.prompt {
            Prompt::TokenIds(v) => {
                assert_eq!(v.len(), r.input_len);
                assert!(v.iter().all(|&id| id < 16), "{v:?}");
            }
            other => panic!("{other:?}"),
        }
    }
    let s = t.schedule();
    assert_eq!(
        s.sends.iter().map(|s| s.at_s).collect::<Vec<_>>(),
        vec![0.0, 0.5, 2.0]
    );

    let jsonl = write(
        dir.path(),
        "t.jsonl",
        "{\"arrival_time\": 1.0, \"input_len\": 4, \"output_len\": 2}\n{\"timestamp\": 3000, \"input_length\": 8, \"output_length\": 5, \"hash_ids\": [1, 2]}\n",
    );
    let t = Trace::load(&jsonl).unwrap();
    assert_eq!(
        t.entries[1],
        TraceEntry {
            at_s: 2.0,
            input_len: 8,
            output_len: 5
        },
        "Mooncake timestamps are ms"
    );

    let cases = [
        ("0.0,10\n", 1, "3 comma-separated fields"),
        ("0.0,10,5\nsoon,1,1\n", 2, "not a number"),
        ("0.0,10,-5\n", 1, "non-negative integer"),
        ("0.0,0,5\n", 1, "≥ 1"),
        (
            "{\"input_len\": 1, \"output_len\": 1}\n",
            1,
            "no arrival time",
        ),
        ("{\"arrival_time\": 0, \"input_len\": 1}\n", 1, "output_len"),
        (
            "{\"arrival_time\": 0, \"input_len\": 1, \"output_len\": 1, \"colour\": 1}\n",
            1,
            "unknown field",
        ),
        ("# nothing\n", 0, "no entries"),
    ];
    for (text, line, needle) in cases {
        let p = write(dir.path(), "bad.csv", text);
        let e = Trace::load(&p).unwrap_err();
        let msg = e.to_string();
        match &e {
            LoadgenError::Parse { line: l, .. } => assert_eq!(*l, line, "{msg}"),
            other => panic!("{other:?}"),
        }
        assert!(msg.contains(needle), "{msg:?} should mention {needle:?}");
        assert!(msg.contains("bad.csv") && msg.contains("fix:"), "{msg}");
    }
    let missing = Trace::load(&dir.path().join("nope.csv")).unwrap_err();
    assert!(matches!(missing, LoadgenError::Io { .. }) && missing.to_string().contains("nope.csv"));
}

// ---------------------------------------------------------------- (g) datasets

fn words(n: usize, w: &str) -> String {
    vec![w; n].join(" ")
}

#[test]
fn sharegpt_loading_and_filtering() {
    let dir = tempfile::tempdir().unwrap();
    let conv = |p: &str, a: &str| serde_json::json!({"id": "x", "conversations": [{"from": "human", "value": p}, {"from": "gpt", "value": a}]});
    let data = serde_json::json!([
        conv(&words(10, "ask"), &words(20, "ans")),          // kept
        conv(&words(3, "ask"), &words(20, "ans")),           // prompt < 4
        conv(&words(10, "ask"), &words(3, "ans")),           // output < 4
        conv(&words(1025, "ask"), &words(10, "ans")),        // prompt > 1024
        conv(&words(1000, "ask"), &words(1049, "ans")),      // total 2049 > 2048
        conv(&words(1000, "ask"), &words(1048, "ans")),      // total 2048: kept
        {"conversations": [{"from": "human", "value": "lonely turn here"}]}, // < 2 turns
        {"other": 1},                                        // no conversations
        {"conversations": [{"from": "system", "value": "be nice"}, {"from": "human", "value": words(5, "sys")}, {"from": "gpt", "value": words(6, "ans")}]}, // kept: first human turn
    ]);
    let path = write(dir.path(), "sg.json", &data.to_string());
    let cfg = ShareGptConfig {
        num_requests: 3,
        seed: 7,
        ..Default::default()
    };
    let reqs = sharegpt_requests(&path, &cfg, None).unwrap();
    assert_eq!(reqs.len(), 3);
    let mut lens: Vec<(usize, usize)> = reqs.iter().map(|r| (r.input_len, r.output_len)).collect();
    lens.sort();
    assert_eq!(lens, vec![(5, 6), (10, 20), (1000, 1048)]);
    assert_eq!(
        sharegpt_requests(&path, &cfg, None).unwrap(),
        reqs,
        "seeded"
    );

    // The filter rule on its own (vLLM's is_valid_sequence).
    let f = ShareGptFilter::default();
    assert!(
        f.keeps(4, 4, false)
            && !f.keeps(3, 4, false)
            && !f.keeps(4, 3, false)
            && f.keeps(4, 3, true)
    );
    assert!(f.keeps(1024, 1024, false) && !f.keeps(1025, 10, false) && !f.keeps(1024, 1025, false));

    // Output length override: every request gets it, and the output-too-short check is off.
    let o = sharegpt_requests(
        &path,
        &ShareGptConfig {
            num_requests: 4,
            output_len: Some(2),
            ..cfg.clone()
        },
        None,
    )
    .unwrap();
    assert!(o.iter().all(|r| r.output_len == 2));
    assert_eq!(o.len(), 4);
    assert!(o
        .iter()
        .any(|r| r.input_len == 10 && r.prompt == Prompt::Text(words(10, "ask"))));

    // Fewer valid pairs than asked for: repeated (oversampled), ids stay unique.
    let many = sharegpt_requests(
        &path,
        &ShareGptConfig {
            num_requests: 8,
            ..cfg.clone()
        },
        None,
    )
    .unwrap();
    assert_eq!(many.len(), 8);
    let ids: std::collections::HashSet<_> = many.iter().map(|r| r.id.clone()).collect();
    assert_eq!(ids.len(), 8);

    // A tokenizer hook measures lengths (here 2 tokens per word): the 1000+1048 pair no longer fits.
    let two = |s: &str| 2 * s.split_whitespace().count();
    let t = sharegpt_requests(
        &path,
        &ShareGptConfig {
            num_requests: 10,
            ..cfg.clone()
        },
        Some(&two),
    )
    .unwrap();
    assert!(t
        .iter()
        .all(|r| r.input_len <= 1024 && r.input_len + r.output_len <= 2048));
    assert!(t.iter().any(|r| r.input_len == 20 && r.output_len == 40));

    // Errors name the file, the line and the fix.
    let bad = write(
        dir.path(),
        "bad.json",
        "[\n{\"conversations\": []},\n{oops}\n]",
    );
    let e = sharegpt_requests(&bad, &cfg, None).unwrap_err();
    assert!(matches!(e, LoadgenError::Parse { line: 3, .. }), "{e:?}");
    assert!(
        e.to_string().contains("bad.json") && e.to_string().contains("fix:"),
        "{e}"
    );
    let jsonl_given = write(
        dir.path(),
        "lines.json",
        "{\"prompt\": \"a\"}\n{\"prompt\": \"b\"}\n",
    );
    assert!(sharegpt_requests(&jsonl_given, &cfg, None)
        .unwrap_err()
        .to_string()
        .contains("JSONL loader"));
    let all_filtered = write(
        dir.path(),
        "short.json",
        &serde_json::json!([conv("hi", "yo")]).to_string(),
    );
    let e = sharegpt_requests(&all_filtered, &cfg, None).unwrap_err();
    assert!(e.to_string().contains("filtered out"), "{e}");
}

#[test]
fn jsonl_loading_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "r.jsonl",
        "{\"prompt\": \"the cat sat\", \"output_len\": 5}\n\n{\"prompt\": [1, 2, 3, 4], \"id\": \"ids\"}\n{\"prompt\": \"no length here\"}\n",
    );
    let reqs = jsonl_requests(&p, Some(9), None).unwrap();
    assert_eq!(reqs.len(), 3);
    assert_eq!((reqs[0].input_len, reqs[0].output_len), (3, 5));
    assert_eq!(reqs[1].prompt, Prompt::TokenIds(vec![1, 2, 3, 4]));
    assert_eq!(
        (reqs[1].id.as_str(), reqs[1].input_len, reqs[1].output_len),
        ("ids", 4, 9)
    );
    assert_eq!(reqs[2].output_len, 9);

    let e = jsonl_requests(&p, None, None).unwrap_err();
    assert!(matches!(e, LoadgenError::Parse { line: 3, .. }), "{e:?}");
    assert!(e.to_string().contains("default output length"), "{e}");

    let bad = write(
        dir.path(),
        "bad.jsonl",
        "{\"prompt\": \"ok\", \"output_len\": 1}\n{\"prompt\": \"x\", \"output_len\": 1\n",
    );
    let e = jsonl_requests(&bad, None, None).unwrap_err();
    assert!(matches!(e, LoadgenError::Parse { line: 2, .. }), "{e:?}");
    assert!(e.to_string().contains("bad.jsonl:2"), "{e}");
    let typo = write(
        dir.path(),
        "typo.jsonl",
        "{\"promt\": \"x\", \"output_len\": 1}\n",
    );
    assert!(jsonl_requests(&typo, None, None)
        .unwrap_err()
        .to_string()
        .contains("unknown field"));
    let zero = write(
        dir.path(),
        "zero.jsonl",
        "{\"prompt\": \"x\", \"output_len\": 0}\n",
    );
    assert!(jsonl_requests(&zero, None, None)
        .unwrap_err()
        .to_string()
        .contains("≥ 1"));
}

#[test]
fn synthetic_requests_lengths_and_seed() {
    let fixed = SyntheticConfig {
        num_requests: 50,
        input: LengthDist::Fixed { n: 37 },
        output: LengthDist::Uniform { lo: 5, hi: 9 },
        seed: 3,
        token_id_vocab: None,
    };
    let a = synthetic_requests(&fixed, None).unwrap();
    assert_eq!(a.len(), 50);
    for r in &a {
        assert_eq!(r.input_len, 37);
        assert_eq!(
            r.prompt.as_text().split_whitespace().count(),
            37,
            "no tokenizer: length = words"
        );
        assert!((5..=9).contains(&r.output_len));
    }
    assert!(a.iter().any(|r| r.output_len == 5) && a.iter().any(|r| r.output_len == 9));
    assert_eq!(synthetic_requests(&fixed, None).unwrap(), a);
    assert_ne!(
        synthetic_requests(
            &SyntheticConfig {
                seed: 4,
                ..fixed.clone()
            },
            None
        )
        .unwrap(),
        a
    );

    let normal = SyntheticConfig {
        num_requests: 500,
        input: LengthDist::Normal {
            mean: 2.0,
            std: 5.0,
        },
        output: LengthDist::Normal {
            mean: 100.0,
            std: 10.0,
        },
        ..fixed.clone()
    };
    let n = synthetic_requests(&normal, None).unwrap();
    assert!(
        n.iter().all(|r| r.input_len >= 1 && r.output_len >= 1),
        "clipped at 1"
    );
    assert!(
        n.iter().filter(|r| r.input_len == 1).count() > 100,
        "negative draws clip to 1"
    );
    let mean_out = n.iter().map(|r| r.output_len as f64).sum::<f64>() / 500.0;
    assert!((mean_out - 100.0).abs() < 3.0, "{mean_out}");

    // A tokenizer that counts long words as two tokens: prompts are adjusted to the exact length
    // (or within one token where word granularity cannot hit it), and input_len is the measured count.
    let tok = |s: &str| {
        s.split_whitespace()
            .map(|w| if w.len() > 4 { 2 } else { 1 })
            .sum::<usize>()
    };
    let t = synthetic_requests(
        &SyntheticConfig {
            input: LengthDist::Fixed { n: 64 },
            ..fixed.clone()
        },
        Some(&tok),
    )
    .unwrap();
    for r in &t {
        assert_eq!(r.input_len, tok(&r.prompt.as_text()));
        assert!(r.input_len.abs_diff(64) <= 1, "{}", r.input_len);
    }

    let ids = synthetic_requests(
        &SyntheticConfig {
            token_id_vocab: Some(1000),
            ..fixed.clone()
        },
        None,
    )
    .unwrap();
    match &ids[0].prompt {
        Prompt::TokenIds(v) => assert!(v.len() == 37 && v.iter().all(|&i| i < 1000)),
        other => panic!("{other:?}"),
    }

    for bad in [
        LengthDist::Fixed { n: 0 },
        LengthDist::Uniform { lo: 5, hi: 4 },
        LengthDist::Normal {
            mean: 1.0,
            std: -1.0,
        },
    ] {
        let e = synthetic_requests(
            &SyntheticConfig {
                input: bad,
                ..fixed.clone()
            },
            None,
        )
        .unwrap_err();
        assert!(matches!(e, LoadgenError::Config(_)), "{e:?}");
    }
}

// ---------------------------------------------------------------- (h) goodput and metrics

#[test]
fn goodput_parsing() {
    let s = parse_goodput("ttft:200 tpot:50").unwrap();
    assert_eq!(
        s,
        GoodputSlos {
            ttft_ms: Some(200.0),
            tpot_ms: Some(50.0),
            e2el_ms: None
        }
    );
    let s = parse_goodput("e2el:1500.5,ttft:0").unwrap();
    assert_eq!(
        s,
        GoodputSlos {
            ttft_ms: Some(0.0),
            tpot_ms: None,
            e2el_ms: Some(1500.5)
        }
    );
    for (bad, needle) in [
        ("", "no SLO"),
        ("ttft", "KEY:VALUE"),
        ("ttft:fast", "not a number"),
        ("ttft:-1", "non-negative"),
        ("itl:5", "unknown metric"),
        ("ttft:1 ttft:2", "twice"),
    ] {
        let e = parse_goodput(bad).unwrap_err();
        assert!(matches!(e, LoadgenError::Goodput { .. }));
        assert!(e.to_string().contains(needle), "{bad:?}: {e}");
    }
}

fn record(
    index: usize,
    sent: f64,
    chunks: &[f64],
    end: f64,
    completion: Option<u64>,
    prompt: Option<u64>,
) -> RequestRecord {
    let req = Request {
        id: format!("h{index}"),
        prompt: Prompt::Text("x".into()),
        input_len: 7,
        output_len: 3,
    };
    let mut r = RequestRecord::new(index, &req);
    r.scheduled_s = sent - 0.001;
    r.dispatched_s = sent - 0.0005;
    r.slot_s = sent - 0.0005;
    r.sent_s = sent;
    r.chunk_times_s = chunks.to_vec();
    r.end_s = end;
    r.completion_tokens = completion;
    r.prompt_tokens = prompt;
    r
}

/// Metrics on hand-made records (times are binary fractions so the arithmetic is exact).
#[test]
fn metrics_and_goodput_on_hand_made_records() {
    let mut warm = record(0, 0.0, &[0.5], 0.6, Some(1), Some(1));
    warm.warmup = true;
    let r1 = record(1, 1.0, &[1.125, 1.1875, 1.25], 1.25, Some(3), Some(10)); // ttft 125, e2el 250, tpot 62.5
    let r2 = record(2, 1.5, &[1.75, 2.0], 2.0, Some(2), Some(20)); // ttft 250, e2el 500, tpot 250
    let r3 = record(3, 2.0, &[2.0625], 2.0625, Some(1), None); // ttft 62.5, e2el 62.5, no tpot; input from dataset (7)
    let mut r4 = record(4, 2.5, &[], 3.0, None, None);
    r4.error_kind = Some(ErrorKind::HttpStatus);
    r4.error = Some("HTTP 500: boom".into());
    r4.http_status = Some(500);
    let mut r5 = record(5, 2.75, &[], 2.875, None, None);
    r5.slot_s = r5.dispatched_s + 0.25; // waited a quarter second for a slot
    r5.sent_s = r5.slot_s + 0.0005;
    r5.end_s = 3.0;
    r5.error_kind = Some(ErrorKind::NoTokens);
    r5.error = Some("empty".into());
    let run = RunOutput {
        records: vec![warm, r1, r2, r3, r4, r5],
        peak_concurrency: 2,
        max_concurrency: Some(4),
        not_sent: 1,
        cancelled: false,
        started_at: chrono::Utc::now(),
        elapsed_s: 3.0,
    };
    let m = compute_metrics(
        &run,
        &MetricsOptions {
            goodput: Some(parse_goodput("ttft:125").unwrap()),
            include_per_request: true,
            ..Default::default()
        },
    );
    assert_eq!(
        (m.completed, m.failed, m.warmup_requests, m.not_sent),
        (3, 2, 1, 1)
    );
    assert_eq!(m.failure_counts.get("http_status"), Some(&1));
    assert_eq!(m.failure_counts.get("no_tokens"), Some(&1));
    assert_eq!(m.failures[0].message, "HTTP 500: boom");
    assert_eq!(
        m.duration_s, 2.0,
        "first measured send 1.0 to last measured end 3.0"
    );
    assert_eq!(m.total_output_tokens, 6);
    assert_eq!(m.total_input_tokens, 37);
    assert_eq!(m.request_throughput, 1.5);
    assert_eq!(m.output_throughput, 3.0);
    assert_eq!(m.total_token_throughput, 21.5);
    let ttft = m.ttft_ms.unwrap();
    assert_eq!(
        (ttft.count, ttft.mean, ttft.median, ttft.min, ttft.max),
        (3, 437.5 / 3.0, 125.0, 62.5, 250.0)
    );
    let tpot = m.tpot_ms.unwrap();
    assert_eq!((tpot.count, tpot.min, tpot.max), (2, 62.5, 250.0));
    let itl = m.itl_ms.unwrap();
    assert_eq!((itl.count, itl.min, itl.max), (3, 62.5, 250.0));
    let e2el = m.e2el_ms.unwrap();
    assert_eq!((e2el.median, e2el.max), (250.0, 500.0));
    assert_eq!((m.max_concurrency, m.peak_concurrency), (Some(4), 2));
    // ttft ≤ 125: r1 (exactly 125) and r3.
    assert_eq!(m.good_requests, Some(2));
    assert_eq!(m.request_goodput, Some(1.0));
    let q = m.queue_wait_ms.unwrap();
    assert!((q.max - 250.0).abs() < 1e-9);
    let a = m.arrival_error_ms.unwrap();
    assert_eq!(a.count, 5);
    assert!(
        m.per_request
            .iter()
            .filter(|r| !r.warmup)
            .all(|r| (r.arrival_error_ms - 1.0).abs() < 1e-6),
        "queue wait is not lateness"
    );

    let g = |spec: &str| {
        compute_metrics(
            &run,
            &MetricsOptions {
                goodput: Some(parse_goodput(spec).unwrap()),
                ..Default::default()
            },
        )
        .good_requests
        .unwrap()
    };
    assert_eq!(
        g("ttft:300 tpot:100"),
        2,
        "r2 misses tpot; r3 has no tpot and passes, as in vLLM"
    );
    assert_eq!(g("e2el:250"), 2);
    assert_eq!(g("e2el:100"), 1);
    assert_eq!(
        g("ttft:1000 tpot:1000 e2el:1000"),
        3,
        "failed requests are never good"
    );
    assert_eq!(
        compute_metrics(&run, &MetricsOptions::default()).good_requests,
        None
    );

    // Round-trips through JSON (for storing results), to within float parsing precision.
    let json = serde_json::to_string(&m).unwrap();
    let back: BenchmarkMetrics = serde_json::from_str(&json).unwrap();
    assert_json_close(
        &serde_json::to_value(&back).unwrap(),
        &serde_json::to_value(&m).unwrap(),
    );
    let json = serde_json::to_string(&run).unwrap();
    let back: RunOutput = serde_json::from_str(&json).unwrap();
    assert_json_close(
        &serde_json::to_value(&back).unwrap(),
        &serde_json::to_value(&run).unwrap(),
    );
}

/// Equal JSON, numbers within 1e-12 relative (serde_json's default float parser is within an
/// ulp, not always bit-exact).
fn assert_json_close(a: &serde_json::Value, b: &serde_json::Value) {
    use serde_json::Value::*;
    match (a, b) {
        (Number(x), Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!((x - y).abs() <= 1e-12 * x.abs().max(1.0), "{x} vs {y}");
        }
        (Array(x), Array(y)) => {
            assert_eq!(x.len(), y.len());
            x.iter().zip(y).for_each(|(x, y)| assert_json_close(x, y));
        }
        (Object(x), Object(y)) => {
            assert_eq!(x.keys().collect::<Vec<_>>(), y.keys().collect::<Vec<_>>());
            x.iter().for_each(|(k, v)| assert_json_close(v, &y[k]));
        }
        _ => assert_eq!(a, b),
    }
}

#[test]
fn stats_match_numpy() {
    // numpy: mean 2.5, median 2.5, percentile 90 = 3.7, 99 = 3.97, std (ddof=0) = sqrt(1.25).
    let s = Stats::from_values(&[4.0, 1.0, 3.0, 2.0]).unwrap();
    assert_eq!(
        (s.count, s.mean, s.median, s.min, s.max),
        (4, 2.5, 2.5, 1.0, 4.0)
    );
    assert!((s.p90 - 3.7).abs() < 1e-12 && (s.p99 - 3.97).abs() < 1e-12);
    assert!((s.std - 1.25f64.sqrt()).abs() < 1e-12);
    assert_eq!(Stats::from_values(&[]), None);
    let one = Stats::from_values(&[7.0]).unwrap();
    assert_eq!((one.p99, one.std), (7.0, 0.0));
}

#[test]
fn sse_parser_handles_split_events() {
    let mut p = SseParser::new();
    let mut got = Vec::new();
    for piece in [
        &b"data: {\"a\""[..],
        b": 1}\r\n\r\n: keep-alive comment\n\nevent: x\nda",
        b"ta: line1\ndata:line2\n\ndata: [DONE]\n",
        b"\n",
    ] {
        got.extend(p.feed(piece));
    }
    assert_eq!(got, vec!["{\"a\": 1}", "line1\nline2", "[DONE]"]);
    got.extend(p.feed(b"data: tail-without-blank-line"));
    assert_eq!(p.finish().as_deref(), Some("tail-without-blank-line"));
}

#[test]
fn client_urls() {
    for base in [
        "http://h:8000",
        "http://h:8000/",
        "http://h:8000/v1",
        "http://h:8000/v1/",
    ] {
        assert_eq!(
            ClientConfig::new(base, "m").url(),
            "http://h:8000/v1/completions"
        );
    }
    let mut c = ClientConfig::new("http://h:8000", "m");
    c.api = ApiKind::ChatCompletions;
    assert_eq!(c.url(), "http://h:8000/v1/chat/completions");
    assert!(matches!(
        Client::new(ClientConfig::new("not a url", "m")),
        Err(LoadgenError::Client(_))
    ));
}
