//! End-to-end tests: the built `payroute` binary against fake acquirers
//! (`payroute-mock`) over real sockets, one module per area, driven by
//! `payroute-testkit`. One test binary, so the harness is compiled and
//! linked once.

mod abuse;
mod admin;
mod check;
mod cli;
mod console;
mod epay;
mod errors;
mod failover;
mod fleet;
mod forwarding;
mod harness;
mod journal;
mod lifecycle_crash;
mod limits;
mod never_twice;
mod notifications_in;
mod notifications_out;
mod ops;
mod policies;
mod probe;
mod reconcile;
mod refunds;
mod reload;
mod routing;
mod secrets;
mod simulate;
mod sweeper;
mod tls;

use payroute_testkit::Payroute;

/// The binary under test, as cargo built it for this test run.
const PAYROUTE: Payroute = Payroute::at(env!("CARGO_BIN_EXE_payroute"));
