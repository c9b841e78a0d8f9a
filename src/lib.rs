//! pepwrt: a transparent split-TCP performance enhancing proxy for routers.
//! The daemon and its command line are in main.rs; everything else is this
//! library, so that fuzz targets and benchmarks reach the same code.

#![deny(unsafe_code)]

// Public: what main.rs and the fuzz targets (tests/fuzz/targets.rs) use.
// The rest is the crate's own.

pub mod admission;
pub(crate) mod channel;
pub mod check;
pub mod config;
pub mod control;
pub(crate) mod deadline;
pub(crate) mod duration;
pub(crate) mod error;
pub mod event_loop;
pub(crate) mod link;
pub mod logger;
pub(crate) mod nfqueue;
pub mod pool;
pub(crate) mod relay;
pub mod rules;
pub(crate) mod shutdown;
pub mod snoop;
pub(crate) mod stats;
pub mod sys;
pub(crate) mod token;
pub(crate) mod tuple;
pub mod wire;
