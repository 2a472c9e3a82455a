//! The server's configuration file: tenants and the bearer tokens that act for them.
//!
//! ```yaml
//! tenants:
//!   demo:
//!     namespaces: [default]        # cluster namespaces this tenant owns
//! tokens:
//!   - {name: ops,   role: admin,        token: "s3cret-ops"}
//!   - {name: carol, role: tenant_admin, tenant: demo, token: "s3cret-carol"}
//!   - {name: alice, role: member,       tenant: demo, token_env: ALICE_TOKEN}
//! ```
//!
//! `CAPSTAN_ADMIN_TOKEN` adds an admin token named `admin` without a file. Token values are
//! held in [`Secret`], which never prints, so they cannot reach logs, events or responses.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::Deserialize;

use crate::model::Role;

/// A value that must never be printed.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Compares in time independent of where the strings differ.
    pub fn matches(&self, candidate: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), candidate.as_bytes());
        let mut diff = a.len() ^ b.len();
        for i in 0..a.len().max(b.len()) {
            diff |= (a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0)) as usize;
        }
        diff == 0
    }
}

impl std::str::FromStr for Secret {
    type Err = String;
    fn from_str(s: &str) -> Result<Secret, String> {
        Ok(Secret(s.to_string()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub tenants: BTreeMap<String, TenantConfig>,
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// Cluster namespaces this tenant owns; empty means none is checked.
    #[serde(default)]
    pub namespaces: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    pub name: String,
    pub role: Role,
    #[serde(default)]
    pub tenant: Option<String>,
    #[serde(default)]
    pub token: Option<Secret>,
    /// Read the token from this environment variable instead of the file.
    #[serde(default)]
    pub token_env: Option<String>,
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub role: Role,
    /// `None` only for admins.
    pub tenant: Option<String>,
}

/// Tokens resolved to principals, and the tenants' namespaces.
#[derive(Debug, Default)]
pub struct Auth {
    tokens: Vec<(Secret, Principal)>,
    pub tenants: BTreeMap<String, TenantConfig>,
}

impl Config {
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading config {}: {e}", path.display()))?;
        serde_yaml::from_str(&text).map_err(|e| anyhow::anyhow!("config {}: {e}", path.display()))
    }
}

impl Auth {
    /// Resolves the config (and `CAPSTAN_ADMIN_TOKEN`, if given) into an authenticator,
    /// refusing tokens that are missing, duplicated or inconsistent with their role.
    pub fn from_config(config: Config, admin_token: Option<Secret>) -> anyhow::Result<Auth> {
        let mut tokens = Vec::new();
        for (i, t) in config.tokens.into_iter().enumerate() {
            let at = format!("tokens[{i}] ({})", t.name);
            let secret =
                match (t.token, t.token_env) {
                    (Some(s), None) => s,
                    (None, Some(var)) => Secret::new(std::env::var(&var).map_err(|_| {
                        anyhow::anyhow!("{at}: environment variable {var} is not set")
                    })?),
                    _ => anyhow::bail!("{at}: give exactly one of `token` or `token_env`"),
                };
            if secret.expose().len() < 8 {
                anyhow::bail!("{at}: token is shorter than 8 characters");
            }
            match (t.role, &t.tenant) {
                (Role::Admin, Some(_)) => {
                    anyhow::bail!("{at}: an admin spans all tenants; drop `tenant`")
                }
                (Role::TenantAdmin | Role::Member, None) => {
                    anyhow::bail!("{at}: role {} needs a `tenant`", t.role)
                }
                (_, Some(tenant)) if !config.tenants.contains_key(tenant) => {
                    anyhow::bail!("{at}: tenant `{tenant}` is not defined under `tenants`")
                }
                _ => {}
            }
            if tokens
                .iter()
                .any(|(s, _): &(Secret, Principal)| s.matches(secret.expose()))
            {
                anyhow::bail!("{at}: the same token is given twice");
            }
            tokens.push((
                secret,
                Principal {
                    name: t.name,
                    role: t.role,
                    tenant: t.tenant,
                },
            ));
        }
        if let Some(token) = admin_token.filter(|t| !t.expose().is_empty()) {
            tokens.push((
                token,
                Principal {
                    name: "admin".into(),
                    role: Role::Admin,
                    tenant: None,
                },
            ));
        }
        Ok(Auth {
            tokens,
            tenants: config.tenants,
        })
    }

    pub fn authenticate(&self, bearer: &str) -> Option<&Principal> {
        self.tokens
            .iter()
            .find(|(s, _)| s.matches(bearer))
            .map(|(_, p)| p)
    }

    /// The tenant that owns a cluster namespace, if exactly one does.
    pub fn tenant_of_namespace(&self, ns: &str) -> Option<&str> {
        let mut owners = self
            .tenants
            .iter()
            .filter(|(_, t)| t.namespaces.iter().any(|n| n == ns));
        match (owners.next(), owners.next()) {
            (Some((name, _)), None) => Some(name),
            _ => None,
        }
    }
}

/// Why a principal may not act for a tenant or a namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenancyError {
    /// 403: the principal acts for another tenant only.
    Forbidden(String),
    /// 422: the named field (`tenant` or `cluster`) is wrong for this principal.
    Field(&'static str, String),
}

impl Auth {
    /// Decides which tenant a new job or schedule belongs to, and checks that the principal
    /// may act for it and that the cluster's namespace `ns` is that tenant's.
    pub fn tenant_for(
        &self,
        p: &Principal,
        asked: Option<&str>,
        ns: &str,
    ) -> Result<String, TenancyError> {
        let tenant = match (p.role, asked) {
            (Role::Admin, Some(t)) => {
                if !self.tenants.is_empty() && !self.tenants.contains_key(t) {
                    return Err(TenancyError::Field(
                        "tenant",
                        format!("unknown tenant `{t}`"),
                    ));
                }
                t.to_string()
            }
            (Role::Admin, None) => match self.tenant_of_namespace(ns) {
                Some(t) => t.to_string(),
                None if self.tenants.is_empty() => "default".to_string(),
                None => {
                    return Err(TenancyError::Field(
                        "tenant",
                        format!("is required: no single tenant owns namespace `{ns}`"),
                    ));
                }
            },
            (_, asked) => {
                let own = p.tenant.clone().unwrap_or_default();
                if let Some(t) = asked
                    && t != own
                {
                    return Err(TenancyError::Forbidden(format!(
                        "{} acts for tenant {own} only",
                        p.name
                    )));
                }
                own
            }
        };
        // A namespace another tenant lists is theirs, whatever this tenant's own list says.
        if self
            .tenants
            .iter()
            .any(|(name, t)| *name != tenant && t.namespaces.iter().any(|n| n == ns))
        {
            return Err(TenancyError::Field(
                "cluster",
                format!("namespace `{ns}` belongs to another tenant"),
            ));
        }
        if let Some(cfg) = self.tenants.get(&tenant)
            && !cfg.namespaces.is_empty()
            && !cfg.namespaces.iter().any(|n| n == ns)
        {
            return Err(TenancyError::Field(
                "cluster",
                format!(
                    "namespace `{ns}` does not belong to tenant {tenant} (it owns: {})",
                    cfg.namespaces.join(", ")
                ),
            ));
        }
        Ok(tenant)
    }

    /// The principal of this name as configured now, if it still exists.
    pub fn principal(&self, name: &str) -> Option<&Principal> {
        self.tokens.iter().map(|(_, p)| p).find(|p| p.name == name)
    }

    /// Whether `p` may see a cluster in namespace `ns`: admins everywhere, others in their
    /// tenant's namespaces.
    pub fn may_see_namespace(&self, p: &Principal, ns: &str) -> bool {
        match p.role {
            Role::Admin => true,
            _ => p
                .tenant
                .as_deref()
                .is_some_and(|t| self.tenant_for(p, Some(t), ns).is_ok()),
        }
    }
}

impl Principal {
    /// Whether this principal may see and act on a job or schedule of `tenant` owned by `owner`.
    pub fn can_access(&self, tenant: &str, owner: &str) -> bool {
        match self.role {
            Role::Admin => true,
            Role::TenantAdmin => self.tenant.as_deref() == Some(tenant),
            Role::Member => self.tenant.as_deref() == Some(tenant) && self.name == owner,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_prints() {
        let s = Secret::new("hunter2hunter2");
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert!(
            s.matches("hunter2hunter2") && !s.matches("hunter2hunter3") && !s.matches("hunter2")
        );
    }

    #[test]
    fn inconsistent_tokens_are_refused() {
        let cfg: Config = serde_yaml::from_str(
            "tenants: {demo: {}}\ntokens:\n  - {name: a, role: member, token: abcdefgh12}\n",
        )
        .unwrap();
        let e = Auth::from_config(cfg, None).unwrap_err().to_string();
        assert!(e.contains("role member needs a `tenant`"), "{e}");
        let cfg: Config = serde_yaml::from_str(
            "tokens:\n  - {name: a, role: member, tenant: nope, token: abcdefgh12}\n",
        )
        .unwrap();
        assert!(
            Auth::from_config(cfg, None)
                .unwrap_err()
                .to_string()
                .contains("tenant `nope` is not defined")
        );
    }
}
