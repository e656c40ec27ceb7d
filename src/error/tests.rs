//! Unit tests of the error model: every classification of [`FetchError`] and every
//! mapping to SPP codes, HTTP statuses and exit codes.

use std::net::SocketAddr;

use super::*;

fn addr() -> SocketAddr {
    "127.0.0.1:1111".parse().unwrap()
}

fn io() -> std::io::Error {
    std::io::Error::from(std::io::ErrorKind::ConnectionRefused)
}

fn remote(code: ErrorCode) -> FetchError {
    FetchError::Remote {
        addr: addr(),
        code,
        message: "m".into(),
    }
}

fn connect_timeout() -> FetchError {
    FetchError::Timeout {
        addr: addr(),
        what: CONNECT_WHAT,
        ms: 1500,
    }
}

fn data_timeout() -> FetchError {
    FetchError::Timeout {
        addr: addr(),
        what: "block data",
        ms: 3000,
    }
}

fn digest() -> FetchError {
    FetchError::Digest {
        addr: addr(),
        block: 7,
        algo: "sha256",
    }
}

#[test]
fn upstream_errors_say_what_the_downstream_is_told() {
    use UpstreamErrorKind as K;
    let cases = [
        (
            FetchError::Connect {
                addr: addr(),
                source: io(),
            },
            K::Unreachable,
            502,
            ErrorCode::UpstreamFailed,
        ),
        (
            FetchError::Closed { addr: addr() },
            K::Unreachable,
            502,
            ErrorCode::UpstreamFailed,
        ),
        (
            FetchError::Io {
                addr: addr(),
                source: io(),
            },
            K::Unreachable,
            502,
            ErrorCode::UpstreamFailed,
        ),
        (data_timeout(), K::TimedOut, 504, ErrorCode::UpstreamFailed),
        (
            remote(ErrorCode::Forbidden),
            K::Refused,
            403,
            ErrorCode::Forbidden,
        ),
        (
            remote(ErrorCode::NotCachedHere),
            K::Refused,
            403,
            ErrorCode::Forbidden,
        ),
        (
            remote(ErrorCode::NotFound),
            K::NotFound,
            404,
            ErrorCode::NotFound,
        ),
        (
            remote(ErrorCode::Busy),
            K::Failed,
            502,
            ErrorCode::UpstreamFailed,
        ),
        (
            FetchError::Protocol {
                addr: addr(),
                message: "x".into(),
            },
            K::Failed,
            502,
            ErrorCode::UpstreamFailed,
        ),
        (digest(), K::Failed, 502, ErrorCode::UpstreamFailed),
    ];
    for (e, kind, status, code) in cases {
        let u = e.to_upstream_error();
        assert_eq!(u.kind, kind, "{e}");
        assert_eq!(u.message, e.to_string());
        let r = Refusal::Upstream(u);
        assert_eq!(r.http_status(), status, "{e}");
        assert_eq!(r.spp_code(), code, "{e}");
        assert_eq!(e.addr(), addr());
    }
}

#[test]
fn only_transient_failures_move_on_to_the_next_address() {
    assert!(FetchError::Connect {
        addr: addr(),
        source: io()
    }
    .retry_next_address());
    assert!(FetchError::Closed { addr: addr() }.retry_next_address());
    assert!(data_timeout().retry_next_address());
    assert!(connect_timeout().retry_next_address());
    for code in [
        ErrorCode::Busy,
        ErrorCode::UpstreamFailed,
        ErrorCode::Internal,
    ] {
        assert!(remote(code).retry_next_address(), "{code:?}");
    }
    // The file's answer is the same at every address.
    for code in [
        ErrorCode::NotFound,
        ErrorCode::Forbidden,
        ErrorCode::NotCachedHere,
    ] {
        assert!(!remote(code).retry_next_address(), "{code:?}");
    }
    assert!(!digest().retry_next_address());
}

#[test]
fn failures_count_for_their_source_by_kind_and_class() {
    use SourceClass::{Peer, Server};
    assert_eq!(
        remote(ErrorCode::NotFound).source_failure(Server),
        Failure::NotHeld
    );
    assert_eq!(
        remote(ErrorCode::NotCachedHere).source_failure(Peer),
        Failure::NotHeld
    );
    assert_eq!(
        remote(ErrorCode::VersionChanged).source_failure(Server),
        Failure::BadBlock
    );
    assert_eq!(
        remote(ErrorCode::Busy).source_failure(Server),
        Failure::Error
    );
    assert_eq!(digest().source_failure(Peer), Failure::BadBlock);
    assert_eq!(data_timeout().source_failure(Peer), Failure::Error);
    // A server that cannot be reached loses what it had outstanding; a peer that
    // refused is dropped for the file, one that did not connect in time only fails
    // the attempt (a lost SYN on a congested uplink is sent again; the cache's
    // follow-up gives the verdict).
    let refused = FetchError::Connect {
        addr: addr(),
        source: io(),
    };
    assert_eq!(refused.source_failure(Server), Failure::Closed);
    assert_eq!(refused.source_failure(Peer), Failure::Unreachable);
    assert_eq!(connect_timeout().source_failure(Server), Failure::Error);
    assert_eq!(connect_timeout().source_failure(Peer), Failure::Error);
    assert!(connect_timeout().is_connect_timeout() && !refused.is_connect_timeout());
}

