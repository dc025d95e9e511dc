//! One module per subcommand. Each exposes `Args` (clap) and `run`, which returns a one-line
//! error message on failure.

pub mod decrypt;
pub mod sim;
pub mod token;

/// A subcommand's failure: the one line printed after `weapp: error: `.
pub type CmdResult = Result<(), String>;
