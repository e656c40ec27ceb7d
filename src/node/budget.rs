//! The shard's budget of pinned block bytes: blocks produced for a connection (read
//! ahead, or being written) and not yet handed to its socket. A connection whose
//! client stops reading keeps its blocks until its write times out; without a budget
//! a few such connections with large blocks held hundreds of megabytes.
//!
//! Rules (see ARCHITECTURE.md, "Memory is bounded by design"):
//! - Each connection's writer registers a [`Writer`]; it takes a [`Pin`] for every
//!   block before the block is produced, in the order the blocks will be written
//!   (tickets), and the pin is released when the block has been written or dropped.
//! - A pin is granted while the shard's pinned bytes stay within the budget, or, past
//!   it, for the one block a *draining* writer writes next (its last socket write
//!   completed within [`SHED_AFTER_STALL`], so its client reads, and it holds no other
//!   pin): legitimate viewers keep streaming, without read-ahead, when non-reading
//!   connections filled the budget.
//! - Writers that find no room queue for it by when they started waiting; one that
//!   has waited [`PRIORITY_AFTER`] is served before anyone else takes room, past the
//!   budget or within it: readers taking their next block as they released one kept
//!   a new connection to a busy origin from ever getting room (its Info answer waited
//!   behind its first block, and the viewer was cut off).
//! - A writer that cannot get a pin sheds the writer whose socket write has been
//!   stalled longest (at least [`SHED_AFTER_STALL`]): that connection is closed, its
//!   pins released (`p2pd_connections_shed_total`).
//! - Writes go out in chunks of at most [`WRITE_CHUNK_BYTES`], so "stalled" means no
//!   progress, not a large block to a slow reader.
//! - The kernel's send queue is a queue with a byte budget too: a writer's socket holds
//!   at most [`UNSENT_LIMIT`] it has not sent (`TCP_NOTSENT_LOWAT`, set once per
//!   connection as it is accepted; a write waits past it), and the writer takes no pin while its socket holds more than half of
//!   that (or a block), where the kernel no longer calls the socket writable: blocks
//!   are produced as the client takes them, not ahead of a client that stopped
//!   reading. Without this each connection that never read made the node queue up to
//!   `tcp_wmem`'s maximum (4 MiB) in the kernel, pulled through the pin budget as
//!   "draining" while it did; a few hundred of them put the host's TCP memory past
//!   `tcp_mem`'s pressure mark, where every socket on it, the viewers' too, crawled.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use crate::metrics::{Metrics, ShardMetrics};
use crate::runtime;

/// The least a shard's budget is; it is also at least [`BUDGET_BLOCKS`] blocks of the
/// node's block size, so large blocks still stream several at a time.
pub const MIN_PINNED_BYTES_PER_SHARD: u64 = 8 << 20;
/// Blocks of the node's block size a budget holds at least.
pub const BUDGET_BLOCKS: u64 = 4;
/// A writer whose socket write made no progress for this long may be shed when the
/// budget is short (and its connection is no longer "draining").
pub const SHED_AFTER_STALL: Duration = Duration::from_millis(1500);
/// A writer that has waited this long for room is served before anyone else takes
/// room (draining writers past the budget included): a new connection waits that long
/// at most before the others make way.
pub const PRIORITY_AFTER: Duration = Duration::from_millis(200);
/// How often a writer waiting for a pin looks again for a writer to shed (it is also
/// woken, one at a time in arrival order, as pins are released).
const PIN_RETRY: Duration = Duration::from_millis(250);
/// Socket writes are at most this long (progress is measured per chunk).
pub const WRITE_CHUNK_BYTES: usize = 256 * 1024;
/// The most a writer's socket holds that it has not sent (`TCP_NOTSENT_LOWAT`): what
/// the client's window or the path keeps back, not what is in flight, so a fast path
/// is not limited; a client that does not read makes the node hold this much, not
/// `tcp_wmem`'s maximum. Pins wait while the socket holds more than half of it.
pub const UNSENT_LIMIT: u64 = 1 << 20;
/// How often, at most, a pin waiting for its socket to send looks again (it starts at
/// 1 ms and doubles).
const UNSENT_RETRY_MAX: Duration = Duration::from_millis(100);

/// Why a write or a pin failed: the connection is to be closed.
#[derive(Debug, PartialEq, Eq)]
pub enum WriteFail {
    /// The socket failed or made no progress for the write timeout.
    Socket,
    /// Shed: it held pinned bytes without reading while the shard was short.
    Shed,
}

