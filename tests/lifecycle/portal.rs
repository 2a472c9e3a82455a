//! The portal's session: a pasted token becomes an HttpOnly, SameSite=Strict cookie that
//! stands for the same principal on `/v1`; a write with the cookie needs the session's CSRF
//! token; sign-in from another origin and a token the server does not know are refused;
//! sign-out ends the session. (The pages themselves are driven in Chromium: tests/portal.)

use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::redirect::Policy;
use serde_json::{Value, json};

use crate::common::{ALICE, World};

struct Browser {
    http: reqwest::Client,
    url: String,
    cookie: String,
}

async fn sign_in(w: &World, token: &str, origin: Option<&str>) -> reqwest::Response {
    let http = reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap();
    let mut req = http
        .post(format!("{}/ui/login", w.api.url))
        .form(&[("token", token)]);
    if let Some(o) = origin {
        req = req.header("origin", o);
    }
    req.send().await.unwrap()
}

async fn browser(w: &World, token: &str) -> Browser {
    let resp = sign_in(w, token, None).await;
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()[LOCATION], "/ui/");
    let set = resp.headers()[SET_COOKIE].to_str().unwrap().to_string();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    Browser {
        http: reqwest::Client::builder()
            .redirect(Policy::none())
            .build()
            .unwrap(),
        url: w.api.url.clone(),
        cookie: set.split(';').next().unwrap().to_string(),
    }
}

impl Browser {
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        csrf: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url))
            .header(COOKIE, &self.cookie);
        if let Some(t) = csrf {
            req = req.header("x-csrf-token", t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signed_in_browser_acts_as_its_principal_and_writes_only_with_its_csrf_token() {
    let w = World::start();
    let b = browser(&w, ALICE).await;
    let (s, me) = b
        .send(reqwest::Method::GET, "/ui/session", None, None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        (me["name"].as_str(), me["role"].as_str()),
        (Some("alice"), Some("member"))
    );
    let csrf = me["csrf"].as_str().unwrap().to_string();
    // Reads: the same tenancy as alice's token.
    let (s, clusters) = b
        .send(reqwest::Method::GET, "/v1/clusters", None, None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        clusters["clusters"].as_array().unwrap().len(),
        1,
        "{clusters}"
    );
    // A write without the token, or with another, is refused and stores nothing.
    let job = json!({"kind": "smoke", "cluster": "default/demo", "nodes": ["a"]});
    for token in [None, Some("not-the-token")] {
        let (s, body) = b
            .send(reqwest::Method::POST, "/v1/jobs", token, Some(&job))
            .await;
        assert_eq!(s, 403, "{body}");
    }
    let (_, jobs) = w.call(reqwest::Method::GET, "/v1/jobs", ALICE, None).await;
    assert_eq!(jobs["jobs"].as_array().unwrap().len(), 0);
    // With it, the write is alice's.
    let (s, body) = b
        .send(reqwest::Method::POST, "/v1/jobs", Some(&csrf), Some(&job))
        .await;
    assert_eq!(s, 202, "{body}");
    assert_eq!(body["owner"], "alice");
    // Sign-out needs the CSRF token too; then the cookie opens nothing.
    let resp = b
        .http
        .post(format!("{}/ui/logout", b.url))
        .header(COOKIE, &b.cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    assert!(
        resp.headers()[SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let (s, _) = b
        .send(reqwest::Method::GET, "/v1/clusters", None, None)
        .await;
    assert_eq!(s, 401);
    let page = b
        .http
        .get(format!("{}/ui/", b.url))
        .header(COOKIE, &b.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 303, "a closed session is sent to sign-in");
}

#[tokio::test(flavor = "multi_thread")]
async fn sign_in_refuses_an_unknown_token_and_a_form_from_another_origin() {
    let w = World::start();
    let resp = sign_in(&w, "no-such-token", None).await;
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().get(SET_COOKIE).is_none());
    let resp = sign_in(&w, ALICE, Some("http://evil.example")).await;
    assert_eq!(resp.status(), 403);
    assert!(resp.headers().get(SET_COOKIE).is_none());
    // The pages and their assets are served from the binary, with a strict policy.
    let http = reqwest::Client::new();
    for (path, kind) in [
        ("/ui/app.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
        ("/ui/login", "text/html"),
    ] {
        let resp = http
            .get(format!("{}{path}", w.api.url))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(kind),
            "{path}"
        );
        assert!(
            resp.headers()["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("default-src 'self'")
        );
    }
}
