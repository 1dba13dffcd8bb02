//! Command line: `run` (default), `check`, `test`, `explain`, `demo`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "portcullis",
    version,
    about = "Authorization enforcement gateway: JWT authentication and Cedar authorization in front of unmodified HTTP APIs"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (the default when no subcommand is given).
    Run {
        /// Path to portcullis.toml; routes.toml and policies/ are found relative to it.
        #[arg(long, short, default_value = "portcullis.toml")]
        config: PathBuf,
        /// Take over the listening sockets of a running instance (pingora graceful upgrade).
        #[arg(long)]
        upgrade: bool,
    },
    /// Load and validate the configuration, routes and policies, print what was loaded, and exit
    /// non-zero on any problem.
    Check {
        #[arg(long, short, default_value = "portcullis.toml")]
        config: PathBuf,
    },
    /// Run the policy test suites (`<policies>/tests/*.toml`) through the real pipeline, without
    /// sockets or identity providers; exit non-zero if any case fails.
    Test {
        #[arg(long, short, default_value = "portcullis.toml")]
        config: PathBuf,
        /// Suite files or directories (default: the `tests` directory of the policies).
        suites: Vec<PathBuf>,
    },
    /// Start the demo in one process: the gateway with this repository's configuration, a sample
    /// tasks API behind it and a development token issuer, then print curl lines to try.
    Demo {
        /// Path to the demo's portcullis.toml.
        #[arg(long, short, default_value = "portcullis.toml")]
        config: PathBuf,
    },
}
