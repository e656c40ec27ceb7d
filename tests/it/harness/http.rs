//! Minimal blocking HTTP/1.1 clients: raw requests on fresh connections (from any
//! source address), responses parsed by Content-Length, and the absolute-form requests
//! a player sends to its proxy.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::IO_DEADLINE;

/// One HTTP response: status, headers, body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A connection to `addr` with the usual deadlines.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, IO_DEADLINE).expect("connect");
    s.set_read_timeout(Some(IO_DEADLINE)).unwrap();
    s.set_write_timeout(Some(IO_DEADLINE)).unwrap();
    s
}

/// Sends one raw request on a new connection and reads one response.
pub fn http(addr: SocketAddr, raw: &str) -> Response {
    let mut s = connect(addr);
    s.write_all(raw.as_bytes()).unwrap();
    let head_only = raw.starts_with("HEAD ");
    read_response(&mut s, head_only)
}

/// `GET path` with optional extra header lines.
pub fn http_get(addr: SocketAddr, path: &str, extra: &str) -> Response {
    http(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n"),
    )
}

/// A parsed response head: status, headers, head length, body length to expect.
pub type Head = (u16, Vec<(String, String)>, usize, usize);

/// The response head at the front of `buf`; `None` while it is incomplete.
pub fn parse_head(buf: &[u8], head_only: bool) -> Option<Head> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut r = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(n) = r.parse(buf).expect("valid response head") else {
        return None;
    };
    let status = r.code.unwrap();
    let headers: Vec<(String, String)> = r
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).to_string(),
            )
        })
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.trim().parse().unwrap())
        .unwrap_or(0);
    let want = if head_only || status == 304 || status == 204 {
        0
    } else {
        len
    };
    Some((status, headers, n, want))
}

/// Reads one HTTP response (head and Content-Length body) from `s`.
pub fn read_response(s: &mut TcpStream, head_only: bool) -> Response {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        if let Some((status, headers, n, want)) = parse_head(&buf, head_only) {
            let mut body = buf[n..].to_vec();
            while body.len() < want {
                let k = s.read(&mut chunk).expect("read body");
                assert!(
                    k > 0,
                    "connection closed after {} of {want} body bytes",
                    body.len()
                );
                body.extend_from_slice(&chunk[..k]);
            }
            assert_eq!(body.len(), want, "more bytes than Content-Length");
            return Response {
                status,
                headers,
                body,
            };
        }
        let k = s.read(&mut chunk).expect("read head");
        assert!(
            k > 0,
            "connection closed before a response head; got {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..k]);
    }
}

/// True when the server closed `s` (EOF or reset) within the deadline.
pub fn closed_by_peer(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 4096];
    let t = Instant::now();
    while t.elapsed() < IO_DEADLINE {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
    false
}

/// A connection to `addr` whose source address is `src` (any simulated host: the
/// whole of 127.0.0.0/8 is local), with the usual deadlines.
pub fn connect_from(src: IpAddr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    sock.bind(&SocketAddr::new(src, 0).into())?;
    sock.connect_timeout(&addr.into(), IO_DEADLINE)?;
    let s: TcpStream = sock.into();
    s.set_read_timeout(Some(IO_DEADLINE))?;
    s.set_write_timeout(Some(IO_DEADLINE))?;
    Ok(s)
}

/// Like `read_response`, but every failure (closed early, timeout, bad head) is an
/// `Err` describing it, so callers can add the nodes' logs to their panic.
pub fn try_read_response(s: &mut TcpStream, head_only: bool) -> Result<Response, String> {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 65536];
    let head = loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut r = httparse::Response::new(&mut headers);
        match r.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => break parse_head(&buf, head_only).unwrap(),
            Ok(httparse::Status::Partial) => {}
            Err(e) => {
                return Err(format!(
                    "invalid response head ({e}): {:?}",
                    String::from_utf8_lossy(&buf)
                ))
            }
        }
        match s.read(&mut chunk) {
            Ok(0) => {
                return Err(format!(
                    "connection closed before a response head; got {:?}",
                    String::from_utf8_lossy(&buf)
                ))
            }
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
            Err(e) => {
                return Err(format!(
                    "reading the response head: {e}; got {:?}",
                    String::from_utf8_lossy(&buf)
                ))
            }
        }
    };
    let (status, headers, n, want) = head;
    let mut body = buf[n..].to_vec();
    while body.len() < want {
        match s.read(&mut chunk) {
            Ok(0) => {
                return Err(format!(
                    "{status} response: connection closed after {} of {want} body bytes",
                    body.len()
                ))
            }
            Ok(k) => body.extend_from_slice(&chunk[..k]),
            Err(e) => {
                return Err(format!(
                    "{status} response: reading the body after {} of {want} bytes: {e}",
                    body.len()
                ))
            }
        }
    }
    if body.len() > want {
        return Err(format!(
            "{status} response: {} bytes more than Content-Length {want}",
            body.len() - want
        ));
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// One raw request on a new connection, with `deadline` for every read and write;
/// never panics.
pub fn try_http(addr: SocketAddr, raw: &str, deadline: Duration) -> Result<Response, String> {
    let mut s =
        TcpStream::connect_timeout(&addr, deadline).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(deadline))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(deadline))
        .map_err(|e| e.to_string())?;
    s.write_all(raw.as_bytes())
        .map_err(|e| format!("send to {addr}: {e}"))?;
    try_read_response(&mut s, raw.starts_with("HEAD "))
}

/// The `host[:port]` part of an absolute `http://` URL.
pub fn url_authority(url: &str) -> &str {
    let rest = url
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("not an http:// URL: {url}"));
    rest.split('/').next().unwrap()
}

/// The request a player sends to its `http_proxy`: `GET http://host:port/path` in
/// absolute form, with `Host`, the given extra header lines (each ending in CRLF) and
/// `Connection: close`. Sent from `src` when given, else from the default source
/// address (127.0.0.1, local to every simulated host).
pub fn try_proxy_request(
    proxy: SocketAddr,
    src: Option<IpAddr>,
    method: &str,
    url: &str,
    extra_headers: &str,
) -> Result<Response, String> {
    let mut s = match src {
        Some(ip) => connect_from(ip, proxy),
        None => TcpStream::connect_timeout(&proxy, IO_DEADLINE).and_then(|s| {
            s.set_read_timeout(Some(IO_DEADLINE))?;
            s.set_write_timeout(Some(IO_DEADLINE))?;
            Ok(s)
        }),
    }
    .map_err(|e| format!("connect to {proxy} from {src:?}: {e}"))?;
    let host = url_authority(url);
    let raw = format!(
        "{method} {url} HTTP/1.1\r\nHost: {host}\r\n{extra_headers}Connection: close\r\n\r\n"
    );
    s.write_all(raw.as_bytes())
        .map_err(|e| format!("send to {proxy}: {e}"))?;
    try_read_response(&mut s, method == "HEAD")
}

/// `GET url` through the proxy at `proxy` (raw absolute-form request); panics on an
/// I/O failure, returns whatever status came back.
pub fn proxy_get(proxy: SocketAddr, url: &str, extra_headers: &str) -> Response {
    try_proxy_request(proxy, None, "GET", url, extra_headers)
        .unwrap_or_else(|e| panic!("GET {url} via proxy {proxy}: {e}"))
}
