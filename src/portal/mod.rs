//! The portal: web pages under `/ui` for operators, tenant admins and members, served by
//! `capstan serve` itself from assets compiled into the binary (one HTML shell, one script,
//! one stylesheet; no build step). The pages call the public `/v1` API with the session
//! cookie; `session_principal` is the one place a cookie becomes a principal.
//!
//! **Invariants:** the pages can do nothing the API would refuse — every read and write goes
//! through `/v1` as the signed-in principal; a write with a session cookie carries the
//! session's CSRF token (`X-CSRF-Token`), and sign-in and sign-out forms come from this origin.

pub mod session;

use axum::extract::{Form, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::api::{ApiError, AppState};
use crate::config::{Principal, Secret};
use session::{Credential, Current, cookie_value, same_token};

pub use session::Sessions;

const SHELL: &str = include_str!("assets/index.html");
const SIGN_IN: &str = include_str!("assets/login.html");
const SCRIPT: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/app.css");

/// The header a page sends its session's CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/login", get(sign_in_page).post(sign_in))
        .route("/ui/logout", post(sign_out))
        .route("/ui/session", get(whoami))
        .route(
            "/ui/app.js",
            get(|| async { asset("text/javascript", SCRIPT) }),
        )
        .route("/ui/app.css", get(|| async { asset("text/css", STYLE) }))
        .route("/ui/", get(shell))
        .route("/ui/{*page}", get(shell))
}

/// The session a request's cookie names, if it is open.
fn current(st: &AppState, headers: &HeaderMap) -> Option<Current> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|h| h.to_str().ok())
        .find_map(cookie_value)
        .and_then(|id| st.sessions.get(id))
}

/// The principal a request's session cookie stands for: `Ok(None)` without a session
/// cookie (the caller then wants a bearer token), 401 for a session that is closed or whose
/// credential no longer authenticates, 403 for a write without the session's CSRF token.
pub fn session_principal(
    st: &AppState,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Option<Principal>, ApiError> {
    let named = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|h| h.to_str().ok())
        .any(|h| cookie_value(h).is_some());
    if !named {
        return Ok(None);
    }
    let s = current(st, headers).ok_or(ApiError::Unauthorized)?;
    let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    if !safe {
        let sent = headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !same_token(&s.csrf, sent) {
            return Err(ApiError::Forbidden(
                "a write with a session cookie needs the session's X-CSRF-Token".into(),
            ));
        }
    }
    s.credential
        .principal(&st.auth)
        .map(Some)
        .ok_or(ApiError::Unauthorized)
}

/// Headers every portal response carries: no framing, no inline script, no sniffing.
fn hardened(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    hardened(([(header::CONTENT_TYPE, content_type)], body).into_response())
}

fn html(status: StatusCode, body: String) -> Response {
    hardened(
        (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            body,
        )
            .into_response(),
    )
}

/// The page shell for every `/ui/...` page; the script renders the page the path names.
async fn shell(State(st): State<AppState>, headers: HeaderMap) -> Response {
    match current(&st, &headers) {
        Some(s) if s.credential.principal(&st.auth).is_some() => {
            html(StatusCode::OK, SHELL.to_string())
        }
        _ => hardened(Redirect::to("/ui/login").into_response()),
    }
}

fn sign_in_form(message: &str) -> String {
    let notice = if message.is_empty() {
        String::new()
    } else {
        format!(r#"<p class="error" role="alert" id="signin-error">{message}</p>"#)
    };
    SIGN_IN.replace("<!--notice-->", &notice)
}

async fn sign_in_page() -> Response {
    html(StatusCode::OK, sign_in_form(""))
}

#[derive(Deserialize)]
struct SignIn {
    token: String,
}

/// A form posted from another origin is refused: sign-in must not be forced on a browser.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        // Browsers send Origin on every POST; a client that does not is not a page.
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    origin
        .split_once("://")
        .is_some_and(|(_, rest)| rest == host)
}

async fn sign_in(
    State(st): State<AppState>,
    headers: HeaderMap,
    Form(f): Form<SignIn>,
) -> Response {
    if !same_origin(&headers) {
        return html(
            StatusCode::FORBIDDEN,
            sign_in_form("Sign-in must be posted from this site."),
        );
    }
    let credential = Credential::Bearer(Secret::new(f.token.trim()));
    if credential.principal(&st.auth).is_none() {
        return html(
            StatusCode::UNAUTHORIZED,
            sign_in_form("That token is not known to this server."),
        );
    }
    let id = st.sessions.open(credential);
    let mut resp = Redirect::to("/ui/").into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        st.sessions.cookie(&id).parse().expect("a cookie header"),
    );
    hardened(resp)
}

#[derive(Deserialize)]
struct SignOut {
    csrf: String,
}

async fn sign_out(
    State(st): State<AppState>,
    headers: HeaderMap,
    Form(f): Form<SignOut>,
) -> Response {
    if let Some(s) = current(&st, &headers) {
        if !same_origin(&headers) || !same_token(&s.csrf, &f.csrf) {
            return html(
                StatusCode::FORBIDDEN,
                sign_in_form("Sign-out must come from this site's own page."),
            );
        }
        st.sessions.close(&s.id);
    }
    let mut resp = Redirect::to("/ui/login").into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        st.sessions.clear_cookie().parse().expect("a cookie header"),
    );
    hardened(resp)
}

/// `GET /ui/session`: who is signed in, and the CSRF token the page sends with writes.
async fn whoami(State(st): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let s = current(&st, &headers).ok_or(ApiError::Unauthorized)?;
    let p = s
        .credential
        .principal(&st.auth)
        .ok_or(ApiError::Unauthorized)?;
    Ok(hardened(
        Json(json!({ "name": p.name, "role": p.role, "tenant": p.tenant, "csrf": s.csrf }))
            .into_response(),
    ))
}
