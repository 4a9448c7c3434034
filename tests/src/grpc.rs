//! Direct gRPC access to a server, for what etcdctl 3.4 cannot send (e.g. `count_only`, a put
//! with both `ignore_value` and a value) and for the durability writer.

use std::time::Duration;

use ketch_api::etcdserverpb::kv_client::KvClient;
use tonic::transport::{Channel, Endpoint};

use crate::server::Server;

/// A KV client on `server`'s client URL; connecting is bounded, and so is every call (5 s).
pub async fn kv_client(server: &Server) -> KvClient<Channel> {
    KvClient::new(channel(server, Duration::from_secs(5)).await)
}

/// A channel to `server`'s client URL; connecting is bounded, and so is every call
/// (`call_timeout`).
pub async fn channel(server: &Server, call_timeout: Duration) -> Channel {
    let endpoint = Endpoint::from_shared(server.client_url())
        .expect("client url")
        .connect_timeout(Duration::from_secs(2))
        .timeout(call_timeout);
    tokio::time::timeout(Duration::from_secs(10), endpoint.connect())
        .await
        .unwrap_or_else(|_| panic!("gRPC connect to {} timed out", server.client_url()))
        .unwrap_or_else(|e| panic!("gRPC connect to {}: {e}", server.client_url()))
}

/// Runs a future to completion on a fresh current-thread runtime (for synchronous tests).
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(future)
}

/// `code: message` of a failed call, `ok` for a successful one: what clients can tell apart.
pub fn outcome<T>(result: &Result<T, tonic::Status>) -> String {
    match result {
        Ok(_) => "ok".to_string(),
        Err(s) => format!("{:?}: {}", s.code(), s.message()),
    }
}

/// A txn response with what legitimately differs between servers zeroed (cluster and member
/// ids, raft terms), at every nesting level; revisions are kept.
pub fn scrub_txn_response(
    mut resp: ketch_api::etcdserverpb::TxnResponse,
) -> ketch_api::etcdserverpb::TxnResponse {
    use ketch_api::etcdserverpb::response_op::Response;
    use ketch_api::etcdserverpb::ResponseHeader;

    fn scrub(h: &mut Option<ResponseHeader>) {
        if let Some(h) = h {
            h.cluster_id = 0;
            h.member_id = 0;
            h.raft_term = 0;
        }
    }
    scrub(&mut resp.header);
    for op in &mut resp.responses {
        match op.response.take() {
            Some(Response::ResponseRange(mut r)) => {
                scrub(&mut r.header);
                op.response = Some(Response::ResponseRange(r));
            }
            Some(Response::ResponsePut(mut r)) => {
                scrub(&mut r.header);
                op.response = Some(Response::ResponsePut(r));
            }
            Some(Response::ResponseDeleteRange(mut r)) => {
                scrub(&mut r.header);
                op.response = Some(Response::ResponseDeleteRange(r));
            }
            Some(Response::ResponseTxn(r)) => {
                op.response = Some(Response::ResponseTxn(scrub_txn_response(r)));
            }
            None => {}
        }
    }
    resp
}

/// A channel to `server` for long-lived streams: connecting is bounded, calls are not (a
/// watch stream lives as long as the test wants it).
pub async fn stream_channel(server: &Server) -> Channel {
    stream_channel_to(&server.client_url()).await
}

/// [`stream_channel`] to any URL (a proxy's, say).
pub async fn stream_channel_to(url: &str) -> Channel {
    let endpoint = Endpoint::from_shared(url.to_string())
        .expect("client url")
        .connect_timeout(Duration::from_secs(2));
    tokio::time::timeout(Duration::from_secs(10), endpoint.connect())
        .await
        .unwrap_or_else(|_| panic!("gRPC connect to {url} timed out"))
        .unwrap_or_else(|e| panic!("gRPC connect to {url}: {e}"))
}

/// One client watch stream: requests go in through `send`, responses come out of `next`.
/// The call runs on its own task: etcd sends the response headers only with its first
/// response, so the call cannot be awaited before the first request is sent.
pub struct WatchSession {
    requests: tokio::sync::mpsc::Sender<ketch_api::etcdserverpb::WatchRequest>,
    responses:
        tokio::sync::mpsc::Receiver<Result<ketch_api::etcdserverpb::WatchResponse, tonic::Status>>,
}

impl WatchSession {
    /// Opens a watch stream on `channel`.
    pub async fn open(channel: Channel) -> WatchSession {
        use ketch_api::etcdserverpb::watch_client::WatchClient;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let (resp_tx, resp_rx) = tokio::sync::mpsc::channel(1024);
        let mut client = WatchClient::new(channel).max_decoding_message_size(64 * 1024 * 1024);
        tokio::spawn(async move {
            let call = client.watch(tokio_stream::wrappers::ReceiverStream::new(rx));
            let mut stream = match call.await {
                Ok(r) => r.into_inner(),
                Err(e) => {
                    let _ = resp_tx.send(Err(e)).await;
                    return;
                }
            };
            loop {
                match stream.message().await {
                    Ok(Some(m)) => {
                        if resp_tx.send(Ok(m)).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(e) => {
                        let _ = resp_tx.send(Err(e)).await;
                        return;
                    }
                }
            }
        });
        WatchSession {
            requests: tx,
            responses: resp_rx,
        }
    }

    pub async fn send(&self, req: ketch_api::etcdserverpb::watch_request::RequestUnion) {
        self.requests
            .send(ketch_api::etcdserverpb::WatchRequest {
                request_union: Some(req),
            })
            .await
            .expect("watch stream request");
    }

    pub async fn create(&self, req: ketch_api::etcdserverpb::WatchCreateRequest) {
        self.send(ketch_api::etcdserverpb::watch_request::RequestUnion::CreateRequest(req))
            .await
    }

    /// The next response, or `None` if none comes within `wait` (or the stream ended).
    pub async fn next(&mut self, wait: Duration) -> Option<ketch_api::etcdserverpb::WatchResponse> {
        match tokio::time::timeout(wait, self.responses.recv()).await {
            Ok(Some(Ok(r))) => Some(r),
            Ok(Some(Err(status))) => panic!("watch stream failed: {status}"),
            Ok(None) | Err(_) => None,
        }
    }

    /// The next response; panics if none comes within `wait`.
    pub async fn expect_next(&mut self, wait: Duration) -> ketch_api::etcdserverpb::WatchResponse {
        self.next(wait)
            .await
            .unwrap_or_else(|| panic!("no watch response within {wait:?}"))
    }
}

/// A watch response with cluster and member ids and the raft term zeroed.
pub fn scrub_watch_response(
    mut resp: ketch_api::etcdserverpb::WatchResponse,
) -> ketch_api::etcdserverpb::WatchResponse {
    if let Some(h) = &mut resp.header {
        h.cluster_id = 0;
        h.member_id = 0;
        h.raft_term = 0;
    }
    resp
}
