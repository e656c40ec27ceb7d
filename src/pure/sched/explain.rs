//! How the scheduler weighs each source for one block, as text for trace logs
//! ([`Scheduler::explain`]): why a block went where it went.

use std::time::Instant;

use super::scheduler::Scheduler;
use super::source::SourceClass;

impl Scheduler {
    /// How each source that holds `block` weighs for it now, needed by `deadline`:
    /// for trace logs of the choice (class, room, queue, time to deliver, rate).
    pub fn explain(&self, block: u64, deadline: Option<Instant>, now: Instant) -> String {
        let mut out = String::new();
        for c in self.candidates(block, None, (0, deadline), now) {
            let s = self.source(c.id);
            out.push_str(&format!(
                "[{}{} room={} queued={} eta={}ms rate={:.0}k{}{}] ",
                match c.class {
                    SourceClass::Peer => "peer",
                    SourceClass::Server => "server",
                },
                c.id,
                c.room,
                s.outstanding,
                c.eta.saturating_duration_since(now).as_millis(),
                c.rate / 1e3,
                if c.measured { "" } else { " unmeasured" },
                if s.dropped { " dropped" } else { "" },
            ));
        }
        out
    }
}
