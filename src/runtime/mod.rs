//! The one place that calls glommio: executors, tasks, timers, sockets, DMA files and
//! cross-shard channels. Everything else uses these wrappers, so moving to another
//! thread-per-core runtime touches this file only.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use futures_lite::{AsyncReadExt, AsyncWriteExt};

pub use glommio::channels::channel_mesh::{Full, MeshBuilder, Receivers, Senders};
pub use glommio::net::{TcpListener, TcpStream};
pub use glommio::Task;

/// glommio refuses to start below this locked-memory limit (it registers io_uring rings).
pub const MIN_MEMLOCK_BYTES: u64 = 512 * 1024;
/// glommio's default registered I/O buffer memory per executor.
const DEFAULT_IO_MEMORY_BYTES: u64 = 10 << 20;

#[derive(Debug, thiserror::Error)]
#[error("timed out")]
pub struct Elapsed;

/// Work that answers requests without moving file data (Info and Locate answers, which
/// a hostile client can ask for at line rate) runs at most [`REQUEST_BUDGET`] of every
/// [`REQUEST_WINDOW`] of a shard; past it, request tasks sleep to the next window. The
/// shard then polls for I/O and runs its streams: glommio polls I/O only when no task
/// is runnable or its preempt timer fires, every 100 ms, and a shorter preempt timer
/// made glommio 0.9's executors sleep through their wake-ups (about one start in 15
/// with 250 µs): a budget in time, kept here, does not need one.
const REQUEST_WINDOW: Duration = Duration::from_millis(10);
const REQUEST_BUDGET: Duration = Duration::from_micros(750);

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
type Slot = std::rc::Rc<std::cell::RefCell<Option<std::task::Waker>>>;

/// Who paused request work belongs to (a connection): turns go round them.
pub type RequestOwner = u64;

/// The shard's paused request work: per owner in arrival order, the owners in turn,
/// as fq_codel serves flows: an owner that had nothing waiting goes first (the
/// "new" lane), once; owners with more go round the "old" lane.
#[derive(Default)]
struct Paused {
    by_owner: std::collections::HashMap<RequestOwner, std::collections::VecDeque<Slot>>,
    /// Owners whose work arrived while they had none waiting: served first.
    fresh: std::collections::VecDeque<RequestOwner>,
    /// Owners with more work queued after a turn, the next to go first.
    round: std::collections::VecDeque<RequestOwner>,
    /// Slots still holding a waker.
    live: usize,
    next_owner: RequestOwner,
}

