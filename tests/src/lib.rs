//! Helpers for Footprint's end-to-end tests, one module per job:
//!
//! - [`services`]: where the broker, Redis and MySQL are, unique names per
//!   test, and clean-up;
//! - [`topics`]: pre-loading, live-producing and reading topics, commits;
//! - [`processes`]: running Footprint in this process or as processes of
//!   its own;
//! - [`http`]: requests to the HTTP services;
//! - [`proxy`]: a TCP proxy a test cuts to stage a store outage;
//! - [`stores`]: what the stores hold, by identity and as dumps;
//! - [`scenario`]: the names, config and files of one store scenario;
//! - [`broker`]: a broker of a test's own, for broker drills;
//! - [`collector`]: the collector as a process, a steady client, and the
//!   check of a topic against what was acknowledged;
//! - [`drill`]: the failure-drill harness;
//! - [`promtool`]: Prometheus' linter on `/metrics`.
//!
//! Endpoints come from the environment that `scripts/services.sh` writes
//! (`FOOTPRINT_BROKERS`); `scripts/test.sh` starts the services and runs the
//! tests. A test that needs a broker fails with a clear message without one.

pub mod broker;
pub mod collector;
pub mod drill;
pub mod http;
pub mod processes;
pub mod promtool;
pub mod proxy;
pub mod scenario;
pub mod services;
pub mod stores;
pub mod topics;
pub mod webdriver;

pub use broker::OwnBroker;
pub use http::{get_json, get_json_status, get_text, http, http_as};
pub use processes::{
    Running, address_in_log, admin_addr_from_log, footprint_bin, free_addresses, run_footprint_ok,
    run_to_end, spawn_footprint, spawn_footprint_env, spawn_worker, wait_exit, wait_until,
};
pub use proxy::TcpProxy;
pub use scenario::Scenario;
pub use services::{
    brokers, delete_redis_prefix, drop_database, host_port, kafka, mysql_url, redis_url, unique,
};
pub use stores::{
    StoredRows, Stores, differences, dump_mysql, dump_redis, recent_by_user, windows_by_id,
};
pub use topics::{
    Read, StagedStream, committed_total, committed_total_at, generated, held_parts, preload,
    produce_live, produce_live_until, produce_slice, read_all, read_all_from,
};
pub use webdriver::Browser;
