//! The shard's request budget: work that answers requests without moving file data
//! (Info and Locate answers) gets at most a share of every window of a shard, paused
//! work takes turns per connection, and such work is spawned with [`spawn_request`].

use std::future::Future;
use std::time::Duration;

/// Work that answers requests without moving file data (Info and Locate answers, which
/// a hostile client can ask for at line rate) runs at most [`REQUEST_BUDGET`] of every
/// [`REQUEST_WINDOW`] of a shard; past it, request tasks sleep to the next window. The
/// shard then polls for I/O and runs its streams: glommio polls I/O only when no task
/// is runnable or its preempt timer fires, every 100 ms, and a shorter preempt timer
/// made glommio 0.9's executors sleep through their wake-ups (about one start in 15
/// with 250 µs): a budget in time, kept here, does not need one.
pub(super) const REQUEST_WINDOW: Duration = Duration::from_millis(10);
pub(super) const REQUEST_BUDGET: Duration = Duration::from_micros(750);

thread_local! {
    /// This shard's request window: when it began and the time request tasks used.
    static REQUEST_TIME: std::cell::Cell<(std::time::Instant, Duration)> =
        std::cell::Cell::new((std::time::Instant::now(), Duration::ZERO));
}

/// This shard's request window, begun afresh when the last one is over.
fn request_window(now: std::time::Instant) -> (std::time::Instant, Duration) {
    let (began, used) = REQUEST_TIME.get();
    if now.saturating_duration_since(began) >= REQUEST_WINDOW {
        REQUEST_TIME.set((now, Duration::ZERO));
        (now, Duration::ZERO)
    } else {
        (began, used)
    }
}

/// Whether request work used up this window's budget.
fn request_budget_spent() -> bool {
    request_window(std::time::Instant::now()).1 >= REQUEST_BUDGET
}

/// Counts `spent` against the shard's request budget (see `REQUEST_BUDGET`); while
/// some budget is left, lets the next paused request task run.
pub fn charge_request(spent: Duration) {
    let (began, used) = request_window(std::time::Instant::now());
    REQUEST_TIME.set((began, used + spent));
    pass_turn();
}

/// Counts the time spent polling a future against the shard's request budget.
fn charge_request_time<T>(poll: impl FnOnce() -> std::task::Poll<T>) -> std::task::Poll<T> {
    let now = std::time::Instant::now();
    let out = poll();
    charge_request(now.elapsed());
    out
}

/// A place in the shard's queue of paused request work: the waker to call when its
/// turn comes; None once woken or given up.
pub(super) type Slot = std::rc::Rc<std::cell::RefCell<Option<std::task::Waker>>>;

/// Who paused request work belongs to (a connection): turns go round them.
pub type RequestOwner = u64;

/// The shard's paused request work: per owner in arrival order, the owners in turn,
/// as fq_codel serves flows: an owner that had nothing waiting goes first (the
/// "new" lane), once; owners with more go round the "old" lane.
#[derive(Default)]
pub(super) struct Paused {
    pub(super) by_owner: std::collections::HashMap<RequestOwner, std::collections::VecDeque<Slot>>,
    /// Owners whose work arrived while they had none waiting: served first.
    pub(super) fresh: std::collections::VecDeque<RequestOwner>,
    /// Owners with more work queued after a turn, the next to go first.
    pub(super) round: std::collections::VecDeque<RequestOwner>,
    /// Slots still holding a waker.
    pub(super) live: usize,
    next_owner: RequestOwner,
}

impl Paused {
    /// Queues `slot` of `owner`: at the front of its work (and of the old lane) when
    /// it was woken but found the budget spent, else at the back.
    pub(super) fn push(&mut self, owner: RequestOwner, slot: Slot, front: bool) {
        self.live += 1;
        let q = self.by_owner.entry(owner).or_insert_with(|| {
            if front {
                self.round.push_front(owner);
            } else {
                self.fresh.push_back(owner);
            }
            std::collections::VecDeque::new()
        });
        if front {
            q.push_front(slot)
        } else {
            q.push_back(slot)
        }
    }

