//! A tower layer around the CSI services that times every call into
//! `ferrovol_rpc_duration_seconds`, labelled by service, method and gRPC code: one place for
//! every RPC, whatever the handler does. CSI calls are unary, so the response headers come when
//! the handler is done; a failed call carries its code in them (`grpc-status`, a trailers-only
//! response), a successful one does not.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;
use tonic::codegen::http::{Request, Response};
use tower::{Layer, Service};

#[derive(Debug, Clone, Copy, Default)]
pub struct RpcMetricsLayer;

impl<S> Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;
    fn layer(&self, inner: S) -> RpcMetrics<S> {
        RpcMetrics(inner)
    }
}

#[derive(Debug, Clone)]
pub struct RpcMetrics<S>(S);

impl<S, B, R> Service<Request<B>> for RpcMetrics<S>
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
        let path = req.uri().path().to_string();
        let start = Instant::now();
        let call = self.0.call(req);
        Box::pin(async move {
            let result = call.await;
            let code = match &result {
                Ok(response) => response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok()?.parse().ok())
                    .map_or(tonic::Code::Ok, tonic::Code::from_i32),
                Err(_) => tonic::Code::Unknown,
            };
            crate::metrics::observe_rpc(&path, code, start.elapsed());
            result
        })
    }
}
