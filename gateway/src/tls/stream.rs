//! Connections on a listener that may speak TLS, and TLS connections to other members.
//!
//! Accepting: [`incoming`] turns a TCP listener into a stream of connections for tonic's
//! `serve_with_incoming`. On an `https://` listener each handshake runs in its own task with
//! a time limit, so a slow or hostile client never holds up the accept loop (etcd's
//! `tlsListener.acceptLoop` does the same). A failed handshake is logged as etcd logs it
//! ("rejected connection from …") and the connection is dropped.
//!
//! Each connection carries a [`ConnInfo`] (tonic puts it in every request's extensions):
//! remote address and, over TLS, the client certificate chain rustls verified. Its common
//! name is the client identity ([`client_identity`], [`request_identity`]).
//!
//! Dialing: [`TlsConnector`] is a tower connector for tonic's `connect_with_connector`
//! (`ketch_api::coalesce::TcpConnector` is its plain twin).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use ketch_api::coalesce::{host_port, Coalesce};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{info, warn};

use super::x509;

/// The longest a TLS handshake may take before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// An accepted connection: plain TCP on an `http://` listener, TLS on an `https://` one.
pub enum ServerStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// What is known about an accepted connection; tonic puts it in each request's extensions.
#[derive(Debug, Clone, Default)]
pub struct ConnInfo {
    pub local_addr: Option<SocketAddr>,
    pub remote_addr: Option<SocketAddr>,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// The client's certificate chain as rustls verified it (end entity first).
    pub peer_certs: Option<Arc<Vec<CertificateDer<'static>>>>,
}

impl ConnInfo {
    /// The common name of the verified client certificate: the user etcd's auth takes from a
    /// TLS connection.
    pub fn identity(&self) -> Option<String> {
        let certs = self.peer_certs.as_ref()?;
        x509::names(certs.first()?)?
            .common_name
            .filter(|cn| !cn.is_empty())
    }
}

/// The CN of the client certificate verified on an accepted TLS connection.
pub fn client_identity<S>(stream: &tokio_rustls::server::TlsStream<S>) -> Option<String> {
    let (_, session) = stream.get_ref();
    let cert = session.peer_certificates()?.first()?;
    x509::names(cert)?.common_name.filter(|cn| !cn.is_empty())
}

/// The gRPC metadata in which a Ketch proxy tells members who its client is: the name (CN) of
/// the client's verified certificate. A member believes it only from a proxy whose own
/// certificate name it trusts (`--experimental-trusted-proxy-cn`); a proxy drops any value a
/// client sends itself.
pub const PROXIED_IDENTITY: &str = "ketch-proxied-identity";

/// The client identity of the connection a request came on (from the extensions tonic fills
/// with the connection's [`ConnInfo`]); `None` without TLS or without a client certificate.
pub fn request_identity(extensions: &http::Extensions) -> Option<String> {
    extensions.get::<ConnInfo>()?.identity()
}

impl ServerStream {
    /// What the server knows about this connection.
    pub fn info(&self) -> ConnInfo {
        match self {
            ServerStream::Plain(s) => ConnInfo {
                local_addr: s.local_addr().ok(),
                remote_addr: s.peer_addr().ok(),
                tls: false,
                peer_certs: None,
            },
            ServerStream::Tls(s) => {
                let (tcp, session) = s.get_ref();
                ConnInfo {
                    local_addr: tcp.local_addr().ok(),
                    remote_addr: tcp.peer_addr().ok(),
                    tls: true,
                    peer_certs: session.peer_certificates().map(|c| Arc::new(c.to_vec())),
                }
            }
        }
    }
}

impl tonic::transport::server::Connected for ServerStream {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info()
    }
}

impl AsyncRead for ServerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ServerStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ServerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ServerStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ServerStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerStream::Plain(s) => Pin::new(s).poll_flush(cx),
            ServerStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ServerStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ServerStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            ServerStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    /// False on purpose, though both kinds could write vectored: h2 then copies frames under
    /// 1 KiB into its buffer and sends every answer ready on a connection in one write (see
    /// `ketch_api::coalesce`).
    fn is_write_vectored(&self) -> bool {
        false
    }
}

/// TLS on a listener.
#[derive(Clone)]
pub struct ListenerTls {
    pub config: Arc<ServerConfig>,
    /// etcd's check on peer listeners: a client certificate that names IP addresses or DNS
    /// names must name the address the connection comes from.
    pub check_client_san: bool,
    /// The log target of handshake failures ("embed" for clients, "rafthttp" for peers).
    pub log_target: &'static str,
}

