//! The simulator's console (`/sim/v1`): its ground truth, faults and quotas, as the tests
//! read and change them on a simulator of their own or on the lab's.

use serde_json::Value;

pub struct Console {
    http: reqwest::Client,
    /// The simulator's base URL.
    pub url: String,
}

impl Console {
    pub fn new(url: &str) -> Console {
        Console {
            http: reqwest::Client::new(),
            url: url.to_string(),
        }
    }

    /// The ground truth; `query` selects (`?project=demo`) or is empty for every project.
    pub async fn state(&self, query: &str) -> Value {
        self.http
            .get(format!("{}/sim/v1/state{query}", self.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Starts a fault (it must be accepted: 201); returns its ID.
    pub async fn fault(&self, f: &Value) -> String {
        let resp = self
            .http
            .post(format!("{}/sim/v1/faults", self.url))
            .json(f)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201, "{f}");
        let v: Value = resp.json().await.unwrap();
        v["id"].as_str().unwrap().to_string()
    }

    /// Ends a fault (204).
    pub async fn end_fault(&self, id: &str) {
        let resp = self
            .http
            .delete(format!("{}/sim/v1/faults/{id}", self.url))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 204);
    }

    /// Sets some of a project's quotas (a success status).
    pub async fn quota(&self, project: &str, q: &Value) {
        let resp = self
            .http
            .put(format!("{}/sim/v1/quotas/{project}", self.url))
            .json(q)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success());
    }
}
