//! Machinery shared by every sink: the degrade switch ([`switch`]), the
//! circuit breaker ([`breaker`]) and the retry policy ([`retry`]).
//!
//! None of it performs I/O; the guarded write path composes these with a
//! sink and the retry topic.

pub mod breaker;
pub mod guard;
pub mod retry;
pub mod switch;
