//! Shared helpers of floe's integration tests.
