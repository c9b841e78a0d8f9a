//! pepwrt: a transparent split-TCP performance enhancing proxy for routers.
//! The daemon and its command line are in main.rs; everything else is this
//! library, so that fuzz targets and benchmarks reach the same code.

#![deny(unsafe_code)]

pub mod admission;
pub mod check;
pub mod config;
pub mod control;
pub mod deadline;
pub mod error;
pub mod event_loop;
pub mod link;
pub mod logger;
pub mod nfqueue;
pub mod pool;
pub mod relay;
pub mod ring;
pub mod rules;
pub mod shutdown;
pub mod snoop;
pub mod stats;
pub mod sys;
pub mod token;
pub mod tuple;
pub mod wire;
