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
use ketch_api::etcdserverpb::{DeleteRangeRequest, PutRequest, RangeRequest, TxnRequest};
use prost::Message;
use tokio::sync::Notify;
use tokio::time::Instant;
use tonic::body::Body;
use tonic::Status;
use tower::ServiceExt;
use tracing::debug;

use crate::cache::{self, CacheKey, RangeCache};
use crate::classify::{self, CallKind, Shape};
use crate::config::{ProxyConfig, ProxyMode};
use crate::director::{Backend, Director};

pub struct Forwarder {
    pub director: Arc<Director>,
    pub config: ProxyConfig,
    pub cache: Arc<RangeCache>,
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

    async fn stream(
        &self,
        req: http::Request<Incoming>,
        path: &str,
        kind: CallKind,
    ) -> http::Response<Body> {
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

    async fn unary(
        &self,
        req: http::Request<Incoming>,
        path: &str,
        kind: CallKind,
    ) -> http::Response<Body> {
        let (parts, body) = req.into_parts();
        let body = match http_body_util::Limited::new(body, self.config.max_request_bytes)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                return Status::resource_exhausted(format!(
                    "ketch proxy: cannot read the request: {e}"
                ))
                .into_http();
            }
        };
        let message = classify::message(&body).unwrap_or_default();
        let writes = kind.writes
            && !(path == "/etcdserverpb.KV/Txn"
                && TxnRequest::decode(message).is_ok_and(|t| !classify::txn_writes(&t)));
        if writes && self.config.mode == ProxyMode::Readonly {
            return refused(path);
        }
        // Serializable ranges may be answered from the cache.
        let mut cache_key = None;
        let mut range_req = None;
        if path == RANGE {
            if let Ok(req) = RangeRequest::decode(message) {
                if RangeCache::cacheable(&req) {
                    // per caller: the token, else the client certificate's name
                    let header = |k: &str| {
                        parts
                            .headers
                            .get(k)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string)
                    };
                    let token = header("token")
                        .or_else(|| header(crate::PROXIED_IDENTITY).map(|cn| format!("cn:{cn}")));
                    let key = CacheKey {
                        token,
                        request: Bytes::copy_from_slice(message),
                    };
                    if let Some(message) = self.cache.get(&key) {
                        return grpc_ok(&message);
                    }
                    cache_key = Some(key);
                }
                range_req = Some(req);
            }
        }
        let order = self.director.pick(&classify::key_of(path, message));
        if order.is_empty() {
            return no_endpoints();
        }
        let tried = order.len();
        for backend in order {
            match self
                .attempt(&backend, &parts, body.clone(), kind.shape)
                .await
            {
                Ok(resp) => {
                    return self.observe(path, message, range_req, cache_key, resp);
                }
                Err(Failed::BeforeSending(e)) => {
                    self.director.failed(&backend);
                    debug!(target: "proxy", "{path} did not reach {}: {e}", backend.url);
                }
                Err(Failed::AfterSending(e)) => {
                    self.director.failed(&backend);
                    debug!(target: "proxy", "{path} to {} failed: {e}", backend.url);
                    if writes {
                        // It may have been applied: sending it again could apply it twice.
                        return Status::unavailable(format!("ketch proxy: {}: {e}", backend.url))
                            .into_http();
                    }
                }
            }
        }
        Status::unavailable(format!(
            "ketch proxy: unable to get response from {tried} endpoint(s)"
        ))
        .into_http()
    }

    /// Lets the cache see a KV answer as it passes: its revision (for what clients have
    /// seen), a range answer to keep, the keys a write changed.
    fn observe(
        &self,
        path: &str,
        message: &[u8],
        range_req: Option<RangeRequest>,
        cache_key: Option<CacheKey>,
        resp: http::Response<Body>,
    ) -> http::Response<Body> {
        if !path.starts_with("/etcdserverpb.KV/") {
            return resp;
        }
        let cache = self.cache.clone();
        let path = path.to_string();
        let message = Bytes::copy_from_slice(message);
        resp.map(|body| {
            Body::new(TeeBody::new(
                body,
                cache::MAX_ENTRY_BYTES,
                move |answer: &[u8]| {
                    if let Some(rev) = cache::header_revision(answer) {
                        cache.saw(rev);
                    }
                    match path.as_str() {
                        RANGE => {
                            if let (Some(key), Some(req)) = (cache_key, range_req) {
                                cache.insert(key, &req, Bytes::copy_from_slice(answer));
                            }
                        }
                        "/etcdserverpb.KV/Put" => {
                            if let Ok(p) = PutRequest::decode(&message[..]) {
                                cache.invalidate_key(&p.key);
                            }
                        }
                        "/etcdserverpb.KV/DeleteRange" => {
                            if let Ok(d) = DeleteRangeRequest::decode(&message[..]) {
                                cache.invalidate_range(&d.key, &d.range_end);
                            }
                        }
                        "/etcdserverpb.KV/Txn" => {
                            if let Ok(t) = TxnRequest::decode(&message[..]) {
                                invalidate_txn(&cache, &t);
                            }
                        }
                        _ => {}
                    }
                },
            ))
        })
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
        let upstream = upstream_request(
            parts,
            Body::new(OnceBody {
                data: Some(body),
                handed_over: handed_over.clone(),
            }),
        );
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
        let read_timeout = (shape == Shape::Unary && !self.config.read_timeout.is_zero())
            .then_some(self.config.read_timeout);
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

const RANGE: &str = "/etcdserverpb.KV/Range";

/// Drops what any write of a txn (either branch, any depth) may have changed.
fn invalidate_txn(cache: &RangeCache, txn: &TxnRequest) {
    use ketch_api::etcdserverpb::request_op::Request as Op;
    for op in txn.success.iter().chain(&txn.failure) {
        match &op.request {
            Some(Op::RequestPut(p)) => cache.invalidate_key(&p.key),
            Some(Op::RequestDeleteRange(d)) => cache.invalidate_range(&d.key, &d.range_end),
            Some(Op::RequestTxn(t)) => invalidate_txn(cache, t),
            _ => {}
        }
    }
}

/// A successful unary gRPC answer made here: one encoded message, then `grpc-status: 0`.
fn grpc_ok(encoded: &[u8]) -> http::Response<Body> {
    let mut framed = Vec::with_capacity(5 + encoded.len());
    framed.push(0);
    framed.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
    framed.extend_from_slice(encoded);
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    let frames: Vec<Result<Frame<Bytes>, Infallible>> = vec![
        Ok(Frame::data(Bytes::from(framed))),
        Ok(Frame::trailers(trailers)),
    ];
    let mut resp = http::Response::new(Body::new(http_body_util::StreamBody::new(
        futures::stream::iter(frames),
    )));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    resp
}

/// A response body passed on unchanged while its first message (up to `limit` bytes) is kept;
/// when it ends with `grpc-status: 0`, `done` gets the message.
struct TeeBody<F: FnOnce(&[u8]) + Send + 'static> {
    inner: Body,
    kept: Option<Vec<u8>>,
    limit: usize,
    done: Option<F>,
}

