//! An etcd v3 client that behaves like the clientv3 etcdctl 3.4 is built on, where etcdctl's
//! output depends on it: calls wait for a connection until their deadline, failed attempts
//! are logged with clientv3's warning, read-only calls retry on `Unavailable`, `--user`
//! authenticates while the client is set up (and again for each endpoint dialed directly), and
//! errors read the way clientv3 returns them.

pub mod connect;
pub mod errors;
pub mod tls;

use std::future::Future;
use std::time::Duration;

use ketch_api::etcdserverpb::auth_client::AuthClient;
use ketch_api::etcdserverpb::cluster_client::ClusterClient;
use ketch_api::etcdserverpb::kv_client::KvClient;
use ketch_api::etcdserverpb::lease_client::LeaseClient;
use ketch_api::etcdserverpb::maintenance_client::MaintenanceClient;
use ketch_api::etcdserverpb::{
    AuthenticateRequest, CompactionRequest, CompactionResponse, DeleteRangeRequest,
    DeleteRangeResponse, HashKvRequest, HashKvResponse, LeaseGrantRequest, LeaseGrantResponse,
    LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse, MemberListRequest, MemberListResponse,
    PutRequest, PutResponse, RangeRequest, RangeResponse, StatusRequest, StatusResponse,
    TxnRequest, TxnResponse,
};
use ketch_api::status::EtcdError;
use tokio::time::Instant;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::logline;
use connect::{Conn, DialTarget, Keepalive};
pub use errors::RpcError;
use tls::TlsSetup;

/// Everything needed to reach the cluster, resolved from the global flags.
#[derive(Clone, Debug)]
pub struct ClientSettings {
    pub endpoints: Vec<String>,
    pub dial_timeout: Duration,
    pub keepalive: Keepalive,
    pub secure: tls::SecureSettings,
    /// `--user` and its password.
    pub credentials: Option<(String, String)>,
}

/// clientv3's retry policy for a call.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Retry {
    /// Read-only calls: retried while the server is unavailable.
    Repeatable,
    /// Writes: never retried once sent.
    NonRepeatable,
}

/// A deadline for one call; `None` waits forever (etcdctl's `txn`).
pub type Deadline = Option<Instant>;

/// The deadline of Go's `context.WithTimeout(ctx, d)` started now.
pub fn deadline_after(d: Duration) -> Deadline {
    Some(Instant::now() + d)
}

pub struct Client {
    settings: ClientSettings,
    tls: TlsSetup,
    /// clientv3's resolver group name, `client-<uuid>`.
    group: String,
    main: Conn,
    token: tokio::sync::Mutex<Option<String>>,
}

/// Why setting up a client failed.
#[derive(Debug)]
pub enum SetupError {
    /// Building the TLS configuration (etcdctl exits with ExitBadArgs).
    Config(String),
    /// Authenticating (etcdctl exits with ExitBadConnection).
    Connect(RpcError),
    /// No endpoint to connect to (also ExitBadConnection).
    NoEndpoints,
}

impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SetupError::Config(m) => f.write_str(m),
            SetupError::Connect(e) => write!(f, "{e}"),
            SetupError::NoEndpoints => f.write_str("etcdclient: no available endpoints"),
        }
    }
}

impl Client {
    /// clientv3.New: prepare the connection and, with `--user`, fetch a token.
    pub async fn new(settings: ClientSettings) -> Result<Client, SetupError> {
        let tls = TlsSetup::from_settings(&settings.secure).map_err(SetupError::Config)?;
        if settings.endpoints.is_empty() {
            return Err(SetupError::NoEndpoints);
        }
        let group = format!("client-{}", logline::uuid_v4());
        let targets = settings
            .endpoints
            .iter()
            .map(|ep| dial_target(ep, &tls))
            .collect::<Result<Vec<_>, _>>()
            .map_err(SetupError::Config)?;
        let first_host = settings
            .endpoints
            .first()
            .map(|ep| connect::parse_endpoint(ep).1)
            .unwrap_or_default();
        let main = Conn::new(
            targets,
            format!("endpoint://{group}/{first_host}"),
            true,
            settings.keepalive,
        );
        let client = Client {
            settings,
            tls,
            group,
            main,
            token: tokio::sync::Mutex::new(None),
        };
        let token = client.fetch_token().await.map_err(SetupError::Connect)?;
        *client.token.lock().await = token;
        Ok(client)
    }

