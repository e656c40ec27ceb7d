//! What a connection's reader, answer tasks and writer share: the frames queued for the
//! writer under a byte budget, the answer tasks running, and how frames are made.

use std::cell::RefCell;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use futures::channel::mpsc;

use std::net::SocketAddr;

use crate::node::content::Content;
use crate::node::shard::Shard;
use crate::pure::protocol::session::Session;
use crate::pure::protocol::{encode, ErrorCode, ErrorFrame, Frame};
use crate::runtime;
use crate::server::context::Ctx;

/// What the reader hands the writer, in the order it must go out.
pub(super) enum Out {
    /// A frame in one or two parts (an Info's head and its digests, sent from the
    /// mapped index without a copy). `answer`: it answers an Info or Locate request,
    /// which stays outstanding until it is written.
    Frame {
        head: Bytes,
        tail: Bytes,
        answer: bool,
    },
    Get {
        req_id: u32,
        content: Content,
        first: u64,
        count: u32,
    },
    /// Write what is queued, then close (after a protocol error).
    Close,
}

/// Per-connection state the reader, the writer and the answer tasks share (same
/// thread): the protocol's rules (`Session`, pure) and the I/O bookkeeping.
pub(super) struct ConnState {
    pub(super) session: Session<Content>,
    /// Heap bytes of frames queued for the writer and not yet written; the reader
    /// stops reading while they are over [`MAX_QUEUED_ANSWER_BYTES`].
    pub(super) queued_bytes: usize,
    /// Info and Locate answers being worked out now (tasks): at most
    /// [`MAX_ANSWER_TASKS`], past which the reader waits.
    pub(super) answers_running: usize,
    /// The writer has ended: the reader stops too.
    pub(super) writer_gone: bool,
    /// The reader, waiting for the writer to catch up.
    pub(super) reader_waker: Option<std::task::Waker>,
}

impl crate::pure::protocol::session::SessionFile for Content {
    fn version(&self) -> u64 {
        Content::version(self)
    }
    fn block_count(&self) -> u64 {
        Content::block_count(self)
    }
    fn same(&self, other: &Self) -> bool {
        Content::same(self, other)
    }
}

/// Info and Locate answers one connection works out at once; further requests wait
/// in the socket (the reader pauses) rather than each holding a task.
pub const MAX_ANSWER_TASKS: usize = 8;
/// What a queued frame costs beyond its bytes (the queue's node, the frame's
/// buffer header, the writer's bookkeeping), counted against
/// [`MAX_QUEUED_ANSWER_BYTES`] so that many tiny frames cannot hide their cost.
pub(super) const QUEUED_FRAME_OVERHEAD_BYTES: usize = 256;

/// Frames one connection's reader works through before it lets the shard's other
/// tasks run.
pub(super) const FRAMES_PER_TURN: usize = 8;

/// Bytes of answers a connection may have queued before it stops reading requests:
/// a client that pipelines requests and reads nothing fills its socket buffers, not
/// this node's memory.
pub const MAX_QUEUED_ANSWER_BYTES: usize = 32 * 1024;

impl ConnState {
    /// Counts a frame queued for the writer.
    pub(super) fn queued(&mut self, bytes: usize) {
        self.queued_bytes += bytes + QUEUED_FRAME_OVERHEAD_BYTES;
    }

    /// Counts a queued frame written (or dropped) and lets the reader go on when the
    /// queue is short again.
    pub(super) fn written(&mut self, bytes: usize, answer: bool) {
        self.queued_bytes = self
            .queued_bytes
            .saturating_sub(bytes + QUEUED_FRAME_OVERHEAD_BYTES);
        if answer {
            self.session.answer_done();
        }
        self.wake_reader();
    }

    /// An answer task finished working its answer out.
    pub(super) fn answer_ready(&mut self) {
        self.answers_running = self.answers_running.saturating_sub(1);
        self.wake_reader();
    }

    /// Whether the reader may read the next request.
    pub(super) fn may_read(&self) -> bool {
        self.writer_gone
            || (self.queued_bytes <= MAX_QUEUED_ANSWER_BYTES
                && self.answers_running < MAX_ANSWER_TASKS)
    }

