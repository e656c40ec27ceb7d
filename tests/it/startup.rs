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
