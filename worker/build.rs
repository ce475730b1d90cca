//! Records the git commit the worker was built from (TOKBENCH_GIT_COMMIT, read with
//! option_env! into every report's environment). Absent when not built from a git checkout.
//! With the `cuda` feature, also compiles kernels/decode.cu to PTX with nvcc ($OUT_DIR/decode_sm{75,80,90}.ptx).

use std::path::Path;
use std::process::Command;

fn main() {
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        build_ptx();
    }
    let out = Command::new("git").args(["rev-parse", "HEAD"]).output();
    if let Ok(out) = out {
        if out.status.success() {
            let commit = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if !commit.is_empty() {
                println!("cargo:rustc-env=TOKBENCH_GIT_COMMIT={commit}");
            }
        }
    }
    // Re-run when HEAD moves (checkout, commit), so the recorded commit stays true.
    if let Ok(out) = Command::new("git").args(["rev-parse", "--git-dir"]).output() {
        let git_dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() && !git_dir.is_empty() {
            let git_dir = Path::new(&git_dir);
            let head = git_dir.join("HEAD");
            println!("cargo:rerun-if-changed={}", head.display());
            if let Ok(text) = std::fs::read_to_string(&head) {
                if let Some(r) = text.trim().strip_prefix("ref: ") {
                    println!("cargo:rerun-if-changed={}", git_dir.join(r).display());
                }
            }
            println!("cargo:rerun-if-changed={}", git_dir.join("packed-refs").display());
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}

/// nvcc from $NVCC, $CUDA_HOME/bin or PATH; tokbench's kernels as PTX for compute 7.5, 8.0 and
/// 9.0 (the driver JIT-compiles PTX for its GPU, and the engine picks the newest module not newer
/// than the GPU: src/model/cuda_ops/launch.rs). candle's kernels are built by
/// third_party/candle-kernels, for the capabilities in $CUDA_COMPUTE_CAP or all it supports.
fn build_ptx() {
    println!("cargo:rerun-if-changed=kernels/decode.cu");
    println!("cargo:rerun-if-env-changed=NVCC");
    let nvcc = std::env::var("NVCC").ok().or_else(|| {
        std::env::var("CUDA_HOME").ok().map(|h| format!("{h}/bin/nvcc")).filter(|p| Path::new(p).exists())
    });
    let nvcc = nvcc.unwrap_or_else(|| "nvcc".to_string());
    let out_dir = std::env::var("OUT_DIR").expect("OUT_DIR");
    // decode_sm90.ptx has programmatic dependent launch compiled in (griddepcontrol needs compute_90).
    let builds = [("decode_sm75.ptx", "75", &[][..]), ("decode_sm80.ptx", "80", &[][..]), ("decode_sm90.ptx", "90", &["-DTOKBENCH_PDL"][..])];
    std::thread::scope(|scope| {
        let jobs: Vec<_> = builds
            .iter()
            .map(|(file, arch, defines)| {
                let out = Path::new(&out_dir).join(file);
                let nvcc = &nvcc;
                scope.spawn(move || {
                    let status = Command::new(nvcc)
                        .args(["--ptx", "-O3", "-std=c++17"])
                        .arg(format!("-arch=compute_{arch}"))
                        .args(*defines)
                        .arg("kernels/decode.cu")
                        .arg("-o")
                        .arg(&out)
                        .status()
                        .unwrap_or_else(|e| panic!("cannot run nvcc ({nvcc}): {e}. Install the CUDA toolkit or set NVCC (see docs/cuda.md)"));
                    assert!(status.success(), "nvcc failed on kernels/decode.cu for compute_{arch} ({status})");
                })
            })
            .collect();
        for job in jobs {
            job.join().expect("nvcc thread");
        }
    });
}
