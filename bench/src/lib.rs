//! The benchmark harness behind `make bench`.
//!
//! - [`backend`]: `bench-backend`, the tiny upstream every scenario ends at.
//! - [`procs`]: child processes stopped by PID on drop or Ctrl-C, and `/proc` readings
//!   (CPU time, RSS).
//! - [`httpc`]: a minimal blocking HTTP/1.1 client for readiness checks and `POST /reload`.
//! - [`loadgen`]: `wrk` (closed loop) and `oha` (open loop, fixed rate) runs and their output.
//! - [`nginx`], [`haproxy`]: the comparison proxies' configs and processes.
//! - [`runner`]: scenarios, rounds, the shadow and reload scenarios.
//! - [`report`]: medians, ratios, the Markdown table and the JSON file.

pub mod backend;
pub mod haproxy;
pub mod httpc;
pub mod loadgen;
pub mod nginx;
pub mod procs;
pub mod report;
pub mod runner;
