//! etcd's Watch service: each bidirectional stream gets its own task (see
//! [`crate::watch::stream`]).

use ketch_api::etcdserverpb::watch_server::Watch;
use ketch_api::etcdserverpb::{WatchRequest, WatchResponse};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::SharedServer;
use crate::watch::stream::WatchStream;

pub struct WatchService {
    pub server: SharedServer,
    /// Turns true when the member stops: streams end, so the listener can close.
    pub shutdown: watch::Receiver<bool>,
    /// etcd fragments watch responses above its request limit plus gRPC overhead.
    pub max_response_bytes: usize,
}

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = ReceiverStream<Result<WatchResponse, Status>>;

    async fn watch(
        &self,
        req: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        super::refuse_without_leader(&self.server, &req)?;
        let credentials = super::auth::Credentials::of(
            req.metadata(),
            req.extensions(),
            &self.server.trusted_proxy_cns,
        );
        let inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(crate::watch::stream::OUT_QUEUE);
        tokio::spawn(WatchStream::serve(
            self.server.clone(),
            inbound,
            tx,
            self.shutdown.clone(),
            self.max_response_bytes,
            credentials,
        ));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
