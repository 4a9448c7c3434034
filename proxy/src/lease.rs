//! Lease keep-alive coalescing: the proxy serves LeaseKeepAlive itself and sends every
//! client's keep-alives over one upstream stream per caller (auth token). A keep-alive for a
//! lease whose renewal is already on its way upstream waits for that renewal's answer
//! instead of sending another: many clients (or replicas of one service) keeping the same
//! lease alive cost the member one renewal at a time. Answers keep etcd's meaning: TTL of the
//! renewal, 0 for a lease that does not exist.
//!
//! When the upstream stream breaks, it is opened again (on another member if need be) and the
//! renewals still waiting are sent again — renewing twice is harmless.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ketch_api::etcdserverpb::lease_client::LeaseClient;
use ketch_api::etcdserverpb::lease_server::Lease;
use ketch_api::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};
use tracing::debug;

use crate::director::Director;

/// Keep-alive answers queued for one client stream.
const CLIENT_QUEUE: usize = 64;
/// Renewals queued for the upstream stream.
const UPSTREAM_QUEUE: usize = 1024;
/// How long a client's keep-alive may wait for its answer before its stream is ended (the
/// client opens it again).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(15);
const REOPEN_PAUSE: Duration = Duration::from_millis(100);

type Waiters = Vec<oneshot::Sender<Result<LeaseKeepAliveResponse, Status>>>;

/// One upstream keep-alive stream and the renewals waiting on it.
struct Upstream {
    requests: mpsc::Sender<i64>,
    /// lease id → clients waiting for the renewal in flight
    waiting: Arc<Mutex<HashMap<i64, Waiters>>>,
}

pub struct LeaseProxy {
    director: Arc<Director>,
    /// by caller (token, or certificate name)
    upstreams: Mutex<HashMap<Option<String>, Arc<Upstream>>>,
    /// keep-alives clients sent, and renewals sent upstream for them
    pub client_keepalives: AtomicU64,
    pub upstream_renewals: AtomicU64,
}

impl LeaseProxy {
    pub fn new(director: Arc<Director>) -> Arc<LeaseProxy> {
        Arc::new(LeaseProxy {
            director,
            upstreams: Mutex::new(HashMap::new()),
            client_keepalives: AtomicU64::new(0),
            upstream_renewals: AtomicU64::new(0),
        })
    }

    fn upstream(self: &Arc<Self>, metadata: &MetadataMap) -> Arc<Upstream> {
        let token = crate::watch::caller(metadata);
        let mut all = self.upstreams.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(u) = all.get(&token) {
            if !u.requests.is_closed() {
                return u.clone();
            }
        }
        let (tx, rx) = mpsc::channel(UPSTREAM_QUEUE);
        let up = Arc::new(Upstream {
            requests: tx,
            waiting: Arc::new(Mutex::new(HashMap::new())),
        });
        tokio::spawn(run_upstream(
            self.director.clone(),
            token.clone(),
            rx,
            up.waiting.clone(),
        ));
        all.insert(token, up.clone());
        up
    }

    /// One renewal of `id`, shared with any already on its way.
    async fn renew(
        self: &Arc<Self>,
        id: i64,
        metadata: &MetadataMap,
    ) -> Result<LeaseKeepAliveResponse, Status> {
        let up = self.upstream(metadata);
        let (tx, rx) = oneshot::channel();
        let send = {
            let mut waiting = up.waiting.lock().unwrap_or_else(|e| e.into_inner());
            let list = waiting.entry(id).or_default();
            list.push(tx);
            list.len() == 1
        };
        self.client_keepalives.fetch_add(1, Ordering::Relaxed);
        if send {
            self.upstream_renewals.fetch_add(1, Ordering::Relaxed);
        }
        if send && up.requests.send(id).await.is_err() {
            return Err(Status::unavailable(
                "ketch proxy: lease keep-alive stream closed",
            ));
        }
        match tokio::time::timeout(ANSWER_TIMEOUT, rx).await {
            Ok(Ok(answer)) => answer,
            _ => Err(Status::unavailable(
                "ketch proxy: no keep-alive answer from the cluster",
            )),
        }
    }
}

