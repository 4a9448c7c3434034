//! Connections to etcd endpoints, with grpc-go's wait-for-ready behaviour as clientv3 uses it:
//! a call waits (until its deadline) for any endpoint of the connection to accept, reconnect
//! attempts back off from one second, and when the deadline passes the call fails with the
//! error grpc-go would report (`latest balancer error: ...`). As in grpc-go, a connection
//! counts as working once the server's HTTP/2 preface has arrived: losing it later is no
//! failed attempt, and the next call reconnects at once.
//!
//! Dialing is ours (TCP, unix sockets, rustls) so that errors read like Go's and etcdctl's
//! TLS options can all be expressed; tonic runs HTTP/2 and gRPC over the stream we hand it.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};

use super::errors::os_error_text;
use crate::gofmt;

/// Where and how to dial one endpoint.
#[derive(Clone)]
pub struct DialTarget {
    /// The endpoint without its scheme (`host:port`, or a socket path).
    pub host: String,
    transport: Transport,
    tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
}

#[derive(Clone)]
enum Transport {
    Tcp,
    Unix,
    /// A scheme clientv3 does not know: it dials nothing.
    Unsupported,
}

/// clientv3's `ParseEndpoint`: (is unix, host, scheme).
pub fn parse_endpoint(ep: &str) -> (bool, String, String) {
    let Some((scheme, rest)) = ep.split_once("://") else {
        return (false, ep.to_string(), String::new());
    };
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    match scheme {
        "http" | "https" => (false, host.to_string(), scheme.to_string()),
        "unix" | "unixs" => (true, format!("{host}{path}"), scheme.to_string()),
        _ => (false, String::new(), scheme.to_string()),
    }
}

impl DialTarget {
    /// `configured` is the TLS config from the flags (clientv3's `creds`), `https_default` the
    /// one `https://` falls back to, and `server_name` the `--discovery-srv` override.
    pub fn new(
        ep: &str,
        configured: Option<&Arc<ClientConfig>>,
        https_default: impl FnOnce() -> Result<Arc<ClientConfig>, String>,
        server_name: &str,
    ) -> Result<Self, String> {
        let (unix, host, scheme) = parse_endpoint(ep);
        let transport = match scheme.as_str() {
            "" | "http" | "https" => Transport::Tcp,
            "unix" | "unixs" => Transport::Unix,
            _ => Transport::Unsupported,
        };
        let transport = if unix { Transport::Unix } else { transport };
        let config = match scheme.as_str() {
            "http" => None,
            "https" | "unixs" => Some(match configured {
                Some(c) => c.clone(),
                None => https_default()?,
            }),
            "" | "unix" => configured.cloned(),
            _ => None,
        };
        let tls = match config {
            Some(c) => Some((c, super::tls::server_name_for(&host, server_name)?)),
            None => None,
        };
        Ok(DialTarget {
            host,
            transport,
            tls,
        })
    }
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}
type Stream = Pin<Box<dyn Io>>;
type BoxedIo = TokioIo<PrefaceWatch<Stream>>;

/// Open the byte stream to a target; errors are grpc-go's transport descriptions.
async fn dial(target: &DialTarget) -> Result<Stream, String> {
    let stream: Stream = match target.transport {
        Transport::Tcp => {
            let addrs = match tokio::net::lookup_host(target.host.as_str()).await {
                Ok(a) => a.collect::<Vec<_>>(),
                Err(_) => {
                    let name = target
                        .host
                        .rsplit_once(':')
                        .map_or(target.host.as_str(), |(h, _)| h);
                    // Go only asks a DNS server about names that could be domain names.
                    let server = nameserver()
                        .filter(|_| is_domain_name(name))
                        .map(|ns| format!(" on {ns}"))
                        .unwrap_or_default();
                    return Err(format!(
                        "transport: Error while dialing dial tcp: lookup {name}{server}: no such host"
                    ));
                }
            };
            let mut last = format!(
                "transport: Error while dialing dial tcp {}: missing address",
                target.host
            );
            let mut connected = None;
            for addr in addrs {
                match tokio::net::TcpStream::connect(addr).await {
                    Ok(s) => {
                        let _ = s.set_nodelay(true);
                        connected = Some(s);
                        break;
                    }
                    Err(e) => {
                        last = format!(
                            "transport: Error while dialing dial tcp {addr}: connect: {}",
                            os_error_text(&e)
                        );
                    }
                }
            }
            match connected {
                Some(s) => Box::pin(s),
                None => return Err(last),
            }
        }
        Transport::Unix => match tokio::net::UnixStream::connect(&target.host).await {
            Ok(s) => Box::pin(s),
            Err(e) => {
                return Err(format!(
                    "transport: Error while dialing dial unix {}: connect: {}",
                    target.host,
                    os_error_text(&e)
                ))
            }
        },
        Transport::Unsupported => {
            return Err("transport: Error while dialing dial : unknown network ".to_string());
        }
    };
    match &target.tls {
        None => Ok(stream),
        Some((config, name)) => {
            let tls = TlsConnector::from(config.clone())
                .connect(name.clone(), stream)
                .await
                .map_err(|e| {
                    format!(
                        "transport: authentication handshake failed: {}",
                        handshake_error(&e)
                    )
                })?;
            Ok(Box::pin(tls))
        }
    }
}

