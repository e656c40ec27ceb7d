//! HTTP behaviour of an origin (`p2pd -p DIR`): whole files, HEAD, ranges across
//! block boundaries, validators, keep-alive and pipelining, content types, path
//! escapes and symlinks, files added and changed while running, the `-T` playlist,
//! `-A` host filtering, the operator endpoints and malformed requests.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::harness::*;

const BLOCK: usize = 16 * 1024;

/// A connection that keeps bytes read past one response for the next one, so
/// pipelined responses can be read one after the other.
struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    fn new(addr: SocketAddr) -> Conn {
        Conn {
            s: connect(addr),
            buf: Vec::new(),
        }
    }

    fn send(&mut self, raw: &str) {
        self.s.write_all(raw.as_bytes()).unwrap();
    }

    fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 65536];
        let k = self.s.read(&mut chunk).expect("read");
        self.buf.extend_from_slice(&chunk[..k]);
        k
    }

    /// Reads one response; `head_only` for answers to HEAD (no body follows).
    fn response(&mut self, head_only: bool) -> Response {
        self.try_response(head_only)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like `response`, but a connection closed before the whole response arrived is
    /// an `Err` rather than a panic.
    fn try_response(&mut self, head_only: bool) -> Result<Response, String> {
        loop {
            if let Some((status, headers, n, want)) = parse_head(&self.buf, head_only) {
                while self.buf.len() < n + want {
                    if self.fill() == 0 {
                        return Err(format!(
                            "closed after {} of {want} body bytes",
                            self.buf.len() - n
                        ));
                    }
                }
                let body = self.buf[n..n + want].to_vec();
                self.buf.drain(..n + want);
                return Ok(Response {
                    status,
                    headers,
                    body,
                });
            }
            if self.fill() == 0 {
                return Err(format!(
                    "connection closed before a response head; got {:?}",
                    String::from_utf8_lossy(&self.buf)
                ));
            }
        }
    }

    /// Everything the server still sends until it closes the connection.
    fn rest_until_eof(&mut self) -> Vec<u8> {
        let t = Instant::now();
        loop {
            assert!(t.elapsed() < IO_DEADLINE, "server did not close");
            match self.fill() {
                0 => return std::mem::take(&mut self.buf),
                _ => continue,
            }
        }
    }
}

/// One request on a new connection with `Connection: close`; returns the response and
/// whatever followed it before EOF (which must be nothing).
fn once(addr: SocketAddr, raw: &str) -> (Response, Vec<u8>) {
    let mut c = Conn::new(addr);
    c.send(raw);
    let r = c.response(raw.starts_with("HEAD "));
    let rest = c.rest_until_eof();
    (r, rest)
}

fn get(addr: SocketAddr, path: &str, extra: &str) -> Response {
    let (r, rest) = once(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n"),
    );
    assert!(
        rest.is_empty(),
        "GET {path}: {} bytes after the response",
        rest.len()
    );
    r
}

/// A GET while the file may be changing on disk: `None` when the server closed the
/// connection part-way (what it must do when a block no longer matches its digest).
fn try_get(addr: SocketAddr, path: &str) -> Option<Response> {
    let mut c = Conn::new(addr);
    c.send(&format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    ));
    c.try_response(false).ok()
}

fn head(addr: SocketAddr, path: &str, extra: &str) -> Response {
    let (r, rest) = once(
        addr,
        &format!("HEAD {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n"),
    );
    assert!(
        rest.is_empty(),
        "HEAD {path} sent {} body bytes",
        rest.len()
    );
    r
}

fn clen(r: &Response) -> u64 {
    r.header("content-length")
        .unwrap_or_else(|| panic!("no Content-Length in {r:?}"))
        .trim()
        .parse()
        .unwrap()
}

fn ctype(r: &Response) -> String {
    r.header("content-type")
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap()
        .trim()
        .to_ascii_lowercase()
}

fn etag(r: &Response) -> String {
    r.header("etag")
        .unwrap_or_else(|| panic!("no ETag in {r:?}"))
        .to_string()
}

fn assert_etag_form(tag: &str) {
    let inner = tag
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or_else(|| panic!("ETag {tag} is not quoted"));
    assert_eq!(inner.len(), 16, "ETag {tag}");
    assert!(
        inner.bytes().all(|b| b.is_ascii_hexdigit()),
        "ETag {tag} is not hex"
    );
}

