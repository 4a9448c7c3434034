//! gRPC channels to `http://` and `https://` URLs: what a member dials its peers with, and what
//! the proxy dials members with.

use std::sync::Arc;

use tonic::transport::Endpoint;

use super::stream::plain_scheme;
use ketch_api::coalesce::TcpConnector;

use super::TlsConnector;

/// Opens gRPC channels to URLs: `http://` in the clear, `https://` over rustls with the given
/// client configuration (a CA, and a certificate to present as the client certificate). Both
/// dial TCP without delay, whatever the endpoint says, under `ketch_api::coalesce`.
#[derive(Clone)]
pub struct ChannelDialer {
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl ChannelDialer {
    /// `tls` is used for `https://` peer URLs; without it they cannot be dialed.
    pub fn new(tls: Option<Arc<rustls::ClientConfig>>) -> ChannelDialer {
        ChannelDialer { tls }
    }

    /// The endpoint for `url` (tonic gets `http://`; TLS is done by the connector) and the TLS
    /// connector when the URL is `https://`.
    fn prepare(&self, url: &str) -> Result<(Endpoint, Option<TlsConnector>), String> {
        if !url.starts_with("https://") {
            return Ok((
                Endpoint::from_shared(url.to_string()).map_err(|e| e.to_string())?,
                None,
            ));
        }
        let tls = self
            .tls
            .clone()
            .ok_or_else(|| format!("{url}: no TLS configuration for https URLs"))?;
        let parsed: http::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
        let host = parsed
            .host()
            .unwrap_or("")
            .trim_start_matches('[')
            .trim_end_matches(']');
        let name = super::server_name(host).map_err(|e| e.to_string())?;
        let endpoint = Endpoint::from_shared(plain_scheme(url)).map_err(|e| e.to_string())?;
        Ok((endpoint, Some(TlsConnector::new(tls, name))))
    }

    /// Connects now; `configure` sets timeouts and keep-alives on the endpoint.
    pub async fn connect(
        &self,
        url: &str,
        configure: impl FnOnce(Endpoint) -> Endpoint,
    ) -> Result<tonic::transport::Channel, String> {
        let (endpoint, tls) = self.prepare(url)?;
        let endpoint = configure(endpoint);
        match tls {
            Some(connector) => endpoint.connect_with_connector(connector).await,
            None => endpoint.connect_with_connector(TcpConnector).await,
        }
        .map_err(|e| error_text(&e))
    }

    /// A channel that connects on first use.
    pub fn connect_lazy(
        &self,
        url: &str,
        configure: impl FnOnce(Endpoint) -> Endpoint,
    ) -> Result<tonic::transport::Channel, String> {
        let (endpoint, tls) = self.prepare(url)?;
        let endpoint = configure(endpoint);
        Ok(match tls {
            Some(connector) => endpoint.connect_with_connector_lazy(connector),
            None => endpoint.connect_with_connector_lazy(TcpConnector),
        })
    }
}

/// A transport error with its causes ("transport error: tls: …"), for the log.
fn error_text(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