/// The server's side of a stream, watched for its HTTP/2 preface (a SETTINGS frame on stream
/// 0), which grpc-go waits for before it calls a connection READY. A server that refuses our
/// TLS certificate or does not speak HTTP/2 never sends one.
struct PrefaceWatch<T> {
    inner: T,
    /// The first frame header as far as it has arrived.
    head: Vec<u8>,
    spoke: Arc<AtomicBool>,
}

/// The length of an HTTP/2 frame header.
const FRAME_HEADER: usize = 9;

impl<T> PrefaceWatch<T> {
    fn new(inner: T, spoke: Arc<AtomicBool>) -> Self {
        PrefaceWatch {
            inner,
            head: Vec::with_capacity(FRAME_HEADER),
            spoke,
        }
    }

    fn watch(&mut self, read: &[u8]) {
        if self.head.len() >= FRAME_HEADER {
            return;
        }
        let take = read.len().min(FRAME_HEADER - self.head.len());
        self.head.extend_from_slice(&read[..take]);
        if self.head.len() == FRAME_HEADER {
            let settings = self.head[3] == 0x4;
            let stream =
                u32::from_be_bytes([self.head[5], self.head[6], self.head[7], self.head[8]]);
            if settings && stream & 0x7fff_ffff == 0 {
                self.spoke.store(true, Ordering::Release);
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for PrefaceWatch<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            this.watch(&buf.filled()[before..]);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for PrefaceWatch<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    /// False on purpose: h2 then batches small frames into one write (see
    /// `ketch_api::coalesce`).
    fn is_write_vectored(&self) -> bool {
        false
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The DNS server Go's resolver would name in a lookup error: the first `nameserver` of
/// /etc/resolv.conf, with its port.
fn nameserver() -> Option<String> {
    let conf = std::fs::read_to_string("/etc/resolv.conf").ok()?;
    let ip: std::net::IpAddr = conf
        .lines()
        .find_map(|l| l.trim().strip_prefix("nameserver"))
        .and_then(|rest| rest.trim().parse().ok())?;
    Some(std::net::SocketAddr::new(ip, 53).to_string())
}

/// Go's `isDomainName`, roughly: letters, digits, `-`, `_` and dots, at most 254 bytes.
fn is_domain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 254
        && name
            .split('.')
            .all(|label| label.len() <= 63 && !label.starts_with('-') && !label.ends_with('-'))
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A TLS handshake failure in Go's words where they are well known.
fn handshake_error(e: &std::io::Error) -> String {
    use tokio_rustls::rustls::{CertificateError, Error};
    match e.get_ref().and_then(|inner| inner.downcast_ref::<Error>()) {
        Some(Error::InvalidCertificate(CertificateError::UnknownIssuer)) => {
            "x509: certificate signed by unknown authority".to_string()
        }
        Some(Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::NotValidYet,
        )) => "x509: certificate has expired or is not yet valid".to_string(),
        _ => e.to_string(),
    }
}

/// The connector tonic reconnects through: it hands over the stream we dialed first, then
/// dials anew.
#[derive(Clone)]
struct Dialer {
    target: Arc<DialTarget>,
    first: Arc<Mutex<Option<Stream>>>,
    /// Set when a server preface arrives on any of the streams.
    spoke: Arc<AtomicBool>,
}

impl tower::Service<http::Uri> for Dialer {
    type Response = BoxedIo;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<BoxedIo, std::io::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: http::Uri) -> Self::Future {
        let first = self.first.lock().ok().and_then(|mut f| f.take());
        let target = self.target.clone();
        let spoke = self.spoke.clone();
        Box::pin(async move {
            let stream = match first {
                Some(stream) => stream,
                None => dial(&target).await.map_err(std::io::Error::other)?,
            };
            Ok(TokioIo::new(PrefaceWatch::new(stream, spoke)))
        })
    }
}

/// HTTP/2 keepalive, as `--keepalive-time` and `--keepalive-timeout` ask.
#[derive(Clone, Copy, Debug)]
pub struct Keepalive {
    pub time: Duration,
    pub timeout: Duration,
}

async fn open_channel(target: &Arc<DialTarget>, keepalive: Keepalive) -> Result<Ready, String> {
    let stream = dial(target).await?;
    let authority = match target.transport {
        Transport::Tcp => target.host.clone(),
        _ => "localhost".to_string(),
    };
    let mut endpoint = Endpoint::from_shared(format!("http://{authority}"))
        .or_else(|_| Endpoint::from_shared("http://localhost".to_string()))
        .map_err(|e| format!("transport: {e}"))?;
    if !keepalive.time.is_zero() {
        // grpc-go raises the ping interval to at least ten seconds.
        endpoint = endpoint
            .http2_keep_alive_interval(keepalive.time.max(Duration::from_secs(10)))
            .keep_alive_timeout(keepalive.timeout)
            .keep_alive_while_idle(false);
    }
    let working = Arc::new(AtomicBool::new(false));
    let dialer = Dialer {
        target: target.clone(),
        first: Arc::new(Mutex::new(Some(stream))),
        spoke: working.clone(),
    };
    let channel = endpoint
        .connect_with_connector(dialer)
        .await
        .map_err(|e| format!("transport: {e}"))?;
    Ok(Ready { channel, working })
}

/// Why no connection was ready before the deadline, worded as grpc-go's picker error.
#[derive(Debug, Clone)]
pub struct NotReady {
    pub picker_error: Option<String>,
}

impl NotReady {
    /// The status text of the failed call (`rpc error: code = DeadlineExceeded desc = ...`).
    pub fn status_text(&self) -> String {
        let desc = match &self.picker_error {
            Some(e) => format!("latest balancer error: {e}"),
            None => "context deadline exceeded".to_string(),
        };
        super::errors::grpc_error_text(tonic::Code::DeadlineExceeded, &desc)
    }
}

/// What a connection has learnt about its current channel.
#[derive(Default)]
struct ConnState {
    channel: Option<Ready>,
    /// Dial or handshake failures since the last working channel, for backoff.
    failures: u32,
    /// The latest such failure, as grpc-go's picker would describe it.
    last_error: Option<Failure>,
}

/// Why the last connection attempt did not give a working channel.
#[derive(Clone, Debug)]
enum Failure {
    /// Dialing or the TLS handshake failed; grpc-go's transport description.
    Dial(String),
    /// The connection was made, then closed under the first call.
    Closed,
}

/// A channel ready for a call.
#[derive(Clone, Debug)]
pub struct Ready {
    pub channel: Channel,
    /// The server has spoken HTTP/2 on the connection (grpc-go's READY): a transport error
    /// on it is a lost connection, not a connection that never worked.
    working: Arc<AtomicBool>,
}

impl Ready {
    pub fn working(&self) -> bool {
        self.working.load(Ordering::Acquire)
    }
}

/// One client connection over one or more endpoints (clientv3's `grpc.ClientConn`).
pub struct Conn {
    targets: Vec<Arc<DialTarget>>,
    /// `cc.Target()`, which clientv3's retry warnings name.
    pub log_target: String,
    /// Balanced over the endpoint list (clientv3's main connection) rather than one
    /// endpoint dialed directly: only changes how a connect failure is worded.
    balanced: bool,
    keepalive: Keepalive,
    state: tokio::sync::Mutex<ConnState>,
}

impl Conn {
    pub fn new(
        targets: Vec<DialTarget>,
        log_target: String,
        balanced: bool,
        keepalive: Keepalive,
    ) -> Self {
        Conn {
            targets: targets.into_iter().map(Arc::new).collect(),
            log_target,
            balanced,
            keepalive,
            state: tokio::sync::Mutex::new(ConnState::default()),
        }
    }

    /// The channel failed underneath a call (a refused TLS client certificate, a peer that
    /// does not speak HTTP/2, a dropped connection): dial again on the next call. Only a
    /// connection that never worked counts as a failed attempt, with a pause before the next;
    /// grpc-go resets its backoff once a connection is READY and reconnects at once when it
    /// closes, so a healthy server whose connection broke is not waited out.
    pub async fn mark_broken(&self, broken: &Ready) {
        let mut state = self.state.lock().await;
        state.channel = None;
        if broken.working() {
            state.failures = 0;
            state.last_error = None;
        } else {
            state.failures += 1;
            state.last_error = Some(Failure::Closed);
        }
    }

    /// A ready channel to some endpoint, connecting (and retrying) until `deadline`.
    pub async fn ready(&self, deadline: Option<Instant>) -> Result<Ready, NotReady> {
        let mut state = self.state.lock().await;
        if let Some(ready) = state.channel.as_ref() {
            return Ok(ready.clone());
        }
        let last_error: Arc<Mutex<Option<Failure>>> =
            Arc::new(Mutex::new(state.last_error.clone()));
        if state.failures > 0 {
            let pause = jitter(backoff(state.failures));
            let wake = Instant::now() + pause;
            if let Some(d) = deadline.filter(|d| *d <= wake) {
                tokio::time::sleep_until(d).await;
                return Err(self.not_ready(state.last_error.clone()));
            }
            tokio::time::sleep_until(wake).await;
        }
        let mut attempts = tokio::task::JoinSet::new();
        for target in &self.targets {
            let target = target.clone();
            let last_error = last_error.clone();
            let keepalive = self.keepalive;
            attempts.spawn(async move {
                let mut failures = 0;
                loop {
                    match open_channel(&target, keepalive).await {
                        Ok(ready) => return ready,
                        Err(e) => {
                            if let Ok(mut l) = last_error.lock() {
                                *l = Some(Failure::Dial(e));
                            }
                        }
                    }
                    failures += 1;
                    tokio::time::sleep(jitter(backoff(failures))).await;
                }
            });
        }
        let first = async {
            loop {
                match attempts.join_next().await {
                    Some(Ok(ready)) => return Some(ready),
                    Some(Err(_)) => continue,
                    None => return None,
                }
            }
        };
        let outcome = match deadline {
            Some(d) => tokio::time::timeout_at(d, first).await.ok().flatten(),
            None => first.await,
        };
        attempts.abort_all();
        match outcome {
            Some(ready) => {
                state.channel = Some(ready.clone());
                Ok(ready)
            }
            None => Err(self.not_ready(last_error.lock().ok().and_then(|l| l.clone()))),
        }
    }

    fn not_ready(&self, last_error: Option<Failure>) -> NotReady {
        let picker_error = last_error.map(|e| match e {
            _ if self.balanced => "all SubConns are in TransientFailure".to_string(),
            Failure::Dial(e) => format!("connection error: desc = {}", gofmt::quote(e.as_bytes())),
            Failure::Closed => "connection closed".to_string(),
        });
        NotReady { picker_error }
    }
}

/// grpc-go's reconnect backoff: one second, growing 1.6 times per failure, at most two minutes.
fn backoff(failures: u32) -> Duration {
    let grown = 1.6f64.powi(failures.saturating_sub(1).min(20) as i32);
    Duration::from_secs(1)
        .mul_f64(grown)
        .min(Duration::from_secs(120))
}

/// grpc-go's ±20% reconnect jitter, from the clock (no need for a random source here).
fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    let factor = 0.8 + 0.4 * (nanos % 1000) as f64 / 1000.0;
    d.mul_f64(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_like_clientv3() {
        assert_eq!(
            parse_endpoint("127.0.0.1:2379"),
            (false, "127.0.0.1:2379".into(), "".into())
        );
        assert_eq!(
            parse_endpoint("http://127.0.0.1:2379"),
            (false, "127.0.0.1:2379".into(), "http".into())
        );
        assert_eq!(
            parse_endpoint("unix:///tmp/etcd.sock"),
            (true, "/tmp/etcd.sock".into(), "unix".into())
        );
    }

    #[test]
    fn server_preface_is_a_settings_frame() {
        let watched = |pieces: &[&[u8]]| {
            let spoke = Arc::new(AtomicBool::new(false));
            let mut w = PrefaceWatch::new((), spoke.clone());
            for p in pieces {
                w.watch(p);
            }
            spoke.load(Ordering::Acquire)
        };
        // An empty SETTINGS frame, arriving in pieces, then more frames.
        assert!(watched(&[
            &[0, 0],
            &[0, 4, 0, 0, 0],
            &[0, 0, 0, 0, 0, 4, 1]
        ]));
        assert!(!watched(&[&[0, 0, 0, 4, 0, 0, 0, 0]]));
        // A plaintext HTTP/1 answer, a TLS alert, a SETTINGS frame on a stream.
        assert!(!watched(&[b"HTTP/1.0 400 Bad Request\r\n"]));
        assert!(!watched(&[&[0x15, 3, 3, 0, 2, 2, 116, 0, 0]]));
        assert!(!watched(&[&[0, 0, 0, 4, 0, 0, 0, 0, 1]]));
    }

    /// A loopback server that accepts connections and holds them open, sending an empty
    /// SETTINGS frame first if `preface`.
    async fn holding_server(preface: bool) -> std::net::SocketAddr {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    if preface {
                        let _ = s.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await;
                    }
                    let mut buf = [0u8; 4096];
                    while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn lost_connection_backs_off_only_if_it_never_worked() {
        let keepalive = Keepalive {
            time: Duration::ZERO,
            timeout: Duration::ZERO,
        };
        let conn_to = |addr: std::net::SocketAddr| {
            let target =
                DialTarget::new(&addr.to_string(), None, || Err("unused".into()), "").unwrap();
            Conn::new(
                vec![target],
                format!("passthrough:///{addr}"),
                false,
                keepalive,
            )
        };

        // The server spoke HTTP/2: like grpc-go after READY, reconnect at once.
        let conn = conn_to(holding_server(true).await);
        let ready = conn.ready(None).await.unwrap();
        let spoken = Instant::now() + Duration::from_secs(5);
        while !ready.working() && Instant::now() < spoken {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(ready.working());
        conn.mark_broken(&ready).await;
        let start = Instant::now();
        let again = conn
            .ready(Some(start + Duration::from_millis(500)))
            .await
            .unwrap();
        assert!(start.elapsed() < Duration::from_millis(500));
        assert!(!Arc::ptr_eq(&again.working, &ready.working));

        // It never did (a refused certificate, not HTTP/2): a failed attempt, backed off.
        let conn = conn_to(holding_server(false).await);
        let ready = conn.ready(None).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!ready.working());
        conn.mark_broken(&ready).await;
        let err = conn
            .ready(Some(Instant::now() + Duration::from_millis(300)))
            .await
            .unwrap_err();
        assert_eq!(
            err.status_text(),
            "rpc error: code = DeadlineExceeded desc = latest balancer error: connection closed"
        );
    }

    #[tokio::test]
    async fn refused_connection_reports_grpc_wording() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let target = DialTarget::new(&addr.to_string(), None, || Err("unused".into()), "").unwrap();
        let keepalive = Keepalive {
            time: Duration::ZERO,
            timeout: Duration::ZERO,
        };
        let conn = Conn::new(
            vec![target.clone()],
            format!("passthrough:///{addr}"),
            false,
            keepalive,
        );
        let err = conn
            .ready(Some(Instant::now() + Duration::from_millis(300)))
            .await
            .unwrap_err();
        assert_eq!(
            err.status_text(),
            format!("rpc error: code = DeadlineExceeded desc = latest balancer error: connection error: desc = \"transport: Error while dialing dial tcp {addr}: connect: connection refused\"")
        );
        let conn = Conn::new(vec![target], "endpoint://x".into(), true, keepalive);
        let err = conn
            .ready(Some(Instant::now() + Duration::from_millis(300)))
            .await
            .unwrap_err();
        assert_eq!(
            err.status_text(),
            "rpc error: code = DeadlineExceeded desc = latest balancer error: all SubConns are in TransientFailure"
        );
    }
}
