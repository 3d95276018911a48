//! Telemetry: Prometheus metrics, per-request JSONL logs and the `/stats` collector.
//!
//! Every request ends with exactly one call into each of these (after the last byte), made by the
//! pipeline; nothing here knows about HTTP handlers or wire formats.

mod handles;
pub mod metrics;
pub mod request_log;
pub mod stats;
mod uncached;

#[cfg(test)]
mod tests {
    /// The lead shares these across request tasks behind `Arc`s.
    #[test]
    fn collectors_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<super::metrics::Metrics>();
        assert_send_sync::<super::metrics::InFlightGuard>();
        assert_send_sync::<super::request_log::RequestLogger>();
        assert_send_sync::<super::stats::Stats>();
    }
}
