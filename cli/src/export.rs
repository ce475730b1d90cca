//! Per-run benchmark JSON files (`tokbench export`, and next to the charts of `sweep --local`).

use crate::error::{CliError, CliResult};
use crate::report::{self, RunRecord};
use std::path::{Path, PathBuf};
use tokbench_core::{BenchReport, Catalog};

/// `benchmark_<model file stem>_<YYYYmmdd_HHMMSS>.json`, the demo's name for a run's JSON.
pub fn export_file_name(r: &BenchReport) -> String {
    let stem = match Catalog::get(&r.model).or_else(|| Catalog::get(&r.model_id)) {
        Some(e) => e.file_stem(),
        None => {
            // A worker-local directory (`local:/models/x`, `./x`, `/models/x`): its last component;
            // a repo id (`owner/name`): both parts.
            let name = r.model.strip_prefix(tokbench_core::workload::LOCAL_MODEL_PREFIX);
            let p = Path::new(name.unwrap_or(&r.model));
            let stem = if name.is_some() || p.is_absolute() || r.model.starts_with('.') {
                p.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_else(|| r.model.clone())
            } else {
                r.model.replace('/', "_")
            };
            // Only characters every file system and shell takes as they are.
            stem.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect()
        }
    };
    let ts = chrono::DateTime::parse_from_rfc3339(&r.timestamp)
        .map(|t| t.with_timezone(&chrono::Local).format("%Y%m%d_%H%M%S").to_string())
        .unwrap_or_else(|_| report::now_timestamp());
    format!("benchmark_{stem}_{ts}.json")
}

pub fn export_records(records: &[RunRecord], out: &Path) -> CliResult<Vec<PathBuf>> {
    std::fs::create_dir_all(out).map_err(|e| CliError::Failure(format!("cannot create {}: {e}. Pass a writable --out", out.display())))?;
    let mut files = Vec::new();
    for rec in records {
        let mut name = export_file_name(&rec.report);
        // Two runs of one model in the same second (batch sizes of one sweep): keep both.
        if files.iter().any(|f: &PathBuf| f.file_name().is_some_and(|n| n.to_string_lossy() == name)) || out.join(&name).exists() {
            name = format!("{}_bs{}_{}.json", name.trim_end_matches(".json"), rec.report.workload.batch_size, report::short_id(&rec.run_id));
        }
        let path = out.join(name);
        let text = serde_json::to_string_pretty(&rec.report).map_err(|e| CliError::Failure(format!("run {}: {e}", rec.run_id)))?;
        std::fs::write(&path, text).map_err(|e| CliError::Failure(format!("cannot write {}: {e}. Pass a writable --out", path.display())))?;
        files.push(path);
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::export_file_name;
    use crate::fixtures::{report, Dev};

    /// Export names keep the demo's `benchmark_<stem>_<time>.json` form, with a stem every file
    /// system takes: a catalog model's file stem, a directory's last component (also behind the
    /// `local:` prefix), a repo id's two parts.
    #[test]
    fn export_names_are_plain_file_names() {
        let mut r = report("gpt2", 1, Dev::Cpu, 100.0);
        let stem = |r: &tokbench_core::report::BenchReport| {
            let name = export_file_name(r);
            assert!(name.starts_with("benchmark_") && name.ends_with(".json"), "{name}");
            name.trim_start_matches("benchmark_").rsplitn(3, '_').nth(2).unwrap().to_string()
        };
        assert_eq!(stem(&r), "gpt2");
        for (model, want) in [
            ("local:/tmp/work-serve/llama-3.2-1b", "llama-3.2-1b"),
            ("/models/my model", "my_model"),
            ("./ckpt:v2", "ckpt_v2"),
            ("someone/Some-Model", "someone_Some-Model"),
        ] {
            r.model = model.into();
            r.model_id = model.into();
            assert_eq!(stem(&r), want, "{model}");
        }
    }
}