#[test]
fn peers_are_reported_for_bad_data_and_for_being_unreachable_only() {
    assert_eq!(digest().peer_problem(), Some(PeerProblem::BadData));
    assert_eq!(
        connect_timeout().peer_problem(),
        Some(PeerProblem::Unreachable)
    );
    assert_eq!(
        FetchError::Connect {
            addr: addr(),
            source: io()
        }
        .peer_problem(),
        Some(PeerProblem::Unreachable)
    );
    assert_eq!(data_timeout().peer_problem(), None);
    assert_eq!(remote(ErrorCode::NotFound).peer_problem(), None);
    assert_eq!(FetchError::Closed { addr: addr() }.peer_problem(), None);
}

#[test]
fn get_exits_with_a_code_per_kind_of_failure() {
    assert_eq!(remote(ErrorCode::NotFound).exit_code(), exit::NOT_FOUND);
    assert_eq!(
        FetchError::Connect {
            addr: addr(),
            source: io()
        }
        .exit_code(),
        exit::CONNECT
    );
    assert_eq!(data_timeout().exit_code(), exit::TIMEOUT);
    assert_eq!(digest().exit_code(), exit::INTEGRITY);
    assert_eq!(remote(ErrorCode::Internal).exit_code(), exit::FAILED);
}

#[test]
fn refusals_map_to_one_code_and_status_each() {
    let cases = [
        (Refusal::NotFound("a".into()), ErrorCode::NotFound, 404),
        (Refusal::Forbidden("a".into()), ErrorCode::Forbidden, 403),
        (
            Refusal::NotCached("a".into()),
            ErrorCode::NotCachedHere,
            403,
        ),
        (Refusal::Busy("a".into()), ErrorCode::Busy, 503),
        (Refusal::Internal("a".into()), ErrorCode::Internal, 500),
    ];
    for (r, code, status) in cases {
        assert_eq!(r.spp_code(), code, "{r}");
        assert_eq!(r.http_status(), status, "{r}");
    }
}

#[test]
fn block_errors_answer_a_get_with_one_code_each() {
    assert_eq!(
        BlockError::Changed.spp_answer(3).0,
        ErrorCode::VersionChanged
    );
    assert_eq!(
        BlockError::NotCached.spp_answer(3).0,
        ErrorCode::NotCachedHere
    );
    assert_eq!(BlockError::Busy(4096).spp_answer(3).0, ErrorCode::Busy);
    assert!(BlockError::Busy(4096)
        .spp_answer(3)
        .1
        .contains("4096 blocks"));
    assert_eq!(BlockError::ShardGone.spp_answer(3).0, ErrorCode::Internal);
    let gone = BlockError::Upstream(remote(ErrorCode::NotFound).to_upstream_error());
    assert_eq!(gone.spp_answer(3).0, ErrorCode::NotFound);
    // A refusal met while fetching a block keeps its upstream classification.
    let r = Refusal::Upstream(data_timeout().to_upstream_error());
    assert!(
        matches!(BlockError::from(r), BlockError::Upstream(u) if u.kind == UpstreamErrorKind::TimedOut)
    );
    assert!(matches!(
        BlockError::from(Refusal::Busy("x".into())),
        BlockError::Io(_)
    ));
}

#[test]
fn a_copy_for_every_waiting_request_keeps_kind_and_message() {
    let all = [
        FetchError::Connect {
            addr: addr(),
            source: io(),
        },
        FetchError::Io {
            addr: addr(),
            source: io(),
        },
        FetchError::Closed { addr: addr() },
        data_timeout(),
        remote(ErrorCode::Busy),
        digest(),
    ];
    for e in all {
        let c = e.clone();
        assert_eq!(c.to_string(), e.to_string());
        assert_eq!(c.to_upstream_error(), e.to_upstream_error());
        assert_eq!(
            c.source_failure(SourceClass::Peer),
            e.source_failure(SourceClass::Peer)
        );
    }
}
