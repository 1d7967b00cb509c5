//! Ingress: the two listeners and what answers on them.
//!
//! [`server`] accepts connections for both the payment listener (served by
//! [`crate::proxy::serve`] on the worker threads of [`crate::runtime`]) and
//! the admin listener ([`admin`]), and drains them on shutdown. The two
//! listeners are separate sockets so that payment traffic can never reach
//! `/-/reload`, and admin can be firewalled apart. [`conn`] bounds each
//! connection's idle and head time and counts payment connections. The
//! admin listener also serves the web console ([`console`]).

pub(crate) mod admin;
pub(crate) mod conn;
pub(crate) mod console;
pub(crate) mod server;
