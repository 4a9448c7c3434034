//! Tolerance for etcdctl 3.4's malformed HTTP/2 `:authority`.
//!
//! etcdctl 3.4 reaches an endpoint given with its scheme (`--endpoints http://host:2379`, and
//! every `--cluster` form, which uses the members' client URLs) through a per-endpoint dial
//! whose `:authority` is the whole URL, `http://host:2379`. grpc-go servers ignore it; hyper's
//! h2 refuses such a request as malformed (RST_STREAM PROTOCOL_ERROR), so `endpoint status`,
//! `endpoint hashkv` and `move-leader` failed against Ketch where they work against etcd.
//!
//! This wraps a client connection and looks at its first HTTP/2 header block only. If its
//! `:authority` carries a scheme, every header block of that connection is decoded, the scheme
//! is dropped from `:authority`, and the block is encoded again (HPACK state is per connection,
//! so once one block is rewritten all must be). Any other connection — HTTP/1, or HTTP/2 with a
//! proper authority — is passed through untouched after that first look.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// HTTP/2's default SETTINGS_MAX_FRAME_SIZE, which every server accepts.
const MAX_FRAME: usize = 16_384;
/// A header block larger than this is not a client request worth rewriting.
const MAX_BLOCK: usize = 1 << 20;

enum Mode {
    /// Reading the first bytes: the HTTP/2 preface, then frames up to the first header block.
    Sniffing,
    /// Rewriting every header block.
    Rewriting,
    /// Nothing more to look at.
    Passthrough,
}

pub struct AuthorityFix<S> {
    inner: S,
    mode: Mode,
    /// Bytes read from the connection and not yet looked at.
    raw: BytesMut,
    /// Bytes ready for the server.
    out: BytesMut,
    /// A header block being collected: its stream, flags of the HEADERS frame, priority bytes.
    block: Option<Block>,
    decoder: loona_hpack::Decoder<'static>,
    encoder: loona_hpack::Encoder<'static>,
    preface_seen: bool,
}

struct Block {
    stream: u32,
    flags: u8,
    priority: Option<[u8; 5]>,
    fragment: Vec<u8>,
}

