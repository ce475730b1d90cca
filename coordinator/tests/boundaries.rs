//! The request boundaries under arbitrary input: sweep validation (the coordinator's, over what a
//! client can put in a SweepSpec) and report parsing never panic and refuse with a message;
//! malformed protobuf bytes and cut-off streams sent to both services get an error status, and the
//! coordinator stays up and correct. Real coordinator in-process on 127.0.0.1, raw gRPC frames.

mod common;

use std::io::Write;

use bytes::{Buf, BufMut};
use common::*;
use proptest::prelude::*;
use tokbench_coordinator::CoordinatorConfig;
use tokbench_proto::v1::*;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Any SweepSpec a client can send: validation returns Ok or a non-empty message, never
    /// panics; what it accepts has no control characters in model names or label and no `..`
    /// or absolute path outside `local:`.
    #[test]
    fn sweep_validation_never_panics_and_refuses_with_a_message(
        models in prop::collection::vec(any::<String>(), 0..4),
        mixed in prop::collection::vec(prop::sample::select(vec!["tiny-opt", "gpt2", "../../etc/passwd", "/etc/passwd", "local:/m", "a\u{0}b", "org/model", ""]), 0..3),
        batch_sizes in prop::collection::vec(any::<u32>(), 0..4),
        label in any::<String>(),
        backend in prop::sample::select(vec!["", "cpu", "cuda", "tpu", "\u{7}"]),
        workload_json in prop_oneof![
            Just(String::new()),
            any::<String>(),
            Just(r#"{"max_tokens":4,"batch_size":2}"#.to_string()),
            (0usize..100_000, 0usize..10_000, any::<String>()).prop_map(|(m, n, p)| format!(r#"{{"max_tokens":{m},"prompts":{{"kind":"inline","prompts":[{}]}},"batch_size":{n}}}"#, serde_json::to_string(&p).unwrap())),
        ],
        profile in any::<bool>(),
    ) {
        let models: Vec<String> = models.into_iter().chain(mixed.into_iter().map(String::from)).collect();
        let spec = SweepSpec { models, batch_sizes, label, backend: backend.into(), workload_json, profile, request_rates: vec![] };
        match tokbench_coordinator::validate::validate_sweep(&spec) {
            Err(m) => prop_assert!(!m.trim().is_empty()),
            Ok(v) => {
                for j in &v.jobs {
                    prop_assert!(!j.model.chars().any(char::is_control), "{:?}", j.model);
                    if !j.model.starts_with("local:") {
                        prop_assert!(!j.model.starts_with('/') && !j.model.split('/').any(|c| c == ".."), "{:?}", j.model);
                    }
                }
                prop_assert!(!v.spec.label.chars().any(char::is_control));
            }
        }
    }

    /// Report parsing (what CompleteJob does with report_json) on arbitrary text and on a real
    /// report's JSON cut anywhere: an error, never a panic.
    #[test]
    fn report_parsing_never_panics(text in any::<String>(), cut in 0usize..4000) {
        let _ = serde_json::from_str::<tokbench_core::BenchReport>(&text);
        let real = real_report_json();
        let cut = cut.min(real.len());
        if real.is_char_boundary(cut) && cut < real.len() {
            prop_assert!(serde_json::from_str::<tokbench_core::BenchReport>(&real[..cut]).is_err());
        }
    }
}

/// A real report of the real engine (tiny-opt), as JSON, made once.
fn real_report_json() -> &'static str {
    static JSON: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    JSON.get_or_init(|| serde_json::to_string(&tiny_opt_report(2)).unwrap())
}

/// A codec that sends and receives raw bytes: lets the test put arbitrary bytes in a gRPC frame.
#[derive(Clone, Default)]
struct RawCodec;
struct RawEnc;
struct RawDec;

impl Encoder for RawEnc {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDec {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let mut v = vec![0u8; src.remaining()];
        src.copy_to_slice(&mut v);
        Ok(Some(v))
    }
}

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEnc;
    type Decoder = RawDec;
    fn encoder(&mut self) -> RawEnc {
        RawEnc
    }
    fn decoder(&mut self) -> RawDec {
        RawDec
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_protobuf_and_cut_streams_get_errors_and_the_coordinator_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let h = tokbench_coordinator::spawn(CoordinatorConfig { listen: "127.0.0.1:0".parse().unwrap(), database: dir.path().join("b.db"), ..Default::default() }).await.unwrap();
    let url = format!("http://{}", h.local_addr());
    let channel = tonic::transport::Endpoint::from_shared(url.clone()).unwrap().connect().await.unwrap();
    // Bytes that are not a valid protobuf message: a field with wire type 7 (none exists), a
    // length prefix past the end, and a string field holding invalid UTF-8.
    let garbage: Vec<Vec<u8>> = vec![vec![0x0f, 0xff, 0xff], vec![0x0a, 0xff, 0xff, 0xff, 0x0f, 0x01], vec![0x0a, 0x02, 0xc3, 0x28], (0..=255u8).rev().collect()];
    let unary = ["/tokbench.v1.Benchmarks/SubmitSweep", "/tokbench.v1.Benchmarks/GetSweep", "/tokbench.v1.WorkerQueue/Register", "/tokbench.v1.WorkerQueue/CompleteJob", "/tokbench.v1.WorkerQueue/Heartbeat"];
    for path in unary {
        for g in &garbage {
            let mut grpc = tonic::client::Grpc::new(channel.clone());
            grpc.ready().await.unwrap();
            let r = grpc.unary(tonic::Request::new(g.clone()), tonic::codegen::http::uri::PathAndQuery::from_static(path), RawCodec).await;
            let err = r.expect_err(&format!("{path} accepted garbage {g:?}"));
            assert!(!err.message().is_empty(), "{path}: {err:?}");
        }
    }
    // A client stream whose second frame is garbage.
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    let frames = futures::stream::iter(vec![vec![0x0a, 0x03, b'j', b'o', b'b'], vec![0x0f, 0xff]]);
    let r = grpc.client_streaming(tonic::Request::new(frames), tonic::codegen::http::uri::PathAndQuery::from_static("/tokbench.v1.WorkerQueue/UploadArtifact"), RawCodec).await;
    assert!(r.is_err());
    // A raw TCP connection that sends half an HTTP/2 preface and hangs up, and one that sends noise.
    for bytes in [&b"PRI * HTTP/2.0\r\n"[..], &[0u8, 1, 2, 3, 255, 254][..]] {
        let mut s = std::net::TcpStream::connect(h.local_addr()).unwrap();
        let _ = s.write_all(bytes);
        drop(s);
    }
    // Still up and correct: a real sweep is accepted and listed.
    let mut c = benchmarks(&url, None).await;
    let sub = c.submit_sweep(SubmitSweepRequest { spec: Some(tiny_spec(&["tiny-opt"], &[1], 2)) }).await.unwrap().into_inner();
    let listed = c.list_sweeps(ListSweepsRequest::default()).await.unwrap().into_inner();
    assert!(listed.sweeps.iter().any(|s| s.sweep_id == sub.sweep_id));
    let sweep = get_sweep(&mut c, &sub.sweep_id).await.unwrap();
    assert_eq!(sweep.jobs.len(), 1);
    h.shutdown().await.unwrap();
}
