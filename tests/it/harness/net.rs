//! The address allocator: every simulated host gets a loopback address that no other
//! test uses.
//!
//! All of 127.0.0.0/8 is local, so a test can have as many "machines" as it likes:
//! nodes bind their own 127.x.y.z, and clients choose their source address with
//! [`connect_from`](super::connect_from). Because an address belongs to one test, every
//! port is free on it: nodes that must name each other before they start listen on a
//! fixed port (1111, 8080) of a fresh address, everything else on port 0.
//!
//! - [`host`] hands out one fresh address (from a /24 shared with other tests' hosts);
//! - [`subnet`] hands out a fresh 127.b.c.0/24 of the test's own, for tests that need
//!   addresses inside (or outside) a subnet they give a node (`-n`, `-N`), or many
//!   addresses.
//!
//! The addresses come from one 127.b.0.0/16 per test process, claimed with a lock file
//! under the temporary directory (`p2pd-test-net/127.b.lock`), so concurrent test
//! processes (two checkouts, or a runner starting one process per test) never share
//! one. Never handed out: 127.0.0.0/16 (127.0.0.1 is local to every simulated host;
//! some tests name unused 127.0.0.x addresses), the 127.21–30 ranges older checkouts'
//! test binaries use, and 127.31–33 (the `perf/` scripts).

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::sync::Mutex;

/// The second octets a test process may claim.
const FIRST_B: u8 = 64;
const LAST_B: u8 = 253;

/// A 127.b.c.0/24 of one test's own.
#[derive(Clone, Copy, Debug)]
pub struct Subnet {
    b: u8,
    c: u8,
}

impl Subnet {
    /// 127.b.c.`d`, `d` in 1..=254.
    pub fn ip(&self, d: u8) -> IpAddr {
        assert!((1..=254).contains(&d), "host number {d} outside 1..=254");
        IpAddr::V4(Ipv4Addr::new(127, self.b, self.c, d))
    }

    /// "127.b.c.0/24", for `-n` and `-N`.
    pub fn cidr(&self) -> String {
        format!("127.{}.{}.0/24", self.b, self.c)
    }
}

/// What this process has claimed and handed out.
struct Pool {
    b: u8,
    /// The next /24 (third octet) not yet handed out; 256 once all are.
    next_c: u16,
    /// The /24 single hosts come from and the next host number in it.
    hosts: Option<(Subnet, u8)>,
    /// Held (locked) for the life of the process.
    _lock: File,
}

static POOL: Mutex<Option<Pool>> = Mutex::new(None);

impl Pool {
    fn claim() -> Pool {
        let dir = std::env::temp_dir().join("p2pd-test-net");
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        for b in FIRST_B..=LAST_B {
            let path = dir.join(format!("127.{b}.lock"));
            let file = File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
            // SAFETY: flock on a descriptor we own; released when the process ends.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Pool {
                    b,
                    next_c: 0,
                    hosts: None,
                    _lock: file,
                };
            }
        }
        panic!(
            "every 127.{FIRST_B}-{LAST_B}.0.0/16 is claimed by another test process (lock files in {})",
            dir.display()
        );
    }

    fn subnet(&mut self) -> Subnet {
        assert!(
            self.next_c <= 255,
            "this test process used up all of 127.{}.0.0/16",
            self.b
        );
        let s = Subnet {
            b: self.b,
            c: self.next_c as u8,
        };
        self.next_c += 1;
        s
    }

    fn host(&mut self) -> IpAddr {
        let (net, d) = match self.hosts {
            Some((net, d)) if d <= 254 => (net, d),
            _ => (self.subnet(), 1),
        };
        self.hosts = Some((net, d + 1));
        net.ip(d)
    }
}

fn with_pool<T>(f: impl FnOnce(&mut Pool) -> T) -> T {
    let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    f(pool.get_or_insert_with(Pool::claim))
}

/// A loopback address no other test uses.
pub fn host() -> IpAddr {
    with_pool(Pool::host)
}

/// A /24 no other test uses.
pub fn subnet() -> Subnet {
    with_pool(Pool::subnet)
}