impl<S> AuthorityFix<S> {
    pub fn new(inner: S) -> Self {
        AuthorityFix {
            inner,
            mode: Mode::Sniffing,
            raw: BytesMut::new(),
            out: BytesMut::new(),
            block: None,
            decoder: loona_hpack::Decoder::new(),
            encoder: loona_hpack::Encoder::new(),
            preface_seen: false,
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Moves what can be decided from `raw` to `out`.
    fn process(&mut self) -> io::Result<()> {
        loop {
            match self.mode {
                Mode::Passthrough => {
                    let all = self.raw.split();
                    self.out.unsplit(all);
                    return Ok(());
                }
                Mode::Sniffing if !self.preface_seen => {
                    let n = self.raw.len().min(PREFACE.len());
                    if self.raw[..n] != PREFACE[..n] {
                        self.mode = Mode::Passthrough; // HTTP/1 or not HTTP at all
                        continue;
                    }
                    if n < PREFACE.len() {
                        return Ok(());
                    }
                    self.preface_seen = true;
                    let p = self.raw.split_to(PREFACE.len());
                    self.out.unsplit(p);
                }
                Mode::Sniffing | Mode::Rewriting => {
                    if self.raw.len() < FRAME_HEADER {
                        return Ok(());
                    }
                    let len =
                        u32::from_be_bytes([0, self.raw[0], self.raw[1], self.raw[2]]) as usize;
                    if self.raw.len() < FRAME_HEADER + len {
                        return Ok(());
                    }
                    let kind = self.raw[3];
                    if kind != HEADERS && kind != CONTINUATION && self.block.is_none() {
                        let frame = self.raw.split_to(FRAME_HEADER + len);
                        self.out.unsplit(frame);
                        continue;
                    }
                    let frame = self.raw.split_to(FRAME_HEADER + len);
                    self.header_frame(&frame)?;
                }
            }
        }
    }

    fn header_frame(&mut self, frame: &[u8]) -> io::Result<()> {
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
        let kind = frame[3];
        let flags = frame[4];
        let stream = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
        let mut payload = &frame[FRAME_HEADER..];
        match (kind, self.block.as_mut()) {
            (HEADERS, None) => {
                let mut pad = 0usize;
                if flags & PADDED != 0 {
                    pad = *payload.first().ok_or_else(|| bad("empty padded HEADERS"))? as usize;
                    payload = &payload[1..];
                }
                let mut priority = None;
                if flags & PRIORITY != 0 {
                    if payload.len() < 5 {
                        return Err(bad("short HEADERS priority"));
                    }
                    priority = Some([payload[0], payload[1], payload[2], payload[3], payload[4]]);
                    payload = &payload[5..];
                }
                if pad > payload.len() {
                    return Err(bad("HEADERS padding longer than the frame"));
                }
                let fragment = payload[..payload.len() - pad].to_vec();
                self.block = Some(Block {
                    stream,
                    flags,
                    priority,
                    fragment,
                });
            }
            (CONTINUATION, Some(b)) if b.stream == stream => {
                b.fragment.extend_from_slice(payload);
                if b.fragment.len() > MAX_BLOCK {
                    return Err(bad("header block too large"));
                }
                b.flags |= flags & END_HEADERS;
            }
            _ => {
                // not a sequence this layer understands: let the server judge it
                self.mode = Mode::Passthrough;
                self.out.extend_from_slice(frame);
                return Ok(());
            }
        }
        let done = self
            .block
            .as_ref()
            .is_some_and(|b| b.flags & END_HEADERS != 0);
        if done {
            let block = self.block.take().expect("block");
            self.finish_block(block)?;
        }
        Ok(())
    }

    fn finish_block(&mut self, block: Block) -> io::Result<()> {
        let bad = |e: String| io::Error::new(io::ErrorKind::InvalidData, e);
        let headers = self
            .decoder
            .decode(&block.fragment)
            .map_err(|e| bad(format!("hpack: {e:?}")))?;
        if matches!(self.mode, Mode::Sniffing) {
            let needs_fix = headers
                .iter()
                .any(|(n, v)| n == b":authority" && v.windows(3).any(|w| w == b"://"));
            if !needs_fix {
                // the original bytes are what the server's decoder must see
                self.emit_block(&block, &block.fragment);
                self.mode = Mode::Passthrough;
                return Ok(());
            }
            self.mode = Mode::Rewriting;
        }
        let fixed: Vec<(Vec<u8>, Vec<u8>)> = headers
            .into_iter()
            .map(|(n, v)| {
                if n == b":authority" {
                    let v = match v.windows(3).position(|w| w == b"://") {
                        Some(i) => v[i + 3..].to_vec(),
                        None => v,
                    };
                    (n, v)
                } else {
                    (n, v)
                }
            })
            .collect();
        let encoded = self
            .encoder
            .encode(fixed.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
        self.emit_block(&block, &encoded);
        Ok(())
    }

    /// Writes a header block as one HEADERS frame and as many CONTINUATION frames as needed.
    fn emit_block(&mut self, block: &Block, fragment: &[u8]) {
        let mut offset = 0;
        let mut first = true;
        loop {
            let prio = if first { block.priority } else { None };
            let room = MAX_FRAME - prio.map_or(0, |_| 5);
            let end = (offset + room).min(fragment.len());
            let last = end == fragment.len();
            let kind = if first { HEADERS } else { CONTINUATION };
            let mut flags = if first { block.flags & END_STREAM } else { 0 };
            if last {
                flags |= END_HEADERS;
            }
            if prio.is_some() {
                flags |= PRIORITY;
            }
            let len = end - offset + prio.map_or(0, |_| 5);
            self.out.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
            self.out.extend_from_slice(&[kind, flags]);
            self.out.extend_from_slice(&block.stream.to_be_bytes());
            if let Some(p) = prio {
                self.out.extend_from_slice(&p);
            }
            self.out.extend_from_slice(&fragment[offset..end]);
            if last {
                break;
            }
            offset = end;
            first = false;
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFix<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.out.is_empty() {
                let n = this.out.len().min(buf.remaining());
                buf.put_slice(&this.out[..n]);
                this.out.advance(n);
                return Poll::Ready(Ok(()));
            }
            if matches!(this.mode, Mode::Passthrough) && this.raw.is_empty() && this.block.is_none()
            {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            let mut tmp = [0u8; 16 * 1024];
            let mut rb = ReadBuf::new(&mut tmp);
            match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) => {
                    if rb.filled().is_empty() {
                        // end of stream: hand on whatever is left as it is
                        let rest = this.raw.split();
                        this.out.unsplit(rest);
                        this.mode = Mode::Passthrough;
                        if this.out.is_empty() {
                            return Poll::Ready(Ok(()));
                        }
                        continue;
                    }
                    this.raw.extend_from_slice(rb.filled());
                    this.process()?;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected
    for AuthorityFix<S>
{
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        f.extend_from_slice(&[kind, flags]);
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    async fn through(input: Vec<u8>) -> Vec<u8> {
        let mut fix = AuthorityFix::new(std::io::Cursor::new(input));
        let mut out = Vec::new();
        fix.read_to_end(&mut out).await.unwrap();
        out
    }

    /// Decodes every header block of an HTTP/2 client byte stream.
    fn blocks(bytes: &[u8]) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut dec = loona_hpack::Decoder::new();
        let mut rest = &bytes[PREFACE.len()..];
        let mut out = Vec::new();
        let mut frag = Vec::new();
        while rest.len() >= FRAME_HEADER {
            let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
            let (kind, flags) = (rest[3], rest[4]);
            let mut p = &rest[FRAME_HEADER..FRAME_HEADER + len];
            if kind == HEADERS && flags & PRIORITY != 0 {
                p = &p[5..];
            }
            if kind == HEADERS || kind == CONTINUATION {
                frag.extend_from_slice(p);
                if flags & END_HEADERS != 0 {
                    out.push(dec.decode(&frag).unwrap());
                    frag.clear();
                }
            }
            rest = &rest[FRAME_HEADER + len..];
        }
        out
    }

    fn request(enc: &mut loona_hpack::Encoder<'static>, authority: &str, stream: u32) -> Vec<u8> {
        let block = enc.encode(vec![
            (&b":method"[..], &b"POST"[..]),
            (b":scheme", b"http"),
            (b":path", b"/etcdserverpb.Maintenance/Status"),
            (b":authority", authority.as_bytes()),
            (b"content-type", b"application/grpc"),
        ]);
        frame(HEADERS, END_HEADERS, stream, &block)
    }

    #[tokio::test]
    async fn a_scheme_in_the_authority_is_dropped_on_every_request_of_the_connection() {
        let mut enc = loona_hpack::Encoder::new();
        let mut input = PREFACE.to_vec();
        input.extend(frame(0x4, 0, 0, &[])); // SETTINGS
        input.extend(request(&mut enc, "http://127.0.0.1:2379", 1));
        input.extend(frame(0x0, END_STREAM, 1, b"\0\0\0\0\0"));
        input.extend(request(&mut enc, "http://127.0.0.1:2379", 3));
        let out = through(input).await;
        let got = blocks(&out);
        assert_eq!(got.len(), 2);
        for b in got {
            let auth = b.iter().find(|(n, _)| n == b":authority").unwrap();
            assert_eq!(auth.1, b"127.0.0.1:2379");
            assert!(b
                .iter()
                .any(|(n, v)| n == b":path" && v == b"/etcdserverpb.Maintenance/Status"));
        }
    }

    #[tokio::test]
    async fn proper_connections_and_http1_pass_through_byte_for_byte() {
        let mut enc = loona_hpack::Encoder::new();
        let mut input = PREFACE.to_vec();
        input.extend(request(&mut enc, "127.0.0.1:2379", 1));
        input.extend(frame(0x0, END_STREAM, 1, b"\0\0\0\0\0"));
        assert_eq!(through(input.clone()).await, input);
        let http1 = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        assert_eq!(through(http1.clone()).await, http1);
    }
}