/// Asserts a 206 for `range` with exactly `data[a..=b]`.
fn assert_range(addr: SocketAddr, path: &str, data: &[u8], range: &str, a: usize, b: usize) {
    let r = get(addr, path, &format!("Range: {range}\r\n"));
    let size = data.len();
    assert_eq!(r.status, 206, "{path} Range {range}: {r:?}");
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes {a}-{b}/{size}").as_str()),
        "{path} Range {range}"
    );
    assert_eq!(clen(&r), (b - a + 1) as u64, "{path} Range {range}");
    assert!(
        r.body == data[a..=b],
        "{path} Range {range}: wrong bytes ({} bytes)",
        r.body.len()
    );
}

fn assert_416(addr: SocketAddr, path: &str, size: usize, range: &str) {
    let r = get(addr, path, &format!("Range: {range}\r\n"));
    assert_eq!(r.status, 416, "{path} Range {range}: {r:?}");
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes */{size}").as_str()),
        "{path} Range {range}"
    );
}

#[test]
fn sizes_whole_head_ranges_and_validators() {
    let sizes = [0usize, 1, 16383, 16384, 16385, 3 * 1024 * 1024 + 17];
    let files: Vec<(String, Vec<u8>)> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| (format!("sizes/f{n}.mp4"), content(n, 100 + i as u64)))
        .collect();
    let node = files
        .iter()
        .fold(Origin::builder(), |b, (rel, data)| b.file(rel, data))
        .start();
    let addr = node.addr;

    for (rel, data) in &files {
        let path = format!("/{rel}");
        let size = data.len();

        let r = get(addr, &path, "");
        assert_eq!(r.status, 200, "GET {path}: {r:?}");
        assert_eq!(clen(&r), size as u64, "GET {path}");
        assert!(
            r.body == *data,
            "GET {path}: body differs ({} bytes)",
            r.body.len()
        );
        assert_eq!(ctype(&r), "video/mp4", "GET {path}");
        let tag = etag(&r);
        assert_etag_form(&tag);
        let lm = r
            .header("last-modified")
            .unwrap_or_else(|| panic!("GET {path}: no Last-Modified"));
        let lm_time = httpdate::parse_http_date(lm)
            .unwrap_or_else(|e| panic!("GET {path}: Last-Modified {lm:?}: {e}"));
        let mtime = std::fs::metadata(node.dir().join(rel))
            .unwrap()
            .modified()
            .unwrap();
        let skew = match mtime.duration_since(lm_time) {
            Ok(d) => d,
            Err(e) => e.duration(),
        };
        assert!(
            skew < Duration::from_secs(2),
            "{path}: Last-Modified {lm} vs mtime {mtime:?}"
        );

        let h = head(addr, &path, "");
        assert_eq!(h.status, 200, "HEAD {path}: {h:?}");
        assert_eq!(clen(&h), size as u64, "HEAD {path}");
        assert!(h.body.is_empty());
        assert_eq!(h.header("etag"), Some(tag.as_str()), "HEAD {path}");

        let (nm, rest) = once(
            addr,
            &format!(
                "GET {path} HTTP/1.1\r\nHost: {addr}\r\nIf-None-Match: {tag}\r\nConnection: close\r\n\r\n"
            ),
        );
        assert_eq!(nm.status, 304, "If-None-Match {path}: {nm:?}");
        assert!(
            rest.is_empty(),
            "304 for {path} carried {} bytes",
            rest.len()
        );
        let other = get(addr, &path, "If-None-Match: \"0000000000000000\"\r\n");
        assert_eq!(other.status, 200, "If-None-Match with another tag, {path}");
        assert!(other.body == *data);

        if size == 0 {
            assert_416(addr, &path, 0, "bytes=0-0");
            assert_416(addr, &path, 0, "bytes=0-");
            continue;
        }
        assert_range(addr, &path, data, "bytes=0-0", 0, 0);
        assert_range(addr, &path, data, "bytes=-1", size - 1, size - 1);
        assert_range(
            addr,
            &path,
            data,
            &format!("bytes={}-", size - 1),
            size - 1,
            size - 1,
        );
        if size > 16000 {
            // Crosses the 16384 boundary when the file is long enough; clipped otherwise.
            let end = 17000.min(size - 1);
            assert_range(addr, &path, data, "bytes=16000-17000", 16000, end);
        }
        let mid = size / 2;
        assert_range(addr, &path, data, &format!("bytes={mid}-"), mid, size - 1);
        assert_416(addr, &path, size, &format!("bytes={size}-"));
        assert_416(
            addr,
            &path,
            size,
            &format!("bytes={}-{}", size + 10, size + 20),
        );
    }

    // Ranges over the big file: exactly one block, a block edge, many blocks, a range
    // running past the end, and a suffix longer than one block.
    let (rel, data) = files.last().unwrap();
    let path = format!("/{rel}");
    let size = data.len();
    assert_range(addr, &path, data, "bytes=16384-32767", BLOCK, 2 * BLOCK - 1);
    assert_range(addr, &path, data, "bytes=16383-16384", BLOCK - 1, BLOCK);
    assert_range(addr, &path, data, "bytes=100000-2000000", 100000, 2000000);
    assert_range(
        addr,
        &path,
        data,
        &format!("bytes={}-{}", size - 20, size + 1000),
        size - 20,
        size - 1,
    );
    assert_range(addr, &path, data, "bytes=-40000", size - 40000, size - 1);
    // A suffix longer than the file is the whole file.
    let small = &files[1].1;
    assert_range(addr, &format!("/{}", files[1].0), small, "bytes=-5", 0, 0);
}

