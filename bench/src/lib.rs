//! Helpers shared by floe's criterion benches.
