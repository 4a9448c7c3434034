//! Connections: `--conns` gRPC channels (one HTTP/2 connection each) spread over
//! `--endpoints`, shared by `--clients` clients round-robin, as etcd's benchmark does.

use std::time::Duration;

use ketch_api::coalesce::TcpConnector;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::flags::Flags;

/// What every scenario needs to reach the server.
pub struct Target {
    pub endpoints: Vec<String>,
    pub conns: usize,
    pub clients: usize,
    tls: Option<ClientTlsConfig>,
}

impl Target {
    pub fn from_flags(flags: &Flags) -> Result<Target, String> {
        let endpoints: Vec<String> = flags
            .string("endpoints", "127.0.0.1:2379")
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(String::from)
            .collect();
        if endpoints.is_empty() {
            return Err("--endpoints is empty".into());
        }
        let conns: usize = flags.get("conns", 1)?;
        let clients: usize = flags.get("clients", 1)?;
        if conns == 0 || clients == 0 {
            return Err("--conns and --clients must be at least 1".into());
        }
        let (cacert, cert, key) = (flags.opt("cacert"), flags.opt("cert"), flags.opt("key"));
        let tls = if cacert.is_some() || cert.is_some() || key.is_some() {
            let mut tls = ClientTlsConfig::new();
            if let Some(path) = cacert {
                let pem = std::fs::read(&path).map_err(|e| format!("--cacert {path}: {e}"))?;
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            } else {
                tls = tls.with_enabled_roots();
            }
            match (cert, key) {
                (Some(c), Some(k)) => {
                    let cert = std::fs::read(&c).map_err(|e| format!("--cert {c}: {e}"))?;
                    let key = std::fs::read(&k).map_err(|e| format!("--key {k}: {e}"))?;
                    tls = tls.identity(Identity::from_pem(cert, key));
                }
                (None, None) => {}
                _ => return Err("--cert and --key go together".into()),
            }
            Some(tls)
        } else {
            None
        };
        Ok(Target {
            endpoints,
            conns,
            clients,
            tls,
        })
    }

    /// Opens `--conns` connections now, so that connection setup is not measured.
    pub async fn connect(&self) -> Result<Vec<Channel>, String> {
        let mut channels = Vec::with_capacity(self.conns);
        for i in 0..self.conns {
            let raw = &self.endpoints[i % self.endpoints.len()];
            channels.push(self.open(raw).await?);
        }
        Ok(channels)
    }

    async fn open(&self, raw: &str) -> Result<Channel, String> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let url = if raw.contains("://") {
            raw.replacen("unixs://", "https://", 1)
                .replacen("unix://", "http://", 1)
        } else {
            format!("{scheme}://{raw}")
        };
        let mut endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| format!("endpoint {raw}: {e}"))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        if let Some(tls) = &self.tls {
            endpoint = endpoint
                .tls_config(tls.clone())
                .map_err(|e| format!("TLS for {raw}: {e}"))?;
        }
        // Our own TCP dial, under `Coalesce`, so that h2 batches the calls of the clients
        // sharing a connection into one write as grpc-go does (tonic's writes each message of
        // over 256 bytes on its own, which costs the load generator CPU the server needs).
        // tonic still adds TLS on top for https endpoints.
        endpoint
            .connect_with_connector(TcpConnector)
            .await
            .map_err(|e| format!("cannot connect to {url}: {}", chain(&e)))
    }
}

/// An error with its causes (tonic's transport error alone says only "transport error").
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// etcd's error text shape, so the error distribution reads like etcd's.
pub fn status_text(s: &tonic::Status) -> String {
    format!("rpc error: code = {:?} desc = {}", s.code(), s.message())
}
