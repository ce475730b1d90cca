//! Sweeps: submit, read, list, cancel, and marking one finished when its last job is.

use sqlx::sqlite::SqliteConnection;
use sqlx::Row;

use super::attempts::{end_open_attempts, AttemptOutcome};
use super::rows::{Changes, JobRow, SweepRow};
use super::states::{JobState, SweepState};
use super::{job_by_id, jobs_of_sweep, now_ms, Result, Store, StoreError};
use crate::validate::ValidSweep;

impl Store {
    pub async fn submit_sweep(&self, sweep: &ValidSweep, max_attempts: u32) -> Result<(SweepRow, Vec<JobRow>)> {
        let sweep = sweep.clone();
        self.write(move |c| {
            Box::pin(async move {
                let now = now_ms();
                let sweep_id = uuid::Uuid::new_v4().to_string();
                let spec_json = serde_json::to_string(&sweep.spec).expect("spec serialises");
                sqlx::query("INSERT INTO sweeps (id, spec_json, label, state, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)")
                    .bind(&sweep_id)
                    .bind(&spec_json)
                    .bind(&sweep.spec.label)
                    .bind(SweepState::Running)
                    .bind(now)
                    .bind(now)
                    .execute(&mut *c)
                    .await?;
                for (seq, job) in sweep.jobs.iter().enumerate() {
                    let workload_json = serde_json::to_string(&job.workload).expect("workload serialises");
                    sqlx::query(
                        "INSERT INTO jobs (id, sweep_id, seq, model, batch_size, workload_json, backend, est_parameters, dtype_bytes, profile, state, attempts, max_attempts, queued_at, created_at, updated_at)
                         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?)",
                    )
                    .bind(uuid::Uuid::new_v4().to_string())
                    .bind(&sweep_id)
                    .bind(seq as i64)
                    .bind(&job.model)
                    .bind(job.batch_size as i64)
                    .bind(&workload_json)
                    .bind(&sweep.backend)
                    .bind(job.est_parameters as i64)
                    .bind(job.dtype_bytes as i64)
                    .bind(sweep.profile)
                    .bind(JobState::Queued)
                    .bind(max_attempts as i64)
                    .bind(now)
                    .bind(now)
                    .bind(now)
                    .execute(&mut *c)
                    .await?;
                }
                let jobs = jobs_of_sweep(&mut *c, &sweep_id).await?;
                let row = sqlx::query_as::<_, SweepRow>("SELECT * FROM sweeps WHERE id = ?").bind(&sweep_id).fetch_one(&mut *c).await?;
                Ok((row, jobs))
            })
        })
        .await
    }

    /// `id` may be "latest".
    pub async fn get_sweep(&self, id: &str) -> Result<(SweepRow, Vec<JobRow>)> {
        let mut conn = self.reader.acquire().await?;
        let row = if id == "latest" {
            sqlx::query_as::<_, SweepRow>("SELECT * FROM sweeps ORDER BY created_at DESC, rowid DESC LIMIT 1")
                .fetch_optional(&mut *conn)
                .await?
                .ok_or_else(|| StoreError::NotFound("there are no sweeps yet: submit one first".into()))?
        } else {
            sqlx::query_as::<_, SweepRow>("SELECT * FROM sweeps WHERE id = ?")
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("no sweep with id \"{id}\"; list sweeps to see the ids (or use \"latest\")")))?
        };
        let jobs = jobs_of_sweep(&mut *conn, &row.id).await?;
        Ok((row, jobs))
    }

    pub async fn resolve_sweep_id(&self, id: &str) -> Result<String> {
        Ok(self.get_sweep_row(id).await?.id)
    }

    async fn get_sweep_row(&self, id: &str) -> Result<SweepRow> {
        let q = if id == "latest" { "SELECT * FROM sweeps ORDER BY created_at DESC, rowid DESC LIMIT 1" } else { "SELECT * FROM sweeps WHERE id = ?" };
        sqlx::query_as::<_, SweepRow>(q).bind(id).fetch_optional(&self.reader).await?.ok_or_else(|| {
            if id == "latest" {
                StoreError::NotFound("there are no sweeps yet: submit one first".into())
            } else {
                StoreError::NotFound(format!("no sweep with id \"{id}\"; list sweeps to see the ids (or use \"latest\")"))
            }
        })
    }

    pub async fn list_sweeps(&self, limit: u32) -> Result<Vec<(SweepRow, Vec<JobRow>)>> {
        let limit = if limit == 0 { 100 } else { limit.min(10_000) } as i64;
        let rows = sqlx::query_as::<_, SweepRow>("SELECT * FROM sweeps ORDER BY created_at DESC, rowid DESC LIMIT ?").bind(limit).fetch_all(&self.reader).await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let jobs = jobs_of_sweep(&self.reader, &r.id).await?;
            out.push((r, jobs));
        }
        Ok(out)
    }

    pub async fn cancel_sweep(&self, id: &str) -> Result<(SweepRow, Changes)> {
        let sweep_id = self.resolve_sweep_id(id).await?;
        self.write(move |c| {
            Box::pin(async move {
                let now = now_ms();
                let ids: Vec<String> = sqlx::query_scalar(
                    "UPDATE jobs SET state = 'cancelled', lease_expires_at = NULL, last_error = 'cancelled by the user', updated_at = ?
                     WHERE sweep_id = ? AND state IN ('queued', 'leased', 'running') RETURNING id",
                )
                .bind(now)
                .bind(&sweep_id)
                .fetch_all(&mut *c)
                .await?;
                let mut changes = Changes::default();
                let was_running: Option<String> = sqlx::query_scalar("UPDATE sweeps SET state = 'cancelled', updated_at = ? WHERE id = ? AND state = 'running' RETURNING id")
                    .bind(now)
                    .bind(&sweep_id)
                    .fetch_optional(&mut *c)
                    .await?;
                for id in &ids {
                    end_open_attempts(c, id, AttemptOutcome::Cancelled, now).await?;
                    changes.jobs.push(job_by_id(&mut *c, id).await?);
                }
                if was_running.is_some() {
                    changes.sweeps_done.push((sweep_id.clone(), SweepState::Cancelled));
                }
                let row = sqlx::query_as::<_, SweepRow>("SELECT * FROM sweeps WHERE id = ?").bind(&sweep_id).fetch_one(&mut *c).await?;
                Ok((row, changes))
            })
        })
        .await
    }
}

