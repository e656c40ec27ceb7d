//! The tasks of one upstream connection: the reader hands each answer to the request
//! that waits for it, the writer sends requests in order.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::channel::mpsc;
use futures::StreamExt;
use futures_lite::io::{ReadHalf, WriteHalf};

use super::{config::READ_CHUNK_BYTES, state::Inner};
use crate::pure::protocol::{limits, Decoder, Frame};
use crate::runtime::{self, TcpStream};
use crate::upstream::connection::FetchError;

/// Reads answers and hands each to the request that waits for it.
pub(super) async fn reader(
    inner: Rc<Inner>,
    mut rd: ReadHalf<TcpStream>,
    mut buf: BytesMut,
    mut dec: Decoder,
) {
    let addr = inner.addr;
    loop {
        let frame = match dec.decode(&mut buf) {
            Ok(Some(f)) => f,
            Ok(None) => {
                let want = dec
                    .wanted(&buf)
                    .clamp(READ_CHUNK_BYTES, limits::MAX_FRAME_BYTES);
                match runtime::read_some(&mut rd, &mut buf, want).await {
                    Ok(0) => return inner.kill(FetchError::Closed { addr }),
                    Ok(_) => {
                        inner.last_rx.set(Instant::now());
                        continue;
                    }
                    Err(source) => return inner.kill(FetchError::Io { addr, source }),
                }
            }
            Err(e) => {
                return inner.kill(FetchError::Protocol {
                    addr,
                    message: e.to_string(),
                })
            }
        };
        match &frame {
            Frame::Error(e) if e.req_id == 0 => {
                return inner.kill(FetchError::Remote {
                    addr,
                    code: e.code,
                    message: e.message.to_string(),
                })
            }
            Frame::Info(_) | Frame::Locate(_) | Frame::Data(_) | Frame::Error(_) => {
                let req_id = frame.req_id().unwrap_or(0);
                // An answer nobody waits for (cancelled, timed out) is dropped.
                if let Some(tx) = inner.pending.borrow_mut().remove(&req_id) {
                    let _ = tx.send(frame);
                }
            }
            Frame::Pong(_) => {}
            other => {
                return inner.kill(FetchError::Protocol {
                    addr,
                    message: format!("unexpected {} frame from an upstream", other.name()),
                })
            }
        }
    }
}

/// Sends requests in order; stops when the connection dies or its upstream is dropped.
pub(super) async fn writer(
    inner: Rc<Inner>,
    mut wr: WriteHalf<TcpStream>,
    mut rx: mpsc::Receiver<Bytes>,
    timeout: Duration,
) {
    let addr = inner.addr;
    while let Some(b) = rx.next().await {
        if inner.dead.borrow().is_some() {
            break;
        }
        match runtime::timeout(timeout, runtime::write_all_parts(&mut wr, &[&b])).await {
            Ok(Ok(())) => {}
            Ok(Err(source)) => {
                inner.kill(FetchError::Io { addr, source });
                break;
            }
            Err(_) => {
                inner.kill(FetchError::Timeout {
                    addr,
                    what: "a write",
                    ms: timeout.as_millis() as u64,
                });
                break;
            }
        }
    }
    let _ = futures_lite::AsyncWriteExt::close(&mut wr).await;
}
