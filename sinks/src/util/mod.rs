//! Machinery shared by every sink: the degrade switch ([`switch`]), the
//! circuit breaker ([`breaker`]) and the retry policy ([`retry`]).
//!
//! The switch, breaker and retry policy perform no I/O; [`guard`] composes
//! them with a store sink and a [`guard::Divert`] (the retry topic) into the
//! write path every store sink runs behind.

pub mod breaker;
pub mod guard;
pub mod retry;
pub mod switch;
