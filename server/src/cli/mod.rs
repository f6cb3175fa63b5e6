//! The command line: `countersign serve`, `migrate`, `audit`, `import`, `user`, `token`,
//! `agent`, `evaluate`, `policy check`.

mod commands;
pub mod evaluate;

pub use commands::run;
