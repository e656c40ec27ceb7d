//! Serving one SPP connection: handshake, then a reader that decodes requests and a
//! writer that sends answers and streams the blocks of pipelined `Get`s in order.

mod answers;
mod reader;
mod state;
mod writer;

use std::cell::RefCell;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;

use bytes::BytesMut;
use futures::channel::mpsc;

use crate::metrics::ShardMetrics;
use crate::node::shard::Shard;
use crate::pure::protocol::session::{Event, Session, SessionConfig};
use crate::pure::protocol::{limits, Decoder, Hello, PROTOCOL_VERSION};
use crate::runtime::{self, TcpStream};
use crate::server::context::Ctx;
use crate::server::limits::FIRST_BYTE_TIMEOUT;
use reader::{read_frame, reader_loop, Read};
use state::{frame_bytes, Conn, ConnState, Out};
use writer::{write, writer_loop};

pub async fn serve(
    shard: Rc<Shard>,
    ctx: Ctx,
    stream: TcpStream,
    mut buf: BytesMut,
    peer: SocketAddr,
    local: Option<SocketAddr>,
) {
    let fd = stream.as_raw_fd();
    let (mut rd, mut wr) = futures_lite::io::split(stream);
    let mut dec = Decoder::new();
    let mut session = Session::new(
        SessionConfig {
            hello: Hello {
                version: PROTOCOL_VERSION,
                role: ctx.spp_role(),
                listen_port: ctx.port,
                capabilities: ctx.capabilities(),
            },
            allowed_hosts: ctx.config.allowed_hosts.clone(),
            p2p: ctx.peers.is_some(),
        },
        peer.ip(),
    );

    // Handshake: the first frame must be a Hello of a version we speak.
    let event = match read_frame(&mut rd, &mut buf, &mut dec, FIRST_BYTE_TIMEOUT).await {
        Ok(Read::Frame(f)) => session.on_frame(f),
        Ok(Read::Closed | Read::Idle) => return,
        Err(msg) => session.on_decode_error(msg),
    };
    match event {
        Event::Send(ours) => {
            if write(&mut wr, &[&frame_bytes(&ours)]).await.is_err() {
                return;
            }
        }
        Event::SendAndClose(err) => {
            ShardMetrics::add(&shard.m().protocol_errors, 1);
            let _ = write(&mut wr, &[&frame_bytes(&err)]).await;
            return;
        }
        _ => return,
    }
    tracing::debug!(listen = ?session.listen(), "spp hello");

    let state = Rc::new(RefCell::new(ConnState {
        session,
        queued_bytes: 0,
        answers_running: 0,
        writer_gone: false,
        reader_waker: None,
    }));
    let (tx, rx) = mpsc::channel::<Out>(limits::MAX_OUTSTANDING_REQUESTS + 16);
    let may_fetch = ctx.may_fetch(peer.ip(), local.map(|l| l.ip()));
    // This connection's place in the shard's turns of paused request work.
    let owner = runtime::request_owner();
    let writer = {
        let (s, st) = (shard.clone(), state.clone());
        // The writer is a task of its own: run it under the panic policy as well.
        runtime::spawn(async move {
            crate::server::health::contained(&s.clone(), writer_loop(s, wr, fd, rx, st, may_fetch))
                .await;
        })
    };
    let conn = Conn {
        owner,
        shard: &shard,
        ctx: &ctx,
        state: &state,
        peer,
        local,
        may_fetch,
    };
    reader_loop(&conn, rd, buf, dec, tx).await;
    writer.await;
}
