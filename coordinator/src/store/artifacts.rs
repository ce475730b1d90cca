//! Artifacts: files a worker uploaded for a job (e.g. an nsys report), and their rows.

use super::rows::{ArtifactRow, JobRow};
use super::{job_by_id_opt, now_ms, Result, Store, StoreError};

impl Store {
    pub async fn job_exists(&self, job_id: &str) -> Result<JobRow> {
        let mut conn = self.reader.acquire().await?;
        job_by_id_opt(&mut *conn, job_id).await?.ok_or_else(|| StoreError::NotFound(format!("no job with id \"{job_id}\"")))
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn insert_artifact(&self, id: &str, job_id: &str, attempt: u32, kind: &str, file_name: &str, path: &str, size: u64, sha256: &str) -> Result<ArtifactRow> {
        let (id, job_id, kind, file_name, path, sha256) = (id.to_string(), job_id.to_string(), kind.to_string(), file_name.to_string(), path.to_string(), sha256.to_string());
        self.write(move |c| {
            Box::pin(async move {
                let now = now_ms();
                let run_id: Option<String> = sqlx::query_scalar("SELECT id FROM runs WHERE job_id = ? AND attempt = ?").bind(&job_id).bind(attempt as i64).fetch_optional(&mut *c).await?;
                sqlx::query("INSERT INTO artifacts (id, job_id, run_id, attempt, kind, file_name, path, size_bytes, sha256, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
                    .bind(&id)
                    .bind(&job_id)
                    .bind(&run_id)
                    .bind(attempt as i64)
                    .bind(&kind)
                    .bind(&file_name)
                    .bind(&path)
                    .bind(size as i64)
                    .bind(&sha256)
                    .bind(now)
                    .execute(&mut *c)
                    .await?;
                Ok(sqlx::query_as::<_, ArtifactRow>("SELECT * FROM artifacts WHERE id = ?").bind(&id).fetch_one(&mut *c).await?)
            })
        })
        .await
    }

    /// Bytes of every stored artifact.
    pub async fn artifact_bytes_total(&self) -> Result<u64> {
        let total: i64 = sqlx::query_scalar("SELECT COALESCE(SUM(size_bytes), 0) FROM artifacts").fetch_one(&self.reader).await?;
        Ok(total.max(0) as u64)
    }

    pub async fn list_artifacts(&self, run_id: &str, job_id: &str) -> Result<Vec<ArtifactRow>> {
        Ok(sqlx::query_as::<_, ArtifactRow>("SELECT * FROM artifacts WHERE (?1 = '' OR run_id = ?1) AND (?2 = '' OR job_id = ?2) ORDER BY created_at, rowid")
            .bind(run_id)
            .bind(job_id)
            .fetch_all(&self.reader)
            .await?)
    }

    pub async fn get_artifact(&self, id: &str) -> Result<ArtifactRow> {
        sqlx::query_as::<_, ArtifactRow>("SELECT * FROM artifacts WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.reader)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no artifact with id \"{id}\"; list artifacts of a run to see the ids")))
    }

    pub async fn artifact_ids_of_run(&self, run_id: &str) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar("SELECT id FROM artifacts WHERE run_id = ? ORDER BY created_at, rowid").bind(run_id).fetch_all(&self.reader).await?)
    }
}
