//! HTTP forwarding (everything on the client port that is not gRPC: /health, /version,
//! /metrics, the v3 JSON gateway, the v2 keys API), with etcd's v2 proxy answers: a read-only
//! proxy answers 501 with an empty body to anything but GET; no member known gives 503, every
//! member failing gives 502, both with etcd's JSON `message`. `GET /v2/config/local/proxy`
//! lists the endpoints in use, as etcd's proxy does; `GET /ketch/proxy/stats` gives the
//! proxy's own counts (client and upstream watches, cache hits, misses and entries,
//! keep-alives and the renewals sent for them).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tonic::body::Body;
use tracing::debug;

use crate::cache::RangeCache;
use crate::config::{ProxyConfig, ProxyMode};
use crate::director::Director;
use crate::lease::LeaseProxy;
use crate::watch::WatchProxy;

/// The proxy's own counters, answered here and never forwarded.
pub const STATS_PATH: &str = "/ketch/proxy/stats";

/// Headers that belong to one connection, not to the request (etcd's list).
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "proxy-connection",
];

pub struct HttpForwarder {
    director: Arc<Director>,
    config: ProxyConfig,
    watch: Arc<WatchProxy>,
    cache: Arc<RangeCache>,
    leases: Arc<LeaseProxy>,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl HttpForwarder {
    pub fn new(
        director: Arc<Director>,
        config: ProxyConfig,
        watch: Arc<WatchProxy>,
        cache: Arc<RangeCache>,
        leases: Arc<LeaseProxy>,
    ) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        if !config.dial_timeout.is_zero() {
            connector.set_connect_timeout(Some(config.dial_timeout));
        }
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(128)
            .build(connector);
        HttpForwarder {
            director,
            config,
            watch,
            cache,
            leases,
            client,
        }
    }