/// One shard's budget.
pub struct PinBudget {
    /// The node's block size (`-b`): what read-ahead windows are sized by.
    block_size: u32,
    limit_bytes: u64,
    used_bytes: Cell<u64>,
    writers: RefCell<HashMap<u64, Rc<WriterState>>>,
    next_writer: Cell<u64>,
    /// Writers waiting for room, by when they started waiting (and writer id), with
    /// the waker of each that sleeps; a release wakes the first one only (waking them
    /// all made every release cost a poll of every waiting connection), and one that
    /// has waited [`PRIORITY_AFTER`] is served before anyone else takes room.
    waiting: RefCell<BTreeMap<(Instant, u64), Option<Waker>>>,
    /// Writers whose socket write is in progress, oldest first: whom to shed.
    stalled: RefCell<BTreeSet<(Instant, u64)>>,
    metrics: Metrics,
    shard: usize,
}

struct WriterState {
    pinned_bytes: Cell<u64>,
    /// When the socket write in progress started without completing (None: idle).
    stalled_since: Cell<Option<Instant>>,
    /// When a socket write last completed.
    last_progress: Cell<Option<Instant>>,
    shed: Cell<bool>,
    /// Wakes the writer's socket write when it is shed.
    shed_waker: RefCell<Option<Waker>>,
    /// Wake the writer's pins waiting for their turn (as many as its read-ahead
    /// window: one slot lost all but the last, which then slept out the retry).
    turn_wakers: RefCell<Vec<Waker>>,
    /// Wakes the writer's pin waiting for room when one of its own pins is released:
    /// holding none, a draining writer may go past the budget, so it must not wait
    /// behind the queue for that.
    room_waker: RefCell<Option<Waker>>,
    /// Pins are granted in ticket order.
    next_ticket: Cell<u64>,
    turn: Cell<u64>,
}

impl PinBudget {
    /// The budget of a shard of a node whose blocks are `block_size` bytes
    /// ([`PinBudget::limit_for`]).
    pub fn new(block_size: u32, metrics: Metrics, shard: usize) -> Rc<PinBudget> {
        Rc::new(PinBudget {
            block_size,
            limit_bytes: Self::limit_for(u64::from(block_size)),
            used_bytes: Cell::new(0),
            writers: RefCell::new(HashMap::new()),
            next_writer: Cell::new(0),
            waiting: RefCell::new(BTreeMap::new()),
            stalled: RefCell::new(BTreeSet::new()),
            metrics,
            shard,
        })
    }

    /// The budget for a node whose blocks are `block_size` bytes.
    pub fn limit_for(block_size: u64) -> u64 {
        MIN_PINNED_BYTES_PER_SHARD.max(BUDGET_BLOCKS.saturating_mul(block_size))
    }

    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    pub fn limit_bytes(&self) -> u64 {
        self.limit_bytes
    }

    pub fn used_bytes(&self) -> u64 {
        self.used_bytes.get()
    }

    fn m(&self) -> &ShardMetrics {
        self.metrics.shard(self.shard)
    }

    /// Registers the writer of a connection whose socket is `fd` (held open for as
    /// long as the writer lives, and set up by the server to hold at most
    /// [`UNSENT_LIMIT`] unsent): pins wait while it holds more than half of that.
    pub fn writer_on(self: &Rc<Self>, fd: std::os::fd::RawFd) -> Writer {
        let mut w = self.writer();
        w.socket = Some(fd);
        w
    }

    /// Registers a connection's writer.
    pub fn writer(self: &Rc<Self>) -> Writer {
        let id = self.next_writer.get();
        self.next_writer.set(id.wrapping_add(1));
        let state = Rc::new(WriterState {
            pinned_bytes: Cell::new(0),
            stalled_since: Cell::new(None),
            last_progress: Cell::new(None),
            shed: Cell::new(false),
            shed_waker: RefCell::new(None),
            turn_wakers: RefCell::new(Vec::new()),
            room_waker: RefCell::new(None),
            next_ticket: Cell::new(0),
            turn: Cell::new(0),
        });
        self.writers.borrow_mut().insert(id, state.clone());
        Writer {
            budget: self.clone(),
            id,
            state,
            socket: None,
        }
    }

    /// Wakes the writer that has waited for room longest.
    fn wake_one(&self) {
        let first = self
            .waiting
            .try_borrow_mut()
            .ok()
            .and_then(|mut w| w.values_mut().next().and_then(Option::take));
        if let Some(w) = first {
            w.wake();
        }
    }

