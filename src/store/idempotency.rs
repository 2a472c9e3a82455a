//! Idempotency keys: a submit retried with the same key and request returns the job the
//! first one made; the same key with another request is a conflict.

use super::sql::{Dialect, Tx, query};

use super::jobs::{NewJob, Submitted};
use super::{Result, Store, StoreError, now_ms};

/// The first key of the advisory locks on idempotency keys (the second is the key's hash).
const KEY_LOCKS: i64 = 1;

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
        let row: Option<(String,)> =
            query("SELECT job_id FROM idempotency_keys WHERE tenant = ? AND owner = ? AND key = ?")
                .bind(tenant)
                .bind(owner)
                .bind(key)
                .fetch_optional(&self.read)
                .await?;
        Ok(row.map(|r| r.0))
    }
}

/// The job `k` already made for this tenant and owner, or a conflict if it was made for
/// another request. On PostgreSQL the key stays locked to this transaction from here on, so
/// the same key submitted to two replicas at once makes one job (the second waits, then
/// finds it).
pub(super) async fn existing_for_key(
    tx: &mut Tx,
    tenant: &str,
    owner: &str,
    k: &IdempotencyKey,
) -> Result<Option<Submitted>> {
    if tx.dialect() == Dialect::Postgres {
        query("SELECT pg_advisory_xact_lock(CAST(? AS integer), hashtext(?))")
            .bind(KEY_LOCKS)
            .bind(format!("{tenant}\n{owner}\n{}", k.key))
            .execute(&mut *tx)
            .await?;
    }
    let row: Option<(String, String)> = query(
        "SELECT request, job_id FROM idempotency_keys WHERE tenant = ? AND owner = ? AND key = ?",
    )
    .bind(tenant)
    .bind(owner)
    .bind(&k.key)
    .fetch_optional(&mut *tx)
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
pub(super) async fn record_key(tx: &mut Tx, job: &NewJob, k: &IdempotencyKey) -> Result<()> {
    query(
        "INSERT INTO idempotency_keys (tenant, owner, key, request, job_id, created_at) \
         VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(&job.tenant)
    .bind(&job.owner)
    .bind(&k.key)
    .bind(&k.request)
    .bind(&job.id)
    .bind(now_ms())
    .execute(&mut *tx)
    .await?;
    Ok(())
}
