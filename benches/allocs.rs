//! Heap allocations per call of each pure hot-path part, counted by a
//! counting global allocator
//! (`cargo bench --features bench-api --bench allocs`). Prints a table;
//! asserts nothing. The whole-request count (hyper, tokio, the state store
//! included) comes from valgrind's DHAT on the running proxy: BENCHMARKS.md.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use payroute::bench_api::{Daily, Facts, RateLimit, Routing};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        BYTES.fetch_add(layout.size() as u64, Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        BYTES.fetch_add(new_size as u64, Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn per_call(name: &str, n: u64, mut f: impl FnMut(u64)) {
    for i in 0..1000 {
        f(i); // warm: first-touch allocations (new keys) are not the steady state
    }
    let (a0, b0) = (ALLOCS.load(Relaxed), BYTES.load(Relaxed));
    for i in 0..n {
        f(i);
    }
    let (a1, b1) = (ALLOCS.load(Relaxed), BYTES.load(Relaxed));
    println!(
        "{name:32} {:>8.2} allocs/call {:>9.1} bytes/call",
        (a1 - a0) as f64 / n as f64,
        (b1 - b0) as f64 / n as f64
    );
}

fn main() {
    // `cargo bench` passes --bench; a filter argument is accepted and ignored.
    let n = 100_000;
    println!("{:32} {:>20} {:>20}", "operation", "", "");
    for ch in [3usize, 50] {
        let r = Routing::new(ch);
        per_call(&format!("routing::rank ({ch} channels)"), n, |_| {
            black_box(r.rank(black_box(12_500)));
        });
    }
    let rl = RateLimit::new(1_000);
    per_call("rate limit check (1k merchants)", n, |i| {
        black_box(rl.check(i as usize));
    });
    let d = Daily::new(1_000);
    per_call("daily reserve+commit", n, |i| {
        black_box(d.reserve_commit(i as usize, 1250));
    });
    let f = Facts::default();
    let body = br#"{"amount":1250,"currency":"CNY","order_id":"w5f3a9c1b-1-123456","note":"wrk"}"#;
    per_call("facts::extract (90-byte body)", n, |_| {
        black_box(f.extract(black_box(body)));
    });
}