#[test]
fn keep_alive_and_pipelining() {
    let a = content(50_000, 1);
    let b = content(20_000, 2);
    let node = Origin::builder().file("a.mp4", &a).file("b.ts", &b).start();
    let addr = node.addr;

    let mut c = Conn::new(addr);
    c.send(&format!("GET /a.mp4 HTTP/1.1\r\nHost: {addr}\r\n\r\n"));
    let r1 = c.response(false);
    assert_eq!(r1.status, 200);
    assert!(r1.body == a);

    c.send(&format!("HEAD /b.ts HTTP/1.1\r\nHost: {addr}\r\n\r\n"));
    let r2 = c.response(true);
    assert_eq!(r2.status, 200);
    assert_eq!(clen(&r2), b.len() as u64);

    // A pipelined pair in one write: a range of one file, then the whole other one.
    c.send(&format!(
        "GET /b.ts HTTP/1.1\r\nHost: {addr}\r\nRange: bytes=16000-17000\r\n\r\n\
         GET /a.mp4 HTTP/1.1\r\nHost: {addr}\r\n\r\n"
    ));
    let r3 = c.response(false);
    assert_eq!(r3.status, 206, "{r3:?}");
    assert!(r3.body == b[16000..=17000]);
    let r4 = c.response(false);
    assert_eq!(r4.status, 200, "{r4:?}");
    assert!(r4.body == a);

    // A pipelined HEAD then GET: the HEAD must carry no body, or the GET would be
    // misread.
    c.send(&format!(
        "HEAD /a.mp4 HTTP/1.1\r\nHost: {addr}\r\n\r\n\
         GET /b.ts HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    ));
    let r5 = c.response(true);
    assert_eq!(r5.status, 200);
    assert_eq!(clen(&r5), a.len() as u64);
    let r6 = c.response(false);
    assert_eq!(r6.status, 200);
    assert!(r6.body == b);
    // Connection: close is honoured, with nothing after the last response.
    let rest = c.rest_until_eof();
    assert!(
        rest.is_empty(),
        "{} bytes after the last response",
        rest.len()
    );

    // HTTP/1.0 without keep-alive closes after one response.
    let (r, rest) = once(addr, "GET /b.ts HTTP/1.0\r\n\r\n");
    assert_eq!(r.status, 200);
    assert!(r.body == b);
    assert!(rest.is_empty());
}

#[test]
fn content_types() {
    let cases = [
        ("v.mp4", "video/mp4"),
        ("v.ts", "video/mp2t"),
        ("v.mpg", "video/mpeg"),
        ("sub/UPPER.MP4", "video/mp4"),
    ];
    let node = cases
        .iter()
        .fold(Origin::builder(), |b, (name, _)| {
            b.file(name, &content(100, 7))
        })
        .start();
    for (name, want) in cases {
        let r = get(node.addr, &format!("/{name}"), "");
        assert_eq!(r.status, 200, "{name}");
        assert_eq!(ctype(&r), want, "{name}: {r:?}");
        let h = head(node.addr, &format!("/{name}"), "");
        assert_eq!(ctype(&h), want, "HEAD {name}");
        let p = get(node.addr, &format!("/{name}"), "Range: bytes=0-9\r\n");
        assert_eq!(p.status, 206);
        assert_eq!(ctype(&p), want, "ranged {name}");
    }
}

const SECRET: &[u8] = b"TOP-SECRET-0123456789-never-served";

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn escapes_out_of_the_directory_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let idx = tempfile::tempdir().unwrap();
    let dir = root.path().join("pub");
    write_file(&dir, "a/movie.mp4", &content(1000, 3));
    write_file(root.path(), "secret.txt", SECRET);
    let node = start_origin(&dir, idx.path(), &[]);
    let addr = node.addr;

    for target in [
        "/../etc/passwd",
        "/a/../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/..%2fetc%2fpasswd",
        "/x%00.mp4",
        "/..\\..\\etc\\passwd",
        "/../secret.txt",
        "/a/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E/secret.txt",
        "/a/%2e%2e/%2e%2e/secret.txt",
        "/..%2fsecret.txt",
        "/a%2f..%2f..%2fsecret.txt",
        "/..\\secret.txt",
        "/a/movie.mp4%00.txt",
    ] {
        for method in ["GET", "HEAD"] {
            let (r, rest) = once(
                addr,
                &format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
            );
            assert_eq!(r.status, 400, "{method} {target}: {r:?}");
            assert!(!contains(&r.body, SECRET) && !contains(&rest, SECRET));
            assert!(
                !contains(&r.body, b"root:"),
                "{method} {target} leaked /etc/passwd"
            );
        }
    }
    // The file itself is still served, so the refusals above are not a dead server.
    let r = get(addr, "/a/movie.mp4", "");
    assert_eq!(r.status, 200);
    assert!(r.body == content(1000, 3));
    let r = get(addr, "/missing.mp4", "");
    assert_eq!(r.status, 404);
}

#[test]
fn symlinks_outside_are_never_served_inside_are() {
    let root = tempfile::tempdir().unwrap();
    let idx = tempfile::tempdir().unwrap();
    let dir = root.path().join("pub");
    let outside = root.path().join("outside");
    let secret = write_file(&outside, "secret.mp4", SECRET);
    let inner = content(40_000, 9);
    write_file(&dir, "real/movie.mp4", &inner);
    std::os::unix::fs::symlink(&secret, dir.join("leak.mp4")).unwrap();
    std::os::unix::fs::symlink("../outside/secret.mp4", dir.join("rel-leak.mp4")).unwrap();
    std::os::unix::fs::symlink(&outside, dir.join("outdir")).unwrap();
    std::os::unix::fs::symlink(dir.join("real/movie.mp4"), dir.join("alias.mp4")).unwrap();
    std::os::unix::fs::symlink("real/movie.mp4", dir.join("rel-alias.mp4")).unwrap();
    let node = start_origin(&dir, idx.path(), &[]);
    let addr = node.addr;

    let check_refused = |path: &str| {
        for (r, rest) in [
            once(
                addr,
                &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
            ),
            once(
                addr,
                &format!(
                    "GET {path} HTTP/1.1\r\nHost: {addr}\r\nRange: bytes=0-5\r\nConnection: close\r\n\r\n"
                ),
            ),
            once(
                addr,
                &format!("HEAD {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
            ),
        ] {
            assert!(
                r.status == 404 || r.status == 400,
                "{path}: {} {:?}",
                r.status,
                String::from_utf8_lossy(&r.body)
            );
            assert!(!contains(&r.body, SECRET) && !contains(&rest, SECRET), "{path} leaked");
            assert!(!contains(&r.body, b"TOP-SECRET"), "{path} leaked a part");
        }
    };
    check_refused("/leak.mp4");
    check_refused("/rel-leak.mp4");
    check_refused("/outdir/secret.mp4");

    for path in ["/alias.mp4", "/rel-alias.mp4", "/real/movie.mp4"] {
        let r = get(addr, path, "");
        assert_eq!(r.status, 200, "{path}: {r:?}");
        assert!(r.body == inner, "{path}: wrong bytes");
        assert_range(addr, path, &inner, "bytes=16000-17000", 16000, 17000);
    }

    // Symlinks made while the node runs are judged the same way (on-demand indexing).
    std::os::unix::fs::symlink(&secret, dir.join("late-leak.mp4")).unwrap();
    check_refused("/late-leak.mp4");
    std::os::unix::fs::symlink("real/movie.mp4", dir.join("late-alias.mp4")).unwrap();
    let r = get(addr, "/late-alias.mp4", "");
    assert_eq!(r.status, 200);
    assert!(r.body == inner);
    // A symlink that was inside and is repointed outside stops being served.
    std::fs::remove_file(dir.join("late-alias.mp4")).unwrap();
    std::os::unix::fs::symlink(&secret, dir.join("late-alias.mp4")).unwrap();
    let mut last = 0;
    let refused = wait_until(Duration::from_secs(10), || {
        let r = get(addr, "/late-alias.mp4", "");
        assert!(
            !contains(&r.body, SECRET),
            "repointed symlink leaked the secret"
        );
        last = r.status;
        r.status == 404 || r.status == 400
    });
    assert!(refused, "repointed symlink still served: {last}");
}

#[test]
fn files_added_changed_and_removed_while_running() {
    let node = Origin::builder()
        .file("first.mp4", &content(10, 1))
        .args(&["--rescan-interval", "200"])
        .start();
    let addr = node.addr;

    assert_eq!(get(addr, "/later/new.mp4", "").status, 404);
    let added = content(70_000, 11);
    write_file(node.dir(), "later/new.mp4", &added);
    let r = get(addr, "/later/new.mp4", "");
    assert_eq!(r.status, 200, "added file not served at once: {r:?}");
    assert!(r.body == added);
    assert_range(
        addr,
        "/later/new.mp4",
        &added,
        "bytes=16000-17000",
        16000,
        17000,
    );
    let old_tag = etag(&r);

    // Change the content (and the length); mtime must move on too.
    let changed = content(50_001, 12);
    rewrite_file(node.dir(), "later/new.mp4", &changed);
    let mut new = None;
    let noticed = wait_until(Duration::from_secs(10), || {
        // None: closed part-way, as it must when a block no longer matches its digest.
        let Some(r) = try_get(addr, "/later/new.mp4") else {
            return false;
        };
        assert_eq!(r.status, 200, "{r:?}");
        if etag(&r) != old_tag {
            new = Some(r);
            return true;
        }
        // Until the change is noticed, the old version is served whole and unmixed.
        assert!(
            r.body == added,
            "old ETag with bytes that are not the old file's"
        );
        false
    });
    assert!(noticed, "changed file still has ETag {old_tag}");
    let new = new.unwrap();
    assert_eq!(clen(&new), changed.len() as u64);
    assert!(new.body == changed, "new ETag but old or mixed bytes");
    let new_tag = etag(&new);
    assert_etag_form(&new_tag);
    assert_range(
        addr,
        "/later/new.mp4",
        &changed,
        "bytes=16000-17000",
        16000,
        17000,
    );
    assert_range(
        addr,
        "/later/new.mp4",
        &changed,
        "bytes=-1",
        changed.len() - 1,
        changed.len() - 1,
    );
    // The old validator no longer matches; the new one does.
    let r = get(
        addr,
        "/later/new.mp4",
        &format!("If-None-Match: {old_tag}\r\n"),
    );
    assert_eq!(r.status, 200);
    assert!(r.body == changed);
    let r = get(
        addr,
        "/later/new.mp4",
        &format!("If-None-Match: {new_tag}\r\n"),
    );
    assert_eq!(r.status, 304);

    // Same length, different bytes: still a new version.
    let same_len = content(changed.len(), 13);
    rewrite_file(node.dir(), "later/new.mp4", &same_len);
    let noticed = wait_until(Duration::from_secs(10), || {
        let Some(r) = try_get(addr, "/later/new.mp4") else {
            return false;
        };
        assert_eq!(r.status, 200);
        if etag(&r) != new_tag {
            assert!(r.body == same_len, "new ETag but not the new bytes");
            return true;
        }
        assert!(
            r.body == changed,
            "old ETag with bytes that are not the old file's"
        );
        false
    });
    assert!(noticed, "same-length change not noticed");

    // A removed file goes away.
    std::fs::remove_file(node.dir().join("later/new.mp4")).unwrap();
    let mut last = None;
    let gone = wait_until(Duration::from_secs(10), || {
        last = try_get(addr, "/later/new.mp4").map(|r| r.status);
        last == Some(404)
    });
    assert!(gone, "removed file still served: {last:?}");
}

#[test]
fn playlist_mode() {
    let movie = content(40_000, 21);
    let node = Origin::builder()
        .file("movie.mp4", &movie)
        .file("sub/clip.ts", &content(5, 22))
        .args(&["-T"])
        .start();
    let addr = node.addr;
    let port = addr.port();

    let expected = |host: &str, path: &str, len: usize| {
        format!(
            "[playlist]\nnumberofentries=2\nFile1=spp://{host}:{port}{path}\n\
             Title1=spp url, for supporting clients\nLength1={len}\n\
             File2=http://{host}:{port}{path}?direct\nTitle2=http fallback url\n\
             Length2={len}\nVersion=2\n"
        )
    };

    for (host_header, host) in [
        (
            format!("cdn.example.com:{port}"),
            "cdn.example.com".to_string(),
        ),
        (format!("{}:{port}", addr.ip()), addr.ip().to_string()),
    ] {
        for (path, len) in [("/movie.mp4", movie.len()), ("/sub/clip.ts", 5)] {
            let want = expected(&host, path, len);
            let (r, rest) = once(
                addr,
                &format!("GET {path} HTTP/1.1\r\nHost: {host_header}\r\nConnection: close\r\n\r\n"),
            );
            assert_eq!(r.status, 200, "{r:?}");
            assert_eq!(ctype(&r), "application/x-spp-playlist");
            assert_eq!(String::from_utf8_lossy(&r.body), want);
            assert_eq!(clen(&r), want.len() as u64);
            assert!(rest.is_empty());

            let (h, rest) = once(
                addr,
                &format!(
                    "HEAD {path} HTTP/1.1\r\nHost: {host_header}\r\nConnection: close\r\n\r\n"
                ),
            );
            assert_eq!(h.status, 200);
            assert_eq!(ctype(&h), "application/x-spp-playlist");
            assert_eq!(clen(&h), want.len() as u64);
            assert!(rest.is_empty(), "HEAD on a playlist sent a body");
        }
    }

    // ?direct returns the file itself, with ranges.
    let r = get(addr, "/movie.mp4?direct", "");
    assert_eq!(r.status, 200);
    assert_eq!(ctype(&r), "video/mp4");
    assert!(r.body == movie, "?direct did not return the file");
    assert_range(
        addr,
        "/movie.mp4?direct",
        &movie,
        "bytes=16000-17000",
        16000,
        17000,
    );
    let h = head(addr, "/movie.mp4?direct", "");
    assert_eq!(clen(&h), movie.len() as u64);
    // A missing file is a 404, not a playlist.
    let r = get(addr, "/nope.mp4", "");
    assert_eq!(r.status, 404);
    assert!(!contains(&r.body, b"[playlist]"));
}

#[test]
fn allow_host_filters_requests() {
    let movie = content(20_000, 31);
    let node = Origin::builder()
        .file("movie.mp4", &movie)
        .args(&["-A", "cdn.example.com"])
        .start();
    let addr = node.addr;
    let port = addr.port();

    for host in [
        format!("cdn.example.com:{port}"),
        "cdn.example.com".to_string(),
        format!("CDN.Example.COM:{port}"),
    ] {
        let (r, _) = once(
            addr,
            &format!("GET /movie.mp4 HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        );
        assert_eq!(r.status, 200, "Host {host}: {r:?}");
        assert!(r.body == movie);
    }
    let (r, _) = once(
        addr,
        &format!("GET http://Cdn.Example.Com:{port}/movie.mp4 HTTP/1.1\r\nHost: cdn.example.com\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(r.status, 200, "absolute form, allowed host: {r:?}");
    assert!(r.body == movie);

    for host in [
        format!("other.example:{port}"),
        format!("{}:{port}", addr.ip()),
        "cdn.example.com.evil.net".to_string(),
        "xcdn.example.com".to_string(),
    ] {
        for method in ["GET", "HEAD"] {
            let (r, rest) = once(
                addr,
                &format!(
                    "{method} /movie.mp4 HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
                ),
            );
            assert_eq!(r.status, 403, "{method} Host {host}: {r:?}");
            assert!(!contains(&r.body, &movie[..64]) && !contains(&rest, &movie[..64]));
        }
    }
    let (r, _) = once(
        addr,
        &format!("GET http://other.example:{port}/movie.mp4 HTTP/1.1\r\nHost: cdn.example.com\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(r.status, 403, "absolute form, other host: {r:?}");

    // No Host at all (HTTP/1.0) or an empty one names no allowed host.
    let (r, _) = once(addr, "GET /movie.mp4 HTTP/1.0\r\n\r\n");
    assert_eq!(r.status, 403, "HTTP/1.0 without Host: {r:?}");
    let (r, _) = once(
        addr,
        "GET /movie.mp4 HTTP/1.1\r\nHost: \r\nConnection: close\r\n\r\n",
    );
    assert!(r.status == 403 || r.status == 400, "empty Host: {r:?}");
    let (r, _) = once(addr, "GET /movie.mp4 HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert!(
        r.status == 403 || r.status == 400,
        "HTTP/1.1 without Host: {r:?}"
    );
}

#[test]
fn health_and_metrics() {
    let big = content(3 * 1024 * 1024 + 17, 41);
    let node = Origin::builder().file("big.mp4", &big).start();
    let addr = node.addr;

    let r = get(addr, "/_p2pd/health", "");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"ok\n");

    let r = get(addr, "/_p2pd/metrics", "");
    assert_eq!(r.status, 200);
    let text = String::from_utf8_lossy(&r.body).to_string();
    for name in [
        "p2pd_bytes_sent_total{proto=\"spp\"}",
        "p2pd_bytes_sent_total{proto=\"http\"}",
        "p2pd_requests_total{proto=\"http\"}",
        "p2pd_requests_total{proto=\"spp\"}",
        "p2pd_connections_open",
        "p2pd_digest_failures_total",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(name)),
            "{name} missing:\n{text}"
        );
    }
    // Prometheus text: every sample line is "name[{labels}] value".
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let value = line.rsplit(' ').next().unwrap();
        assert!(value.parse::<f64>().is_ok(), "bad sample line {line:?}");
    }

    let sent0 = node.metric("p2pd_bytes_sent_total{proto=\"http\"}");
    let req0 = node.metric("p2pd_requests_total{proto=\"http\"}");
    let r = get(addr, "/big.mp4", "");
    assert!(r.body == big);
    let r = get(addr, "/big.mp4", "Range: bytes=1000-1999\r\n");
    assert_eq!(r.body.len(), 1000);
    let fetched = (big.len() + 1000) as u64;
    node.wait_for("http byte and request counters to grow", |n| {
        n.metric("p2pd_bytes_sent_total{proto=\"http\"}") >= sent0 + fetched
            && n.metric("p2pd_requests_total{proto=\"http\"}") >= req0 + 2
    });
    assert_eq!(node.metric("p2pd_digest_failures_total"), 0);
    // HEAD on the operator endpoints too.
    let h = head(addr, "/_p2pd/health", "");
    assert_eq!(h.status, 200);
}

#[test]
fn malformed_and_unsupported_requests() {
    let node = Origin::builder().file("a.mp4", &content(100, 51)).start();
    let addr = node.addr;

    // A header line without a colon: 400, then the connection is closed.
    let mut s = connect(addr);
    s.write_all(b"GET /a.mp4 HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
        .unwrap();
    let r = read_response(&mut s, false);
    assert_eq!(r.status, 400, "{r:?}");
    assert!(closed_by_peer(&mut s), "connection left open after a 400");

    // A garbage request line.
    let mut s = connect(addr);
    s.write_all(b"GET\r\n\r\n").unwrap();
    let r = read_response(&mut s, false);
    assert_eq!(r.status, 400, "{r:?}");
    assert!(closed_by_peer(&mut s));

    // A 20 KiB header: 431.
    let big = format!(
        "GET /a.mp4 HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20 * 1024)
    );
    let mut s = connect(addr);
    s.write_all(big.as_bytes()).unwrap();
    let r = read_response(&mut s, false);
    assert_eq!(r.status, 431, "{r:?}");
    assert!(closed_by_peer(&mut s));

    // Methods other than GET/HEAD: 405 with Allow; the connection stays usable.
    let mut c = Conn::new(addr);
    c.send(&format!("DELETE /a.mp4 HTTP/1.1\r\nHost: {addr}\r\n\r\n"));
    let r = c.response(false);
    assert_eq!(r.status, 405, "{r:?}");
    let allow = r.header("allow").unwrap_or("").to_ascii_uppercase();
    assert!(
        allow.contains("GET") && allow.contains("HEAD"),
        "405 without Allow: GET, HEAD: {r:?}"
    );
    c.send(&format!(
        "GET /a.mp4 HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    ));
    let r = c.response(false);
    assert_eq!(r.status, 200);
    assert!(r.body == content(100, 51));
    assert!(std::fs::metadata(node.dir().join("a.mp4")).is_ok());

    for method in ["PUT", "POST", "OPTIONS"] {
        let (r, _) = once(
            addr,
            &format!("{method} /a.mp4 HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
        );
        assert_eq!(r.status, 405, "{method}: {r:?}");
    }

    // The node survives all of it.
    let r = get(addr, "/_p2pd/health", "");
    assert_eq!(r.body, b"ok\n");
}

/// RFC 9112 section 3.2: "A server MUST respond with a 400 (Bad Request) status code to
/// any HTTP/1.1 request message that lacks a Host header field". HTTP/1.0 may omit it.
#[test]
fn http11_without_host_is_400() {
    let data = content(100, 61);
    let node = Origin::builder().file("a.mp4", &data).start();
    let (r, _) = once(node.addr, "GET /a.mp4 HTTP/1.0\r\n\r\n");
    assert_eq!(r.status, 200, "HTTP/1.0 without Host: {r:?}");
    assert!(r.body == data);
    let (r, _) = once(
        node.addr,
        "GET /a.mp4 HTTP/1.1\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 400, "HTTP/1.1 without Host");
    assert!(r.body != data);
}

#[test]
fn concurrent_ranges_and_aborted_downloads() {
    let big = std::sync::Arc::new(content(3 * 1024 * 1024 + 17, 71));
    let node = Origin::builder().file("big.mp4", &big).start();
    let addr = node.addr;

    // Eight clients, each on one keep-alive connection, ask for pseudo-random ranges.
    let workers: Vec<_> = (0..8u64)
        .map(|w| {
            let big = big.clone();
            std::thread::spawn(move || {
                let mut c = Conn::new(addr);
                let mut x = w.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
                for _ in 0..12 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let a = (x % big.len() as u64) as usize;
                    let b = a + ((x >> 32) % 300_000) as usize;
                    let b = b.min(big.len() - 1);
                    c.send(&format!(
                        "GET /big.mp4 HTTP/1.1\r\nHost: {addr}\r\nRange: bytes={a}-{b}\r\n\r\n"
                    ));
                    let r = c.response(false);
                    assert_eq!(r.status, 206);
                    assert_eq!(
                        r.header("content-range"),
                        Some(format!("bytes {a}-{b}/{}", big.len()).as_str())
                    );
                    assert!(r.body == big[a..=b], "worker {w}: bytes {a}-{b} differ");
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker failed");
    }

    // Clients that hang up part-way through a download, and idle ones.
    for _ in 0..10 {
        let mut s = connect(addr);
        s.write_all(format!("GET /big.mp4 HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
            .unwrap();
        let mut b = [0u8; 1000];
        let _ = s.read(&mut b).unwrap();
    }
    let idle: Vec<TcpStream> = (0..5).map(|_| connect(addr)).collect();
    // The node still serves whole files correctly, and its connection gauge returns
    // to just the one asking once the others are gone.
    let r = get(addr, "/big.mp4", "");
    assert!(r.body == *big);
    drop(idle);
    node.wait_for("p2pd_connections_open to drop back to 1", |n| {
        n.metric("p2pd_connections_open") == 1
    });
}
