//! Start-up checks: a locked-memory limit too low for io_uring is reported in one
//! actionable line before any executor starts, instead of glommio's own failure.

use std::process::{Command, Stdio};

use crate::harness::*;

#[test]
fn too_low_memlock_limit_is_one_clear_line() {
    if Command::new("prlimit").arg("--version").output().is_err() {
        panic!("prlimit (util-linux) is needed for this test");
    }
    let dir = tempfile::tempdir().unwrap();
    let idx = tempfile::tempdir().unwrap();
    let ip = host().to_string();
    let _shared = shared();
    // A hard limit of 64 KiB cannot be raised, even by root.
    let out = Command::new("prlimit")
        .args(["--memlock=65536:65536", BIN, "-p"])
        .arg(dir.path())
        .arg("--index-dir")
        .arg(idx.path())
        .args(["--bind", &ip, "-P", "0"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "started despite a 64 KiB memlock limit: {err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("locked-memory limit") && err.contains("ulimit -l"),
        "{err}"
    );
}

/// The CPUs the calling thread may run on.
fn thread_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data, valid when zeroed.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: sched_getaffinity writes at most the given size through a valid pointer.
    let r = unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) };
    assert_eq!(
        r,
        0,
        "sched_getaffinity: {}",
        std::io::Error::last_os_error()
    );
    let max = usize::try_from(libc::CPU_SETSIZE).unwrap_or(0);
    // SAFETY: CPU_ISSET reads the set for indexes below CPU_SETSIZE.
    (0..max)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

/// Lets the calling thread (and the processes it starts) run on `cpus` only.
fn set_thread_cpus(cpus: &[usize]) {
    // SAFETY: cpu_set_t is plain data, valid when zeroed.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        // SAFETY: CPU_SET writes the set for indexes below CPU_SETSIZE (the caller's
        // CPUs come from sched_getaffinity).
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: sched_setaffinity reads the given size through a valid pointer.
    let r = unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) };
    assert_eq!(
        r,
        0,
        "sched_setaffinity: {}",
        std::io::Error::last_os_error()
    );
}

/// A node given one CPU (as `taskset -c N` or a cgroup cpuset would) pins its shard to
/// that CPU, the last this test may use, not to CPU 0: every process pinned its shard
/// to CPU 0 whatever it was given, so nodes sharing a machine shared one core.
#[test]
fn a_node_pins_its_shard_to_a_cpu_it_was_given() {
    let dir = tempfile::tempdir().unwrap();
    let idx = tempfile::tempdir().unwrap();
    write_file(dir.path(), "a.bin", &content(64 * 1024, 5));
    let mine = thread_cpus();
    let cpu = *mine.last().expect("this thread may run somewhere");
    // A child inherits the affinity of the thread that starts it.
    set_thread_cpus(&[cpu]);
    let dir_s = dir.path().to_str().unwrap().to_string();
    let idx_s = idx.path().to_str().unwrap().to_string();
    let started = std::panic::catch_unwind(|| {
        Node::start(
            host(),
            &["-p", &dir_s, "--index-dir", &idx_s, "--threads", "1"],
        )
    });
    set_thread_cpus(&mine);
    let node = started.unwrap_or_else(|p| std::panic::resume_unwind(p));
    // The startup line may come before the executors do: look until the shard is up.
    let shard_threads = || {
        let mut found = Vec::new();
        let tasks = std::fs::read_dir(format!("/proc/{}/task", node.pid())).unwrap();
        for t in tasks.flatten() {
            let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            if !comm.starts_with("p2pd-shard") {
                continue;
            }
            let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
            let allowed = status
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .map(|l| l.trim().to_string())
                .unwrap_or_default();
            found.push((comm.trim().to_string(), allowed));
        }
        found
    };
    let mut shards = Vec::new();
    wait_until(IO_DEADLINE, || {
        shards = shard_threads();
        !shards.is_empty()
    });
    // glommio names the executor's thread and its blocking helper alike.
    assert!(!shards.is_empty(), "no shard thread");
    for (name, allowed) in &shards {
        assert_eq!(
            *allowed,
            cpu.to_string(),
            "{name} runs on CPUs {allowed} though the node was given CPU {cpu} ({mine:?} here)"
        );
    }
}
