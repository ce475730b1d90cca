//! `tokbench-worker doctor` as a user runs it: the real binary, its JSON and its screen, the Hub
//! check against a listener on 127.0.0.1 (reachable), a closed port (not reachable) and
//! HF_HUB_OFFLINE (not checked).

use std::net::TcpListener;
use std::process::Command;

fn doctor(env: &[(&str, &str)], json: bool) -> (String, serde_json::Value) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tokbench-worker"));
    cmd.arg("doctor").args(["--timeout", "2"]).env_remove("HF_HUB_OFFLINE").env_remove("HF_ENDPOINT");
    if json {
        cmd.arg("--json");
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "doctor failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let value = if json { serde_json::from_str(&text).unwrap_or_else(|e| panic!("doctor --json is not JSON ({e}): {text}")) } else { serde_json::Value::Null };
    (text, value)
}

#[test]
fn doctor_reports_the_build_the_cache_and_whether_the_hub_answers() {
    let cache = tempfile::tempdir().unwrap();
    let cache_path = cache.path().to_str().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let open = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let (_, up) = doctor(&[("HF_ENDPOINT", &open), ("HF_HUB_CACHE", cache_path)], true);
    assert_eq!(up["hub"]["endpoint"], open.as_str());
    assert_eq!(up["hub"]["reachable"], true, "{up}");
    assert_eq!(up["hf_cache"], cache_path);
    assert_eq!(up["cuda_build"], cfg!(feature = "cuda"));
    assert!(up["gpus"].is_array() && up["nsys"].is_string() && up["nvml"].is_string(), "{up}");

    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://127.0.0.1:{}", l.local_addr().unwrap().port())
    };
    let (_, down) = doctor(&[("HF_ENDPOINT", &closed)], true);
    assert_eq!(down["hub"]["reachable"], false, "{down}");
    assert!(down["hub"]["detail"].as_str().unwrap().contains("--weights synthetic"), "the fix is named: {down}");

    let (_, offline) = doctor(&[("HF_ENDPOINT", &open), ("HF_HUB_OFFLINE", "1")], true);
    assert!(offline["hub"]["reachable"].is_null(), "{offline}");

    let (screen, _) = doctor(&[("HF_ENDPOINT", &closed), ("HF_HUB_CACHE", cache_path)], false);
    for line in ["tokbench-worker", "NVML:", "driver:", "nsys:", "HF cache:", "Hub:"] {
        assert!(screen.contains(line), "{line} missing from the screen:\n{screen}");
    }
    assert!(screen.contains(cache_path) && screen.contains("NOT reachable"), "{screen}");
}
