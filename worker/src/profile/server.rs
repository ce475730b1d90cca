//! tokbench's OpenAI-compatible server (`tokbench-worker serve-openai`) under `nsys profile`,
//! for a serve job with `--profile`: the load generator drives it like the in-process server,
//! and the capture covers the server process through the whole load level.
//!
//! The server runs in a child process for the same reason offline profiles do (nsys profiles a
//! process it launches). The capture ends by SIGINT to the server alone: it shuts down
//! gracefully and exits 0, and nsys, seeing its application end, writes the report as after any
//! run. (A signal to nsys itself would end the session too, but what nsys then does with the
//! application is version-dependent.)

use std::ffi::OsString;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tokbench_core::{BenchReport, Workload};

use super::nsys::resolve_nsys;
use super::run::{check_nsys_rep, describe, CapturePaths, ld_library_path, nsys_profile_args, summarise_into, tail_of, terminate_group, RemoveOnDrop};
use super::{io_err, ProfileConfig, ProfileError, ProfiledRun};

/// How long the capture may take to end once the server is asked to stop (nsys writes the
/// report then: seconds for a short run, minutes for a long one with graph nodes traced).
const FINISH_TIMEOUT: Duration = Duration::from_secs(600);

/// What the server printed while starting.
enum Started {
    /// `process id N`: the server itself (nsys's child), which the capture's end signals.
    Pid(i32),
    /// `listening on URL`: it serves.
    Listening(String),
    /// Any other line (`serving MODEL (DEVICE) as NAME, weights ...`, the KV capacity).
    Banner(String),
}

/// A `serve-openai` child under nsys, listening on 127.0.0.1.
pub struct ProfiledServer {
    /// nsys, leader of its own process group (so a cancel reaches the server too).
    child: Option<Child>,
    /// The server's base URL (`http://127.0.0.1:PORT`).
    pub url: String,
    /// The lines the server printed before listening (model, device, weights, KV capacity).
    pub banner: Vec<String>,
    server_pid: Option<i32>,
    nsys: PathBuf,
    cfg: ProfileConfig,
    name: String,
    file_name: String,
    rep: PathBuf,
    qdstrm: PathBuf,
    tmp: PathBuf,
    log: PathBuf,
    command: String,
    job_id: String,
}

impl ProfiledServer {
    /// Starts `nsys profile ... tokbench-worker serve-openai --listen 127.0.0.1:0 SERVER_ARGS`
    /// and waits until the server listens (after loading the model, and a download, however
    /// long: `cancel` stops the wait), or fails with the server's last output. Blocking.
    pub fn start(server_args: &[OsString], workload: &Workload, job_id: &str, cfg: &ProfileConfig, cancel: &AtomicBool) -> Result<ProfiledServer, ProfileError> {
        let nsys = resolve_nsys(&cfg.nsys_path)?;
        let CapturePaths { name, prefix, file_name, rep, qdstrm, tmp } = CapturePaths::prepare(workload, job_id, cfg)?;
        let log = tmp.join("profile.log");

        let mut args = nsys_profile_args(&prefix);
        args.push(cfg.worker_exe.clone().into_os_string());
        for a in ["serve-openai", "--listen", "127.0.0.1:0"] {
            args.push(a.into());
        }
        args.extend(server_args.iter().cloned());
        let command = std::iter::once(nsys.as_os_str()).chain(args.iter().map(|a| a.as_os_str())).map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" ");

        let log_file = fs::File::create(&log).map_err(io_err(&log))?;
        let err_file = log_file.try_clone().map_err(io_err(&log))?;
        let mut cmd = Command::new(&nsys);
        cmd.args(&args).current_dir(&cfg.work_dir).env("NO_COLOR", "1").stdin(Stdio::null()).stdout(Stdio::piped()).stderr(err_file);
        if let Some(dir) = &cfg.extra_ld_library_path {
            cmd.env("LD_LIBRARY_PATH", ld_library_path(dir));
        }
        #[cfg(unix)]
        {
            use std::os::unix::process::CommandExt;
            cmd.process_group(0);
        }
        tracing::info!(job = job_id, command = %command, "serving the job's model under nsys");
        let mut child = cmd.spawn().map_err(|source| ProfileError::Spawn { what: "nsys profile (the server)".into(), source })?;

