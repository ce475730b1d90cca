//! `--models-dir`: which local model directories a worker loads. `serve` (jobs from remote
//! clients) loads directories only from under its `--models-dir` (none without it), checked
//! after symlinks and `..` are resolved; `bench`, run by the user, loads any directory unless
//! given `--models-dir`. Real tiny checkpoints (config.json + model.safetensors) in temp dirs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::sync::OnceLock;

use tokbench_core::{PromptSource, WeightsMode, Workload};
use tokbench_worker::checkpoint::save_synthetic_checkpoint;
use tokbench_worker::resolve::{self, check_model, resolve_with, with_model_policy, ModelPathPolicy, WeightsKind};
use tokbench_worker::EngineError;

/// An empty Hugging Face cache for this test binary, so the host's cache never answers.
fn hub() {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        unsafe { std::env::set_var("HF_HUB_CACHE", &dir) };
        unsafe { std::env::remove_var(resolve::MODELS_DIRS_ENV) };
        dir
    });
}

/// `root/models/tiny` (allowed) and `root/outside/secret` (not), both real checkpoints, and
/// `root/models/link` -> `root/outside/secret`.
struct Layout {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    models: PathBuf,
    tiny: PathBuf,
    outside: PathBuf,
    link: PathBuf,
}

fn layout() -> Layout {
    hub();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    let config = tokbench_core::Catalog::get("tiny-gpt2").unwrap().config();
    let models = root.join("models");
    let tiny = models.join("tiny");
    save_synthetic_checkpoint(&config, 3, &tiny).unwrap();
    let outside = root.join("outside").join("secret");
    save_synthetic_checkpoint(&config, 4, &outside).unwrap();
    let link = models.join("link");
    std::os::unix::fs::symlink(&outside, &link).unwrap();
    Layout { _tmp: tmp, root, models, tiny, outside, link }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn refused(name: &str, policy: &ModelPathPolicy) -> String {
    let err = resolve_with(name, WeightsMode::Real, 0, policy).unwrap_err();
    assert!(matches!(err, EngineError::UnknownModel(_)), "{name}: {err:?}");
    assert!(!err.is_retryable(), "a refused model is bad input: {err:?}");
    assert!(check_model(name, policy).is_err(), "check_model agrees with resolve for {name}");
    err.to_string()
}

#[test]
fn a_checkpoint_under_the_models_dir_loads_real_weights() {
    let l = layout();
    let policy = ModelPathPolicy::only_under(vec![l.models.clone()]);
    for name in [s(&l.tiny).to_string(), format!("local:{}", s(&l.tiny)), format!("{}/other/../tiny", s(&l.models))] {
        std::fs::create_dir_all(l.models.join("other")).unwrap();
        let r = resolve_with(&name, WeightsMode::Real, 0, &policy).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(r.weights_kind, WeightsKind::Real, "{name}");
        assert_eq!(r.model_dir.as_deref(), Some(l.tiny.as_path()), "{name}: the canonical directory is what is read");
        assert_eq!(r.requested, name);
        check_model(&name, &policy).unwrap();
    }
    // A models dir given through a symlink or with `..` allows the same directories.
    let via = l.root.join("models-link");
    std::os::unix::fs::symlink(&l.models, &via).unwrap();
    let policy = ModelPathPolicy::only_under(vec![l.root.join("outside/../models-link")]);
    assert_eq!(resolve_with(s(&via.join("tiny")), WeightsMode::Real, 0, &policy).unwrap().weights_kind, WeightsKind::Real);
}

#[test]
fn a_symlink_inside_the_models_dir_that_leads_outside_is_refused() {
    let l = layout();
    // The link is a loadable checkpoint: without a restriction it loads.
    assert_eq!(resolve_with(s(&l.link), WeightsMode::Real, 0, &ModelPathPolicy::any()).unwrap().weights_kind, WeightsKind::Real);
    let policy = ModelPathPolicy::only_under(vec![l.models.clone()]);
    for name in [s(&l.link).to_string(), format!("local:{}", s(&l.link))] {
        let msg = refused(&name, &policy);
        assert!(msg.contains(s(&l.models)), "names the allowed directory: {msg}");
        assert!(!msg.contains("secret"), "does not tell the submitter where the link leads: {msg}");
    }
}

#[test]
fn dot_dot_escapes_are_refused() {
    let l = layout();
    let policy = ModelPathPolicy::only_under(vec![l.models.clone()]);
    let escape = format!("{}/../outside/secret", s(&l.models));
    assert!(Path::new(&escape).join("config.json").is_file(), "the escape names a real checkpoint");
    for name in [escape.clone(), format!("local:{escape}"), "../../../../etc/passwd".into(), "local:../../../../etc".into(), "/etc".into()] {
        let msg = refused(&name, &policy);
        assert!(msg.contains(&format!("model \"{name}\"")), "{msg}");
    }
}

#[test]
fn a_name_outside_is_refused_with_the_allowed_directories_listed() {
    let l = layout();
    let second = l.root.join("more-models");
    std::fs::create_dir_all(&second).unwrap();
    let policy = ModelPathPolicy::only_under(vec![l.models.clone(), second.clone()]);
    let msg = refused(s(&l.outside), &policy);
    for needle in ["is not a catalog name", "not a Hugging Face repo id (owner/name)", s(&l.models), s(&second), "--models-dir"] {
        assert!(msg.contains(needle), "expected {needle:?} in {msg}");
    }
    // A path that does not exist gets the same answer (no probing of the worker's disk).
    let missing = refused(s(&l.root.join("no-such-dir")), &policy);
    assert!(missing.contains(s(&l.models)), "{missing}");

    // Without --models-dir: no local directory at all, and the message says how to allow one.
    let none = ModelPathPolicy::only_under(vec![]);
    let msg = refused(s(&l.tiny), &none);
    assert!(msg.contains("started without --models-dir") && msg.contains("--models-dir DIR"), "{msg}");
    refused("./relative/dir", &none);
}

#[test]
fn catalog_names_and_repo_ids_are_not_paths() {
    let l = layout();
    let policy = ModelPathPolicy::only_under(vec![l.models.clone()]);
    let r = resolve_with("tiny-gpt2", WeightsMode::Auto, 0, &policy).unwrap();
    assert_eq!(r.weights_kind, WeightsKind::Synthetic);
    check_model("tiny-gpt2", &policy).unwrap();
    check_model("facebook/opt-125m", &policy).unwrap();
    check_model("someorg/some-model", &policy).unwrap();
    // An uncached repo id fails as an unknown model, not as a path.
    let msg = resolve_with("someorg/some-model", WeightsMode::Synthetic, 0, &policy).unwrap_err().to_string();
    assert!(msg.starts_with("unknown model \"someorg/some-model\""), "{msg}");
    assert!(msg.contains(&format!("As a local directory: this worker loads local directories only from under its --models-dir: {}", s(&l.models))), "{msg}");
    // local: always means a directory.
    assert!(check_model("local:tiny-gpt2", &policy).is_err());
    assert!(check_model("local:", &ModelPathPolicy::any()).is_err());
}

#[test]
fn the_engine_applies_the_policy_it_runs_under() {
    let l = layout();
    let workload = tiny_real_workload;
    let run = |w: &Workload| tokbench_worker::bench::run_workload(w, &AtomicBool::new(false), &mut |_| {});
    let policy = ModelPathPolicy::only_under(vec![l.models.clone()]);
    // What serve's engine does: the job's model is resolved under the worker's policy.
    let err = with_model_policy(policy.clone(), || run(&workload(&l.link))).unwrap_err();
    assert!(matches!(err, EngineError::UnknownModel(_)) && err.to_string().contains(s(&l.models)), "{err}");
    let report = with_model_policy(policy, || run(&workload(&l.tiny))).unwrap();
    assert_eq!(report.model_properties.weights, "real");
    // Outside a policy scope (the user's own bench) any directory loads.
    assert_eq!(run(&workload(&l.link)).unwrap().model_properties.weights, "real");
}

fn bench(cwd: &Path, env: Option<&str>, args: &[&str]) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tokbench-worker"));
    cmd.arg("bench").args(args).arg("--quiet");
    if !args.contains(&"--workload-file") {
        cmd.args(["--max-tokens", "2", "--input-len", "4", "--num-prompts", "1", "--batch-size", "1", "--repetitions", "1", "--warmup", "0"]);
    }
    cmd.current_dir(cwd).env("HF_HOME", cwd).env_remove("HF_HUB_CACHE").env("HF_HUB_OFFLINE", "1").env("RUST_LOG", "warn").env_remove(resolve::MODELS_DIRS_ENV);
    if let Some(v) = env {
        cmd.env(resolve::MODELS_DIRS_ENV, v);
    }
    let out = cmd.output().expect("run tokbench-worker");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn bench_loads_any_directory_unless_given_models_dir() {
    let l = layout();
    let json = l.root.join("out.json");
    let json = s(&json);
    // The user's own bench: any local directory, absolute or relative.
    let (code, err) = bench(&l.root, None, &["--model", s(&l.outside), "--weights", "real", "--json", json]);
    assert_eq!(code, 0, "{err}");
    let (code, err) = bench(&l.root, None, &["--model", "./outside/secret", "--weights", "real", "--json", json]);
    assert_eq!(code, 0, "{err}");
    // With --models-dir: only under it.
    let (code, err) = bench(&l.root, None, &["--models-dir", "models", "--model", "models/tiny", "--weights", "real", "--json", json]);
    assert_eq!(code, 0, "{err}");
    let (code, err) = bench(&l.root, None, &["--models-dir", "models", "--model", "./models/link", "--weights", "real", "--json", json]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not a directory under this worker's allowed model directories") && err.contains(s(&l.models)), "{err}");
    // `models/link` has the shape of a repo id (owner/name), so it is one unless it is an allowed
    // directory; the message still says where local directories may be.
    let (code, err) = bench(&l.root, None, &["--models-dir", "models", "--model", "models/link", "--weights", "real", "--json", json]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unknown model \"models/link\"") && err.contains(&format!("only from under its --models-dir: {}", s(&l.models))), "{err}");
    let (code, err) = bench(&l.root, None, &["--models-dir", "no-such-dir", "--model", "tiny-gpt2", "--json", json]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--models-dir no-such-dir: not a directory"), "{err}");
    // The environment serve hands its profiled children: set but empty = no directories.
    let (code, err) = bench(&l.root, Some(""), &["--model", s(&l.tiny), "--weights", "real", "--json", json]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("started without --models-dir"), "{err}");
    let (code, err) = bench(&l.root, Some(s(&l.models)), &["--workload-file", s(&write_workload(&l.root, &l.tiny)), "--json", json]);
    assert_eq!(code, 0, "{err}");
    let (code, err) = bench(&l.root, Some(s(&l.models)), &["--workload-file", s(&write_workload(&l.root, &l.outside)), "--json", json]);
    assert_eq!(code, 2, "{err}");
}

/// One short pass over the real checkpoint at `model`.
fn tiny_real_workload(model: &Path) -> Workload {
    Workload {
        model: model.display().to_string(),
        weights: WeightsMode::Real,
        batch_size: 1,
        prompts: PromptSource::Synthetic { num_prompts: 1, input_len: 4 },
        max_tokens: 2,
        warmup: 0,
        repetitions: 1,
        ..Workload::default()
    }
}

fn write_workload(dir: &Path, model: &Path) -> PathBuf {
    let w = tiny_real_workload(model);
    let path = dir.join("workload.json");
    std::fs::write(&path, serde_json::to_string(&w).unwrap()).unwrap();
    path
}