    fn auth_enabled(&self) -> bool {
        matches!(&self.settings.credentials, Some((u, p)) if !u.is_empty() && !p.is_empty())
    }

    /// clientv3's `getToken`: authenticate against each endpoint in turn until one answers,
    /// within the dial timeout. Authentication being disabled is not an error.
    async fn fetch_token(&self) -> Result<Option<String>, RpcError> {
        let Some((user, password)) = self
            .settings
            .credentials
            .clone()
            .filter(|_| self.auth_enabled())
        else {
            return Ok(None);
        };
        let deadline = (!self.settings.dial_timeout.is_zero())
            .then(|| Instant::now() + self.settings.dial_timeout);
        let request = AuthenticateRequest {
            name: user,
            password,
        };
        let mut last = RpcError::DeadlineExceeded;
        for ep in &self.settings.endpoints {
            let target = dial_target(ep, &self.tls).map_err(|e| RpcError::Status {
                code: Code::Unknown,
                message: e,
            })?;
            let host = connect::parse_endpoint(ep).1;
            let conn = Conn::new(
                vec![target],
                format!("endpoint://{}/{host}", self.group),
                true,
                self.settings.keepalive,
            );
            let result = self
                .unary(
                    &conn,
                    deadline,
                    Retry::NonRepeatable,
                    None,
                    &request,
                    |ch, req| async move { AuthClient::new(ch).authenticate(req).await },
                )
                .await;
            match result {
                Ok(resp) => return Ok(Some(resp.token)),
                Err(e) if e.is(&EtcdError::AuthNotEnabled) => return Ok(None),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// One call with clientv3's interceptor: wait for a connection, attach the token, log
    /// each failed attempt, retry what is safe to retry.
    async fn unary<Req, Resp, F, Fut>(
        &self,
        conn: &Conn,
        deadline: Deadline,
        retry: Retry,
        token: Option<&str>,
        message: &Req,
        call: F,
    ) -> Result<Resp, RpcError>
    where
        Req: Clone,
        F: Fn(Channel, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        let mut token = token.map(str::to_string);
        let mut attempt: u32 = 0;
        loop {
            if attempt > 0 {
                let pause = self.retry_backoff(attempt);
                let wake = Instant::now() + pause;
                if deadline.is_some_and(|d| d <= wake) {
                    if let Some(d) = deadline {
                        tokio::time::sleep_until(d).await;
                    }
                    return Err(RpcError::DeadlineExceeded);
                }
                tokio::time::sleep_until(wake).await;
            }
            let ready = match conn.ready(deadline).await {
                Ok(r) => r,
                Err(not_ready) => {
                    logline::emit(&logline::retry_warning(
                        &conn.log_target,
                        attempt,
                        &not_ready.status_text(),
                    ));
                    return Err(RpcError::DeadlineExceeded);
                }
            };
            let mut request = tonic::Request::new(message.clone());
            request
                .metadata_mut()
                .insert("client-api-version", MetadataValue::from_static("3.4"));
            if let Some(t) = token
                .as_deref()
                .and_then(|t| MetadataValue::try_from(t).ok())
            {
                request.metadata_mut().insert("token", t);
            }
            if let Some(d) = deadline {
                request.set_timeout(d.saturating_duration_since(Instant::now()));
            }
            let outcome = match deadline {
                Some(d) => tokio::time::timeout_at(d, call(ready.channel.clone(), request))
                    .await
                    .ok(),
                None => Some(call(ready.channel.clone(), request).await),
            };
            let mut status = match outcome {
                Some(Ok(resp)) => return Ok(resp.into_inner()),
                // tonic enforces the `grpc-timeout` we send as well, and its timer can fire in the
                // same tick as ours: the call ran out of time either way, which grpc-go reports
                // as the context's deadline. The connection is not to blame.
                Some(Err(status)) if !timed_out(&status) => status,
                _ => {
                    let text = errors::grpc_error_text(
                        Code::DeadlineExceeded,
                        "context deadline exceeded",
                    );
                    logline::emit(&logline::retry_warning(&conn.log_target, attempt, &text));
                    return Err(RpcError::DeadlineExceeded);
                }
            };
            // A status with a source is our own transport failing, not an answer from the
            // server.
            if std::error::Error::source(&status).is_some() {
                conn.mark_broken(&ready).await;
                if !ready.working() {
                    // The server never spoke HTTP/2 on the connection (it refused our TLS
                    // certificate, or does not speak gRPC): grpc-go never saw it READY, so it
                    // keeps waiting for a working one until the deadline, without reporting
                    // an attempt.
                    continue;
                }
                status = Status::unavailable("transport is closing");
            }
            logline::emit(&logline::retry_warning(
                &conn.log_target,
                attempt,
                &errors::grpc_error_text(status.code(), status.message()),
            ));
            let err = RpcError::from_status(&status);
            attempt += 1;
            if matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled) {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Err(RpcError::DeadlineExceeded);
                }
                continue;
            }
            if self.should_refresh_token(&err) {
                if self.auth_enabled() {
                    // Boxed: fetching a token is itself a call through here.
                    match Box::pin(self.fetch_token()).await {
                        Ok(t) => {
                            token = t.clone();
                            *self.token.lock().await = t;
                        }
                        Err(e) => return Err(e),
                    }
                }
                continue;
            }
            if !safe_to_retry(&err, retry) || attempt >= 100 {
                return Err(err);
            }
        }
    }

    fn should_refresh_token(&self, err: &RpcError) -> bool {
        if err.is(&EtcdError::UserEmpty) {
            return self.auth_enabled();
        }
        err.is(&EtcdError::InvalidAuthToken) || err.is(&EtcdError::AuthOldRevision)
    }

    /// clientv3's round-robin quorum backoff: 25ms (+10% jitter) after each pass over a quorum
    /// of endpoints.
    fn retry_backoff(&self, attempt: u32) -> Duration {
        let n = self.settings.endpoints.len().max(1) as u32;
        let quorum = n / 2 + 1;
        if attempt.is_multiple_of(quorum) {
            Duration::from_millis(25).mul_f64(1.0 + 0.1 * clock_fraction())
        } else {
            Duration::ZERO
        }
    }

    async fn main_call<Req, Resp, F, Fut>(
        &self,
        deadline: Deadline,
        retry: Retry,
        message: &Req,
        call: F,
    ) -> Result<Resp, RpcError>
    where
        Req: Clone,
        F: Fn(Channel, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        let token = self.token.lock().await.clone();
        self.unary(&self.main, deadline, retry, token.as_deref(), message, call)
            .await
    }

    pub async fn range(
        &self,
        req: RangeRequest,
        deadline: Deadline,
    ) -> Result<RangeResponse, RpcError> {
        self.main_call(deadline, Retry::Repeatable, &req, |ch, r| async move {
            kv(ch).range(r).await
        })
        .await
    }

    pub async fn put(&self, req: PutRequest, deadline: Deadline) -> Result<PutResponse, RpcError> {
        self.main_call(deadline, Retry::NonRepeatable, &req, |ch, r| async move {
            kv(ch).put(r).await
        })
        .await
    }

    pub async fn delete_range(
        &self,
        req: DeleteRangeRequest,
        deadline: Deadline,
    ) -> Result<DeleteRangeResponse, RpcError> {
        self.main_call(deadline, Retry::NonRepeatable, &req, |ch, r| async move {
            kv(ch).delete_range(r).await
        })
        .await
    }

    pub async fn txn(&self, req: TxnRequest, deadline: Deadline) -> Result<TxnResponse, RpcError> {
        self.main_call(deadline, Retry::NonRepeatable, &req, |ch, r| async move {
            kv(ch).txn(r).await
        })
        .await
    }

    pub async fn compact(
        &self,
        req: CompactionRequest,
        deadline: Deadline,
    ) -> Result<CompactionResponse, RpcError> {
        self.main_call(deadline, Retry::NonRepeatable, &req, |ch, r| async move {
            kv(ch).compact(r).await
        })
        .await
    }

    pub async fn member_list(&self, deadline: Deadline) -> Result<MemberListResponse, RpcError> {
        self.main_call(
            deadline,
            Retry::Repeatable,
            &MemberListRequest::default(),
            |ch, r| async move { ClusterClient::new(ch).member_list(r).await },
        )
        .await
    }

    pub async fn lease_grant(
        &self,
        req: LeaseGrantRequest,
        deadline: Deadline,
    ) -> Result<LeaseGrantResponse, RpcError> {
        self.main_call(deadline, Retry::NonRepeatable, &req, |ch, r| async move {
            LeaseClient::new(ch).lease_grant(r).await
        })
        .await
    }

    pub async fn lease_revoke(
        &self,
        req: LeaseRevokeRequest,
        deadline: Deadline,
    ) -> Result<LeaseRevokeResponse, RpcError> {
        self.main_call(deadline, Retry::Repeatable, &req, |ch, r| async move {
            LeaseClient::new(ch).lease_revoke(r).await
        })
        .await
    }

    pub async fn lease_time_to_live(
        &self,
        req: LeaseTimeToLiveRequest,
        deadline: Deadline,
    ) -> Result<LeaseTimeToLiveResponse, RpcError> {
        self.main_call(deadline, Retry::Repeatable, &req, |ch, r| async move {
            LeaseClient::new(ch).lease_time_to_live(r).await
        })
        .await
    }

    pub async fn lease_leases(&self, deadline: Deadline) -> Result<LeaseLeasesResponse, RpcError> {
        self.main_call(
            deadline,
            Retry::Repeatable,
            &LeaseLeasesRequest::default(),
            |ch, r| async move { LeaseClient::new(ch).lease_leases(r).await },
        )
        .await
    }

    /// A channel for a streaming call (watch, lease keep-alive), waiting as long as it takes,
    /// and a request carrying `message` with the metadata clientv3 attaches.
    pub async fn stream_request<T>(
        &self,
        message: T,
        require_leader: bool,
    ) -> Result<(Channel, tonic::Request<T>), RpcError> {
        let ready = self
            .main
            .ready(None)
            .await
            .map_err(|_| RpcError::DeadlineExceeded)?;
        let mut request = tonic::Request::new(message);
        request
            .metadata_mut()
            .insert("client-api-version", MetadataValue::from_static("3.4"));
        if require_leader {
            request
                .metadata_mut()
                .insert("hasleader", MetadataValue::from_static("true"));
        }
        let token = self.token.lock().await.clone();
        if let Some(t) = token.and_then(|t| MetadataValue::try_from(t).ok()) {
            request.metadata_mut().insert("token", t);
        }
        Ok((ready.channel, request))
    }

    /// clientv3's `Dial(ep)`: a connection to one endpoint, authenticated anew.
    async fn dial_direct(&self, ep: &str) -> Result<(Conn, Option<String>), RpcError> {
        let target = dial_target(ep, &self.tls).map_err(|e| RpcError::Status {
            code: Code::Unknown,
            message: e,
        })?;
        let token = self.fetch_token().await?;
        Ok((
            Conn::new(
                vec![target],
                format!("passthrough:///{ep}"),
                false,
                self.settings.keepalive,
            ),
            token,
        ))
    }

    /// Maintenance.Status of one endpoint.
    pub async fn status(&self, ep: &str, deadline: Deadline) -> Result<StatusResponse, RpcError> {
        let (conn, token) = self.dial_direct(ep).await?;
        self.unary(
            &conn,
            deadline,
            Retry::Repeatable,
            token.as_deref(),
            &StatusRequest::default(),
            |ch, r| async move { MaintenanceClient::new(ch).status(r).await },
        )
        .await
    }

    /// Maintenance.HashKV of one endpoint.
    pub async fn hash_kv(
        &self,
        ep: &str,
        revision: i64,
        deadline: Deadline,
    ) -> Result<HashKvResponse, RpcError> {
        let (conn, token) = self.dial_direct(ep).await?;
        self.unary(
            &conn,
            deadline,
            Retry::Repeatable,
            token.as_deref(),
            &HashKvRequest { revision },
            |ch, r| async move { MaintenanceClient::new(ch).hash_kv(r).await },
        )
        .await
    }
}

fn kv(ch: Channel) -> KvClient<Channel> {
    // clientv3 accepts responses of any size.
    KvClient::new(ch).max_decoding_message_size(usize::MAX)
}

fn dial_target(ep: &str, tls: &TlsSetup) -> Result<DialTarget, String> {
    DialTarget::new(
        ep,
        tls.configured.as_ref(),
        TlsSetup::default_config,
        &tls.server_name,
    )
}

/// Whether a call failed because tonic's own timer for its `grpc-timeout` ran out.
fn timed_out(status: &Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        if e.is::<tonic::TimeoutExpired>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// clientv3's `isSafeRetry`.
fn safe_to_retry(err: &RpcError, retry: Retry) -> bool {
    match retry {
        Retry::Repeatable => {
            if let Some(e) = err.etcd_error() {
                if e.code() != Code::Unavailable {
                    return false;
                }
            }
            err.code() == Code::Unavailable
        }
        Retry::NonRepeatable => {
            err.code() == Code::Unavailable
                && matches!(err, RpcError::Status { message, .. }
                    if message == "there is no address available" || message == "there is no connection available")
        }
    }
}

/// A number in [0, 1) from the clock, for jitter.
fn clock_fraction() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    (nanos % 1000) as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tonic_timeouts_are_told_from_transport_errors() {
        assert!(timed_out(&Status::from_error(Box::new(
            tonic::TimeoutExpired(())
        ))));
        assert!(!timed_out(&Status::from_error(Box::new(
            std::io::Error::other("connection reset")
        ))));
        assert!(!timed_out(&Status::deadline_exceeded(
            "context deadline exceeded"
        )));
    }

    #[tokio::test]
    async fn a_call_out_of_time_keeps_its_connection() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // A server that speaks HTTP/2 (an empty SETTINGS frame) and never answers a call.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let _ = s.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await;
                    let mut buf = [0u8; 4096];
                    while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
                });
            }
        });
        let settings = ClientSettings {
            endpoints: vec![addr.to_string()],
            dial_timeout: Duration::from_secs(2),
            keepalive: Keepalive {
                time: Duration::ZERO,
                timeout: Duration::ZERO,
            },
            secure: tls::SecureSettings {
                insecure_transport: true,
                ..Default::default()
            },
            credentials: None,
        };
        let client = Client::new(settings).await.unwrap();
        for _ in 0..3 {
            let err = client
                .range(
                    RangeRequest::default(),
                    deadline_after(Duration::from_millis(100)),
                )
                .await
                .unwrap_err();
            assert!(matches!(err, RpcError::DeadlineExceeded), "{err:?}");
            // Still connected: the next call need not wait for a reconnect.
            assert!(client.main.ready(Some(Instant::now())).await.is_ok());
        }
    }
}
