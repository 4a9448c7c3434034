//! gRPC forwarding: every call of every etcd service is passed to a member as it came (bytes in,
//! bytes out; no re-encoding), so the proxy speaks whatever the members speak.
//!
//! Unary calls are read whole first (they are bounded by the request size limit), so that a
//! call can be sent again to the next member when the first fails at the transport: always for
//! a read, and for a write only when the member never got it (the request was not yet handed
//! to the connection). Streams go to one member and end with it; clients (clientv3, etcdctl)
//! open them again and resume.

use std::convert::Infallible;
use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use ketch_api::etcdserverpb::TxnRequest;
use prost::Message;
use tokio::sync::Notify;
use tokio::time::Instant;
use tonic::body::Body;
use tonic::Status;
use tower::ServiceExt;
use tracing::debug;

use crate::classify::{self, CallKind, Shape};
use crate::config::{ProxyConfig, ProxyMode};
use crate::director::{Backend, Director};

pub struct Forwarder {
    pub director: Arc<Director>,
    pub config: ProxyConfig,
}

/// Why one attempt on one member gave no answer.
enum Failed {
    /// The member may have received the request.
    AfterSending(String),
    /// The request certainly did not reach the member.
    BeforeSending(String),
}

impl Forwarder {
    /// Forwards one gRPC call and returns the member's answer (or the proxy's own error).
    pub async fn grpc(&self, req: http::Request<Incoming>) -> http::Response<Body> {
        let path = req.uri().path().to_string();
        let kind = classify::kind(&path);
        match kind.shape {
            Shape::Stream => self.stream(req, &path, kind).await,
            Shape::Unary | Shape::Waiting => self.unary(req, &path, kind).await,
        }
    }

    async fn stream(&self, req: http::Request<Incoming>, path: &str, kind: CallKind) -> http::Response<Body> {
        if kind.writes && self.config.mode == ProxyMode::Readonly {
            return refused(path);
        }
        let Some(backend) = self.director.pick(path.as_bytes()).into_iter().next() else {
            return no_endpoints();
        };
        let (parts, body) = req.into_parts();
        let upstream = upstream_request(&parts, Body::new(body));
        match backend.channel.clone().oneshot(upstream).await {
            Ok(resp) => resp,
            Err(e) => {
                self.director.failed(&backend);
                debug!(target: "proxy", "stream {path} to {} failed: {e}", backend.url);
                Status::unavailable(format!("ketch proxy: {}: {e}", backend.url)).into_http()
            }
        }
    }

