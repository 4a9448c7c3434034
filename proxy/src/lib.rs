//! ketch-proxy: the per-host proxy (`ketch --proxy on|readonly`). Applications talk to it on
//! localhost as to a member; it forwards gRPC ([`forward`]) and HTTP ([`http`]) on one port to
//! the members the [`director`] knows, which it discovers from their peer URLs and refreshes.
//! It knows only the wire API: no storage, no Raft.
//!
//! `Proxy::start(ProxyConfig)` learns the members (once, before serving), binds the client
//! listeners and serves until [`Proxy::stop`].

pub mod cache;
pub mod classify;
pub mod config;
pub mod director;
pub mod forward;
pub mod http;
pub mod l4;
pub mod lease;
pub mod watch;

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use ketch_api::etcdserverpb::lease_server::LeaseServer;
use ketch_api::etcdserverpb::watch_server::WatchServer;
use ketch_gateway::tls::stream::{incoming, ListenerTls, ServerStream};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt as _;
use tracing::{info, warn};

pub use config::{ProxyConfig, ProxyMode};
use director::Director;
use forward::Forwarder;
use http::HttpForwarder;
pub use ketch_gateway::tls::PROXIED_IDENTITY;

/// Why a proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("{0}")]
    Config(String),
    #[error("listen tcp {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A running proxy.
pub struct Proxy {
    addrs: Vec<SocketAddr>,
    director: Arc<Director>,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: JoinSet<()>,
}

/// What each connection's requests are handed to.
struct Routes {
    grpc: Forwarder,
    http: HttpForwarder,
    watch: Arc<watch::WatchProxy>,
    leases: Arc<lease::LeaseProxy>,
    mode: ProxyMode,
}

impl Proxy {
    pub async fn start(config: ProxyConfig) -> Result<Proxy, ProxyError> {
        let director = Arc::new(Director::new(config.clone()).map_err(ProxyError::Config)?);
        match director.refresh().await {
            Ok(n) => info!(target: "proxy", "found {n} client endpoint(s) of the cluster"),
            Err(e) => warn!(target: "proxy", "could not get the member list yet ({e}); retrying"),
        }
        let watch = watch::WatchProxy::new(director.clone(), config.max_request_bytes);
        let cache = cache::RangeCache::new(config.cache_bytes);
        let leases = lease::LeaseProxy::new(director.clone());
        let routes = Arc::new(Routes {
            grpc: Forwarder {
                director: director.clone(),
                config: config.clone(),
                cache: cache.clone(),
            },
            http: HttpForwarder::new(
                director.clone(),
                config.clone(),
                watch.clone(),
                cache.clone(),
                leases.clone(),
            ),
            watch,
            leases,
            mode: config.mode,
        });
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let mut tasks = JoinSet::new();
        let mut addrs = Vec::new();
        let tls = if config.listen.iter().any(|(_, tls)| *tls) {
            if config.client_tls.is_empty() {
                return Err(ProxyError::Config(
                    "cannot listen on TLS: --cert-file and --key-file are not given".into(),
                ));
            }
            let server = config
                .client_tls
                .server_config()
                .map_err(|e| ProxyError::Config(e.to_string()))?;
            Some(ListenerTls {
                config: server,
                check_client_san: false,
                log_target: "embed",
            })
        } else {
            None
        };
        for (addr, https) in &config.listen {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| ProxyError::Listen {
                    addr: *addr,
                    source,
                })?;
            let local = listener.local_addr().unwrap_or(*addr);
            let scheme = if *https { "https" } else { "http" };
            info!(target: "etcdmain", "proxy: listening for client requests on {scheme}://{local}");
            addrs.push(local);
            let connections = incoming(listener, if *https { tls.clone() } else { None });
            tasks.spawn(serve(connections, routes.clone(), stop_rx.clone()));
        }
        if config.cache_bytes > 0 {
            tasks.spawn(cache.run_invalidation(director.clone(), stop_rx.clone()));
        }
        tasks.spawn(director.clone().run(stop_rx));
        Ok(Proxy {
            addrs,
            director,
            stop,
            tasks,
        })
    }

    /// The bound client addresses (useful with port 0).
    pub fn client_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Client URLs of the members in use, and whether each is available.
    pub fn endpoints(&self) -> Vec<(String, bool)> {
        self.director.endpoints()
    }

    /// Stops accepting, ends every connection (streams included) and the refresh loop.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Passes the client's certificate name on to members (see [`PROXIED_IDENTITY`]), never one the
/// client claims itself.
fn carry_identity(headers: &mut ::http::HeaderMap, identity: Option<&str>) {
    headers.remove(PROXIED_IDENTITY);
    if let Some(v) = identity.and_then(|i| ::http::HeaderValue::from_str(i).ok()) {
        headers.insert(PROXIED_IDENTITY, v);
    }
}

/// Serves accepted connections (plain or TLS, as the listener is) until `stop`; each over
/// HTTP/1 or HTTP/2 as the client speaks, gRPC to the gRPC forwarder and everything else to
/// the HTTP one.
async fn serve(
    mut accepted: ReceiverStream<std::io::Result<ServerStream>>,
    routes: Arc<Routes>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        let next = tokio::select! {
            a = accepted.next() => a,
            _ = stop.wait_for(|s| *s) => break,
        };
        let stream = match next {
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                warn!(target: "proxy", "accept error: {e}");
                continue;
            }
            None => break,
        };
        let routes = routes.clone();
        // The client's identity on this connection: the CN of its verified certificate.
        let identity = stream.info().identity();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |mut req: ::http::Request<Incoming>| {
                let routes = routes.clone();
                carry_identity(req.headers_mut(), identity.as_deref());
                async move {
                    let grpc = req
                        .headers()
                        .get(::http::header::CONTENT_TYPE)
                        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
                    let resp = if !grpc {
                        routes.http.handle(req).await
                    } else if req.uri().path() == "/etcdserverpb.Watch/Watch" {
                        // watches are served here, coalesced (see `watch`)
                        let mut svc = WatchServer::from_arc(Arc::new(watch::WatchService(
                            routes.watch.clone(),
                        )));
                        match tower::Service::call(&mut svc, req).await {
                            Ok(resp) => resp,
                            Err(never) => match never {},
                        }
                    } else if req.uri().path() == "/etcdserverpb.Lease/LeaseKeepAlive"
                        && routes.mode == ProxyMode::On
                    {
                        // keep-alives are served here, coalesced (see `lease`)
                        let service = lease::LeaseService {
                            leases: routes.leases.clone(),
                        };
                        let mut svc = LeaseServer::new(service);
                        match tower::Service::call(&mut svc, req).await {
                            Ok(resp) => resp,
                            Err(never) => match never {},
                        }
                    } else {
                        routes.grpc.grpc(req).await
                    };
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(e) = builder
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(target: "proxy", "client connection ended: {e}");
            }
        });
        // reap finished connections as we go
        while connections.try_join_next().is_some() {}
    }
    connections.abort_all();
    while connections.join_next().await.is_some() {}
}