    /// Takes the waker of the next slot in turn: the first owner's first (of the new
    /// lane, else of the old), that owner then going to the back of the old lane.
    pub(super) fn next(&mut self) -> Option<std::task::Waker> {
        while let Some(owner) = self.fresh.pop_front().or_else(|| self.round.pop_front()) {
            let Some(q) = self.by_owner.get_mut(&owner) else {
                continue;
            };
            let mut found = None;
            while let Some(slot) = q.pop_front() {
                if let Some(w) = slot.borrow_mut().take() {
                    found = Some(w);
                    break;
                }
            }
            if q.is_empty() {
                self.by_owner.remove(&owner);
            } else {
                self.round.push_back(owner);
            }
            if let Some(w) = found {
                self.live -= 1;
                self.forget_if_idle();
                return Some(w);
            }
        }
        None
    }

    /// Gives up a slot (its waker taken here); whether it still waited.
    pub(super) fn leave(&mut self, slot: &Slot) -> bool {
        let had = slot.borrow_mut().take().is_some();
        if had {
            self.live -= 1;
            self.forget_if_idle();
        }
        had
    }

    /// With nothing waiting, drops the places of those gone (connections that closed
    /// with work queued), which would otherwise stay until their owners' turns came.
    fn forget_if_idle(&mut self) {
        if self.live == 0 {
            self.by_owner.clear();
            self.fresh.clear();
            self.round.clear();
        }
    }
}

thread_local! {
    /// Request work paused for the budget. Paused tasks are woken one at a time, each
    /// by the one before it while the budget lasts, and the first by the shard's
    /// gatekeeper when a window begins: a backlog of thousands costs a wake-up per
    /// task that runs, not one per task per window (each with its own timer, a
    /// backlog of 20,000 Locate answers took 95% of a shard to wake and put back to
    /// sleep). Turns go round the owners, and one that had nothing waiting goes
    /// first: a viewer's Info waits for the turn in progress, not for a round of
    /// every flooding connection.
    static PAUSED: std::cell::RefCell<Paused> = std::cell::RefCell::new(Paused::default());
    /// Whether the shard's gatekeeper task runs (while anything is paused).
    static GATEKEEPER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// A new owner of request work on this shard (one per connection).
pub fn request_owner() -> RequestOwner {
    PAUSED.with_borrow_mut(|p| {
        p.next_owner = p.next_owner.wrapping_add(1);
        p.next_owner
    })
}

/// Wakes the next paused request work in turn, if the budget is not spent.
fn pass_turn() {
    if request_budget_spent() {
        return;
    }
    if let Some(w) = PAUSED.with_borrow_mut(Paused::next) {
        w.wake();
    }
}

/// Whether no paused request work waits.
fn no_one_paused() -> bool {
    PAUSED.with_borrow(|p| p.live == 0)
}

/// Starts the shard's gatekeeper unless it runs: at the start of every window while
/// work is paused, it wakes the next paused task (which passes the turn on).
fn ensure_gatekeeper() {
    if GATEKEEPER.get() {
        return;
    }
    GATEKEEPER.set(true);
    glommio::spawn_local(async {
        while !no_one_paused() {
            let now = std::time::Instant::now();
            let (began, used) = request_window(now);
            if used >= REQUEST_BUDGET {
                let wait = (began + REQUEST_WINDOW).saturating_duration_since(now);
                glommio::timer::sleep(wait.max(Duration::from_micros(100))).await;
            }
            pass_turn();
            // The woken task passes the turn on; look again next window (a task
            // woken and then dropped unpolled passes nothing).
            glommio::timer::sleep(REQUEST_WINDOW).await;
        }
        GATEKEEPER.set(false);
    })
    .detach();
}

/// Waits, if the shard's request budget is spent or others wait, for a turn in the
/// queue of paused request work.
struct RequestTurn {
    pub(super) owner: RequestOwner,
    slot: Option<Slot>,
}

impl RequestTurn {
    pub(super) fn new(owner: RequestOwner) -> Self {
        RequestTurn { owner, slot: None }
    }

    /// Ready when the budget is not spent and this one's turn came (or no one waits).
    /// Else queued (once) with the latest waker; one whose turn came but found the
    /// budget spent keeps its place at the front.
    fn poll_turn(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        let woken = self.slot.as_ref().is_some_and(|s| s.borrow().is_none());
        let spent = request_budget_spent();
        if !spent && (woken || no_one_paused()) {
            if let Some(slot) = self.slot.take() {
                PAUSED.with_borrow_mut(|p| p.leave(&slot));
            }
            return std::task::Poll::Ready(());
        }
        match &self.slot {
            Some(s) if !woken => *s.borrow_mut() = Some(cx.waker().clone()),
            _ => {
                let slot: Slot =
                    std::rc::Rc::new(std::cell::RefCell::new(Some(cx.waker().clone())));
                PAUSED.with_borrow_mut(|p| p.push(self.owner, slot.clone(), woken));
                self.slot = Some(slot);
            }
        }
        if !spent {
            // Others wait for their turn and the budget lasts: the next goes now.
            pass_turn();
        }
        ensure_gatekeeper();
        std::task::Poll::Pending
    }
}

impl Drop for RequestTurn {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            let waited = PAUSED.with_borrow_mut(|p| p.leave(&slot));
            if !waited {
                // Woken but gone: the turn goes to the next one.
                pass_turn();
            }
        }
    }
}

