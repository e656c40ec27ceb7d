//! Unit tests of the one-attempt step: its deadlines, and each outcome against a fake
//! upstream on loopback.

use super::*;

#[test]
fn one_set_of_deadlines_for_every_fetcher() {
    let ten = Duration::from_secs(10);
    // Alternatives: an attempt is cut at the failover deadline, a peer's connect sooner.
    let d = Deadlines::new(ten, true);
    assert_eq!(d.attempt, FAILOVER_ATTEMPT_TIMEOUT);
    assert_eq!(d.peer_connect, PEER_CONNECT_TIMEOUT);
    // A single source gets the whole timeout.
    assert_eq!(Deadlines::new(ten, false).attempt, ten);
    // Short timeouts bound everything.
    let short = Deadlines::new(Duration::from_millis(500), true);
    assert_eq!(short.attempt, Duration::from_millis(500));
    assert_eq!(short.peer_connect, Duration::from_millis(500));
}
