//! Workers: registration, liveness, and the backend each one runs.

use super::rows::WorkerRow;
use super::{now_ms, Result, Store, StoreError};

impl Store {
    pub async fn register_worker(&self, id: &str, capabilities_json: &str, hostname: &str, backend: &str) -> Result<()> {
        let (w, caps, host, b) = (id.to_string(), capabilities_json.to_string(), hostname.to_string(), backend.to_string());
        self.write(move |c| {
            Box::pin(async move {
                let now = now_ms();
                sqlx::query(
                    "INSERT INTO workers (id, capabilities_json, hostname, backend, registered_at, last_seen, current_job_id) VALUES (?, ?, ?, ?, ?, ?, NULL)
                     ON CONFLICT (id) DO UPDATE SET capabilities_json = excluded.capabilities_json, hostname = excluded.hostname, backend = excluded.backend, last_seen = excluded.last_seen",
                )
                .bind(&w)
                .bind(&caps)
                .bind(&host)
                .bind(&b)
                .bind(now)
                .bind(now)
                .execute(&mut *c)
                .await?;
                Ok(())
            })
        })
        .await?;
        self.backends.write().expect("backends lock").insert(id.to_string(), backend.to_string());
        Ok(())
    }

    pub(super) fn cached_backend(&self, id: &str) -> Option<String> {
        self.backends.read().expect("backends lock").get(id).cloned()
    }

    /// The backend of a registered worker ("cpu" / "cuda").
    pub async fn worker_backend(&self, id: &str) -> Result<String> {
        if let Some(b) = self.cached_backend(id) {
            return Ok(b);
        }
        let b = sqlx::query_scalar::<_, String>("SELECT backend FROM workers WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.reader)
            .await?
            .ok_or_else(|| StoreError::WorkerNotRegistered { worker_id: id.to_string() })?;
        self.backends.write().expect("backends lock").insert(id.to_string(), b.clone());
        Ok(b)
    }

    /// A worker waiting in LeaseJob is alive and runs no job.
    pub async fn touch_worker(&self, id: &str) -> Result<()> {
        let w = id.to_string();
        self.write(move |c| {
            Box::pin(async move {
                sqlx::query("UPDATE workers SET last_seen = ?, current_job_id = NULL WHERE id = ?").bind(now_ms()).bind(&w).execute(&mut *c).await?;
                Ok(())
            })
        })
        .await
    }

    pub async fn list_workers(&self) -> Result<Vec<WorkerRow>> {
        Ok(sqlx::query_as::<_, WorkerRow>("SELECT id, capabilities_json, last_seen, current_job_id FROM workers ORDER BY id").fetch_all(&self.reader).await?)
    }
}