impl Paused {
    /// Queues `slot` of `owner`: at the front of its work (and of the old lane) when
    /// it was woken but found the budget spent, else at the back.
    fn push(&mut self, owner: RequestOwner, slot: Slot, front: bool) {
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
    fn next(&mut self) -> Option<std::task::Waker> {
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
    fn leave(&mut self, slot: &Slot) -> bool {
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
    owner: RequestOwner,
    slot: Option<Slot>,
}

impl RequestTurn {
    fn new(owner: RequestOwner) -> Self {
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
    fut: std::pin::Pin<Box<F>>,
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

/// Spawns a task on the current shard and lets it run on its own.
/// glommio polls a new task at once, inside the spawner's poll; the task's future
/// runs outside the spawner's panic scope all the same (see `panics::own_task`).
pub fn spawn_detached<F: Future<Output = ()> + 'static>(fut: F) {
    glommio::spawn_local(crate::panics::own_task(fut)).detach();
}

/// Spawns a task on the current shard; the returned handle yields its output.
/// Dropping the handle cancels the task.
pub fn spawn<T: 'static, F: Future<Output = T> + 'static>(fut: F) -> Task<T> {
    glommio::spawn_local(crate::panics::own_task(fut))
}

/// The handle of a task spawned with [`spawn_background`]: awaiting it yields the
/// task's output, or None if the task panicked or its executor stopped. Only one
/// awaiter gets the output.
pub type Background<T> = glommio::task::JoinHandle<T>;

/// Spawns a task on the current shard that runs to its end whether or not anyone
/// still awaits its handle (dropping the handle does not cancel it, unlike
/// [`spawn`]'s).
pub fn spawn_background<T: 'static, F: Future<Output = T> + 'static>(fut: F) -> Background<T> {
    glommio::spawn_local(crate::panics::own_task(fut)).detach()
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

/// Bytes a TCP socket holds that it has not sent yet (`SIOCOUTQNSD`): what its peer's
/// window or the path's congestion window keeps back. `None` if the socket cannot say.
/// `fd` must be a socket the caller holds open.
pub fn unsent_bytes(fd: std::os::fd::RawFd) -> Option<u64> {
    // linux/sockios.h; libc does not define it.
    const SIOCOUTQNSD: libc::Ioctl = 0x894B;
    let mut n: libc::c_int = 0;
    // SAFETY: the ioctl writes one int through a valid pointer; a bad fd only fails.
    let r = unsafe { libc::ioctl(fd, SIOCOUTQNSD, &mut n as *mut libc::c_int) };
    (r == 0).then(|| u64::try_from(n).unwrap_or(0))
}

/// Makes writes to TCP socket `fd` wait while it holds `bytes` or more it has not sent
/// (`TCP_NOTSENT_LOWAT`); best effort.
pub fn limit_unsent(fd: std::os::fd::RawFd, bytes: u64) {
    let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: setsockopt reads one int through a valid pointer; a bad fd only fails.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NOTSENT_LOWAT,
            &v as *const libc::c_int as *const libc::c_void,
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

pub async fn sleep(d: Duration) {
    glommio::timer::sleep(d).await
}

/// Runs `fut` for at most `d`.
pub async fn timeout<T, F: Future<Output = T>>(d: Duration, fut: F) -> Result<T, Elapsed> {
    futures_lite::future::or(async { Ok(fut.await) }, async {
        sleep(d).await;
        Err(Elapsed)
    })
    .await
}

/// Lets other tasks run if this one has used its time slice (long CPU work, e.g. hashing).
pub async fn yield_if_needed() {
    glommio::yield_if_needed().await
}

/// Connects with a deadline and sets `TCP_NODELAY` (we write whole frames ourselves).
pub async fn connect(addr: SocketAddr, d: Duration) -> io::Result<TcpStream> {
    let s = match timeout(d, TcpStream::connect(addr)).await {
        Ok(r) => r.map_err(io::Error::from)?,
        Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
    };
    let _ = s.set_nodelay(true);
    Ok(s)
}

/// Connects from a chosen source address (`--bind`, so that several nodes on one
/// machine, each on its own loopback address, are told apart by the nodes they
/// connect to), with a deadline, and sets `TCP_NODELAY`. Without a source address, or
/// when its family differs from `addr`'s, the kernel picks one as for [`connect`].
pub async fn connect_from(
    addr: SocketAddr,
    source: Option<std::net::IpAddr>,
    d: Duration,
) -> io::Result<TcpStream> {
    let Some(src) = source.filter(|s| s.is_ipv4() == addr.is_ipv4()) else {
        return connect(addr, d).await;
    };
    // glommio's connect takes no source address; a bound socket connects on the
    // blocking pool instead (connections to upstreams are few and long-lived).
    let socket = blocking(move || -> io::Result<socket2::Socket> {
        let domain = socket2::Domain::for_address(addr);
        let s = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
        s.bind(&SocketAddr::new(src, 0).into())?;
        s.connect_timeout(&addr.into(), d)?;
        Ok(s)
    })
    .await?;
    // SAFETY: the fd comes from a connected socket whose ownership we take.
    let s = unsafe { TcpStream::from_raw_fd(socket.into_raw_fd()) };
    let _ = s.set_nodelay(true);
    Ok(s)
}

/// Runs blocking work (file creation with fsync, removals, name resolution) on the
/// executor's blocking thread, so the reactor keeps serving meanwhile.
pub async fn blocking<F, R>(f: F) -> R
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    glommio::executor().spawn_blocking(f).await
}

/// Turns a listening std socket (bound before the shards start, with `SO_REUSEPORT`)
/// into this shard's listener.
pub fn listener_from_std(l: std::net::TcpListener) -> TcpListener {
    // SAFETY: the fd comes from a live listening socket whose ownership we take.
    unsafe { TcpListener::from_raw_fd(l.into_raw_fd()) }
}

/// Reads into the free tail of `buf`, growing it by up to `max_read` bytes. Returns the
/// number of bytes read; 0 means the peer closed.
pub async fn read_some<S: futures_lite::AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut bytes::BytesMut,
    max_read: usize,
) -> io::Result<usize> {
    let len = buf.len();
    buf.resize(len + max_read, 0);
    let r = s.read(&mut buf[len..]).await;
    let n = *r.as_ref().unwrap_or(&0);
    buf.truncate(len + n);
    r
}

/// Writes all of `parts` in order (header and block payload without joining them).
pub async fn write_all_parts<S: futures_lite::AsyncWrite + Unpin>(
    s: &mut S,
    parts: &[&[u8]],
) -> io::Result<()> {
    for p in parts {
        s.write_all(p).await?;
    }
    Ok(())
}

/// A media file opened for block reads: with direct I/O (`O_DIRECT`, the default;
/// tmpfs and some others do not allow it and glommio falls back to buffered reads
/// there), or through the page cache with the kernel's read-ahead
/// (`--buffered-reads`).
pub enum BlockFile {
    Direct(glommio::io::DmaFile),
    Buffered(glommio::io::BufferedFile),
}

impl BlockFile {
    pub async fn open(path: &Path, direct: bool) -> io::Result<BlockFile> {
        if direct {
            let file = glommio::io::DmaFile::open(path)
                .await
                .map_err(io::Error::from)?;
            return Ok(BlockFile::Direct(file));
        }
        let file = glommio::io::BufferedFile::open(path)
            .await
            .map_err(io::Error::from)?;
        // Blocks are read mostly in order: ask for the kernel's larger read-ahead.
        // SAFETY: advice on an fd we hold open; failure only loses the hint.
        unsafe {
            libc::posix_fadvise(
                std::os::fd::AsRawFd::as_raw_fd(&file),
                0,
                0,
                libc::POSIX_FADV_SEQUENTIAL,
            )
        };
        Ok(BlockFile::Buffered(file))
    }

    fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        match self {
            BlockFile::Direct(f) => f.as_raw_fd(),
            BlockFile::Buffered(f) => f.as_raw_fd(),
        }
    }

    /// The open file's identity now (size, modification time, inode, device), to tell
    /// whether it is still the file its index describes.
    pub fn source_stat(&self) -> io::Result<crate::disk::origin_index::SourceStat> {
        // SAFETY: fstat fills a zeroed stat struct for an fd we hold open.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: valid fd and pointer.
        if unsafe { libc::fstat(self.raw_fd(), &mut st) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(crate::disk::origin_index::SourceStat {
            size: st.st_size as u64,
            mtime_ns: st
                .st_mtime
                .saturating_mul(1_000_000_000)
                .saturating_add(st.st_mtime_nsec),
            ino: st.st_ino,
            dev: st.st_dev,
        })
    }

    /// Reads `len` bytes at `offset` (an aligned block start) into an immutable shared
    /// buffer: the one copy from the DMA buffer that lets the block cross shards freely.
    /// A short result means the file shrank.
    pub async fn read_block(&self, offset: u64, len: usize) -> io::Result<Bytes> {
        let r = match self {
            BlockFile::Direct(f) => {
                let aligned = (len as u64).div_ceil(4096) * 4096;
                f.read_at_aligned(offset, aligned as usize).await
            }
            BlockFile::Buffered(f) => f.read_at(offset, len).await,
        }
        .map_err(io::Error::from)?;
        let n = r.len().min(len);
        Ok(Bytes::copy_from_slice(&r[..n]))
    }
}

/// Checks io_uring and the locked-memory limit before any executor exists, raising the
/// soft limit where allowed, and says in one line what is wrong otherwise. Returns the
/// io_memory each executor may register.
pub fn preflight(executors: usize) -> Result<usize, String> {
    // io_uring_setup(2) with a tiny ring tells whether the kernel and seccomp allow it.
    let mut params = [0u8; 120];
    // SAFETY: plain syscall with a zeroed io_uring_params-sized buffer.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 2u32, params.as_mut_ptr()) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        let hint = match e.raw_os_error() {
            Some(libc::ENOSYS) => "the kernel has no io_uring (Linux 5.8 or newer is needed)",
            Some(libc::EPERM) => "io_uring is disabled (check /proc/sys/kernel/io_uring_disabled or the container's seccomp profile)",
            Some(libc::ENOMEM) => "the locked-memory limit is too low for io_uring (raise `ulimit -l`)",
            _ => "io_uring is unavailable",
        };
        return Err(format!("{hint}: {e}"));
    }
    // SAFETY: closing the fd we just opened.
    unsafe { libc::close(fd as i32) };

    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } != 0 {
        return Err(format!(
            "cannot read RLIMIT_MEMLOCK: {}",
            io::Error::last_os_error()
        ));
    }
    let want = DEFAULT_IO_MEMORY_BYTES * executors as u64 + MIN_MEMLOCK_BYTES * 4;
    if lim.rlim_cur != libc::RLIM_INFINITY && lim.rlim_cur < want {
        let raised = libc::rlimit {
            rlim_cur: if lim.rlim_max == libc::RLIM_INFINITY {
                want
            } else {
                want.min(lim.rlim_max)
            },
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit with a value within the hard limit.
        if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raised) } == 0 {
            lim.rlim_cur = raised.rlim_cur;
        }
    }
    if lim.rlim_cur != libc::RLIM_INFINITY && lim.rlim_cur < MIN_MEMLOCK_BYTES {
        return Err(format!(
            "the locked-memory limit is {} KiB, io_uring needs at least {} KiB: run `ulimit -l {}` or set LimitMEMLOCK in the systemd unit",
            lim.rlim_cur / 1024,
            MIN_MEMLOCK_BYTES / 1024,
            (want / 1024).max(MIN_MEMLOCK_BYTES / 1024)
        ));
    }
    let per = if lim.rlim_cur == libc::RLIM_INFINITY {
        DEFAULT_IO_MEMORY_BYTES
    } else {
        (lim.rlim_cur.saturating_sub(MIN_MEMLOCK_BYTES * 2) / executors.max(1) as u64)
            .min(DEFAULT_IO_MEMORY_BYTES)
    };
    Ok(per as usize)
}