/// The connections accepted on `listener`, TLS-wrapped when `tls` is given. The accept task
/// ends when the returned stream is dropped (the server stopped).
pub fn incoming(
    listener: TcpListener,
    tls: Option<ListenerTls>,
) -> ReceiverStream<io::Result<ServerStream>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let acceptor = tls
            .as_ref()
            .map(|t| tokio_rustls::TlsAcceptor::from(t.config.clone()));
        loop {
            let accepted = tokio::select! {
                _ = tx.closed() => return,
                accepted = listener.accept() => accepted,
            };
            let (tcp, remote) = match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of descriptors and the like: do not spin.
                    warn!(target: "embed", "accept error: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // gRPC replies are small and latency-bound: never wait for Nagle.
            let _ = tcp.set_nodelay(true);
            let (Some(acceptor), Some(tls)) = (acceptor.clone(), tls.clone()) else {
                if tx.send(Ok(ServerStream::Plain(tcp))).await.is_err() {
                    return;
                }
                continue;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
                    .await
                {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => return rejected(tls.log_target, remote, &go_wording(&e)),
                    Err(_) => return rejected(tls.log_target, remote, "tls: handshake timed out"),
                };
                if tls.check_client_san {
                    if let Err(e) = check_client_san(&stream, remote).await {
                        return rejected(tls.log_target, remote, &e);
                    }
                }
                let _ = tx.send(Ok(ServerStream::Tls(Box::new(stream)))).await;
            });
        }
    });
    ReceiverStream::new(rx)
}

/// A handshake error as Go's TLS server words the common ones (what etcd logs), else
/// rustls's text.
fn go_wording(e: &io::Error) -> String {
    use rustls::{CertificateError, Error};
    let Some(error) = e.get_ref().and_then(|inner| inner.downcast_ref::<Error>()) else {
        return e.to_string();
    };
    let verify = |why: &str| format!("tls: failed to verify client certificate: x509: {why}");
    match error {
        Error::NoCertificatesPresented => "tls: client didn't provide a certificate".into(),
        Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            verify("certificate signed by unknown authority")
        }
        Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => verify("certificate has expired or is not yet valid"),
        Error::InvalidCertificate(
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. },
        ) => verify("certificate has expired or is not yet valid"),
        Error::InvalidCertificate(CertificateError::Revoked) => {
            "transport: certificate revoked".into()
        }
        Error::NoApplicationProtocol => {
            "tls: client requested unsupported application protocols".into()
        }
        other => other.to_string(),
    }
}

fn rejected(target: &'static str, remote: SocketAddr, error: &str) {
    // etcd's logTLSHandshakeFailure (capnslog form)
    if target == "rafthttp" {
        info!(target: "rafthttp", "rejected connection from \"{remote}\" (error \"{error}\", ServerName \"\")");
    } else {
        info!(target: "embed", "rejected connection from \"{remote}\" (error \"{error}\", ServerName \"\")");
    }
}

/// etcd's `checkCertSAN`: a certificate without IP or DNS names passes; otherwise the remote
/// IP must be one of its IP addresses, or one of its DNS names must resolve to it.
async fn check_client_san(
    stream: &tokio_rustls::server::TlsStream<TcpStream>,
    remote: SocketAddr,
) -> Result<(), String> {
    let Some(cert) = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
    else {
        return Ok(());
    };
    let Some(names) = x509::names(cert) else {
        return Ok(());
    };
    let ip = remote.ip();
    if names.ips.is_empty() && names.dns.is_empty() || names.ips.contains(&ip) {
        return Ok(());
    }
    if names.dns.is_empty() {
        let valid: Vec<String> = names.ips.iter().map(|i| i.to_string()).collect();
        return Err(format!(
            "x509: certificate is valid for {}, not {ip}",
            valid.join(", ")
        ));
    }
    for dns in &names.dns {
        let lookup = tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::lookup_host((dns.as_str(), 0)),
        )
        .await;
        if let Ok(Ok(mut addrs)) = lookup {
            if addrs.any(|a| a.ip() == ip) {
                return Ok(());
            }
        }
    }
    let quoted: Vec<String> = names.dns.iter().map(|d| format!("{d:?}")).collect();
    Err(format!(
        "tls: \"{ip}\" does not match any of DNSNames [{}]",
        quoted.join(" ")
    ))
}

/// Dials TCP and then TLS, for tonic's `Endpoint::connect_with_connector`. Give tonic the
/// URL with `http://` (tonic refuses `https://` unless its own TLS is configured); the TLS
/// happens here, with the server name of the original URL's host.
#[derive(Clone)]
pub struct TlsConnector {
    connector: tokio_rustls::TlsConnector,
    server_name: ServerName<'static>,
}

impl TlsConnector {
    pub fn new(config: Arc<ClientConfig>, server_name: ServerName<'static>) -> TlsConnector {
        TlsConnector {
            connector: tokio_rustls::TlsConnector::from(config),
            server_name,
        }
    }
}

impl tower::Service<http::Uri> for TlsConnector {
    type Response = TokioIo<Coalesce<tokio_rustls::client::TlsStream<TcpStream>>>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let (connector, name) = (self.connector.clone(), self.server_name.clone());
        Box::pin(async move {
            let (host, port) = host_port(&uri, 443);
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            let _ = tcp.set_nodelay(true);
            let tls = connector.connect(name, tcp).await?;
            Ok(TokioIo::new(Coalesce(tls)))
        })
    }
}

/// `https://…` → `http://…`, for handing a TLS URL to tonic together with a [`TlsConnector`].
pub fn plain_scheme(url: &str) -> String {
    match url.strip_prefix("https://") {
        Some(rest) => format!("http://{rest}"),
        None => url.to_string(),
    }
}
