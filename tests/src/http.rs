//! A minimal HTTP/1.1 client over `std::net::TcpStream`, enough for `/health` and `/version`:
//! one GET per connection (`Connection: close`), `Content-Length`, chunked or read-to-end
//! bodies. Every step is bounded by the given timeout.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// One HTTP response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names lower-cased, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header with this (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> Result<serde_json::Value, String> {
        serde_json::from_slice(&self.body)
            .map_err(|e| format!("body is not JSON ({e}): {:?}", self.body_str()))
    }
}

/// `GET path` from `addr`, the whole exchange bounded by `timeout`.
pub fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<HttpResponse, String> {
    http_request(addr, "GET", path, "", timeout)
}

/// `method path` with `body` to `addr`, the whole exchange bounded by `timeout`.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
    timeout: Duration,
) -> Result<HttpResponse, String> {
    let deadline = Instant::now() + timeout;
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect {addr}: {e}"))?;
    let length = if body.is_empty() && method == "GET" {
        String::new()
    } else {
        format!("Content-Length: {}\r\n", body.len())
    };
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: ketch-tests\r\nAccept: */*\r\n\
         {length}Connection: close\r\n\r\n{body}"
    );
    stream
        .set_write_timeout(Some(timeout))
        .and_then(|_| stream.write_all(request.as_bytes()))
        .map_err(|e| format!("send request to {addr}: {e}"))?;

    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "GET {path} from {addr}: timed out after {timeout:?}"
            ));
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(|e| e.to_string())?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                raw.extend_from_slice(&buf[..n]);
                if let Some(resp) = parse_complete(&raw)? {
                    return Ok(resp);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("GET {path} from {addr}: read: {e}")),
        }
    }
    match parse_complete(&raw)? {
        Some(resp) => Ok(resp),
        None => parse_head(&raw)
            .map(|(status, headers, body_at)| HttpResponse {
                status,
                headers,
                body: raw[body_at..].to_vec(),
            })
            .ok_or_else(|| {
                format!(
                    "GET {path} from {addr}: connection closed before a full response: {:?}",
                    String::from_utf8_lossy(&raw)
                )
            }),
    }
}

pub(crate) type Head = (u16, Vec<(String, String)>, usize);

pub(crate) fn parse_head(raw: &[u8]) -> Option<Head> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let status = status_line.split(' ').nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Some((status, headers, end + 4))
}

/// A response once `raw` holds all of it (by Content-Length or a finished chunked body);
/// `Ok(None)` while more bytes are needed (or the body runs to connection close).
pub(crate) fn parse_complete(raw: &[u8]) -> Result<Option<HttpResponse>, String> {
    let Some((status, headers, body_at)) = parse_head(raw) else {
        return Ok(None);
    };
    let resp = |body: Vec<u8>| HttpResponse {
        status,
        headers: headers.clone(),
        body,
    };
    let find = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let body = &raw[body_at..];
    if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        return Ok(decode_chunked(body).map(resp));
    }
    if let Some(len) = find("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| format!("bad Content-Length {len:?}"))?;
        return Ok((body.len() >= len).then(|| resp(body[..len].to_vec())));
    }
    Ok(None)
}

fn decode_chunked(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n")?;
        let size_field = std::str::from_utf8(&body[..line_end]).ok()?;
        let size = usize::from_str_radix(size_field.split(';').next()?.trim(), 16).ok()?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        if body.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_content_length_and_chunked_bodies() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello";
        let r = parse_complete(raw).unwrap().unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]));
        assert_eq!(r.header("x-a"), Some("b"));
        assert!(parse_complete(&raw[..raw.len() - 1]).unwrap().is_none());

        let raw =
            b"HTTP/1.1 503 X\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let r = parse_complete(raw).unwrap().unwrap();
        assert_eq!((r.status, r.body.as_slice()), (503, &b"abcde"[..]));
    }
}