impl Future for RequestTurn {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        self.poll_turn(cx)
    }
}

/// Lets the shard's other tasks run: yields, or when request work used up this
/// window's budget (or other request work waits), waits for `owner`'s turn in the
/// queue of paused request work (so a flood of requests leaves the shard idle long
/// enough to poll for I/O and run its streams).
pub async fn request_turn(owner: RequestOwner) {
    if request_budget_spent() || !no_one_paused() {
        RequestTurn::new(owner).await
    } else {
        futures_lite::future::yield_now().await
    }
}

/// Runs `fut`; its output and the time spent polling it (not waiting), for a caller
/// that decides afterwards whether to charge it ([`charge_request`]).
pub async fn polled<F: Future>(fut: F) -> (F::Output, Duration) {
    let mut fut = std::pin::pin!(fut);
    let mut spent = Duration::ZERO;
    let out = std::future::poll_fn(|cx| {
        let t = std::time::Instant::now();
        let r = fut.as_mut().poll(cx);
        spent += t.elapsed();
        r
    })
    .await;
    (out, spent)
}

/// Runs `fut`, counting the time spent polling it against the shard's request budget
/// (the writing of answers: what a flood of requests costs past working them out).
pub async fn charged<F: Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(|cx| charge_request_time(|| fut.as_mut().poll(cx))).await
}

/// A request task: polled only while the shard's request budget lasts.
struct Budgeted<F> {
    pub(super) fut: std::pin::Pin<Box<F>>,
    turn: RequestTurn,
}

impl<F: Future<Output = ()>> Future for Budgeted<F> {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.turn.poll_turn(cx).is_pending() {
            return std::task::Poll::Pending;
        }
        charge_request_time(|| self.fut.as_mut().poll(cx))
    }
}

/// Spawns a task that answers a request without moving file data (Info and Locate
/// answers), polled only while the shard's request budget lasts (see
/// `REQUEST_BUDGET`): under a flood of such requests the shard keeps most of its
/// time for the streams.
pub fn spawn_request<F: Future<Output = ()> + 'static>(owner: RequestOwner, fut: F) {
    let fut = Budgeted {
        fut: Box::pin(fut),
        turn: RequestTurn::new(owner),
    };
    glommio::spawn_local(crate::panics::own_task(fut)).detach();
}