    /// Sheds the writer (other than `me`) whose socket write has been stalled longest,
    /// if for at least [`SHED_AFTER_STALL`] and it holds pins. Returns whether one was
    /// shed.
    fn shed_one(&self, me: u64, now: Instant) -> bool {
        let writers = self.writers.borrow();
        let victim = self
            .stalled
            .borrow()
            .iter()
            .take_while(|(since, _)| now.duration_since(*since) >= SHED_AFTER_STALL)
            .filter(|(_, id)| *id != me)
            .filter_map(|(_, id)| writers.get(id))
            .find(|w| !w.shed.get() && w.pinned_bytes.get() > 0)
            .cloned();
        let Some(w) = victim else { return false };
        w.shed.set(true);
        if let Some(waker) = w.shed_waker.borrow_mut().take() {
            waker.wake();
        }
        ShardMetrics::add(&self.m().connections_shed, 1);
        tracing::debug!(
            shard = self.shard,
            pinned = w.pinned_bytes.get(),
            "shedding a connection that holds pinned blocks without reading"
        );
        true
    }
}

/// A connection's writer in the budget; deregistered when dropped.
pub struct Writer {
    budget: Rc<PinBudget>,
    id: u64,
    state: Rc<WriterState>,
    /// The connection's socket, if pins wait for it to send what it holds.
    socket: Option<std::os::fd::RawFd>,
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.budget.writers.borrow_mut().remove(&self.id);
        if let Some(since) = self.state.stalled_since.get() {
            self.budget.stalled.borrow_mut().remove(&(since, self.id));
        }
    }
}

impl Writer {
    /// The next ticket: blocks take their pins in the order of their tickets.
    pub fn ticket(&self) -> u64 {
        let t = self.state.next_ticket.get();
        self.state.next_ticket.set(t + 1);
        t
    }

    /// Whether this writer's client has been reading: its last socket write
    /// completed within [`SHED_AFTER_STALL`] and none is stalled since.
    fn draining(&self, now: Instant) -> bool {
        let recent =
            |t: Option<Instant>| t.is_some_and(|t| now.duration_since(t) < SHED_AFTER_STALL);
        recent(self.state.last_progress.get())
            && self
                .state
                .stalled_since
                .get()
                .is_none_or(|s| now.duration_since(s) < SHED_AFTER_STALL)
    }

    /// Takes a pin of `bytes` for the block of `ticket`, waiting for its turn and for
    /// room (see the module documentation); `Err` when this writer was shed or no
    /// room came within `deadline`.
    pub async fn pin(&self, ticket: u64, bytes: u64, deadline: Duration) -> Result<Pin, WriteFail> {
        let started = Instant::now();
        let mut unsent_retry = Duration::from_millis(1);
        // Its place in the queue for room, once it had to wait; left however this ends.
        let mut spot = QueueSpot {
            budget: &self.budget,
            key: None,
        };
        loop {
            if self.state.shed.get() {
                return Err(WriteFail::Shed);
            }
            let now = Instant::now();
            if now.duration_since(started) >= deadline {
                return Err(WriteFail::Socket);
            }
            if self.state.turn.get() != ticket {
                // The writer's earlier blocks take their pins first; the one before
                // this wakes it when it has.
                let _ = runtime::timeout(PIN_RETRY, self.turn_passed()).await;
                continue;
            }
            if bytes != 0
                && self.socket_backed_up((UNSENT_LIMIT / 2).max(u64::from(self.budget.block_size)))
            {
                // The client has not taken what its socket holds: no block ahead of
                // it. Nothing is pinned meanwhile, so no one waits for this writer.
                runtime::sleep(unsent_retry).await;
                unsent_retry = (unsent_retry * 2).min(UNSENT_RETRY_MAX);
                continue;
            }
            let b = &self.budget;
            let used = b.used_bytes.get();
            // Past the budget a draining writer still gets the block it writes
            // next (it holds no other), never read-ahead: each connection holds at
            // most one block beyond the budget, and only while its client reads.
            let over = used.saturating_add(bytes) > b.limit_bytes && used != 0 && bytes != 0;
            // A writer that has waited long for room is served first: readers taking
            // their next block as they release one kept a new connection from ever
            // getting room (past the budget, or as soon as a release made some).
            let yields = bytes != 0
                && b.waiting
                    .borrow()
                    .keys()
                    .next()
                    .is_some_and(|&(since, id)| {
                        id != self.id && now.saturating_duration_since(since) >= PRIORITY_AFTER
                    });
            let fits =
                !yields && (!over || (self.state.pinned_bytes.get() == 0 && self.draining(now)));
            if fits {
                // Leaving the queue (`spot`, as this returns) wakes the next one: what
                // room is left may be its.
                if over {
                    // Granted past the budget to a draining writer, which then waits
                    // for no one: it sheds the longest-stalled holder itself, or
                    // connections that never read would keep the budget full while
                    // the viewers stream without read-ahead.
                    b.shed_one(self.id, now);
                }
                self.state.turn.set(ticket + 1);
                b.used_bytes.set(used + bytes);
                self.state
                    .pinned_bytes
                    .set(self.state.pinned_bytes.get() + bytes);
                b.m().pinned_bytes.fetch_add(bytes as i64, Relaxed);
                // This writer's next tickets may be waiting for their turn.
                let waiting = std::mem::take(&mut *self.state.turn_wakers.borrow_mut());
                for w in waiting {
                    w.wake();
                }
                return Ok(Pin {
                    budget: b.clone(),
                    state: self.state.clone(),
                    bytes,
                });
            }
            if b.shed_one(self.id, now) {
                // The shed connection releases its pins as it closes.
                futures_lite::future::yield_now().await;
                continue;
            }
            // Woken in turn as pins are released, or look again after a while (a
            // stalled writer becomes sheddable with time alone).
            let key = *spot.key.get_or_insert((now, self.id));
            let _ = runtime::timeout(PIN_RETRY, self.queued_for_room(key)).await;
        }
    }

