//! Redis sink (being written).
