//! The writer of an SPP connection: answers and the blocks of pipelined Gets, in order,
//! each block pinned in the shard's budget, gathered into few writes.

use std::cell::RefCell;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use futures::channel::mpsc;
use futures::future::{FutureExt, LocalBoxFuture};
use futures::stream::StreamExt;
use futures_lite::io::WriteHalf;

use super::state::{error_frame, ConnState, Out, WriterGone};
use crate::metrics::ShardMetrics;
use crate::node::content::Content;
use crate::node::shard::{PinnedBlock, Shard, PIN_WAIT_TIMEOUT};
use crate::pure::protocol::{try_encode_data_header, ErrorCode};
use crate::runtime::{self, TcpStream};
use crate::server::limits::WRITE_TIMEOUT;

/// What the writer sends next, in order: a ready frame, one block of a Get (its
/// production already started, up to [`Shard::readahead_window`] ahead, pinned in the
/// shard's budget), or the end.
pub(super) enum Work {
    Frame {
        head: Bytes,
        tail: Bytes,
        answer: bool,
    },
    Block {
        req_id: u32,
        idx: u64,
        /// The Get's last block: its bookkeeping ends here.
        last: bool,
        /// `None` when the Get was cancelled or had failed before this block's turn
        /// came to be produced.
        result: Option<PinnedBlock>,
    },
    /// No room in the shard's budget in time, or shed: the connection ends.
    Shed,
    Close,
}

/// One item of the writer's queue before its block (if any) is produced.
pub(super) enum Job {
    Frame {
        head: Bytes,
        tail: Bytes,
        answer: bool,
    },
    Block {
        req_id: u32,
        content: Content,
        idx: u64,
        last: bool,
    },
    Close,
}

/// Sends the reader's answers in order and streams the blocks of pipelined Gets. Blocks
/// are produced up to [`Shard::readahead_window`] ahead of the one being written, across
/// Get boundaries: a client that asks for one block per Get (a cache filling itself)
/// keeps as many disk reads or upstream fetches going as one that asks for long runs.
/// Each block is pinned in the shard's budget from before it is produced until it is
/// written (see `node::budget`); a connection that holds pins without reading while
/// the shard is short is shed.
/// Frames up to this long are gathered with the ready ones after them into one send.
pub(super) const GATHER_FRAME_BYTES: usize = 4 * 1024;
/// Most bytes of frames gathered into one send.
pub(super) const GATHER_BYTES: usize = 64 * 1024;