    /// Whether the writer's socket holds more than `limit` bytes it has not sent. A
    /// socket the client reset is not backed up but dead (it keeps counting what it
    /// never sent): the writer goes on, and its next write fails and ends the
    /// connection at once instead of waiting out the pin deadline.
    fn socket_backed_up(&self, limit: u64) -> bool {
        let Some(fd) = self.socket else { return false };
        runtime::unsent_bytes(fd).is_some_and(|n| n > limit) && !runtime::socket_closed(fd)
    }

    /// Waits until this writer's turn moves on.
    async fn turn_passed(&self) {
        let mut registered = false;
        std::future::poll_fn(|cx| {
            if registered {
                return Poll::Ready(());
            }
            registered = true;
            self.state.turn_wakers.borrow_mut().push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Waits in the budget's queue, at `key`, until a release wakes this writer.
    async fn queued_for_room(&self, key: (Instant, u64)) {
        let mut registered = false;
        std::future::poll_fn(|cx| {
            if registered {
                return Poll::Ready(());
            }
            registered = true;
            self.budget
                .waiting
                .borrow_mut()
                .insert(key, Some(cx.waker().clone()));
            *self.state.room_waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Writes `parts` in order in chunks of at most [`WRITE_CHUNK_BYTES`], each within
    /// `timeout`; a shed writer stops at once.
    pub async fn write<S: futures_lite::AsyncWrite + Unpin>(
        &self,
        s: &mut S,
        parts: &[&[u8]],
        timeout: Duration,
    ) -> Result<(), WriteFail> {
        for part in parts {
            for chunk in part.chunks(WRITE_CHUNK_BYTES) {
                let since = Instant::now();
                self.state.stalled_since.set(Some(since));
                self.budget.stalled.borrow_mut().insert((since, self.id));
                let r = runtime::timeout(
                    timeout,
                    futures_lite::future::or(
                        async {
                            runtime::write_all_parts(s, &[chunk])
                                .await
                                .map_err(|_| WriteFail::Socket)
                        },
                        async {
                            self.shed_signal().await;
                            Err(WriteFail::Shed)
                        },
                    ),
                )
                .await;
                self.state.stalled_since.set(None);
                self.budget.stalled.borrow_mut().remove(&(since, self.id));
                match r {
                    Ok(Ok(())) => self.state.last_progress.set(Some(Instant::now())),
                    Ok(Err(e)) => return Err(e),
                    Err(_) => return Err(WriteFail::Socket),
                }
            }
        }
        Ok(())
    }

    /// Completes when this writer is shed.
    async fn shed_signal(&self) {
        std::future::poll_fn(|cx| {
            if self.state.shed.get() {
                return Poll::Ready(());
            }
            *self.state.shed_waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

/// Bytes of one block held by a writer; released when dropped.
pub struct Pin {
    budget: Rc<PinBudget>,
    state: Rc<WriterState>,
    bytes: u64,
}

impl Drop for Pin {
    fn drop(&mut self) {
        let b = &self.budget;
        b.used_bytes
            .set(b.used_bytes.get().saturating_sub(self.bytes));
        self.state
            .pinned_bytes
            .set(self.state.pinned_bytes.get().saturating_sub(self.bytes));
        b.m().pinned_bytes.fetch_sub(self.bytes as i64, Relaxed);
        if self.bytes > 0 {
            b.wake_one();
            if let Some(w) = self.state.room_waker.borrow_mut().take() {
                w.wake();
            }
        }
    }
}

/// A writer's place in its budget's queue for room, left when the pin it waits
/// for ends (granted, failed, or dropped with its connection).
struct QueueSpot<'a> {
    budget: &'a PinBudget,
    key: Option<(Instant, u64)>,
}

impl Drop for QueueSpot<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            if let Ok(mut w) = self.budget.waiting.try_borrow_mut() {
                w.remove(&key);
            }
            // The next in line may take what room there is (this one took its
            // share, or was woken for room it will not take).
            self.budget.wake_one();
        }
    }
}

#[cfg(test)]
mod tests;