    pub(super) fn wake_reader(&mut self) {
        if self.may_read() {
            if let Some(w) = self.reader_waker.take() {
                w.wake();
            }
        }
    }
}

/// An answer being worked out; counted until dropped, however its task ends.
pub(super) struct AnswerRunning(pub(super) Rc<RefCell<ConnState>>);

impl AnswerRunning {
    pub(super) fn start(state: &Rc<RefCell<ConnState>>) -> AnswerRunning {
        state.borrow_mut().answers_running += 1;
        AnswerRunning(state.clone())
    }
}

impl Drop for AnswerRunning {
    fn drop(&mut self) {
        self.0.borrow_mut().answer_ready();
    }
}

/// Marks the connection's writer ended (however it ends) and wakes the reader.
pub(super) struct WriterGone(pub(super) Rc<RefCell<ConnState>>);

impl Drop for WriterGone {
    fn drop(&mut self) {
        let mut st = self.0.borrow_mut();
        st.writer_gone = true;
        if let Some(w) = st.reader_waker.take() {
            w.wake();
        }
    }
}

/// A frame for the writer, counted in the connection's queued bytes.
pub(super) fn out_frame(state: &RefCell<ConnState>, f: Bytes, answer: bool) -> Out {
    state.borrow_mut().queued(f.len());
    Out::Frame {
        head: f,
        tail: Bytes::new(),
        answer,
    }
}

/// Completes when the connection's writer has ended.
pub(super) async fn writer_ended(state: &RefCell<ConnState>) {
    std::future::poll_fn(|cx| {
        let mut st = state.borrow_mut();
        if st.writer_gone {
            std::task::Poll::Ready(())
        } else {
            st.reader_waker = Some(cx.waker().clone());
            std::task::Poll::Pending
        }
    })
    .await
}

/// Waits until the connection's queued answers are within [`MAX_QUEUED_ANSWER_BYTES`]
/// and fewer than [`MAX_ANSWER_TASKS`] answers are being worked out.
pub(super) async fn queue_has_room(state: &RefCell<ConnState>) {
    std::future::poll_fn(|cx| {
        let mut st = state.borrow_mut();
        if st.may_read() {
            std::task::Poll::Ready(())
        } else {
            st.reader_waker = Some(cx.waker().clone());
            std::task::Poll::Pending
        }
    })
    .await
}

pub(super) fn frame_bytes(f: &Frame) -> Bytes {
    let mut b = BytesMut::new();
    // Our own frames are built within the limits; an encode error is a programmer error
    // and is turned into an internal error frame rather than a panic.
    if encode(f, &mut b).is_err() {
        b.clear();
        let _ = encode(
            &Frame::Error(ErrorFrame::new(
                0,
                ErrorCode::Internal,
                "internal encode error",
            )),
            &mut b,
        );
    }
    b.freeze()
}

/// An Error frame; its message is cut to fit on a character boundary by
/// [`ErrorFrame::new`], however long the path, host or upstream error it quotes.
pub(super) fn error_frame(req_id: u32, code: ErrorCode, message: impl Into<String>) -> Bytes {
    frame_bytes(&Frame::Error(ErrorFrame::new(req_id, code, message.into())))
}

/// An Error frame for an answer task.
pub(super) fn error(req_id: u32, code: ErrorCode, message: impl Into<String>) -> Frame {
    Frame::Error(ErrorFrame::new(req_id, code, message.into()))
}

/// Hands an answer to the writer (gone when the connection is closing: then the
/// answer is dropped with the connection's state).
pub(super) async fn send_answer(mut tx: mpsc::Sender<Out>, out: Out) {
    let _ = futures::SinkExt::send(&mut tx, out).await;
}

/// What the reader knows about its connection.
pub(super) struct Conn<'a> {
    pub(super) shard: &'a Rc<Shard>,
    pub(super) ctx: &'a Ctx,
    pub(super) state: &'a Rc<RefCell<ConnState>>,
    pub(super) peer: SocketAddr,
    pub(super) local: Option<SocketAddr>,
    /// The requester may make this node fetch from its upstream (caches).
    pub(super) may_fetch: bool,
    /// The connection's place in the shard's turns of paused request work.
    pub(super) owner: runtime::RequestOwner,
}
