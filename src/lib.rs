//! payroute: a smart-routing payment proxy.
//!
//! The modules follow a payment's path; ARCHITECTURE.md is the map.
//!
//! - ingress: [`ingress`] (listeners, admin API) → [`proxy`] (the payment's phases)
//! - payment facts and merchant auth: [`payment`]; never twice: [`state`]
//! - limits: [`limits`] (rate, daily)
//! - routing: [`routing`] (stats, score, breaker, rank)
//! - upstream: [`upstream`] (client, forwarding); TLS both ways: [`tls`]
//! - secrets and card data out of logs: [`config`] (`env:`/`file:`), [`redact`]
//! - observability: [`metrics`]
//! - config and reload: [`config`], [`app`], [`snapshot`], [`reload`]
//! - threads and the OS: [`runtime`] (main runtime, payment workers), [`os`]
//! - composition and tools: [`serve`], [`cli`], [`demo`] (the fake acquirer
//!   it runs is the `payroute-mock` crate), [`reconcile`] (对账),
//!   [`simulate`] (routing policies in virtual time)

pub(crate) mod app;
/// Handles on pure hot-path parts for `benches/`: unstable, not part of the
/// API, compiled only with the `bench-api` feature (which the benches require).
#[cfg(feature = "bench-api")]
#[doc(hidden)]
pub mod bench_api;
pub mod cli;
pub(crate) mod config;
pub(crate) mod demo;
pub(crate) mod epay;
pub(crate) mod error;
/// Entry points into the parsers of hostile input for the cargo-fuzz
/// targets in `fuzz/`: unstable, not part of the API, compiled only with the
/// `fuzz-api` feature (which the fuzz crate enables).
#[cfg(feature = "fuzz-api")]
#[doc(hidden)]
pub mod fuzz_api;
pub(crate) mod ingress;
pub(crate) mod journal;
pub(crate) mod lifecycle;
pub(crate) mod limits;
pub(crate) mod metrics;
pub(crate) mod notify;
pub(crate) mod os;
pub(crate) mod outcome;
pub(crate) mod payment;
pub(crate) mod proxy;
pub(crate) mod reconcile;
pub(crate) mod redact;
pub(crate) mod reload;
pub(crate) mod routing;
pub(crate) mod runtime;
pub(crate) mod serve;
pub(crate) mod simulate;
pub(crate) mod snapshot;
pub(crate) mod state;
pub(crate) mod sweeper;
pub(crate) mod tls;
pub(crate) mod upstream;
