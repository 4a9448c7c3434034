//! `ketch gateway start`: etcd's L4 gateway — TCP connections to `--listen-addr` are passed,
//! byte for byte, to one of `--endpoints` (TLS and client certificates pass through untouched).
//! Endpoints take turns; one that refuses a connection is left out and the next is tried, and
//! a monitor dials left-out endpoints every `--retry-delay` and takes back those that answer.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tracing::{info, warn};

/// How long one dial to an endpoint may take (etcd's gateway has none; an endpoint that
/// swallows SYNs would otherwise hold every client).
const DIAL_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Clone, Debug)]
pub struct GatewayConfig {
    pub listen: SocketAddr,
    /// `host:port` of each endpoint (schemes already stripped)
    pub endpoints: Vec<String>,
    pub retry_delay: Duration,
}

struct Remote {
    addr: String,
    active: Mutex<bool>,
}

pub struct Gateway {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Gateway {
    pub async fn start(config: GatewayConfig) -> Result<Gateway, String> {
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|e| format!("listen tcp {}: {e}", config.listen))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        for ep in &config.endpoints {
            // etcd refuses to proxy to itself: every connection would loop
            if let Ok(mut addrs) = tokio::net::lookup_host(ep).await {
                if addrs.any(|a| a == addr) {
                    return Err(format!(
                        "gateway endpoint {ep} is the gateway's own listen address {addr}"
                    ));
                }
            }
        }
        let remotes: Arc<Vec<Remote>> = Arc::new(
            config
                .endpoints
                .iter()
                .map(|e| Remote {
                    addr: e.clone(),
                    active: Mutex::new(true),
                })
                .collect(),
        );
        info!(target: "etcdmain", "ready to proxy client requests to {:?}", config.endpoints);
        let monitor = tokio::spawn(monitor(remotes.clone(), config.retry_delay));
        let task = tokio::spawn(async move {
            let next = Arc::new(AtomicUsize::new(0));
            loop {
                let (client, _) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        warn!(target: "proxy", "accept error: {e}");
                        continue;
                    }
                };
                let _ = client.set_nodelay(true);
                tokio::spawn(serve(client, remotes.clone(), next.clone()));
            }
        });
        let task = tokio::spawn(async move {
            let _ = task.await;
            monitor.abort();
        });
        Ok(Gateway { addr, task })
    }

    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// Dials the endpoints in turn from the next one, leaving out those that fail, and copies
/// both ways until either side closes.
async fn serve(mut client: TcpStream, remotes: Arc<Vec<Remote>>, next: Arc<AtomicUsize>) {
    let n = remotes.len();
    let first = next.fetch_add(1, Ordering::Relaxed);
    for i in 0..n {
        let remote = &remotes[(first + i) % n];
        if !*remote.active.lock().unwrap_or_else(|e| e.into_inner()) {
            continue;
        }
        match tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(&remote.addr)).await {
            Ok(Ok(mut upstream)) => {
                let _ = upstream.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                return;
            }
            outcome => {
                let why = match outcome {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!("no connection within {DIAL_TIMEOUT:?}"),
                };
                warn!(target: "proxy/tcpproxy", "deactivated endpoint [{}] due to {why}", remote.addr);
                *remote.active.lock().unwrap_or_else(|e| e.into_inner()) = false;
            }
        }
    }
    warn!(target: "proxy/tcpproxy", "no endpoint is available for a client connection");
}

/// Every `retry_delay`, dials each left-out endpoint and takes back those that answer.
async fn monitor(remotes: Arc<Vec<Remote>>, retry_delay: Duration) {
    loop {
        tokio::time::sleep(retry_delay).await;
        for r in remotes.iter() {
            if *r.active.lock().unwrap_or_else(|e| e.into_inner()) {
                continue;
            }
            if let Ok(Ok(_)) = tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(&r.addr)).await
            {
                info!(target: "proxy/tcpproxy", "activated endpoint [{}]", r.addr);
                *r.active.lock().unwrap_or_else(|e| e.into_inner()) = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn echo_server() -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let t = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        (addr, t)
    }

    #[tokio::test]
    async fn bytes_pass_through_and_a_dead_endpoint_is_skipped() {
        let dead = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap(); // closed at once
        let (live, _server) = echo_server().await;
        let gw = Gateway::start(GatewayConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            endpoints: vec![dead.to_string(), live.to_string()],
            retry_delay: Duration::from_secs(60),
        })
        .await
        .unwrap();
        for _ in 0..4 {
            let mut c = TcpStream::connect(gw.addr).await.unwrap();
            c.write_all(b"ping").await.unwrap();
            let mut buf = [0u8; 4];
            tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(&buf, b"ping");
        }
        gw.stop().await;
    }

    #[tokio::test]
    async fn an_endpoint_that_is_the_gateway_itself_is_refused() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let err = Gateway::start(GatewayConfig {
            listen: addr,
            endpoints: vec![addr.to_string()],
            retry_delay: Duration::from_secs(60),
        })
        .await
        .err()
        .unwrap();
        assert!(err.contains("own listen address"), "{err}");
    }
}
