//! Footprint's query service: the results the workers write, served to
//! apps over HTTP/JSON (`footprint serve`).
//!
//! Reads go to Redis first and fall back to MySQL when Redis misses, is
//! slow, is down or is degraded ([`service`]). Each store sits behind a
//! circuit breaker (the sinks' [`Breaker`](footprint_sinks::util::breaker::Breaker))
//! and a bulkhead (a cap on concurrent reads; a caller never waits for a
//! store that is known to be down or saturated). An in-memory cache keeps
//! final windows long and open windows and recent activity briefly, and
//! concurrent misses for one key share one store read. Apps are
//! authenticated by bearer tokens and rate-limited per app and per client
//! address ([`limits`]); a global cap on requests in flight sheds load with
//! a fast 503.
//!
//! The crate reads the stores' layout through the sinks crate, which owns
//! it, and knows nothing of Kafka or the dataflow: `bin` wires it to the
//! config and to the degrade switches, which it follows through the control
//! topic like every other program.
//!
//! | module | job |
//! |---|---|
//! | [`settings`] | what the service is told: timeouts, limits, tokens, cache |
//! | [`stores`] | one read of Redis (async, pipelined) or MySQL (a blocking pool) |
//! | [`service`] | the fallback between them, breakers, bulkheads, cache |
//! | [`limits`] | tokens, rate limits, the global in-flight cap |
//! | [`routes`] | the HTTP API and its error answers |
//! | [`events`] | metrics and logs |

pub mod events;
pub mod limits;
pub mod model;
pub mod routes;
pub mod service;
pub mod settings;
pub mod stores;

pub use routes::{ServeServer, ServeState, serve};
pub use service::QueryService;
pub use settings::ServeSettings;
