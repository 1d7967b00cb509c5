//! Criterion benchmarks of the pure parts of a payment's hot path:
//! scoring and ranking over 3 and 50 channels, the rate-limit check, the
//! daily reservation, fact extraction.
//! `cargo bench --features bench-api --bench hot_path`.
//! They reach crate internals through `payroute::bench_api` (unstable,
//! hidden). Numbers go to BENCHMARKS.md; CI never asserts on them.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use payroute::bench_api::{Daily, Facts, RateLimit, Routing};

fn routing(c: &mut Criterion) {
    let mut g = c.benchmark_group("routing");
    for n in [3usize, 50] {
        let r = Routing::new(n);
        g.throughput(Throughput::Elements(1));
        g.bench_with_input(BenchmarkId::new("rank", n), &r, |b, r| {
            b.iter(|| r.rank(black_box(12_500)))
        });
        g.bench_with_input(BenchmarkId::new("score_all", n), &r, |b, r| {
            b.iter(|| r.score_all(black_box(12_500)))
        });
    }
    g.finish();
}

fn limits(c: &mut Criterion) {
    let mut g = c.benchmark_group("limits");
    for merchants in [1_000usize, 100_000] {
        let rl = RateLimit::new(merchants);
        let mut i = 0usize;
        g.bench_function(BenchmarkId::new("rate_check", merchants), |b| {
            b.iter(|| {
                i = i.wrapping_add(7919);
                rl.check(black_box(i))
            })
        });
        let daily = Daily::new(merchants);
        let mut j = 0usize;
        g.bench_function(BenchmarkId::new("daily_reserve_commit", merchants), |b| {
            b.iter(|| {
                j = j.wrapping_add(7919);
                daily.reserve_commit(black_box(j), 1250)
            })
        });
        g.bench_function(BenchmarkId::new("daily_reserve_release", merchants), |b| {
            b.iter(|| {
                j = j.wrapping_add(7919);
                daily.reserve_release(black_box(j), 1250)
            })
        });
    }
    g.finish();
}

fn facts(c: &mut Criterion) {
    let mut g = c.benchmark_group("facts");
    let f = Facts::default();
    let small = br#"{"amount":1250,"currency":"CNY","order_id":"w5f3a9c1b-1-123456","note":"wrk"}"#.to_vec();
    let mut big = String::from(r#"{"amount":1250,"currency":"CNY","order_id":"o-1","items":["#);
    for i in 0..40 {
        if i > 0 {
            big.push(',');
        }
        big.push_str(&format!(
            r#"{{"sku":"sku-{i}","qty":{i},"price":{},"name":"Item number {i} with a longer description"}}"#,
            i * 100
        ));
    }
    big.push_str(r#"],"customer":{"id":"c-1","email":"a@example.com","address":{"city":"Hangzhou"}}}"#);
    for (name, body) in [("small_90B", small), ("cart_4KB", big.into_bytes())] {
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(name, |b| b.iter(|| f.extract(black_box(&body))));
    }
    g.finish();
}

criterion_group!(benches, routing, limits, facts);
criterion_main!(benches);
