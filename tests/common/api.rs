//! Capstan's HTTP API as the tests call it, and the polling they wait with. Every wait is
//! bounded only so that a broken run fails instead of hanging; the bound is no timing claim.

use std::future::Future;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

/// Calls `probe` every `every` until it yields a value, at most `tries` times; `None` if it
/// never did.
pub async fn poll<T, F, Fut>(tries: usize, every: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    for _ in 0..tries {
        if let Some(v) = probe().await {
            return Some(v);
        }
        tokio::time::sleep(every).await;
    }
    None
}

/// A client of one `capstan serve`, acting with `token` unless a call names another.
pub struct Api {
    pub http: reqwest::Client,
    pub url: String,
    pub token: String,
}

impl Api {
    /// `timeout` bounds each request (`None`: unbounded, as reqwest's default).
    pub fn new(url: &str, token: &str, timeout: Option<Duration>) -> Api {
        let mut http = reqwest::Client::builder();
        if let Some(t) = timeout {
            http = http.timeout(t);
        }
        Api {
            http: http.build().unwrap(),
            url: url.to_string(),
            token: token.to_string(),
        }
    }

    /// One request as sent: a bearer token if any, the raw body as JSON if any, and extra
    /// headers. Returns the status and the body's text.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> reqwest::Result<(StatusCode, String)> {
        let mut req = self.http.request(method, format!("{}{path}", self.url));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await?;
        let status = resp.status();
        Ok((status, resp.text().await?))
    }

    /// Any call as the holder of `token`: the status and the JSON body (`null` if none).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let body = body.map(Value::to_string);
        let (status, text) = self
            .send(method, path, Some(token), body.as_deref(), &[])
            .await
            .unwrap();
        (
            status.as_u16(),
            serde_json::from_str(&text).unwrap_or(Value::Null),
        )
    }

    /// GET; `None` while the server is down (between a kill and a restart) or the body is
    /// not JSON.
    pub async fn get(&self, path: &str) -> Option<Value> {
        let (_, text) = self
            .send(Method::GET, path, Some(&self.token), None, &[])
            .await
            .ok()?;
        serde_json::from_str(&text).ok()
    }

    /// POST that must answer JSON.
    pub async fn post(&self, path: &str, body: &Value) -> Value {
        let (_, text) = self
            .send(
                Method::POST,
                path,
                Some(&self.token),
                Some(&body.to_string()),
                &[],
            )
            .await
            .unwrap();
        serde_json::from_str(&text).unwrap()
    }

    /// PATCH; its status.
    pub async fn patch(&self, path: &str, body: &Value) -> u16 {
        self.call(Method::PATCH, path, &self.token, Some(body))
            .await
            .0
    }

    /// `POST /v1/jobs`: the status and the answer, which must be JSON.
    pub async fn submit(&self, body: &Value) -> (u16, Value) {
        let (status, text) = self
            .send(
                Method::POST,
                "/v1/jobs",
                Some(&self.token),
                Some(&body.to_string()),
                &[],
            )
            .await
            .unwrap();
        (status.as_u16(), serde_json::from_str(&text).unwrap())
    }

    /// Submits a job that must be accepted (202); returns its ID.
    pub async fn submit_ok(&self, body: &Value) -> String {
        let (status, job) = self.submit(body).await;
        assert_eq!(status, 202, "{job}");
        job["id"].as_str().unwrap().to_string()
    }

    /// The job's events, all of them (none while the server is down).
    pub async fn events(&self, id: &str) -> Vec<Value> {
        let v = self.get(&format!("/v1/jobs/{id}/events?limit=10000")).await;
        v.and_then(|v| v["events"].as_array().cloned())
            .unwrap_or_default()
    }

    /// The job's events, one line each, for a failure's message.
    pub async fn story(&self, id: &str) -> Vec<String> {
        self.events(id)
            .await
            .iter()
            .map(|e| format!("{} {} {} {}", e["at"], e["node"], e["kind"], e["message"]))
            .collect()
    }

    /// Waits until the job is finished, polling every 100 ms at most `tries` times.
    pub async fn finished(&self, id: &str, tries: usize) -> Value {
        let every = Duration::from_millis(100);
        let path = format!("/v1/jobs/{id}");
        let done = poll(tries, every, || async {
            self.get(&path)
                .await
                .filter(|j| j["finished_at"].is_string())
        });
        match done.await {
            Some(j) => j,
            None => panic!("job {id} never finished: {:#?}", self.story(id).await),
        }
    }

    /// The first event of the job `pred` accepts, polling every 100 ms at most `tries` times.
    pub async fn until_event(
        &self,
        id: &str,
        what: &str,
        tries: usize,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let every = Duration::from_millis(100);
        let seen = poll(tries, every, || async {
            self.events(id).await.into_iter().find(|e| pred(e))
        });
        match seen.await {
            Some(e) => e,
            None => panic!("never saw {what} in job {id}: {:#?}", self.story(id).await),
        }
    }
}
