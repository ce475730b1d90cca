//! Finding the nsys executable: the path the worker was given (`--nsys`), else `nsys` on
//! `PATH`, else the folders Nsight Systems, the CUDA toolkit and Nsight Compute install it in
//! ([`NSYS_INSTALL_GLOBS`], newest version first). Setting it up: docs/profiling.md.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};

use super::ProfileError;

/// Where nsys is installed when it is not on PATH, tried in this order; within one pattern the
/// newest version (by the numbers in the folder names `*` matched) comes first.
pub const NSYS_INSTALL_GLOBS: &[&str] = &[
    // Nsight Systems (full and CLI-only packages).
    "/opt/nvidia/nsight-systems/*/bin/nsys",
    "/opt/nvidia/nsight-systems/*/target-linux-x64/nsys",
    "/opt/nvidia/nsight-systems-cli/*/bin/nsys",
    "/opt/nvidia/nsight-systems-cli/*/target-linux-x64/nsys",
    // The CUDA toolkit's bundled copies.
    "/usr/local/cuda*/bin/nsys",
    "/usr/local/cuda*/nsight-systems-*/bin/nsys",
    // Nsight Compute's bundled copy.
    "/opt/nvidia/nsight-compute/*/host/target-linux-x64/nsys",
    // Distribution packages.
    "/usr/lib/nsight-systems/bin/nsys",
    "/usr/lib/x86_64-linux-gnu/nsight-systems/bin/nsys",
];

/// The nsys to use: `explicit` when given (a path, or a bare name looked up on PATH; it must
/// exist, there is no fallback), else `nsys` on `PATH`, else the first of
/// [`NSYS_INSTALL_GLOBS`] that exists.
pub fn find_nsys(explicit: Option<&Path>) -> Result<PathBuf, ProfileError> {
    find_nsys_in(explicit, std::env::var_os("PATH").as_deref(), Path::new("/"))
}

/// [`find_nsys`] with the `PATH` value and the root the install folders are looked for under
/// given (tests use a temporary tree).
pub fn find_nsys_in(explicit: Option<&Path>, path_var: Option<&OsStr>, root: &Path) -> Result<PathBuf, ProfileError> {
    if let Some(p) = explicit {
        return resolve_in(p, path_var);
    }
    if let Ok(p) = resolve_in(Path::new("nsys"), path_var) {
        return Ok(p);
    }
    NSYS_INSTALL_GLOBS
        .iter()
        .flat_map(|pattern| glob_newest_first(root, pattern))
        .find(|p| executable(p).is_ok())
        .ok_or(ProfileError::NsysNotInstalled)
}

/// Resolves the configured nsys to an existing executable file.
pub(super) fn resolve_nsys(path: &Path) -> Result<PathBuf, ProfileError> {
    resolve_in(path, std::env::var_os("PATH").as_deref())
}

fn resolve_in(path: &Path, path_var: Option<&OsStr>) -> Result<PathBuf, ProfileError> {
    let not_found = |detail: String| ProfileError::NsysNotFound { path: path.to_path_buf(), detail };
    let candidate = if path.components().count() == 1 && !path.as_os_str().is_empty() && !path.is_file() {
        // A bare name ("nsys"): look it up on PATH like a shell would.
        std::env::split_paths(path_var.unwrap_or_default())
            .map(|d| d.join(path))
            .find(|p| p.is_file())
            .ok_or_else(|| not_found("not found on PATH".into()))?
    } else {
        path.to_path_buf()
    };
    executable(&candidate).map_err(not_found)?;
    Ok(candidate)
}

/// Ok when `path` is an executable file, else why not.
fn executable(path: &Path) -> Result<(), String> {
    let meta = fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a file".into());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o111 == 0 {
            return Err("the file is not executable".into());
        }
    }
    Ok(())
}

/// The paths under `root` matching `pattern` (an absolute path whose components may hold `*`,
/// matching any run of characters within one component), the highest version first: paths are
/// compared by the numbers in the parts the `*`s matched (`2025.3.1` > `2024.6.2` >
/// `cuda` with none).
fn glob_newest_first(root: &Path, pattern: &str) -> Vec<PathBuf> {
    // (path so far, numbers of the parts matched so far)
    let mut found: Vec<(PathBuf, Vec<u64>)> = vec![(root.to_path_buf(), Vec::new())];
    for component in pattern.split('/').filter(|c| !c.is_empty()) {
        let mut next = Vec::new();
        for (dir, version) in found {
            if !component.contains('*') {
                let p = dir.join(component);
                if p.exists() {
                    next.push((p, version));
                }
                continue;
            }
            let Ok(entries) = fs::read_dir(&dir) else { continue };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                if wildcard_match(component, name) {
                    let mut v = version.clone();
                    v.extend(numbers(name));
                    next.push((dir.join(name), v));
                }
            }
        }
        found = next;
    }
    found.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    found.into_iter().map(|(p, _)| p).collect()
}

/// Whether `name` matches `pattern`, where `*` matches any run of characters.
fn wildcard_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if parts.len() == 1 {
        return pattern == name;
    }
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

/// The runs of digits in `s`, in order (`nsight-systems-2024.5.1` -> [2024, 5, 1]).
fn numbers(s: &str) -> Vec<u64> {
    s.split(|c: char| !c.is_ascii_digit()).filter(|p| !p.is_empty()).filter_map(|p| p.parse().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_within_a_component() {
        assert!(wildcard_match("cuda*", "cuda"));
        assert!(wildcard_match("cuda*", "cuda-12.4"));
        assert!(!wildcard_match("cuda*", "cudnn"));
        assert!(wildcard_match("nsight-systems-*", "nsight-systems-2024.5.1"));
        assert!(!wildcard_match("nsight-systems-*", "nsight-compute-2024.5.1"));
        assert!(wildcard_match("*", "2025.3.1"));
        assert!(wildcard_match("a*b*c", "aXbYc"));
        assert!(!wildcard_match("a*b*c", "aXc"));
        assert_eq!(numbers("cuda-12.4"), vec![12, 4]);
        assert!(numbers("cuda").is_empty());
    }
}
