//! The client listener: one TCP listener per `--listen-client-urls` entry, serving etcd's gRPC
//! services and the HTTP routes (`/health`, `/version`) on the same port — HTTP/2 for gRPC,
//! HTTP/1.1 for curl and probes.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ketch_api::etcdserverpb::cluster_server::ClusterServer;
use ketch_api::etcdserverpb::kv_server::KvServer;
use ketch_api::etcdserverpb::lease_server::LeaseServer;
use ketch_api::etcdserverpb::maintenance_server::MaintenanceServer;
use ketch_api::etcdserverpb::watch_server::WatchServer;
use ketch_api::v3electionpb::election_server::ElectionServer;
use ketch_api::v3lockpb::lock_server::LockServer;
use ketch_gateway::health::{self, HealthSource};
use ketch_gateway::tls::stream::ListenerTls;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tonic::service::Routes;
use tracing::{error, info};
use url::Url;

use super::cluster::ClusterService;
use super::election::ElectionService;
use super::kv::KvService;
use super::lease::LeaseService;
use super::lock::LockService;
use super::maintenance::MaintenanceService;
use super::watch::WatchService;
use super::{Server, SharedServer};
use crate::member::StartError;

/// gRPC framing and metadata on top of the largest request etcd accepts (etcd's
/// grpcOverheadBytes).
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

impl HealthSource for Server {
    fn healthy(&self) -> Pin<Box<dyn Future<Output = bool> + Send + '_>> {
        Box::pin(async move {
            // etcd: any raised alarm, or no leader, is unhealthy
            if self.cluster.leader() == 0 || !self.alarms.list().is_empty() {
                return false;
            }
            matches!(
                tokio::time::timeout(Duration::from_secs(1), self.linearizable_barrier()).await,
                Ok(Ok(()))
            )
        })
    }

    /// etcd's names for what dashboards and alerts read most.
    fn metrics(&self) -> String {
        use ketch_gateway::health::write_metric as m;
        let mut out = String::new();
        let leader = self.cluster.leader();
        let hub = self.watch_hub.counts();
        m(
            &mut out,
            "etcd_cluster_version",
            "gauge",
            "Which version is running. 1 for 'cluster_version' label with current cluster version",
            &format!(
                "cluster_version=\"{}\"",
                &ketch_api::ETCD_CLUSTER_VERSION[..3]
            ),
            1.0,
        );
        m(
            &mut out,
            "etcd_server_version",
            "gauge",
            "Which version is running. 1 for 'server_version' label with current version.",
            &format!("server_version=\"{}\"", ketch_api::ETCD_SERVER_VERSION),
            1.0,
        );
        m(
            &mut out,
            "etcd_server_has_leader",
            "gauge",
            "Whether or not a leader exists. 1 is existence, 0 is not.",
            "",
            f64::from(u8::from(leader != 0)),
        );
        m(
            &mut out,
            "etcd_server_is_leader",
            "gauge",
            "Whether or not this member is a leader. 1 if is, 0 otherwise.",
            "",
            f64::from(u8::from(leader != 0 && leader == self.cluster.member_id)),
        );
        m(
            &mut out,
            "etcd_server_is_learner",
            "gauge",
            "Whether or not this member is a learner. 1 if is, 0 otherwise.",
            "",
            f64::from(u8::from(self.cluster.local_is_learner())),
        );
        m(
            &mut out,
            "etcd_server_leader_changes_seen_total",
            "counter",
            "The number of leader changes seen.",
            "",
            self.cluster.leader_changes_seen() as f64,
        );
        m(
            &mut out,
            "etcd_server_proposals_committed_total",
            "gauge",
            "The total number of consensus proposals committed.",
            "",
            self.cluster.commit_index() as f64,
        );
        m(
            &mut out,
            "etcd_server_proposals_applied_total",
            "gauge",
            "The total number of consensus proposals applied.",
            "",
            *self.applied.borrow() as f64,
        );
        m(
            &mut out,
            "etcd_server_quota_backend_bytes",
            "gauge",
            "Current backend storage quota size in bytes.",
            "",
            self.quota_bytes as f64,
        );
        m(
            &mut out,
            "etcd_mvcc_db_total_size_in_bytes",
            "gauge",
            "Total size of the underlying database physically allocated in bytes.",
            "",
            self.store.db_size() as f64,
        );
        m(
            &mut out,
            "etcd_mvcc_db_total_size_in_use_in_bytes",
            "gauge",
            "Total size of the underlying database logically in use in bytes.",
            "",
            self.store.db_size_in_use() as f64,
        );
        m(
            &mut out,
            "etcd_debugging_mvcc_current_revision",
            "gauge",
            "The current revision of store.",
            "",
            self.store.current_revision() as f64,
        );
        m(
            &mut out,
            "etcd_debugging_mvcc_compact_revision",
            "gauge",
            "The revision of the last compaction in store.",
            "",
            self.store.compact_revision().max(0) as f64,
        );
        m(
            &mut out,
            "etcd_debugging_mvcc_watcher_total",
            "gauge",
            "Total number of watchers.",
            "",
            (hub.synced + hub.unsynced) as f64,
        );
        m(
            &mut out,
            "etcd_debugging_mvcc_slow_watcher_total",
            "gauge",
            "Total number of unsynced slow watchers.",
            "",
            hub.unsynced as f64,
        );
        out
    }
}

