//! Telemetry: Prometheus metrics, per-request JSONL logs and the `/stats` collector.
//!
//! Every request ends with exactly one call into each of these (after the last byte), made by the
//! pipeline; nothing here knows about HTTP handlers or wire formats.

pub mod metrics;
pub mod request_log;
pub mod stats;
