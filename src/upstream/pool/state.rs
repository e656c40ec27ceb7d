//! What the reader and the requests of one connection share (`Inner`: pending
//! requests, death, request slots), and a request's slot, freed on drop.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use futures::channel::oneshot;

use crate::pure::protocol::Frame;
use crate::upstream::connection::FetchError;

/// What the reader and the requests of one connection share.
pub(super) struct Inner {
    pub(super) addr: SocketAddr,
    /// Requests waiting for their answer, by request id.
    pub(super) pending: RefCell<HashMap<u32, oneshot::Sender<Frame>>>,
    /// Set once the connection is unusable, with why.
    pub(super) dead: RefCell<Option<FetchError>>,
    /// When the last byte arrived from the upstream.
    pub(super) last_rx: Cell<Instant>,
    /// Requests waiting for a free slot (see [`MAX_PENDING_PER_CONNECTION`]).
    pub(super) slot_waiters: RefCell<VecDeque<oneshot::Sender<()>>>,
    pub(super) in_use: Cell<usize>,
}

impl Inner {
    pub(super) fn kill(&self, why: FetchError) {
        if self.dead.borrow().is_none() {
            tracing::debug!(upstream = %self.addr, error = %why, "upstream connection closed");
            *self.dead.borrow_mut() = Some(why);
        }
        // Dropping the senders wakes every waiting request with the error above.
        self.pending.borrow_mut().clear();
        self.slot_waiters.borrow_mut().clear();
    }

    pub(super) fn death(&self) -> Option<FetchError> {
        self.dead.borrow().clone()
    }
}

/// A slot among a connection's [`MAX_PENDING_PER_CONNECTION`]; freed on drop.
pub(super) struct Slot(pub(super) Rc<Inner>);

impl Drop for Slot {
    fn drop(&mut self) {
        let mut waiters = self.0.slot_waiters.borrow_mut();
        // Hand the slot straight to the next waiter still waiting.
        while let Some(w) = waiters.pop_front() {
            if w.send(()).is_ok() {
                return;
            }
        }
        self.0.in_use.set(self.0.in_use.get() - 1);
    }
}