/// Runs `f` on `n` executors pinned one per CPU (spread over the machine), each with
/// its shard index, and waits for all of them.
pub fn run_shards<F, Fut>(n: usize, io_memory: usize, f: F) -> Result<(), String>
where
    F: Fn(usize) -> Fut + Send + Clone + 'static,
    Fut: Future<Output = ()> + 'static,
{
    run_pool("p2pd-shard", n, io_memory, true, f).map(|_| ())
}

/// Runs `f` on `n` executors, each with its index, and returns their results in index
/// order. `pinned` binds them one per CPU where there are enough CPUs.
pub fn run_pool<F, Fut, T>(
    name: &str,
    n: usize,
    io_memory: usize,
    pinned: bool,
    f: F,
) -> Result<Vec<T>, String>
where
    F: Fn(usize) -> Fut + Send + Clone + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    let cpus = std::thread::available_parallelism()
        .map(|c| c.get())
        .unwrap_or(1);
    let placement = if pinned && n <= cpus {
        glommio::PoolPlacement::MaxSpread(n, None)
    } else {
        // More executors than CPUs (tests, oversubscribed hosts) or asked not to pin.
        glommio::PoolPlacement::Unbound(n)
    };
    // Indexes are handed out in start order; glommio's executor ids are global
    // counters and need not start at 1.
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let handles = glommio::LocalExecutorPoolBuilder::new(placement)
        .name(name)
        .io_memory(io_memory)
        .on_all_shards(move || {
            let f = f.clone();
            let idx = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            async move { (idx, f(idx).await) }
        })
        .map_err(|e| format!("cannot start executors: {e}"))?;
    let mut out = Vec::with_capacity(n);
    for r in handles.join_all() {
        match r {
            Ok(v) => out.push(v),
            Err(e) => return Err(format!("executor failed: {e}")),
        }
    }
    out.sort_by_key(|(i, _)| *i);
    Ok(out.into_iter().map(|(_, v)| v).collect())
}