/// An unknown gRPC method gets gRPC's Unimplemented; any other unknown path gets Go's
/// `404 page not found`, as etcd's HTTP mux answers.
async fn unknown_path(req: axum::extract::Request) -> axum::response::Response {
    use axum::response::IntoResponse;
    let is_grpc = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"));
    if is_grpc {
        return tonic::Status::unimplemented("")
            .into_http::<axum::body::Body>()
            .into_response();
    }
    (
        http::StatusCode::NOT_FOUND,
        [
            (http::header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (http::header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        "404 page not found\n",
    )
        .into_response()
}

/// Resolves a listen URL to the socket address to bind. `localhost` binds loopback IPv4, as
/// etcd's listener does.
pub fn socket_addr(url: &Url) -> Result<SocketAddr, StartError> {
    let port = url
        .port_or_known_default()
        .ok_or_else(|| StartError::Other(format!("listen URL {url} has no port")))?;
    let host = url.host_str().unwrap_or("");
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addr = if host == "localhost" || host.is_empty() {
        SocketAddr::from(([127, 0, 0, 1], port))
    } else {
        let ip: std::net::IpAddr = host
            .parse()
            .map_err(|_| StartError::Other(format!("expected IP in URL for binding ({url})")))?;
        SocketAddr::new(ip, port)
    };
    Ok(addr)
}

/// Binds every client URL (so a port conflict fails the start) and returns the bound listeners.
pub async fn bind_clients(urls: &[Url]) -> Result<Vec<(Url, TcpListener)>, StartError> {
    let mut out = Vec::new();
    for url in urls {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(StartError::Other(format!(
                "listen URL {url}: only http:// and https:// URLs are served by ketch (not unix sockets)"
            )));
        }
        let addr = socket_addr(url)?;
        let l = TcpListener::bind(addr)
            .await
            .map_err(|e| StartError::Other(format!("listen tcp {addr}: bind: {e}")))?;
        out.push((url.clone(), l));
    }
    Ok(out)
}

/// etcd's learner rule: a learner answers only `Status` and serializable `Range` (checked in
/// the KV service); every other gRPC call gets "rpc not supported for learner".
async fn refuse_on_learner(
    axum::extract::State(server): axum::extract::State<SharedServer>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let path = req.uri().path();
    if server.cluster.local_is_learner()
        && path != "/etcdserverpb.Maintenance/Status"
        && path != "/etcdserverpb.KV/Range"
    {
        return tonic::Status::from(ketch_api::status::EtcdError::NotSupportedForLearner)
            .into_http();
    }
    next.run(req).await
}

/// Serves gRPC and HTTP on each listener until `shutdown` turns true; `https://` listeners
/// with `tls` (http and https URLs may be mixed).
pub fn serve_clients(
    server: SharedServer,
    listeners: Vec<(Url, TcpListener)>,
    tls: Option<ListenerTls>,
    shutdown: watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    let max_recv = server.max_request_bytes + GRPC_OVERHEAD_BYTES;
    let mut handles = Vec::new();
    for (url, listener) in listeners {
        let routes = Routes::new(
            KvServer::new(KvService(server.clone())).max_decoding_message_size(max_recv),
        )
        .add_service(
            ClusterServer::new(ClusterService(server.clone())).max_decoding_message_size(max_recv),
        )
        .add_service(
            MaintenanceServer::new(MaintenanceService(server.clone()))
                .max_decoding_message_size(max_recv),
        )
        .add_service(
            LeaseServer::new(LeaseService {
                server: server.clone(),
                shutdown: shutdown.clone(),
            })
            .max_decoding_message_size(max_recv),
        )
        .add_service(
            LockServer::new(LockService(server.clone())).max_decoding_message_size(max_recv),
        )
        .add_service(
            ketch_api::etcdserverpb::auth_server::AuthServer::new(super::auth::AuthService(
                server.clone(),
            ))
            .max_decoding_message_size(max_recv),
        )
        .add_service(
            ElectionServer::new(ElectionService {
                server: server.clone(),
                shutdown: shutdown.clone(),
            })
            .max_decoding_message_size(max_recv),
        )
        .add_service(
            WatchServer::new(WatchService {
                server: server.clone(),
                shutdown: shutdown.clone(),
                max_response_bytes: max_recv,
            })
            .max_decoding_message_size(max_recv),
        );
        let health_source: Arc<dyn HealthSource> = server.clone();
        let router = routes
            .into_axum_router()
            .layer(axum::middleware::from_fn_with_state(
                server.clone(),
                refuse_on_learner,
            ))
            .merge(health::router(health_source))
            .fallback(unknown_path);
        let mut shutdown = shutdown.clone();
        let local = listener.local_addr().ok();
        let tls = crate::config::is_tls_scheme(&url)
            .then(|| tls.clone())
            .flatten();
        info!(target: "embed", "ready to serve client requests");
        if let Some(addr) = local {
            if tls.is_some() {
                info!(target: "embed", "serving client requests on {addr}");
            } else {
                info!(
                    target: "embed",
                    "serving insecure client requests on {addr}, this is strongly discouraged!"
                );
            }
        }
        // The authority fix reads HTTP/2 frames, so over TLS it sits inside the TLS stream.
        let incoming = ketch_gateway::tls::stream::incoming(listener, tls)
            .map(|s| s.map(super::authority::AuthorityFix::new));
        handles.push(tokio::spawn(async move {
            let result = tonic::transport::Server::builder()
                .accept_http1(true)
                .http2_keepalive_interval(Some(Duration::from_secs(7200)))
                .http2_keepalive_timeout(Some(Duration::from_secs(20)))
                .add_routes(Routes::from(router))
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = shutdown.wait_for(|s| *s).await;
                })
                .await;
            if let Err(e) = result {
                error!(target: "embed", "client server on {url} stopped: {e}");
            }
        }));
    }
    handles
}
