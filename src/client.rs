//! A gRPC channel to a CSI endpoint, for `ferrovol ctl`, the tests and the benchmarks.

use crate::server::Endpoint;
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Uri};

pub async fn connect(endpoint: &Endpoint) -> Result<Channel, tonic::transport::Error> {
    match endpoint {
        Endpoint::Unix(path) => {
            let path = path.clone();
            // The URI is required by the API but unused: the connector dials the socket.
            tonic::transport::Endpoint::from_static("http://[::1]:50051")
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(
                            tokio::net::UnixStream::connect(path).await?,
                        ))
                    }
                }))
                .await
        }
        Endpoint::Tcp(addr) => {
            tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .expect("socket address is a valid URI")
                .connect()
                .await
        }
    }
}