/// Runs one future on a single executor on the calling thread (the `get` client).
pub fn run_single<T: 'static, Fut: Future<Output = T> + 'static>(
    io_memory: usize,
    fut: Fut,
) -> Result<T, String> {
    let ex = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .name("p2pd-get")
        .io_memory(io_memory)
        .make()
        .map_err(|e| format!("cannot start executor: {e}"))?;
    Ok(ex.run(fut))
}

/// Makes this executor's first direct-I/O file on `dir`'s device one that holds data.
///
/// glommio decides once per executor and device whether direct reads go through its
/// poll ring, by reading the start of the first file it opens with direct I/O. An
/// empty file (a cache's new data file) reads "successfully" without touching the
/// device, so the poll ring was turned on for a device that cannot poll, and about
/// half of a cache's disk reads failed with EOPNOTSUPP: every block it had stored was
/// fetched again. A probe file with data gives glommio a real read to decide on.
pub async fn settle_direct_io(dir: &Path) -> io::Result<()> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = dir.join(format!(".p2pd-direct-io-probe-{}-{n}", std::process::id()));
    let p = path.clone();
    blocking(move || -> io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(&p)?;
        f.write_all(&[0x5a; 2 * DIRECT_IO_ALIGN_BYTES as usize])?;
        f.sync_all()
    })
    .await?;
    let opened = glommio::io::DmaFile::open(&path).await;
    if let Ok(f) = opened {
        let _ = f.close().await;
    }
    let p = path.clone();
    blocking(move || std::fs::remove_file(p)).await
}

