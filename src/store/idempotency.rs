//! Idempotency keys: a submit retried with the same key and request returns the job the
//! first one made; the same key with another request is a conflict.

use sqlx::{Sqlite, Transaction};

use super::jobs::{NewJob, Submitted};
use super::{Result, Store, StoreError, now_ms};

/// Ties a submit to a key, so a retried request returns the first job.
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    pub key: String,
    /// Canonical JSON of the request: a reuse with a different request is a conflict.
    pub request: String,
}

impl Store {
    /// The job an idempotency key already made, if any.
    pub async fn idempotent_job(
        &self,
        tenant: &str,
        owner: &str,
        key: &str,
    ) -> Result<Option<String>> {
        let row: Option<(String,)> = sqlx::query_as(
            "SELECT job_id FROM idempotency_keys WHERE tenant = ? AND owner = ? AND key = ?",
        )
        .bind(tenant)
        .bind(owner)
        .bind(key)
        .fetch_optional(&self.read)
        .await?;
        Ok(row.map(|r| r.0))
    }
}

/// The job `k` already made for this tenant and owner, or a conflict if it was made for
/// another request.
pub(super) async fn existing_for_key(
    tx: &mut Transaction<'static, Sqlite>,
    tenant: &str,
    owner: &str,
    k: &IdempotencyKey,
) -> Result<Option<Submitted>> {
    let row: Option<(String, String)> = sqlx::query_as(
        "SELECT request, job_id FROM idempotency_keys WHERE tenant = ? AND owner = ? AND key = ?",
    )
    .bind(tenant)
    .bind(owner)
    .bind(&k.key)
    .fetch_optional(&mut **tx)
    .await?;
    match row {
        None => Ok(None),
        Some((request, job_id)) if request == k.request => Ok(Some(Submitted {
            job_id,
            created: false,
        })),
        Some((_, job_id)) => Err(StoreError::Conflict(format!(
            "Idempotency-Key `{}` was first used for a different request (your job {job_id})",
            k.key
        ))),
    }
}

/// Ties `k` to the job being inserted, in the same transaction.
pub(super) async fn record_key(
    tx: &mut Transaction<'static, Sqlite>,
    job: &NewJob,
    k: &IdempotencyKey,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO idempotency_keys (tenant, owner, key, request, job_id, created_at) \
         VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(&job.tenant)
    .bind(&job.owner)
    .bind(&k.key)
    .bind(&k.request)
    .bind(&job.id)
    .bind(now_ms())
    .execute(&mut **tx)
    .await?;
    Ok(())
}
