//! Unconfigured pipeline phases cost nothing per request: running the empty `admit` and
//! `cache lookup` phases (async, so a configured stage may wait on Redis) allocates nothing.
//! Its own test binary, because it installs a counting global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::future::Future;
use std::pin::pin;
use std::task::{Context as TaskContext, Poll, Waker};
use switchboard::context::Context;
use switchboard::error::GatewayError;
use switchboard::openai::RequestBody;
use switchboard::pipeline::{Admit, Stages};

struct Counting;

thread_local! {
    /// Allocations made on this thread while counting is on (`None`: not counting).
    static ALLOCATIONS: Cell<Option<usize>> = const { Cell::new(None) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get().map(|n| n + 1)));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// How many allocations `f` makes on this thread.
fn allocations(f: impl FnOnce()) -> usize {
    ALLOCATIONS.with(|n| n.set(Some(0)));
    f();
    ALLOCATIONS.with(|n| n.replace(None)).unwrap_or(0)
}

/// Polls a future that never waits to its end, without a runtime (a runtime allocates).
fn run<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    match fut
        .as_mut()
        .poll(&mut TaskContext::from_waker(Waker::noop()))
    {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("an in-memory stage waited"),
    }
}

struct Allow;

#[async_trait::async_trait]
impl Admit for Allow {
    async fn admit(&self, _ctx: &mut Context, _body: &RequestBody<'_>) -> Result<(), GatewayError> {
        Ok(())
    }
}

#[test]
fn unconfigured_admit_and_cache_phases_allocate_nothing() {
    let body = RequestBody::parse(br#"{"model":"m","messages":[]}"#).unwrap();
    let mut ctx = Context::default();

    let empty = Stages::default();
    let n = allocations(|| {
        for _ in 0..100 {
            run(empty.admit(&mut ctx, &body)).unwrap();
            assert!(run(empty.cache_lookup(&mut ctx, &body, "m"))
                .unwrap()
                .is_none());
        }
    });
    assert_eq!(n, 0, "the unconfigured phases allocated");

    // The counter does see a configured async stage's boxed future: the zero above is real.
    let one = Stages::default().admit_with(Allow);
    let n = allocations(|| run(one.admit(&mut ctx, &body)).unwrap());
    assert!(n >= 1, "a configured stage's future is boxed, counted {n}");
}
