//! Following a sweep live over `WatchSweep`: one progress bar per job on a terminal (model,
//! batch size, worker, phase, tokens done/total, tokens/s), plain event lines otherwise.
//! Ctrl-C detaches without cancelling anything.

use crate::client::Conn;
use crate::error::{CliError, CliResult};
use crate::output::{job_state_name, phase_label, Ui};
use futures::StreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use tokbench_proto::v1::{EventKind, GetSweepRequest, Job, Sweep, SweepEvent, WatchSweepRequest};

pub enum WatchEnd {
    /// Every job is final; the sweep as it ended.
    Done(Sweep),
    /// The user pressed Ctrl-C.
    Detached,
}

struct Bars {
    multi: Option<MultiProgress>,
    bars: HashMap<String, ProgressBar>,
    quiet: bool,
}

impl Bars {
    fn new(ui: &Ui) -> Bars {
        // Bars only when a person is looking; the JSON and piped forms get lines on stderr.
        let multi = (ui.tty && !ui.json).then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Bars { multi, bars: HashMap::new(), quiet: ui.json }
    }

    fn prefix(job: &Job) -> String {
        format!("{} {}", job.model, crate::output::job_load(job))
    }

    fn line(&self, text: String) {
        if self.quiet {
            return;
        }
        match &self.multi {
            Some(m) => {
                let _ = m.println(text);
            }
            None => eprintln!("{text}"),
        }
    }

    fn bar(&mut self, job: &Job) -> Option<&ProgressBar> {
        let multi = self.multi.as_ref()?;
        if !self.bars.contains_key(&job.job_id) {
            let style = ProgressStyle::with_template("{prefix:<24!} [{bar:28}] {pos:>5}/{len:<5} {msg}")
                .expect("static template")
                .progress_chars("=> ");
            let pb = multi.add(ProgressBar::new(1).with_style(style).with_prefix(Self::prefix(job)));
            pb.set_message("queued");
            self.bars.insert(job.job_id.clone(), pb);
        }
        self.bars.get(&job.job_id)
    }

    fn update(&mut self, ev: &SweepEvent) {
        let Some(job) = ev.job.as_ref() else { return };
        let kind = EventKind::try_from(ev.kind).unwrap_or(EventKind::Unspecified);
        let prefix = Self::prefix(job);
        let worker = if job.worker_id.is_empty() { String::new() } else { format!("on {}", job.worker_id) };
        if let Some(pb) = self.bar(job) {
            if job.tokens_total > 0 {
                pb.set_length(job.tokens_total);
                pb.set_position(job.tokens_done.min(job.tokens_total));
            }
            match kind {
                EventKind::Finished => {
                    let tps = ev.run.as_ref().map(|r| r.tokens_per_second).unwrap_or(job.tokens_per_second);
                    pb.set_position(pb.length().unwrap_or(1));
                    pb.finish_with_message(format!("done {worker} · {tps:.1} tok/s"));
                }
                EventKind::Failed if job_state_name(job.state) == "failed" => pb.abandon_with_message(format!("FAILED: {}", ev.message)),
                EventKind::Failed => pb.set_message(format!("attempt failed, will retry: {}", ev.message)),
                EventKind::Cancelled => pb.abandon_with_message("cancelled"),
                _ => {
                    let phase = if job.phase.is_empty() { job_state_name(job.state).to_string() } else { phase_label(job) };
                    let unit = if job.request_rate != 0.0 { "req/s" } else { "tok/s" };
                    let tps = if job.tokens_per_second > 0.0 { format!(" · {:.1} {unit}", job.tokens_per_second) } else { String::new() };
                    let parts: Vec<String> = [worker.clone(), phase].into_iter().filter(|p| !p.is_empty()).collect();
                    pb.set_message(format!("{}{tps}", parts.join(" · ")));
                }
            }
            return;
        }
        // No bars: one line per state change (heartbeats are too many for a log).
        match kind {
            EventKind::Started => self.line(format!("{prefix}: started {worker}").trim_end().to_string()),
            EventKind::Finished => {
                let tps = ev.run.as_ref().map(|r| r.tokens_per_second).unwrap_or(job.tokens_per_second);
                self.line(format!("{prefix}: finished {worker}: {tps:.1} tok/s (run {})", job.run_id));
            }
            EventKind::Failed => self.line(format!("{prefix}: {} {worker}: {}", if job_state_name(job.state) == "failed" { "FAILED" } else { "attempt failed, will retry" }, ev.message)),
            EventKind::Cancelled => self.line(format!("{prefix}: cancelled")),
            _ => {}
        }
    }

    fn finish(&self) {
        for pb in self.bars.values() {
            if !pb.is_finished() {
                pb.abandon();
            }
        }
    }
}

/// Follows `sweep_id` until every job is final (or Ctrl-C). `on_ctrl_c` says what to print when
/// detaching (how to reattach and cancel).
pub async fn watch(conn: &mut Conn, sweep_id: &str, ui: &Ui, on_ctrl_c: &str) -> CliResult<WatchEnd> {
    let what = format!("sweep \"{sweep_id}\"");
    let mut stream = conn
        .client
        .watch_sweep(WatchSweepRequest { sweep_id: sweep_id.to_string() })
        .await
        .map_err(|s| conn.status_error(s, &what))?
        .into_inner();
    let mut bars = Bars::new(ui);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = &mut ctrl_c => {
                bars.finish();
                if !ui.json {
                    eprintln!("\n{on_ctrl_c}");
                }
                return Ok(WatchEnd::Detached);
            }
            ev = stream.next() => match ev {
                Some(Ok(ev)) => {
                    let done = ev.kind == EventKind::SweepDone as i32;
                    bars.update(&ev);
                    if done {
                        break;
                    }
                }
                Some(Err(status)) => {
                    bars.finish();
                    return Err(conn.status_error(status, &what));
                }
                None => break,
            }
        }
    }
    bars.finish();
    let sweep = conn
        .client
        .get_sweep(GetSweepRequest { sweep_id: sweep_id.to_string() })
        .await
        .map_err(|s| conn.status_error(s, &what))?
        .into_inner();
    if !sweep.jobs.iter().all(|j| crate::output::is_final(j.state)) {
        // The stream ended before the sweep did: the coordinator went away or closed it.
        return Err(CliError::Unreachable(format!(
            "the coordinator at {} closed the progress stream of sweep {sweep_id} before it finished; it keeps running there: reattach with `tokbench watch {sweep_id}`",
            conn.url
        )));
    }
    Ok(WatchEnd::Done(sweep))
}