    pub async fn handle(&self, req: http::Request<Incoming>) -> http::Response<Body> {
        if req.uri().path() == "/v2/config/local/proxy" {
            return self.local_endpoints(req.method());
        }
        if req.uri().path() == STATS_PATH {
            return self.stats();
        }
        if self.config.mode == ProxyMode::Readonly && req.method() != http::Method::GET {
            return status_only(http::StatusCode::NOT_IMPLEMENTED);
        }
        let (parts, body) = req.into_parts();
        let body = match http_body_util::Limited::new(body, self.config.max_request_bytes)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                return json_error(
                    http::StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("httpproxy: failed to read request body: {e}"),
                )
            }
        };
        let order = self.director.pick(parts.uri.path().as_bytes());
        if order.is_empty() {
            return json_error(
                http::StatusCode::SERVICE_UNAVAILABLE,
                "httpproxy: zero endpoints currently available",
            );
        }
        let tried = order.len();
        for backend in order {
            if backend.url.starts_with("https://") {
                // TLS members are reached over the backend's HTTP/2 channel (Ketch members
                // serve HTTP on it as well as gRPC).
                let mut upstream = http::Request::new(Body::new(Full::new(body.clone())));
                *upstream.method_mut() = parts.method.clone();
                *upstream.uri_mut() = parts.uri.path_and_query().map_or_else(
                    || http::Uri::from_static("/"),
                    |pq| {
                        http::Uri::builder()
                            .path_and_query(pq.clone())
                            .build()
                            .unwrap_or_else(|_| http::Uri::from_static("/"))
                    },
                );
                *upstream.version_mut() = http::Version::HTTP_2;
                for (name, value) in &parts.headers {
                    if !HOP_BY_HOP.contains(&name.as_str()) && name != http::header::HOST {
                        upstream.headers_mut().append(name.clone(), value.clone());
                    }
                }
                let answer = tower::ServiceExt::oneshot(backend.channel.clone(), upstream);
                let answer = match timeout_of(self.config.write_timeout, self.config.read_timeout) {
                    Some(t) => tokio::time::timeout(t, answer)
                        .await
                        .map_err(|_| format!("no answer within {t:?}"))
                        .and_then(|r| r.map_err(|e| e.to_string())),
                    None => answer.await.map_err(|e| e.to_string()),
                };
                match answer {
                    Ok(resp) => return resp,
                    Err(e) => {
                        debug!(target: "proxy", "{} {} to {} failed: {e}", parts.method, parts.uri, backend.url);
                        self.director.failed(&backend);
                        continue;
                    }
                }
            }
            let Ok(uri) = format!(
                "{}{}",
                backend.url.trim_end_matches('/'),
                parts.uri.path_and_query().map_or("/", |p| p.as_str())
            )
            .parse::<http::Uri>() else {
                continue;
            };
            let mut upstream = http::Request::new(Full::new(body.clone()));
            *upstream.method_mut() = parts.method.clone();
            *upstream.uri_mut() = uri;
            for (name, value) in &parts.headers {
                if !HOP_BY_HOP.contains(&name.as_str()) && name != http::header::HOST {
                    upstream.headers_mut().append(name.clone(), value.clone());
                }
            }
            let answer = self.client.request(upstream);
            let answer = match timeout_of(self.config.write_timeout, self.config.read_timeout) {
                Some(t) => match tokio::time::timeout(t, answer).await {
                    Ok(r) => r.map_err(|e| e.to_string()),
                    Err(_) => Err(format!("no answer within {t:?}")),
                },
                None => answer.await.map_err(|e| e.to_string()),
            };
            match answer {
                Ok(resp) => {
                    let (mut parts, body) = resp.into_parts();
                    for h in HOP_BY_HOP {
                        parts.headers.remove(h);
                    }
                    return http::Response::from_parts(parts, Body::new(body));
                }
                Err(e) => {
                    debug!(target: "proxy", "{} {} to {} failed: {e}", parts.method, parts.uri, backend.url);
                    self.director.failed(&backend);
                }
            }
        }
        json_error(
            http::StatusCode::BAD_GATEWAY,
            &format!("httpproxy: unable to get response from {tried} endpoint(s)"),
        )
    }

    /// The proxy's own counts: watches (client and upstream) and the read cache.
    fn stats(&self) -> http::Response<Body> {
        use std::sync::atomic::Ordering::Relaxed;
        json(
            http::StatusCode::OK,
            &serde_json::json!({
                "client_watches": self.watch.client_watches.load(Relaxed),
                "upstream_watches": self.watch.upstream_watches.load(Relaxed),
                "cache_hits": self.cache.hits.load(Relaxed),
                "cache_misses": self.cache.misses.load(Relaxed),
                "cache_entries": self.cache.entry_count(),
                "client_keepalives": self.leases.client_keepalives.load(Relaxed),
                "upstream_renewals": self.leases.upstream_renewals.load(Relaxed),
            }),
        )
    }

    fn local_endpoints(&self, method: &http::Method) -> http::Response<Body> {
        if method != http::Method::GET {
            let mut resp = status_only(http::StatusCode::METHOD_NOT_ALLOWED);
            resp.headers_mut()
                .insert(http::header::ALLOW, http::HeaderValue::from_static("GET"));
            return resp;
        }
        let endpoints: Vec<String> = self
            .director
            .endpoints()
            .into_iter()
            .filter(|(_, up)| *up)
            .map(|(u, _)| u)
            .collect();
        json(
            http::StatusCode::OK,
            &serde_json::json!({ "endpoints": endpoints }),
        )
    }
}

/// How long to wait for the member's answer to start: the write and read timeouts together,
/// none if either is 0 (0 means no limit).
fn timeout_of(write: Duration, read: Duration) -> Option<Duration> {
    (!write.is_zero() && !read.is_zero()).then_some(write + read)
}

fn status_only(status: http::StatusCode) -> http::Response<Body> {
    let mut resp = http::Response::new(Body::empty());
    *resp.status_mut() = status;
    resp
}

fn json(status: http::StatusCode, value: &serde_json::Value) -> http::Response<Body> {
    let mut resp = http::Response::new(Body::new(Full::new(Bytes::from(value.to_string()))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

fn json_error(status: http::StatusCode, message: &str) -> http::Response<Body> {
    json(status, &serde_json::json!({ "message": message }))
}
