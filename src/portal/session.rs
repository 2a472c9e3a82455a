//! Portal sessions: what a browser's session cookie stands for. The cookie is an opaque
//! random ID (HttpOnly, SameSite=Strict, Secure when served over TLS); the credential it
//! maps to stays in this process, beside a CSRF token the pages send back on every write.
//!
//! **Invariant:** a session never widens what its credential may do: each request resolves
//! the credential to a principal again, through the same `Auth` a bearer token goes through,
//! so a token removed from the config signs its sessions out at once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::{Auth, Principal, Secret};

/// The session cookie's name.
pub const COOKIE: &str = "capstan_session";

/// How long a session lasts after sign-in, used or not.
const LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// What a session was opened with. Only a pasted bearer token today; an OIDC sign-in would
/// add its own variant (the subject and groups it maps to a principal) and change nothing
/// in the pages, which only ever see the cookie.
#[derive(Clone)]
pub enum Credential {
    Bearer(Secret),
}

impl Credential {
    /// The principal this credential stands for now, if it still stands for one.
    pub fn principal(&self, auth: &Auth) -> Option<Principal> {
        match self {
            Credential::Bearer(token) => auth.authenticate(token.expose()).cloned(),
        }
    }
}

#[derive(Clone)]
struct Session {
    credential: Credential,
    csrf: String,
    expires: Instant,
}

/// The open sessions of this process (a restart signs everyone out).
pub struct Sessions {
    open: Mutex<HashMap<String, Session>>,
    /// Whether cookies carry `Secure`: the server is reached over TLS.
    secure: bool,
}

/// A session as a request sees it.
pub struct Current {
    pub id: String,
    pub credential: Credential,
    pub csrf: String,
}

fn random_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

impl Sessions {
    pub fn new(secure: bool) -> Sessions {
        Sessions {
            open: Mutex::default(),
            secure,
        }
    }

    /// Opens a session; returns its ID (the cookie's value).
    pub fn open(&self, credential: Credential) -> String {
        let id = random_token();
        let now = Instant::now();
        let mut open = self.open.lock().expect("sessions lock");
        open.retain(|_, s| s.expires > now);
        open.insert(
            id.clone(),
            Session {
                credential,
                csrf: random_token(),
                expires: now + LIFETIME,
            },
        );
        id
    }

    pub fn close(&self, id: &str) {
        self.open.lock().expect("sessions lock").remove(id);
    }

    /// The live session of this ID, if any.
    pub fn get(&self, id: &str) -> Option<Current> {
        let open = self.open.lock().expect("sessions lock");
        open.get(id)
            .filter(|s| s.expires > Instant::now())
            .map(|s| Current {
                id: id.to_string(),
                credential: s.credential.clone(),
                csrf: s.csrf.clone(),
            })
    }

    /// The `Set-Cookie` value that carries a session.
    pub fn cookie(&self, id: &str) -> String {
        format!(
            "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
            LIFETIME.as_secs(),
            if self.secure { "; Secure" } else { "" }
        )
    }

    /// The `Set-Cookie` value that removes it.
    pub fn clear_cookie(&self) -> String {
        format!(
            "{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
            if self.secure { "; Secure" } else { "" }
        )
    }
}

/// The session ID a `Cookie` header carries, if any.
pub fn cookie_value(header: &str) -> Option<&str> {
    header
        .split(';')
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

/// Compares in time independent of where the strings differ.
pub fn same_token(a: &str, b: &str) -> bool {
    Secret::new(a).matches(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cookie_is_http_only_same_site_strict_and_secure_only_over_tls() {
        let plain = Sessions::new(false);
        let c = plain.cookie("abc");
        assert!(c.starts_with("capstan_session=abc; Path=/; HttpOnly; SameSite=Strict"));
        assert!(!c.contains("Secure"));
        assert!(Sessions::new(true).cookie("abc").ends_with("; Secure"));
    }

    #[test]
    fn the_session_id_is_read_from_among_other_cookies() {
        assert_eq!(cookie_value("a=1; capstan_session=xyz; b=2"), Some("xyz"));
        assert_eq!(cookie_value("capstan_session="), None);
        assert_eq!(cookie_value("other=1"), None);
    }

    #[test]
    fn a_closed_session_is_gone_and_each_has_its_own_csrf_token() {
        let s = Sessions::new(false);
        let a = s.open(Credential::Bearer(Secret::new("token-aaaa")));
        let b = s.open(Credential::Bearer(Secret::new("token-aaaa")));
        assert_ne!(s.get(&a).unwrap().csrf, s.get(&b).unwrap().csrf);
        s.close(&a);
        assert!(s.get(&a).is_none());
        assert!(s.get(&b).is_some());
    }
}
