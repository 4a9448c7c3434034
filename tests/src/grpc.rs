//! Direct gRPC access to a server, for what etcdctl 3.4 cannot send (e.g. `count_only`, a put
//! with both `ignore_value` and a value) and for the durability writer.

use std::time::Duration;

use ketch_api::etcdserverpb::kv_client::KvClient;
use tonic::transport::{Channel, Endpoint};

use crate::server::Server;

/// A KV client on `server`'s client URL; connecting is bounded, and so is every call (5 s).
pub async fn kv_client(server: &Server) -> KvClient<Channel> {
    let endpoint = Endpoint::from_shared(server.client_url())
        .expect("client url")
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5));
    let channel = tokio::time::timeout(Duration::from_secs(10), endpoint.connect())
        .await
        .unwrap_or_else(|_| panic!("gRPC connect to {} timed out", server.client_url()))
        .unwrap_or_else(|e| panic!("gRPC connect to {}: {e}", server.client_url()));
    KvClient::new(channel)
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