/// Keeps one upstream keep-alive stream open, sending the renewals asked for and handing each
/// answer to everyone waiting for that lease.
async fn run_upstream(
    director: Arc<Director>,
    token: Option<String>,
    mut requests: mpsc::Receiver<i64>,
    waiting: Arc<Mutex<HashMap<i64, Waiters>>>,
) {
    loop {
        let Some(backend) = director.pick(b"").into_iter().next() else {
            tokio::time::sleep(REOPEN_PAUSE).await;
            if requests.is_closed() {
                return;
            }
            continue;
        };
        let (tx, rx) = mpsc::channel::<LeaseKeepAliveRequest>(UPSTREAM_QUEUE);
        // renewals that were waiting when the last stream broke go out first
        let pending: Vec<i64> = waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .copied()
            .collect();
        for id in pending {
            let _ = tx.try_send(LeaseKeepAliveRequest { id });
        }
        let mut request = Request::new(ReceiverStream::new(rx));
        match token.as_deref() {
            Some(cn) if cn.starts_with("cn:") => {
                if let Ok(v) = cn["cn:".len()..].parse() {
                    request.metadata_mut().insert(crate::PROXIED_IDENTITY, v);
                }
            }
            Some(t) => {
                if let Ok(v) = t.parse() {
                    request.metadata_mut().insert("token", v);
                }
            }
            None => {}
        }
        let mut stream = match LeaseClient::new(backend.channel.clone())
            .lease_keep_alive(request)
            .await
        {
            Ok(s) => s.into_inner(),
            Err(e) => {
                debug!(target: "proxy", "upstream keep-alive stream on {} failed: {e}", backend.url);
                director.failed(&backend);
                tokio::time::sleep(REOPEN_PAUSE).await;
                continue;
            }
        };
        loop {
            tokio::select! {
                id = requests.recv() => match id {
                    Some(id) => {
                        if tx.send(LeaseKeepAliveRequest { id }).await.is_err() {
                            break;
                        }
                    }
                    None => return,
                },
                answer = stream.message() => match answer {
                    Ok(Some(resp)) => {
                        let waiters = waiting.lock().unwrap_or_else(|e| e.into_inner()).remove(&resp.id).unwrap_or_default();
                        for w in waiters {
                            let _ = w.send(Ok(resp));
                        }
                    }
                    Ok(None) => break,
                    Err(status) => {
                        debug!(target: "proxy", "upstream keep-alive stream on {} ended: {status}", backend.url);
                        // an answer from the member (not a transport failure) is the clients' answer
                        if status.code() != tonic::Code::Unavailable && status.code() != tonic::Code::Unknown {
                            let all: Vec<Waiters> = waiting.lock().unwrap_or_else(|e| e.into_inner()).drain().map(|(_, w)| w).collect();
                            for w in all.into_iter().flatten() {
                                let _ = w.send(Err(status.clone()));
                            }
                        }
                        break;
                    }
                },
            }
        }
        tokio::time::sleep(REOPEN_PAUSE).await;
    }
}

/// etcd's Lease service as the proxy serves it: keep-alives coalesced, the rest forwarded.
pub struct LeaseService {
    pub leases: Arc<LeaseProxy>,
}

fn forwarded<T>(metadata: &MetadataMap, message: T) -> Request<T> {
    let mut req = Request::new(message);
    for key in ["token", "hasleader", crate::PROXIED_IDENTITY] {
        if let Some(v) = metadata.get(key) {
            req.metadata_mut().insert(key, v.clone());
        }
    }
    req
}

impl LeaseService {
    /// A client of the first member the director offers.
    fn client(&self) -> Result<LeaseClient<tonic::transport::Channel>, Status> {
        let backend = self
            .leases
            .director
            .pick(b"")
            .into_iter()
            .next()
            .ok_or_else(no_endpoints)?;
        Ok(LeaseClient::new(backend.channel.clone()))
    }
}

#[tonic::async_trait]
impl Lease for LeaseService {
    // The proxy routes only LeaseKeepAlive here (the byte forwarder passes the unary calls,
    // with its retries and timeouts); these forward too, should the service be used alone.
    async fn lease_grant(
        &self,
        r: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        self.client()?
            .lease_grant(forwarded(r.metadata(), *r.get_ref()))
            .await
    }

    async fn lease_revoke(
        &self,
        r: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        self.client()?
            .lease_revoke(forwarded(r.metadata(), *r.get_ref()))
            .await
    }

    async fn lease_time_to_live(
        &self,
        r: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        self.client()?
            .lease_time_to_live(forwarded(r.metadata(), *r.get_ref()))
            .await
    }

    async fn lease_leases(
        &self,
        r: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        self.client()?
            .lease_leases(forwarded(r.metadata(), *r.get_ref()))
            .await
    }

    type LeaseKeepAliveStream = ReceiverStream<Result<LeaseKeepAliveResponse, Status>>;

    async fn lease_keep_alive(
        &self,
        req: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let metadata = req.metadata().clone();
        let mut inbound = req.into_inner();
        let (out, rx) = mpsc::channel(CLIENT_QUEUE);
        let leases = self.leases.clone();
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    m = inbound.message() => m,
                    _ = out.closed() => return,
                };
                let Ok(Some(req)) = next else { return };
                let answer = leases.renew(req.id, &metadata).await;
                let failed = answer.is_err();
                if out.send(answer).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

fn no_endpoints() -> Status {
    Status::unavailable("ketch proxy: zero endpoints currently available")
}