pub(super) async fn writer_loop(
    shard: Rc<Shard>,
    mut wr: WriteHalf<TcpStream>,
    // `wr`'s socket, open for as long as `wr` is.
    fd: std::os::fd::RawFd,
    rx: mpsc::Receiver<Out>,
    state: Rc<RefCell<ConnState>>,
    may_fetch: bool,
) {
    let jobs = rx.flat_map(|out| {
        let jobs: Vec<Job> = match out {
            Out::Frame { head, tail, answer } => vec![Job::Frame { head, tail, answer }],
            Out::Close => vec![Job::Close],
            Out::Get {
                req_id,
                content,
                first,
                count,
            } => {
                let end = first.saturating_add(u64::from(count));
                return futures::stream::iter((first..end).map(move |idx| Job::Block {
                    req_id,
                    content: content.clone(),
                    idx,
                    last: idx + 1 == end,
                }))
                .left_stream();
            }
        };
        futures::stream::iter(jobs).right_stream()
    });
    let _gone = WriterGone(state.clone());
    let writer = Rc::new(shard.pins.writer_on(fd));
    // The window follows the node's block size for every file: a connection's blocks
    // may come from files of different sizes, and the pins bound the bytes anyway.
    let window = shard.readahead_window(shard.pins.block_size());
    let work = {
        let (shard, state, writer) = (shard.clone(), state.clone(), writer.clone());
        jobs.map(move |job| -> LocalBoxFuture<'static, Work> {
            match job {
                Job::Frame { head, tail, answer } => {
                    futures::future::ready(Work::Frame { head, tail, answer }).boxed_local()
                }
                Job::Close => futures::future::ready(Work::Close).boxed_local(),
                Job::Block {
                    req_id,
                    content,
                    idx,
                    last,
                } => {
                    let (shard, state, writer) = (shard.clone(), state.clone(), writer.clone());
                    let ticket = writer.ticket();
                    async move {
                        let result = if state.borrow().session.is_stopped(req_id) {
                            // Its turn still has to pass, or the next block would wait.
                            match writer.pin(ticket, 0, PIN_WAIT_TIMEOUT).await {
                                Ok(_) => None,
                                Err(_) => return Work::Shed,
                            }
                        } else {
                            match shard
                                .pinned_block(&writer, ticket, &content, idx, may_fetch)
                                .await
                            {
                                Ok(p) => Some(p),
                                Err(_) => return Work::Shed,
                            }
                        };
                        Work::Block {
                            req_id,
                            idx,
                            last,
                            result,
                        }
                    }
                    .boxed_local()
                }
            }
        })
        .buffered(window)
    };
    futures::pin_mut!(work);
    // An item taken while gathering frames, to be written next.
    let mut held: Option<Work> = None;
    let mut ended = false;
    while !ended {
        let w = match held.take() {
            Some(w) => w,
            None => match work.next().await {
                Some(w) => w,
                None => break,
            },
        };
        let ok = match w {
            Work::Frame { head, tail, answer } => {
                // Small frames that are ready go out together, in one send: a burst
                // of answers (a Locate flood's) was one system call and one TCP
                // segment each, and kept the shard from polling for I/O.
                let mut frames = vec![(head.len(), answer)];
                let mut batch: Option<BytesMut> = None;
                let small = |h: &Bytes, t: &Bytes| h.len() + t.len() <= GATHER_FRAME_BYTES;
                if small(&head, &tail) {
                    while batch.as_ref().map_or(0, |b| b.len()) < GATHER_BYTES {
                        match work.next().now_or_never() {
                            Some(Some(Work::Frame {
                                head: h,
                                tail: t,
                                answer: a,
                            })) if small(&h, &t) => {
                                let b = batch.get_or_insert_with(|| {
                                    let mut b =
                                        BytesMut::with_capacity(GATHER_BYTES + GATHER_FRAME_BYTES);
                                    b.extend_from_slice(&head);
                                    b.extend_from_slice(&tail);
                                    b
                                });
                                b.extend_from_slice(&h);
                                b.extend_from_slice(&t);
                                frames.push((h.len(), a));
                            }
                            Some(Some(other)) => {
                                held = Some(other);
                                break;
                            }
                            Some(None) => {
                                ended = true;
                                break;
                            }
                            None => break,
                        }
                    }
                }
                // Writing answers is request work too: counted against the shard's
                // request budget (a Locate flood's answers cost more to send than to
                // work out). The writer does not wait for a turn: blocks of a Get
                // may follow; the reader's pauses hold back a flood's next requests.
                let r = runtime::charged(async {
                    match &batch {
                        Some(b) => writer.write(&mut wr, &[b], WRITE_TIMEOUT).await,
                        None => writer.write(&mut wr, &[&head, &tail], WRITE_TIMEOUT).await,
                    }
                })
                .await;
                for (len, answer) in frames {
                    state.borrow_mut().written(len, answer);
                }
                r.is_ok()
            }
            Work::Close => false,
            Work::Shed => false,
            Work::Block {
                req_id,
                idx,
                last,
                result,
            } => {
                let stopped = state.borrow().session.is_stopped(req_id);
                let r = match result.as_ref().map(|p| &p.block) {
                    _ if stopped => Ok(()),
                    None => Ok(()),
                    Some(Ok(block)) => match try_encode_data_header(req_id, idx, block.len()) {
                        Ok(header) => {
                            shard.upload_throttle(block.len()).await;
                            let r = writer
                                .write(&mut wr, &[&header, block], WRITE_TIMEOUT)
                                .await;
                            if r.is_ok() {
                                ShardMetrics::add(&shard.m().bytes_sent_spp, block.len() as u64);
                            }
                            r
                        }
                        Err(e) => {
                            state.borrow_mut().session.get_failed(req_id);
                            let f = error_frame(req_id, ErrorCode::Internal, e.to_string());
                            writer.write(&mut wr, &[&f], WRITE_TIMEOUT).await
                        }
                    },
                    Some(Err(e)) => {
                        // The rest of this Get is not produced or sent.
                        state.borrow_mut().session.get_failed(req_id);
                        let (code, msg) = e.spp_answer(idx);
                        writer
                            .write(&mut wr, &[&error_frame(req_id, code, msg)], WRITE_TIMEOUT)
                            .await
                    }
                };
                drop(result);
                if last {
                    state.borrow_mut().session.finish_get(req_id);
                }
                r.is_ok()
            }
        };
        if !ok {
            break;
        }
    }
    let _ = futures_lite::AsyncWriteExt::close(&mut wr).await;
}

pub(super) async fn write(wr: &mut WriteHalf<TcpStream>, parts: &[&[u8]]) -> Result<(), ()> {
    match runtime::timeout(WRITE_TIMEOUT, runtime::write_all_parts(wr, parts)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}
