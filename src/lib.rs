//! payroute: a smart-routing payment proxy. See ARCHITECTURE.md for the map.

pub(crate) mod config;
pub mod mock;
pub(crate) mod routing;
