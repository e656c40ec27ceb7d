//! Unit tests of the pin budget: room, order, shedding, deadlines and fairness.

use super::*;
use std::cell::Cell;

const MIB: u64 = 1 << 20;

fn run<T: 'static>(f: impl std::future::Future<Output = T> + 'static) -> T {
    let io_memory = runtime::preflight(1).expect("io_uring");
    runtime::run_single(io_memory, f).expect("executor")
}

#[test]
fn pins_within_the_budget_are_granted_and_past_it_wait_for_a_release() {
    run(async {
        // 2 MiB blocks: a budget of max(8 MiB, 4 blocks) = 8 MiB.
        let budget = PinBudget::new(2 << 20, Metrics::new(1), 0);
        assert_eq!(budget.limit_bytes(), 8 * MIB);
        let a = budget.writer();
        let mut held = Vec::new();
        for _ in 0..4 {
            let t = a.ticket();
            held.push(a.pin(t, 2 * MIB, Duration::from_secs(1)).await.unwrap());
        }
        assert_eq!(budget.used_bytes(), 8 * MIB);
        // A new writer (not draining: it never wrote) waits for room.
        let b = Rc::new(budget.writer());
        let got = Rc::new(Cell::new(false));
        let (b2, got2) = (b.clone(), got.clone());
        let waiter = runtime::spawn(async move {
            let t = b2.ticket();
            let pin = b2.pin(t, 2 * MIB, Duration::from_secs(5)).await;
            got2.set(pin.is_ok());
            pin
        });
        runtime::sleep(Duration::from_millis(50)).await;
        assert!(
            !got.get(),
            "granted past the budget to a writer that never wrote"
        );
        drop(held.pop());
        let pin = waiter.await;
        assert!(got.get() && pin.is_ok());
        assert_eq!(budget.used_bytes(), 8 * MIB);
        drop(pin);
        drop(held);
        assert_eq!(budget.used_bytes(), 0);
    });
}

#[test]
fn a_writers_blocks_take_their_pins_in_ticket_order() {
    run(async {
        let budget = PinBudget::new(256 << 10, Metrics::new(1), 0);
        let w = Rc::new(budget.writer());
        let (first, second) = (w.ticket(), w.ticket());
        let order = Rc::new(RefCell::new(Vec::new()));
        let (w2, o2) = (w.clone(), order.clone());
        let later = runtime::spawn(async move {
            let p = w2.pin(second, MIB, Duration::from_secs(1)).await;
            o2.borrow_mut().push(second);
            p
        });
        runtime::sleep(Duration::from_millis(20)).await;
        assert!(
            order.borrow().is_empty(),
            "the second block went before the first"
        );
        let p1 = w.pin(first, MIB, Duration::from_secs(1)).await.unwrap();
        order.borrow_mut().push(first);
        let p2 = later.await.unwrap();
        assert_eq!(*order.borrow(), vec![first, second]);
        drop((p1, p2));
    });
}

#[test]
fn a_window_of_tickets_goes_through_without_sleeping_out_the_retry() {
    run(async {
        let budget = PinBudget::new(256 << 10, Metrics::new(1), 0);
        let w = Rc::new(budget.writer());
        let tickets: Vec<u64> = (0..8).map(|_| w.ticket()).collect();
        let started = Instant::now();
        // The later tickets wait for their turn first, as a read-ahead window does.
        let mut waiting = Vec::new();
        for &t in tickets.iter().skip(1).rev() {
            let w = w.clone();
            waiting.push(runtime::spawn(async move {
                w.pin(t, 64 << 10, Duration::from_secs(5)).await.map(drop)
            }));
        }
        runtime::sleep(Duration::from_millis(10)).await;
        drop(
            w.pin(tickets[0], 64 << 10, Duration::from_secs(5))
                .await
                .unwrap(),
        );
        for t in waiting {
            assert!(t.await.is_ok());
        }
        assert!(
            started.elapsed() < PIN_RETRY,
            "the window took {:?}: a ticket slept out the retry",
            started.elapsed()
        );
    });
}

/// A socket whose client never reads.
struct Stuck;

impl futures_lite::AsyncWrite for Stuck {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        _: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Pending
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[test]
fn a_draining_writer_granted_past_the_budget_sheds_a_stalled_holder() {
    run(async {
        let budget = PinBudget::new(256 << 10, Metrics::new(1), 0);
        // A fills the budget and its client stops reading.
        let a = Rc::new(budget.writer());
        let t = a.ticket();
        let held = a.pin(t, 8 * MIB, Duration::from_secs(1)).await.unwrap();
        let a2 = a.clone();
        let stalled = runtime::spawn(async move {
            let r = a2
                .write(&mut Stuck, &[&[0u8; 1024]], Duration::from_secs(30))
                .await;
            drop(held);
            r
        });
        runtime::sleep(SHED_AFTER_STALL + Duration::from_millis(100)).await;
        // B's client reads: it gets its next block past the budget at once, and
        // A, stalled for longer than SHED_AFTER_STALL, is shed for it.
        let b = budget.writer();
        b.write(
            &mut futures::io::sink(),
            &[&[0u8; 1024]],
            Duration::from_secs(1),
        )
        .await
        .unwrap();
        let t = b.ticket();
        let pin = b.pin(t, MIB, Duration::from_millis(100)).await;
        assert!(pin.is_ok(), "a draining writer waited");
        assert_eq!(stalled.await.err(), Some(WriteFail::Shed));
        drop(pin);
        assert_eq!(budget.used_bytes(), 0);
    });
}

/// Issue 14: a new connection to a busy origin (twelve viewers' caches) never got a
/// block: its readers' writers kept the budget full, each taking its next pin as
/// soon as it released one (past the budget, while draining), and the newcomer,
/// woken by the release, always found it full again.
#[test]
fn a_new_writer_gets_room_while_reading_writers_keep_the_budget_full() {
    run(async {
        let budget = PinBudget::new(256 << 10, Metrics::new(1), 0);
        let stop = Rc::new(Cell::new(false));
        let mut readers = Vec::new();
        for _ in 0..4 {
            let (w, stop) = (Rc::new(budget.writer()), stop.clone());
            readers.push(runtime::spawn(async move {
                while !stop.get() {
                    let t = w.ticket();
                    let pin = w.pin(t, 2 * MIB, Duration::from_secs(5)).await;
                    runtime::sleep(Duration::from_millis(5)).await;
                    drop(pin);
                    let sink = &mut futures::io::sink();
                    let _ = w.write(sink, &[&[0u8; 1024]], Duration::from_secs(1)).await;
                }
            }));
        }
        runtime::sleep(Duration::from_millis(50)).await;
        let newcomer = budget.writer();
        let t = newcomer.ticket();
        let pin = newcomer.pin(t, MIB / 4, Duration::from_secs(2)).await;
        stop.set(true);
        assert!(pin.is_ok(), "a new connection never got room");
        drop(pin);
        for r in readers {
            r.await;
        }
    });
}

#[test]
fn a_pin_that_finds_no_room_in_time_fails() {
    run(async {
        let budget = PinBudget::new(256 << 10, Metrics::new(1), 0);
        let a = budget.writer();
        let t = a.ticket();
        let _full = a.pin(t, 8 * MIB, Duration::from_secs(1)).await.unwrap();
        let b = budget.writer();
        let t = b.ticket();
        let r = b.pin(t, MIB, Duration::from_millis(300)).await;
        assert_eq!(r.err(), Some(WriteFail::Socket));
    });
}