/// Alignment of direct-I/O offsets and lengths in cache data files.
pub const DIRECT_IO_ALIGN_BYTES: u64 = 4096;

/// A cache's data file, opened read-write with direct I/O: verified blocks are written
/// at `index * block_size` (the last one padded to the alignment), read back, and
/// punched out (the file system frees their space) when evicted.
pub struct DataFile {
    file: glommio::io::DmaFile,
}

impl DataFile {
    /// Opens (creating if missing) a data file.
    pub async fn open(path: &Path) -> io::Result<DataFile> {
        let file = glommio::io::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .dma_open(path)
            .await
            .map_err(io::Error::from)?;
        Ok(DataFile { file })
    }

    /// `len` rounded up to the direct-I/O alignment: the bytes a block occupies.
    pub fn aligned(len: usize) -> u64 {
        (len as u64).div_ceil(DIRECT_IO_ALIGN_BYTES) * DIRECT_IO_ALIGN_BYTES
    }

    /// Writes `data` at `offset` (aligned), padded with zeros to the alignment. The
    /// write has completed (reached the device, not a cache of ours) when this returns.
    pub async fn write_block(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let len = Self::aligned(data.len()) as usize;
        let mut buf = self.file.alloc_dma_buffer(len);
        let b = buf.as_bytes_mut();
        b[..data.len()].copy_from_slice(data);
        b[data.len()..].fill(0);
        let n = self
            .file
            .write_at(buf, offset)
            .await
            .map_err(io::Error::from)?;
        if n != len {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short write: {n} of {len} bytes"),
            ));
        }
        Ok(())
    }

    /// Reads `len` bytes at `offset` (aligned); a short result means the file is
    /// shorter than the index claims (the caller verifies the digest anyway).
    pub async fn read_block(&self, offset: u64, len: usize) -> io::Result<Bytes> {
        let r = self
            .file
            .read_at_aligned(offset, Self::aligned(len) as usize)
            .await
            .map_err(io::Error::from)?;
        let n = r.len().min(len);
        Ok(Bytes::copy_from_slice(&r[..n]))
    }

    /// Frees the space of `len` bytes (rounded up to the alignment) at `offset`.
    pub async fn punch(&self, offset: u64, len: usize) -> io::Result<()> {
        self.file
            .deallocate(offset, Self::aligned(len))
            .await
            .map_err(io::Error::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    #[test]
    fn a_background_task_runs_to_its_end_without_anyone_waiting_and_a_task_does_not() {
        let io_memory = preflight(1).expect("io_uring");
        let (background, plain) = run_single(io_memory, async {
            let (background, plain) = (Rc::new(Cell::new(false)), Rc::new(Cell::new(false)));
            let (b, p) = (background.clone(), plain.clone());
            drop(spawn_background(async move {
                sleep(Duration::from_millis(20)).await;
                b.set(true);
            }));
            drop(spawn(async move {
                sleep(Duration::from_millis(20)).await;
                p.set(true);
            }));
            sleep(Duration::from_millis(100)).await;
            // And a handle still awaited yields the output.
            let out = spawn_background(async { 7 }).await;
            assert_eq!(out, Some(7));
            (background.get(), plain.get())
        })
        .expect("executor");
        assert!(
            background,
            "a background task whose handle was dropped stopped"
        );
        assert!(!plain, "dropping a Task handle no longer cancels it");
    }

    /// Spins for `d` of wall time (a request that costs CPU).
    fn spin(d: Duration) {
        let t = std::time::Instant::now();
        while t.elapsed() < d {
            std::hint::spin_loop();
        }
    }

    /// A stream that computes 2 ms, then waits 1 ms for its I/O, for ever, adding the
    /// time it computed to `used`.
    fn spawn_stream(used: Rc<Cell<Duration>>) {
        drop(spawn_background(async move {
            loop {
                spin(Duration::from_millis(2));
                used.set(used.get() + Duration::from_millis(2));
                sleep(Duration::from_millis(1)).await;
            }
        }));
    }

    /// Forty hostile requests that each want the CPU for ever, 100 µs at a time, and
    /// optionally a stream that computes 2 ms, then waits 1 ms for its I/O; their
    /// shares of 400 ms of an executor.
    fn flood_beside_a_stream(with_stream: bool) -> (f64, f64) {
        let io_memory = preflight(1).expect("io_uring");
        run_single(io_memory, async move {
            let request_time = Rc::new(Cell::new(Duration::ZERO));
            let stream_time = Rc::new(Cell::new(Duration::ZERO));
            for _ in 0..40 {
                let used = request_time.clone();
                spawn_request(request_owner(), async move {
                    loop {
                        spin(Duration::from_micros(100));
                        used.set(used.get() + Duration::from_micros(100));
                        futures_lite::future::yield_now().await;
                    }
                });
            }
            if with_stream {
                spawn_stream(stream_time.clone());
            }
            let began = std::time::Instant::now();
            sleep(Duration::from_millis(400)).await;
            let total = began.elapsed().as_secs_f64();
            (
                request_time.get().as_secs_f64() / total,
                stream_time.get().as_secs_f64() / total,
            )
        })
        .expect("executor")
    }

    #[test]
    fn a_flood_of_request_work_gets_its_budget_and_the_streams_get_the_rest() {
        let budget = REQUEST_BUDGET.as_secs_f64() / REQUEST_WINDOW.as_secs_f64();
        let (alone, _) = flood_beside_a_stream(false);
        assert!(
            alone <= budget + 0.05,
            "request work took {alone:.2} of an idle shard, budget {budget:.2}"
        );
        assert!(alone >= budget / 4.0, "request work starved: {alone:.2}");
        let (requests, stream) = flood_beside_a_stream(true);
        assert!(
            requests <= budget + 0.05,
            "request work took {requests:.2} beside a stream, budget {budget:.2}"
        );
        // The stream asks for 2/3 of the time and gets it: of the time the two used,
        // about 80% (measured against each other, as other tests share the CPU).
        assert!(
            stream / (stream + requests) >= 0.7,
            "the stream got {stream:.2} of the shard, the requests {requests:.2}"
        );
    }

    /// A backlog of 20,000 short request tasks of 100 connections (as a Locate flood
    /// leaves: up to 256 outstanding per connection) beside a stream that computes
    /// 2 ms, then waits 1 ms for its I/O, and one more request of another connection
    /// queued after the backlog: the shares of 400 ms of an executor the backlog and
    /// the stream got, and how long that last request waited.
    fn backlog_beside_a_stream() -> (f64, f64, Duration) {
        let io_memory = preflight(1).expect("io_uring");
        run_single(io_memory, async move {
            let request_time = Rc::new(Cell::new(Duration::ZERO));
            let stream_time = Rc::new(Cell::new(Duration::ZERO));
            spawn_stream(stream_time.clone());
            for _ in 0..100 {
                let owner = request_owner();
                for _ in 0..200 {
                    let used = request_time.clone();
                    spawn_request(owner, async move {
                        spin(Duration::from_micros(20));
                        used.set(used.get() + Duration::from_micros(20));
                    });
                }
            }
            let began = std::time::Instant::now();
            let answered = Rc::new(Cell::new(None));
            let a = answered.clone();
            spawn_request(request_owner(), async move { a.set(Some(began.elapsed())) });
            sleep(Duration::from_millis(400)).await;
            let total = began.elapsed().as_secs_f64();
            (
                request_time.get().as_secs_f64() / total,
                stream_time.get().as_secs_f64() / total,
                answered.get().unwrap_or(Duration::MAX),
            )
        })
        .expect("executor")
    }

    #[test]
    fn a_backlog_of_paused_request_tasks_costs_the_streams_no_more_than_the_budget() {
        let budget = REQUEST_BUDGET.as_secs_f64() / REQUEST_WINDOW.as_secs_f64();
        let (requests, stream, waited) = backlog_beside_a_stream();
        assert!(
            requests <= budget + 0.05,
            "the backlog took {requests:.2} of the shard, budget {budget:.2}"
        );
        assert!(
            requests >= budget / 4.0,
            "the backlog starved: {requests:.2}"
        );
        // Waking the paused tasks is request work too: the stream, which asks for 2/3
        // of the shard, keeps all but the budget of it.
        assert!(
            stream >= 2.0 / 3.0 - budget - 0.1,
            "the stream got {stream:.2} of the shard beside the backlog ({requests:.2})"
        );
        // It had nothing waiting: it goes before the 100 flooding connections' next
        // turns, in this window or the next, not after the 2.7 s of the backlog.
        assert!(
            waited < Duration::from_millis(50),
            "a request of another connection waited {waited:?} behind the backlog"
        );
    }

    /// A slot whose waker counts its wake-ups into `woken`, tagged `tag`.
    fn slot(tag: u32, woken: &std::sync::Arc<std::sync::Mutex<Vec<u32>>>) -> Slot {
        struct Tagged(u32, std::sync::Arc<std::sync::Mutex<Vec<u32>>>);
        impl std::task::Wake for Tagged {
            fn wake(self: std::sync::Arc<Self>) {
                self.1.lock().unwrap().push(self.0);
            }
        }
        let w = std::task::Waker::from(std::sync::Arc::new(Tagged(tag, woken.clone())));
        Rc::new(std::cell::RefCell::new(Some(w)))
    }

    #[test]
    fn paused_work_goes_round_the_owners_new_ones_first_and_is_forgotten_when_none_waits() {
        let woken = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut p = Paused::default();
        // Owner 1 floods (three requests), then owner 2 has one; 1's second turn comes
        // after 2's first, as does its third.
        let (a1, a2, a3) = (slot(11, &woken), slot(12, &woken), slot(13, &woken));
        p.push(1, a1, false);
        p.push(1, a2, false);
        p.push(1, a3.clone(), false);
        let b1 = slot(21, &woken);
        p.push(2, b1, false);
        // Owner 3 queued and then gone (its connection closed).
        let c1 = slot(31, &woken);
        p.push(3, c1.clone(), false);
        assert!(p.leave(&c1));
        assert_eq!(p.live, 4);
        while let Some(w) = p.next() {
            w.wake();
            // A new owner arriving while 1 still has work goes before 1's next turn.
            if woken.lock().unwrap().len() == 2 {
                p.push(4, slot(41, &woken), false);
            }
        }
        assert_eq!(*woken.lock().unwrap(), vec![11, 21, 41, 12, 13]);
        assert_eq!(p.live, 0);
        assert!(p.by_owner.is_empty() && p.fresh.is_empty() && p.round.is_empty());
        // A slot given up while others wait leaves nothing behind once none waits.
        let d1 = slot(51, &woken);
        let e1 = slot(61, &woken);
        p.push(5, d1.clone(), false);
        p.push(6, e1.clone(), false);
        assert!(p.leave(&d1));
        assert!(!p.by_owner.is_empty());
        assert!(p.leave(&e1));
        assert!(p.by_owner.is_empty() && p.fresh.is_empty() && p.round.is_empty());
        assert!(!p.leave(&a3), "a slot already woken does not wait");
    }

    #[test]
    fn a_reader_charging_its_frames_pauses_at_its_turns_once_the_budget_is_spent() {
        let io_memory = preflight(1).expect("io_uring");
        let (reader_time, total) = run_single(io_memory, async {
            let used = Rc::new(Cell::new(Duration::ZERO));
            let u = used.clone();
            let owner = request_owner();
            drop(spawn_background(async move {
                loop {
                    spin(Duration::from_micros(100));
                    u.set(u.get() + Duration::from_micros(100));
                    charge_request(Duration::from_micros(100));
                    request_turn(owner).await;
                }
            }));
            let began = std::time::Instant::now();
            sleep(Duration::from_millis(300)).await;
            (used.get(), began.elapsed())
        })
        .expect("executor");
        let share = reader_time.as_secs_f64() / total.as_secs_f64();
        let budget = REQUEST_BUDGET.as_secs_f64() / REQUEST_WINDOW.as_secs_f64();
        assert!(
            share <= budget + 0.05,
            "a flooding reader took {share:.2} of the shard, budget {budget:.2}"
        );
    }
}
