//! `tokbench artifact list|get`: the files a run left on the coordinator (Nsight Systems
//! `.nsys-rep` profiles of `tokbench sweep --profile`), listed or downloaded with their size
//! and SHA-256 checked.

use crate::args::{ArtifactCmd, ArtifactGetArgs};
use crate::client::Conn;
use crate::error::{CliError, CliResult};
use crate::output::{time_ms, Ui};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use tokbench_proto::v1::*;
use tonic::Code;

pub async fn run(conn: &mut Conn, cmd: &ArtifactCmd, ui: &Ui) -> CliResult<u8> {
    match cmd {
        ArtifactCmd::List(a) => list(conn, &a.run, ui).await,
        ArtifactCmd::Get(a) => get(conn, a, ui).await,
    }
}

pub fn not_profiled_message(run_id: &str) -> String {
    format!("run {run_id} has no artifacts: it was not profiled. Profile a sweep with `tokbench sweep --profile` (needs a worker with nsys)")
}

pub fn artifact_json(a: &Artifact) -> serde_json::Value {
    json!({
        "artifact_id": a.artifact_id,
        "run_id": a.run_id,
        "job_id": a.job_id,
        "kind": a.kind,
        "file_name": a.file_name,
        "size_bytes": a.size_bytes,
        "sha256": a.sha256,
        "created_at_ms": a.created_at_ms,
    })
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut unit = "B";
    for u in UNITS {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    format!("{v:.1} {unit}")
}

/// The run (exit 2 when unknown) and its artifacts.
async fn artifacts_of_run(conn: &mut Conn, run_id: &str) -> CliResult<Vec<Artifact>> {
    conn.client.get_run(GetRunRequest { run_id: run_id.to_string() }).await.map_err(|s| conn.status_error(s, &format!("run \"{run_id}\"")))?;
    Ok(conn
        .client
        .list_artifacts(ListArtifactsRequest { run_id: run_id.to_string(), job_id: String::new() })
        .await
        .map_err(|s| conn.status_error(s, &format!("artifacts of run \"{run_id}\"")))?
        .into_inner()
        .artifacts)
}

async fn list(conn: &mut Conn, run_id: &str, ui: &Ui) -> CliResult<u8> {
    let arts = artifacts_of_run(conn, run_id).await?;
    if ui.json {
        ui.print_json(&json!({"run_id": run_id, "artifacts": arts.iter().map(artifact_json).collect::<Vec<_>>()}));
        return Ok(0);
    }
    if arts.is_empty() {
        println!("{}", not_profiled_message(run_id));
        return Ok(0);
    }
    let mut t = ui.table(&["Artifact", "Kind", "File", "Size", "SHA-256", "Created"]);
    for a in &arts {
        t.add_row(vec![a.artifact_id.clone(), a.kind.clone(), a.file_name.clone(), human_bytes(a.size_bytes), a.sha256.clone(), time_ms(a.created_at_ms)]);
    }
    println!("{t}");
    println!("download with `tokbench artifact get {run_id} --out DIR`");
    Ok(0)
}

/// A file name safe to join to the output directory (the coordinator already refuses paths).
fn safe_file_name(a: &Artifact) -> String {
    let name = Path::new(&a.file_name).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if name.is_empty() || name == "." || name == ".." {
        format!("{}.{}", a.artifact_id, a.kind)
    } else {
        name
    }
}

/// Downloads one artifact into `out`, checking size and SHA-256; returns (metadata, path).
pub async fn download(conn: &mut Conn, artifact_id: &str, out: &Path) -> CliResult<(Artifact, PathBuf)> {
    let mut stream = conn
        .client
        .download_artifact(DownloadArtifactRequest { artifact_id: artifact_id.to_string() })
        .await
        .map_err(|s| conn.status_error(s, &format!("artifact \"{artifact_id}\"")))?
        .into_inner();
    let first = stream.message().await.map_err(|s| conn.status_error(s, &format!("artifact \"{artifact_id}\"")))?;
    let first = first.ok_or_else(|| CliError::Failure(format!("artifact {artifact_id}: the coordinator sent nothing")))?;
    let meta = first.artifact.clone().ok_or_else(|| CliError::Failure(format!("artifact {artifact_id}: the first chunk carries no metadata")))?;
    std::fs::create_dir_all(out).map_err(|e| CliError::Failure(format!("cannot create {}: {e}. Pass a writable --out", out.display())))?;
    let path = out.join(safe_file_name(&meta));
    let part = out.join(format!(".{}.part", safe_file_name(&meta)));
    let io_err = |p: &Path, e: std::io::Error| CliError::Failure(format!("cannot write {}: {e}. Pass a writable --out", p.display()));
    let mut file = std::fs::File::create(&part).map_err(|e| io_err(&part, e))?;
    let mut hasher = Sha256::new();
    let mut size: u64 = 0;
    let mut chunk = Some(first);
    let result: CliResult = async {
        while let Some(c) = chunk.take() {
            hasher.update(&c.data);
            size += c.data.len() as u64;
            file.write_all(&c.data).map_err(|e| io_err(&part, e))?;
            chunk = stream.message().await.map_err(|s| conn.status_error(s, &format!("downloading artifact \"{artifact_id}\"")))?;
        }
        file.sync_all().map_err(|e| io_err(&part, e))?;
        let sha = format!("{:x}", hasher.finalize_reset());
        if size != meta.size_bytes {
            return Err(CliError::Failure(format!("artifact {artifact_id}: received {size} bytes, the coordinator recorded {}; try again", meta.size_bytes)));
        }
        if !meta.sha256.is_empty() && !sha.eq_ignore_ascii_case(&meta.sha256) {
            return Err(CliError::Failure(format!("artifact {artifact_id}: SHA-256 mismatch (got {sha}, recorded {}); the download is corrupt, try again", meta.sha256)));
        }
        std::fs::rename(&part, &path).map_err(|e| io_err(&path, e))
    }
    .await;
    if let Err(e) = result {
        let _ = std::fs::remove_file(&part);
        return Err(e);
    }
    Ok((meta, path))
}

async fn get(conn: &mut Conn, a: &ArtifactGetArgs, ui: &Ui) -> CliResult<u8> {
    // The id names a run, or (with no second argument) may be an artifact id itself.
    let ids: Vec<String> = match conn.client.get_run(GetRunRequest { run_id: a.run.clone() }).await {
        Ok(_) => {
            let arts = artifacts_of_run(conn, &a.run).await?;
            if arts.is_empty() {
                return Err(CliError::Usage(not_profiled_message(&a.run)));
            }
            match &a.artifact {
                Some(id) => {
                    if !arts.iter().any(|x| &x.artifact_id == id) {
                        return Err(CliError::Usage(format!(
                            "run {} has no artifact \"{id}\"; its artifacts are {}. See `tokbench artifact list {}`",
                            a.run,
                            arts.iter().map(|x| x.artifact_id.as_str()).collect::<Vec<_>>().join(", "),
                            a.run
                        )));
                    }
                    vec![id.clone()]
                }
                None => arts.iter().map(|x| x.artifact_id.clone()).collect(),
            }
        }
        Err(s) if s.code() == Code::NotFound && a.artifact.is_none() => vec![a.run.clone()],
        Err(s) => return Err(conn.status_error(s, &format!("run \"{}\"", a.run))),
    };
    let single_unknown = a.artifact.is_none() && ids.len() == 1 && ids[0] == a.run;
    let mut done = Vec::new();
    for id in &ids {
        let r = download(conn, id, &a.out).await;
        let (meta, path) = match r {
            Err(CliError::Usage(_)) if single_unknown => {
                return Err(CliError::Usage(format!(
                    "no run or artifact with id \"{}\" on {}. List runs with `tokbench runs`, artifacts with `tokbench artifact list RUN`",
                    a.run, conn.url
                )))
            }
            other => other?,
        };
        if !ui.json {
            println!("{}  ({}, {}, sha256 ok)", path.display(), meta.kind, human_bytes(meta.size_bytes));
        }
        done.push((meta, path));
    }
    if ui.json {
        let files: Vec<serde_json::Value> = done
            .iter()
            .map(|(m, p)| {
                let mut v = artifact_json(m);
                v["path"] = json!(p);
                v
            })
            .collect();
        ui.print_json(&json!({"files": files}));
    } else if done.iter().any(|(m, p)| m.kind == "nsys-rep" || p.extension().is_some_and(|e| e == "nsys-rep")) {
        println!("open it with nsys-ui (Nsight Systems), or summarise it with `nsys stats FILE`");
    }
    Ok(0)
}
