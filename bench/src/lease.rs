//! `lease-keepalive`: `--total` keep-alives of one lease, as etcd's benchmark. Each client keeps
//! one LeaseKeepAlive stream open and times request → response round trips on it (etcd's tool
//! opens a stream per request through KeepAliveOnce; a long-lived stream is what real clients
//! do and measures the server rather than stream setup). A server without the Lease service is
//! reported as a skip.

use ketch_api::etcdserverpb::{
    lease_client::LeaseClient, LeaseGrantRequest, LeaseKeepAliveRequest, LeaseRevokeRequest,
};
use tokio::sync::{mpsc, Mutex};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

use crate::client::{status_text, Target};
use crate::flags::Flags;
use crate::runner::closed_loop;
use crate::Outcome;

pub const LEASE_FLAGS: &[&str] = &["total"];

type KeepAliveStream = (
    mpsc::Sender<LeaseKeepAliveRequest>,
    tonic::Streaming<ketch_api::etcdserverpb::LeaseKeepAliveResponse>,
);

pub async fn keepalive(target: &Target, flags: &Flags) -> Result<Outcome, String> {
    flags.allow(LEASE_FLAGS)?;
    let total: u64 = flags.get("total", 10_000)?;
    let channels = target.connect().await?;
    let mut lessor = LeaseClient::new(channels[0].clone());
    let id = match lessor
        .lease_grant(LeaseGrantRequest { ttl: 100, id: 0 })
        .await
    {
        Ok(r) => r.into_inner().id,
        Err(s) if s.code() == Code::Unimplemented => {
            return Ok(Outcome::skipped(
                "lease-keepalive",
                format!("the server does not implement Lease ({})", status_text(&s)),
            ))
        }
        Err(s) => return Err(format!("lease grant: {}", status_text(&s))),
    };
    let mut streams = Vec::with_capacity(target.clients);
    for c in 0..target.clients {
        let mut client = LeaseClient::new(channels[c % channels.len()].clone());
        let (tx, rx) = mpsc::channel(4);
        // grpc-go servers send response headers only with the first message, and tonic's call
        // returns only after the headers: one keep-alive must be in flight before the call.
        tx.send(LeaseKeepAliveRequest { id })
            .await
            .map_err(|_| "keep-alive stream closed".to_string())?;
        let mut inbound = client
            .lease_keep_alive(ReceiverStream::new(rx))
            .await
            .map_err(|s| format!("lease keep-alive stream: {}", status_text(&s)))?
            .into_inner();
        inbound
            .message()
            .await
            .map_err(|s| format!("lease keep-alive: {}", status_text(&s)))?
            .ok_or("lease keep-alive stream closed by the server")?;
        // Each client owns its stream; the mutex only satisfies the shared closure.
        streams.push(std::sync::Arc::new(Mutex::new(
            (tx, inbound) as KeepAliveStream
        )));
    }
    let (rec, elapsed) = closed_loop(target.clients, total, move |c, _| {
        let stream = streams[c].clone();
        async move {
            let mut s = stream.lock().await;
            s.0.send(LeaseKeepAliveRequest { id })
                .await
                .map_err(|_| tonic::Status::unavailable("keep-alive stream closed"))?;
            match s.1.message().await? {
                Some(r) if r.ttl > 0 => Ok(()),
                Some(_) => Err(tonic::Status::not_found("lease expired or not found")),
                None => Err(tonic::Status::unavailable(
                    "keep-alive stream closed by the server",
                )),
            }
        }
    })
    .await;
    let _ = lessor.lease_revoke(LeaseRevokeRequest { id }).await;
    Ok(Outcome::measured("lease-keepalive", rec.summary(elapsed)))
}
