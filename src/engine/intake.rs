//! The one way a job comes into being.
//!
//! `POST /v1/jobs`, a schedule's creation and update (its template), a schedule firing and
//! the repair sweep all turn (principal, request body) into a job here: the kind's
//! `prepare`, the generic field checks, tenancy, the kind's `admit` against the cloud
//! (preflight, name resolution, max_unhealthy), then idempotency and the insert. Nothing
//! else builds a `NewJob` for a cloud kind.
//!
//! Invariant: a job is stored only after every check its kind has passed, as the principal
//! it will be attributed to, at the moment it is stored (a schedule's owner is checked again,
//! in full, each time it fires).

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use super::admission::{Admission, Refusal};
use super::request::{self, FieldError, JobRequest};
use super::workflow::Workflow;
use crate::config::{Auth, Principal, TenancyError};
use crate::store::{IdempotencyKey, NewJob, Store, StoreError, Submitted};

/// When a request is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moment {
    /// To be stored now: every check.
    Now,
    /// A schedule's template, stored to fire later: every check but those that depend on
    /// the moment of firing (quota headroom, `max_unhealthy`: the kinds' 409s).
    Template,
}

/// Why a request did not become a job.
#[derive(Debug)]
pub enum Refused {
    /// 422: fields are wrong; every problem named.
    Invalid(Vec<FieldError>),
    /// 409: right, but the cloud cannot take it now.
    Conflict(Vec<FieldError>),
    /// 403: the principal may not act for that tenant.
    Forbidden(String),
    /// 503: the cloud could not be asked.
    Unavailable(String),
    Store(StoreError),
}

impl Refused {
    /// One line for a schedule's `last_error` and the logs.
    pub fn summary(&self) -> String {
        let fields = |f: &[FieldError]| {
            f.iter()
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect::<Vec<_>>()
                .join("; ")
        };
        match self {
            Refused::Invalid(f) => format!("refused: {}", fields(f)),
            Refused::Conflict(f) => format!("the cloud cannot take it now: {}", fields(f)),
            Refused::Forbidden(m) => format!("forbidden: {m}"),
            Refused::Unavailable(m) => format!("unavailable: {m}"),
            Refused::Store(e) => format!("database: {e}"),
        }
    }

    /// Whether the request itself (or its principal's rights) is at fault, as opposed to
    /// the cloud or the database being unavailable for a moment.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Refused::Invalid(_) | Refused::Forbidden(_))
    }
}

impl From<StoreError> for Refused {
    fn from(e: StoreError) -> Refused {
        Refused::Store(e)
    }
}

impl From<TenancyError> for Refused {
    fn from(e: TenancyError) -> Refused {
        match e {
            TenancyError::Forbidden(m) => Refused::Forbidden(m),
            TenancyError::Field(f, m) => Refused::Invalid(vec![FieldError::new(f, m)]),
        }
    }
}

/// Turns requests into jobs; shared by the API, the scheduler and the sweeps.
pub struct Intake {
    store: Store,
    workflows: HashMap<String, Arc<Workflow>>,
    admission: Option<Arc<dyn Admission>>,
    auth: Arc<Auth>,
}

impl Intake {
    pub fn new(
        store: Store,
        workflows: HashMap<String, Arc<Workflow>>,
        admission: Option<Arc<dyn Admission>>,
        auth: Arc<Auth>,
    ) -> Intake {
        Intake {
            store,
            workflows,
            admission,
            auth,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    pub fn admission(&self) -> Option<&Arc<dyn Admission>> {
        self.admission.as_ref()
    }

    /// The kind's reshaping and the generic checks, every problem at once (`extra` are the
    /// caller's own, e.g. a bad `Idempotency-Key` header).
    fn parse(&self, body: &Value, mut extra: Vec<FieldError>) -> Result<JobRequest, Refused> {
        let kind = body["kind"].as_str().unwrap_or_default().to_string();
        let body = match &self.admission {
            Some(a) => match a.prepare(&kind, body.clone()) {
                Ok(b) => b,
                Err(errs) => {
                    extra.extend(errs);
                    a.reshape(&kind, body.clone())
                }
            },
            None => body.clone(),
        };
        let kind_fields = self.admission.as_ref().map_or(&[][..], |a| a.fields(&kind));
        match request::parse(&body, &self.workflows, kind_fields) {
            Ok(r) if extra.is_empty() => Ok(r),
            Ok(_) => Err(Refused::Invalid(extra)),
            Err(errs) => {
                extra.extend(errs);
                Err(Refused::Invalid(extra))
            }
        }
    }

    /// Every check of a request, as `p`, at `moment`; returns the request as admitted (its
    /// nodes resolved, its params filled in) and its tenant.
    pub async fn check(
        &self,
        p: &Principal,
        body: &Value,
        moment: Moment,
    ) -> Result<(JobRequest, String), Refused> {
        let mut req = self.parse(body, Vec::new())?;
        let tenant = self.tenant(p, &req)?;
        self.admit(&mut req, &tenant, moment).await?;
        Ok((req, tenant))
    }

    fn tenant(&self, p: &Principal, req: &JobRequest) -> Result<String, Refused> {
        Ok(self
            .auth
            .tenant_for(p, req.tenant.as_deref(), &req.cluster.ns)?)
    }

    async fn admit(
        &self,
        req: &mut JobRequest,
        tenant: &str,
        moment: Moment,
    ) -> Result<(), Refused> {
        let Some(a) = &self.admission else {
            return Ok(());
        };
        match a.admit(req, tenant).await {
            Ok(()) => Ok(()),
            Err(Refusal::Invalid(f)) => Err(Refused::Invalid(f)),
            Err(Refusal::Conflict(_)) if moment == Moment::Template => Ok(()),
            Err(Refusal::Conflict(f)) => Err(Refused::Conflict(f)),
            Err(Refusal::Unavailable(m)) => Err(Refused::Unavailable(m)),
        }
    }

    /// The job a request makes now, as `p` (its owner), for a schedule when one fired it.
    pub async fn admit_job(
        &self,
        p: &Principal,
        body: &Value,
        schedule_id: Option<String>,
    ) -> Result<NewJob, Refused> {
        let (req, tenant) = self.check(p, body, Moment::Now).await?;
        Ok(self.job_of(req, &tenant, p, schedule_id))
    }

    fn job_of(
        &self,
        req: JobRequest,
        tenant: &str,
        p: &Principal,
        schedule_id: Option<String>,
    ) -> NewJob {
        let wf = self.workflows[&req.kind].clone();
        req.into_job(&wf, tenant, &p.name, schedule_id)
    }

    /// Checks and stores a job submitted by `p` (the API and the repair sweep). A request
    /// replayed under its idempotency key names the job it made; the cloud is not asked
    /// again. `header_errors` are the caller's own field problems, reported with the body's.
    pub async fn submit(
        &self,
        p: &Principal,
        body: &Value,
        key: Option<&IdempotencyKey>,
        header_errors: Vec<FieldError>,
    ) -> Result<Submitted, Refused> {
        let mut req = self.parse(body, header_errors)?;
        let tenant = self.tenant(p, &req)?;
        if let Some(k) = key
            && self
                .store
                .idempotent_job(&tenant, &p.name, &k.key)
                .await?
                .is_some()
        {
            // The store answers with the earlier job (or refuses a different request).
            let job = self.job_of(req, &tenant, p, None);
            return Ok(self.store.submit(&job, Some(k)).await?);
        }
        self.admit(&mut req, &tenant, Moment::Now).await?;
        let job = self.job_of(req, &tenant, p, None);
        Ok(self.store.submit(&job, key).await?)
    }
}
