//! Records the git commit the worker was built from (TOKBENCH_GIT_COMMIT, read with
//! option_env! into every report's environment). Absent when not built from a git checkout.

use std::path::Path;
use std::process::Command;

fn main() {
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
