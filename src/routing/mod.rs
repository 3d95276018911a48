//! Resilient upstream pools: instance selection, per-instance circuit breakers, live instance state.
//!
//! - [`balance`]: which instance to try first (round robin, weighted, least connections, latency), pure.
//! - [`health`]: circuit breaker per instance (faults in a window open it, half-open probe, backoff).
//! - [`route`]: model name → backend (alias, backend name, endpoint default, default backend).
//! - [`instances`]: state that must survive config reloads (breaker, in-flight count, latency estimate).
//! - [`affinity`]: `prefix_affinity` — session/prefix keys, rendezvous hashing with bounded load, the
//!   table of moved sessions (shared through Redis).
//! - [`engine_load`]: the instances' own load, scraped from their vLLM/llama.cpp metrics.
//! - [`admission`]: per-instance `max_in_flight` with a bounded FIFO wait at the gateway.
//!
//! Per request: build `InstanceView`s from the snapshot's `Arc<InstanceState>`s, ask the `Balancer` for an
//! order, then for each instance `breaker.try_acquire(now)` → send → `on_success`/`on_failure`; when every
//! instance is rejected, try them anyway in that order (ejection never empties a pool).

pub mod admission;
pub mod affinity;
pub mod balance;
pub mod engine_load;
pub mod health;
pub mod instances;
pub mod route;
