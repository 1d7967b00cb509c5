//! `payroute demo` (being written).

use std::process::ExitCode;
use std::time::Duration;

pub(crate) async fn run(_duration: Duration) -> ExitCode {
    ExitCode::FAILURE
}
