//! A minimal blocking SPP client: handshake from any source address, Info, Locate,
//! Gets with every block checked against its digest.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};

use bytes::BytesMut;
use p2pd::pure::digest::MAX_DIGEST_BYTES;
use p2pd::pure::protocol::*;

use super::connect_from;

/// A minimal blocking SPP client.
pub struct Spp {
    pub s: TcpStream,
    buf: BytesMut,
    dec: Decoder,
}

impl Spp {
    /// Connects from `src` and shakes hands; returns the peer's Hello too.
    pub fn connect_from(src: IpAddr, addr: SocketAddr) -> Result<(Spp, Hello), String> {
        Spp::connect_as(src, addr, 0)
    }

    /// Connects from `src`, announcing `listen_port` in the Hello (a node that
    /// accepts connections there, as a peer would).
    pub fn connect_as(
        src: IpAddr,
        addr: SocketAddr,
        listen_port: u16,
    ) -> Result<(Spp, Hello), String> {
        let s = connect_from(src, addr).map_err(|e| format!("connect from {src}: {e}"))?;
        Spp::over(s, listen_port)
    }

    /// Shakes hands over a connected stream, announcing `listen_port`.
    pub fn over(s: TcpStream, listen_port: u16) -> Result<(Spp, Hello), String> {
        let mut c = Spp {
            s,
            buf: BytesMut::new(),
            dec: Decoder::new(),
        };
        c.send(&Frame::Hello(Hello {
            version: PROTOCOL_VERSION,
            role: Role::Client,
            listen_port,
            capabilities: 0,
        }))?;
        match c.recv()? {
            Frame::Hello(h) => Ok((c, h)),
            other => Err(format!("expected Hello, got {other:?}")),
        }
    }
    pub fn send(&mut self, f: &Frame) -> Result<(), String> {
        let mut out = BytesMut::new();
        encode(f, &mut out).unwrap();
        self.s.write_all(&out).map_err(|e| format!("send: {e}"))
    }
    pub fn recv(&mut self) -> Result<Frame, String> {
        let mut chunk = vec![0u8; 65536];
        loop {
            if let Some(f) = self
                .dec
                .decode(&mut self.buf)
                .map_err(|e| format!("invalid frame: {e:?}"))?
            {
                return Ok(f);
            }
            let n = self.s.read(&mut chunk).map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("connection closed".into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
    pub fn info(&mut self, req_id: u32, host: &str, path: &str) -> Result<Frame, String> {
        self.send(&info_request(
            req_id,
            host,
            path,
            limits::MAX_DIGESTS_PER_INFO,
        ))?;
        self.recv()
    }
    /// Every block of `info`, each checked against its digest.
    pub fn get_all(&mut self, info: &Info) -> Result<Vec<u8>, String> {
        let blocks = info.block_count();
        self.send(&get_request(77, info, 0, blocks as u32))?;
        let mut out = Vec::new();
        let mut d = [0u8; MAX_DIGEST_BYTES];
        for i in 0..blocks {
            match self.recv()? {
                Frame::Data(dt) if dt.req_id == 77 && dt.block == i => {
                    let want = info.digest(i as usize).ok_or("too few digests")?;
                    if info.algo.digest_into(&dt.payload, &mut d) != want {
                        return Err(format!("block {i} fails its digest"));
                    }
                    out.extend_from_slice(&dt.payload);
                }
                other => return Err(format!("block {i}: got {other:?}")),
            }
        }
        Ok(out)
    }
}

impl Spp {
    pub fn locate(
        &mut self,
        req_id: u32,
        handle: u32,
        first: u64,
        count: u64,
    ) -> Result<Frame, String> {
        self.send(&Frame::LocateRequest(LocateRequest {
            req_id,
            handle,
            first_block: first,
            block_count: count,
        }))?;
        self.recv()
    }

    /// Asks for blocks `first..first+count`; returns the Data frames' block numbers
    /// (each verified against `info`) and the Error that ended the Get, if any.
    pub fn get_range(
        &mut self,
        info: &Info,
        req_id: u32,
        first: u64,
        count: u32,
    ) -> Result<(Vec<u64>, Option<ErrorFrame>), String> {
        self.send(&get_request(req_id, info, first, count))?;
        let mut got = Vec::new();
        let mut d = [0u8; MAX_DIGEST_BYTES];
        while got.len() < count as usize {
            match self.recv()? {
                Frame::Data(dt) if dt.req_id == req_id => {
                    let want = info.digest(dt.block as usize).ok_or("no digest")?;
                    if info.algo.digest_into(&dt.payload, &mut d) != want {
                        return Err(format!("block {} fails its digest", dt.block));
                    }
                    got.push(dt.block);
                }
                Frame::Error(e) if e.req_id == req_id => return Ok((got, Some(e))),
                other => return Err(format!("unexpected {other:?}")),
            }
        }
        Ok((got, None))
    }
}

pub fn expect_info(f: Frame) -> Result<Info, String> {
    match f {
        Frame::Info(i) => Ok(i),
        other => Err(format!("expected Info, got {other:?}")),
    }
}

pub fn expect_locations(f: Frame) -> Result<Vec<Location>, String> {
    match f {
        Frame::Locate(l) => Ok(l.locations),
        other => Err(format!("expected Locate, got {other:?}")),
    }
}

/// An InfoRequest for `host:1111/path` asking for `digests` digests from the first.
pub fn info_request(req_id: u32, host: &str, path: &str, digests: u32) -> Frame {
    Frame::InfoRequest(InfoRequest {
        req_id,
        file: FileRef {
            host: host.into(),
            port: 1111,
            path: path.into(),
        },
        digest_start: 0,
        digest_count: digests,
    })
}

/// A Get for blocks `first..first + count` of the file `info` describes (its handle and
/// version on this connection).
pub fn get_request(req_id: u32, info: &Info, first: u64, count: u32) -> Frame {
    Frame::Get(Get {
        req_id,
        handle: info.handle,
        version: info.version,
        first_block: first,
        block_count: count,
    })
}
