//! MySQL sink (being written).