impl<F: FnOnce(&[u8]) + Send + 'static> TeeBody<F> {
    fn new(inner: Body, limit: usize, done: F) -> Self {
        TeeBody {
            inner,
            kept: Some(Vec::new()),
            limit: limit + 5,
            done: Some(done),
        }
    }
}

impl<F: FnOnce(&[u8]) + Send + Unpin + 'static> HttpBody for TeeBody<F> {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        let frame = std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &frame {
            Some(Ok(f)) => {
                if let Some(data) = f.data_ref() {
                    if let Some(kept) = this.kept.as_mut() {
                        if kept.len() + data.len() > this.limit {
                            this.kept = None;
                        } else {
                            kept.extend_from_slice(data);
                        }
                    }
                } else if let Some(trailers) = f.trailers_ref() {
                    let ok = trailers.get("grpc-status").is_some_and(|v| v == "0");
                    if let (true, Some(kept), Some(done)) = (ok, this.kept.take(), this.done.take())
                    {
                        if let Some(message) = classify::message(&kept) {
                            done(message);
                        }
                    }
                }
            }
            _ => this.kept = None,
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
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
    *req.uri_mut() = parts.uri.path_and_query().map_or_else(
        || http::Uri::from_static("/"),
        |pq| {
            http::Uri::builder()
                .path_and_query(pq.clone())
                .build()
                .unwrap_or_else(|_| http::Uri::from_static("/"))
        },
    );
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
    Status::unimplemented(format!(
        "ketch proxy is read-only: {path} changes state and is not forwarded"
    ))
    .into_http()
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

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
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
        ReadTimeoutBody {
            inner,
            limit,
            timer: Box::pin(tokio::time::sleep(limit)),
        }
    }
}

impl HttpBody for ReadTimeoutBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
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
