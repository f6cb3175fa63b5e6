//! The command line's own work, beside the `countersign` binary's argument parsing.

pub mod evaluate;
