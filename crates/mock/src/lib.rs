//! A fake payment acquirer on real sockets, for payroute's demo, load tests
//! and tests.
//!
//! Every request gets an [`Answer`], one of two kinds:
//!
//! * **Simulated** ([`Behavior`]): the mock plays an acquirer's API —
//!   payments paid at a success rate, with latency, jitter and hangs; status
//!   queries answered from the orders it was paid; reversals — with random
//!   outcomes. `payroute demo` and the `mock-acquirer` binary (the load
//!   tests' acquirer) run it.
//! * **Scripted** ([`Reply`]): a fixed answer (status, body, delay, hang, the
//!   first few or an even share failing), for every request or, by a rule,
//!   for one method and path ([`MockAcquirer::on`]). Tests script it, usually
//!   with recording on: every request is kept ([`Recorded`]), with in-flight
//!   counts and TLS handshakes ([`Handshake`]), so a test can say exactly what
//!   reached the acquirer.
//!
//! Both kinds state the outcome the same way (status code, and a JSON body
//! whose `status` is `paid`, `declined` or `failed`), so an answer's meaning
//! has one vocabulary, whichever kind produced it.
//!
//! Why a crate of its own: payroute ships without its fake acquirer, and the
//! demo, the `mock-acquirer` binary and the tests share this one.

mod answer;
mod fate;
mod notify;
mod orders;
mod path;
mod record;
mod respond;
mod server;
mod state;

pub use answer::{Answer, Behavior, Reply, Secret};
pub use orders::StatementLine;
pub use record::{Handshake, Recorded};
pub use server::{Builder, Counters, MockAcquirer};

#[cfg(test)]
mod tests;
