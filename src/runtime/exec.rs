//! Executors and tasks: the preflight checks (io_uring, locked memory), running shards
//! and pools of executors, spawning tasks, yielding and blocking work.

use std::future::Future;
use std::io;

use glommio::Task;

/// glommio refuses to start below this locked-memory limit (it registers io_uring rings).
pub const MIN_MEMLOCK_BYTES: u64 = 512 * 1024;
/// glommio's default registered I/O buffer memory per executor.
const DEFAULT_IO_MEMORY_BYTES: u64 = 10 << 20;

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

/// Lets other tasks run if this one has used its time slice (long CPU work, e.g. hashing).
pub async fn yield_if_needed() {
    glommio::yield_if_needed().await
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
        // Only the CPUs this process may use (`taskset`, a cgroup cpuset): glommio's
        // own choice is every online CPU, so two nodes given CPU 0 and CPU 1 both
        // pinned their shard to CPU 0.
        let allowed = allowed_cpus();
        let set = glommio::CpuSet::online()
            .ok()
            .map(|s| s.filter(|l| allowed.as_ref().is_none_or(|a| a.contains(&l.cpu))));
        glommio::PoolPlacement::MaxSpread(n, set)
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

/// The CPUs this process may run on (its affinity mask, which `taskset` and cgroup
/// cpusets set), or `None` when it cannot tell.
fn allowed_cpus() -> Option<Vec<usize>> {
    // SAFETY: cpu_set_t is plain data, valid when zeroed.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: sched_getaffinity writes at most the given size through a valid pointer.
    let r = unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) };
    if r != 0 {
        return None;
    }
    let max = usize::try_from(libc::CPU_SETSIZE).unwrap_or(0);
    // SAFETY: CPU_ISSET reads the set for indexes below CPU_SETSIZE.
    Some(
        (0..max)
            .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
            .collect(),
    )
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
