//! The `floe` command-line tool's library part: what the tool and the benchmarks share and an
//! embedding program does not need (the I/O bandwidth measurement and the fio runner behind
//! `floe bench-io`). The `floe` crate itself compiles none of this, nor clap, indicatif,
//! plotters or the tool's logging.

#![warn(missing_docs)]

pub mod bench_io;
