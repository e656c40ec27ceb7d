//! The scheduler's working values: a source weighed for one block ([`Candidate`]),
//! a block waiting for a busy source ([`Waiting`]), and picking the earliest.

use std::time::Instant;

use super::source::{SourceClass, SourceId};

/// Waiting blocks past which stale entries are dropped.
pub(super) const MAX_WAITING: usize = 64;

/// A block waiting for a busy source.
#[derive(Clone, Copy, Debug)]
pub(super) struct Waiting {
    pub(super) source: SourceId,
    pub(super) since: Instant,
    pub(super) deadline: Option<Instant>,
}

/// One source weighed for one block.
#[derive(Clone, Copy, Debug)]
pub(super) struct Candidate {
    pub(super) id: SourceId,
    /// When it would deliver the block if given it now.
    pub(super) eta: Instant,
    /// It may take one more request now.
    pub(super) room: bool,
    /// Its rate was measured (else the prior stands in).
    pub(super) measured: bool,
    /// The rate it is planned with (bytes per second).
    pub(super) rate: f64,
    pub(super) class: SourceClass,
}

/// The candidate that would deliver first (ties: the lower id).
pub(super) fn earliest<'a>(it: impl Iterator<Item = &'a Candidate>) -> Option<Candidate> {
    it.min_by(|a, b| a.eta.cmp(&b.eta).then(a.id.cmp(&b.id)))
        .copied()
}