/// Marks the sweep final when none of its jobs is active any more.
pub(super) async fn finish_sweep_if_done(c: &mut SqliteConnection, sweep_id: &str, now: i64, changes: &mut Changes) -> Result<()> {
    // Index jobs_by_sweep_state: looks at the sweep's active jobs only.
    let active: Option<i64> =
        sqlx::query_scalar("SELECT 1 FROM jobs WHERE sweep_id = ? AND state IN ('queued', 'leased', 'running') LIMIT 1").bind(sweep_id).fetch_optional(&mut *c).await?;
    if active.is_some() {
        return Ok(());
    }
    let row = sqlx::query("SELECT COALESCE(SUM(state = 'failed'), 0) AS failed, COALESCE(SUM(state = 'cancelled'), 0) AS cancelled FROM jobs WHERE sweep_id = ?")
        .bind(sweep_id)
        .fetch_one(&mut *c)
        .await?;
    let failed: i64 = row.get("failed");
    let cancelled: i64 = row.get("cancelled");
    let state = if failed > 0 {
        SweepState::Failed
    } else if cancelled > 0 {
        SweepState::Cancelled
    } else {
        SweepState::Succeeded
    };
    let updated = sqlx::query("UPDATE sweeps SET state = ?, updated_at = ? WHERE id = ? AND state = 'running'").bind(state).bind(now).bind(sweep_id).execute(&mut *c).await?;
    if updated.rows_affected() > 0 {
        changes.sweeps_done.push((sweep_id.to_string(), state));
    }
    Ok(())
}