        // The server's stdout goes to the log line by line; what it says while starting comes here.
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = mpsc::channel::<Started>();
        std::thread::spawn(move || {
            let mut log_file = log_file;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(log_file, "{line}");
                let started = if let Some(url) = line.strip_prefix("listening on ") {
                    Started::Listening(url.trim().to_string())
                } else if let Some(pid) = line.strip_prefix("process id ").and_then(|p| p.trim().parse().ok()) {
                    Started::Pid(pid)
                } else {
                    Started::Banner(line)
                };
                // The receiver is gone once the server listens; keep draining the pipe.
                let _ = tx.send(started);
            }
        });

        let mut server = ProfiledServer {
            child: Some(child),
            url: String::new(),
            banner: Vec::new(),
            server_pid: None,
            nsys,
            cfg: cfg.clone(),
            name,
            file_name,
            rep,
            qdstrm,
            tmp,
            log,
            command,
            job_id: job_id.to_string(),
        };
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(Started::Listening(url)) => {
                    server.url = url;
                    return Ok(server);
                }
                Ok(Started::Pid(pid)) => server.server_pid = Some(pid),
                Ok(Started::Banner(line)) => {
                    // nsys's own lines ("Collecting data...") are not the server's.
                    if !line.trim().is_empty() && !line.starts_with("Collecting data") {
                        server.banner.push(line);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) | Err(mpsc::RecvTimeoutError::Disconnected) => {}
            }
            let child = server.child.as_mut().expect("running");
            if let Some(status) = child.try_wait().map_err(io_err(&server.log))? {
                server.child = None;
                // Let the reader thread write the last lines.
                std::thread::sleep(Duration::from_millis(100));
                return Err(ProfileError::BenchFailed { status: describe(&status), code: status.code(), command: server.command.clone(), tail: tail_of(&server.log) });
            }
            if cancel.load(Ordering::Relaxed) {
                server.abort();
                return Err(ProfileError::Cancelled);
            }
        }
    }

    /// Ends the capture (SIGINT to the server; nsys then writes the report), runs `nsys stats`
    /// and fills `report.nsight_metrics` with the summary over the server process. The
    /// `.nsys-rep` stays in the work directory for the caller to upload. Blocking.
    pub fn finish(mut self, mut report: BenchReport, cancel: &AtomicBool) -> Result<ProfiledRun, ProfileError> {
        let _scratch = RemoveOnDrop(self.tmp.clone());
        let mut child = self.child.take().expect("running");
        stop_server(&child, self.server_pid);
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().map_err(io_err(&self.log))? {
                break status;
            }
            if cancel.load(Ordering::Relaxed) {
                terminate_group(&mut child);
                return Err(ProfileError::Cancelled);
            }
            if started.elapsed() > FINISH_TIMEOUT {
                terminate_group(&mut child);
                return Err(ProfileError::BenchFailed {
                    status: format!("nsys had not finished {} s after the server was stopped", FINISH_TIMEOUT.as_secs()),
                    code: None,
                    command: self.command.clone(),
                    tail: tail_of(&self.log),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        tracing::info!(job = %self.job_id, status = %describe(&status), seconds = started.elapsed().as_secs_f64(), "the profiled server stopped");
        // The report is what matters: nsys's exit code after an interrupted application varies.
        check_nsys_rep(&self.rep, &self.qdstrm, &self.log)?;
        let load_seconds = report.serve.as_ref().map(|s| s.elapsed_s).unwrap_or(0.0);
        summarise_into(&self.nsys, &self.cfg, &self.name, &self.file_name, &self.rep, &self.tmp, &self.job_id, cancel, &mut report, load_seconds)?;
        Ok(ProfiledRun { report, nsys_rep: self.rep.clone(), file_name: self.file_name.clone() })
    }

    /// Stops nsys and the server at once (the job failed or was cancelled); no report.
    pub fn abort(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate_group(&mut child);
        }
        let _ = fs::remove_dir_all(&self.tmp);
    }

    /// Where the capture and its log go.
    pub fn work_dir(&self) -> &Path {
        &self.cfg.work_dir
    }
}

impl Drop for ProfiledServer {
    fn drop(&mut self) {
        self.abort();
    }
}

/// SIGINT to the server process (its graceful shutdown), or to the whole group when the server
/// never said its process id.
fn stop_server(nsys: &Child, server_pid: Option<i32>) {
    #[cfg(unix)]
    {
        use nix::sys::signal::{kill, killpg, Signal};
        use nix::unistd::Pid;
        match server_pid {
            Some(pid) => {
                let _ = kill(Pid::from_raw(pid), Signal::SIGINT);
            }
            None => {
                let _ = killpg(Pid::from_raw(nsys.id() as i32), Signal::SIGINT);
            }
        }
    }
}