    async fn unary(&self, req: http::Request<Incoming>, path: &str, kind: CallKind) -> http::Response<Body> {
        let (parts, body) = req.into_parts();
        let body = match http_body_util::Limited::new(body, self.config.max_request_bytes).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                return Status::resource_exhausted(format!("ketch proxy: cannot read the request: {e}")).into_http();
            }
        };
        let message = classify::message(&body).unwrap_or_default();
        let writes = kind.writes
            && !(path == "/etcdserverpb.KV/Txn"
                && TxnRequest::decode(message).is_ok_and(|t| !classify::txn_writes(&t)));
        if writes && self.config.mode == ProxyMode::Readonly {
            return refused(path);
        }
        let order = self.director.pick(&classify::key_of(path, message));
        if order.is_empty() {
            return no_endpoints();
        }
        let tried = order.len();
        for backend in order {
            match self.attempt(&backend, &parts, body.clone(), kind.shape).await {
                Ok(resp) => return resp,
                Err(Failed::BeforeSending(e)) => {
                    self.director.failed(&backend);
                    debug!(target: "proxy", "{path} did not reach {}: {e}", backend.url);
                }
                Err(Failed::AfterSending(e)) => {
                    self.director.failed(&backend);
                    debug!(target: "proxy", "{path} to {} failed: {e}", backend.url);
                    if writes {
                        // It may have been applied: sending it again could apply it twice.
                        return Status::unavailable(format!("ketch proxy: {}: {e}", backend.url)).into_http();
                    }
                }
            }
        }
        Status::unavailable(format!("ketch proxy: unable to get response from {tried} endpoint(s)")).into_http()
    }

    /// One try on one member, bounded by the write timeout until the request is handed over and
    /// then (for prompt calls) by the read timeout.
    async fn attempt(
        &self,
        backend: &Backend,
        parts: &http::request::Parts,
        body: Bytes,
        shape: Shape,
    ) -> Result<http::Response<Body>, Failed> {
        let handed_over = Arc::new(Notify::new());
        let upstream = upstream_request(parts, Body::new(OnceBody { data: Some(body), handed_over: handed_over.clone() }));
        let mut call = std::pin::pin!(backend.channel.clone().oneshot(upstream));
        let write_deadline = deadline(self.config.write_timeout);
        tokio::select! {
            r = &mut call => {
                // Answered (or failed) before the request was even taken: nothing was sent.
                return r.map_err(|e| Failed::BeforeSending(e.to_string()));
            }
            _ = handed_over.notified() => {}
            _ = sleep_until(write_deadline) => {
                return Err(Failed::BeforeSending(format!("write timeout ({:?})", self.config.write_timeout)));
            }
        }
        let read_timeout = (shape == Shape::Unary && !self.config.read_timeout.is_zero()).then_some(self.config.read_timeout);
        let resp = match read_timeout {
            Some(t) => match tokio::time::timeout(t, call).await {
                Ok(r) => r,
                Err(_) => return Err(Failed::AfterSending(format!("read timeout ({t:?})"))),
            },
            None => call.await,
        };
        let resp = resp.map_err(|e| Failed::AfterSending(e.to_string()))?;
        Ok(match read_timeout {
            Some(t) => resp.map(|b| Body::new(ReadTimeoutBody::new(b, t))),
            None => resp,
        })
    }
}

fn deadline(limit: std::time::Duration) -> Option<Instant> {
    (!limit.is_zero()).then(|| Instant::now() + limit)
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The call as it goes to a member: same method, path, headers (gRPC metadata included) and
/// body; the member's own address is filled in by the channel.
fn upstream_request(parts: &http::request::Parts, body: Body) -> http::Request<Body> {
    let mut req = http::Request::new(body);
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts.uri.path_and_query().map_or_else(|| http::Uri::from_static("/"), |pq| {
        http::Uri::builder().path_and_query(pq.clone()).build().unwrap_or_else(|_| http::Uri::from_static("/"))
    });
    *req.version_mut() = http::Version::HTTP_2;
    for (name, value) in &parts.headers {
        if name != http::header::HOST && name != http::header::CONTENT_LENGTH {
            req.headers_mut().append(name.clone(), value.clone());
        }
    }
    req
}

/// A read-only proxy's answer to a call that would change state: UNIMPLEMENTED, the gRPC
/// status for HTTP 501, which is what etcd's read-only v2 proxy answers writes with.
fn refused(path: &str) -> http::Response<Body> {
    Status::unimplemented(format!("ketch proxy is read-only: {path} changes state and is not forwarded")).into_http()
}

fn no_endpoints() -> http::Response<Body> {
    Status::unavailable("ketch proxy: zero endpoints currently available").into_http()
}

/// A request body of one message that says when the connection has taken it.
struct OnceBody {
    data: Option<Bytes>,
    handed_over: Arc<Notify>,
}

impl HttpBody for OnceBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.data.take() {
            Some(d) => {
                self.handed_over.notify_one();
                Poll::Ready(Some(Ok(Frame::data(d))))
            }
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
    }
}

/// A response body whose every piece must come within the read timeout of the last.
struct ReadTimeoutBody {
    inner: Body,
    limit: std::time::Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl ReadTimeoutBody {
    fn new(inner: Body, limit: std::time::Duration) -> Self {
        ReadTimeoutBody { inner, limit, timer: Box::pin(tokio::time::sleep(limit)) }
    }
}

impl HttpBody for ReadTimeoutBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                let next = Instant::now() + this.limit;
                this.timer.as_mut().reset(next);
                Poll::Ready(frame)
            }
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Status::unavailable(format!(
                    "ketch proxy: read timeout ({:?})",
                    this.limit
                ))))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
}

