//! One module per subcommand; each exposes an `execute` that returns how
//! the command ended.

pub mod run;
pub mod sandbox;
