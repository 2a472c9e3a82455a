//! Kubernetes clients whose every request is timed and counted by status class
//! (`capstan_cloud_request_duration_seconds{service="kubernetes"}`): a tower layer on
//! kube-rs's own stack. A watch counts when its answer starts, not while it streams.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::http::{Request, Response};
use tower::{Layer, Service};

use crate::metrics::{CloudService, cloud_request, code_class};

/// A kube-rs client for `config`, with kube-rs's default stack under the metering layer.
pub fn kube_client(config: kube::Config) -> Result<kube::Client, kube::Error> {
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&Metering)
        .build())
}

struct Metering;

impl<S> Layer<S> for Metering {
    type Service = Metered<S>;

    fn layer(&self, inner: S) -> Metered<S> {
        Metered(inner)
    }
}

struct Metered<S>(S);

impl<S, B, R> Service<Request<B>> for Metered<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let started = Instant::now();
        let answer = self.0.call(req);
        Box::pin(async move {
            let answer = answer.await;
            let status = answer.as_ref().ok().map(|r| r.status().as_u16());
            cloud_request(
                CloudService::Kubernetes,
                code_class(status),
                started.elapsed(),
            );
            answer
        })
    }
}
