//! Integration tests: the real gateway on 127.0.0.1:0 against real mock upstreams on 127.0.0.1:0.
//! One test binary (faster to link); modules by feature.

#![expect(
    clippy::unwrap_used,
    reason = "a test fails loudly on the first unexpected error"
)]

mod support;

mod agent;
mod bad_input;
mod binary;
mod bounds;
mod cache;
mod conversion;
mod count_tokens;
mod deploy;
mod echo;
mod fleet;
mod h1_reference;
mod health_checks;
mod http1;
mod layout;
mod limits;
mod ops_docs;
mod ops_logs;
mod ops_metrics;
mod ops_shutdown;
mod passthrough;
mod redis;
mod resil;
mod responses;
mod sdk;
mod stream_end;
mod upstream_h1;
