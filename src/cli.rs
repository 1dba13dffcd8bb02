//! Command line: `run` (default), `check`, `test`, `explain`, `bundle`, `demo`.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, Parser)]
#[command(
    name = "portcullis",
    version,
    about = "Authorization enforcement gateway: JWT authentication and Cedar authorization in front of unmodified HTTP APIs"
)]
pub struct Cli {
    /// The gateway's own log on stderr: `text` lines, or one JSON object a line (`json`) for a
    /// log pipeline. The level filter is `RUST_LOG` (default `info`).
    #[arg(
        long,
        global = true,
        value_enum,
        env = "PORTCULLIS_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: Format,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (the default when no subcommand is given).
    Run {
        /// Path to portcullis.toml; routes.toml and policies/ are found relative to it.
        #[arg(
            long,
            short,
            env = "PORTCULLIS_CONFIG",
            default_value = "portcullis.toml"
        )]
        config: PathBuf,
        /// Take over the listening sockets of a running instance (pingora graceful upgrade).
        #[arg(long)]
        upgrade: bool,
        /// Listen here instead of `[server] listen`.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Serve `/metrics`, `/healthz` and `/readyz` here instead of `[admin] listen`.
        #[arg(long)]
        admin_listen: Option<std::net::SocketAddr>,
    },
    /// Load and validate the configuration, routes and policies, print what was loaded, and exit
    /// non-zero on any problem.
    Check {
        #[arg(
            long,
            short,
            env = "PORTCULLIS_CONFIG",
            default_value = "portcullis.toml"
        )]
        config: PathBuf,
        /// `text` for people, `json` for machines.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        /// Exit non-zero on warnings too.
        #[arg(long)]
        strict: bool,
    },
    /// Run the policy test suites (`<policies>/tests/*.toml`) through the real pipeline, without
    /// sockets or identity providers; exit non-zero if any case fails.
    Test {
        #[arg(
            long,
            short,
            env = "PORTCULLIS_CONFIG",
            default_value = "portcullis.toml"
        )]
        config: PathBuf,
        /// Suite files or directories (default: the `tests` directory of the policies).
        suites: Vec<PathBuf>,
    },
    /// Take one request through the pipeline and print every stage: canonical path, route,
    /// Cedar principal (parents, attributes), action, resource, context, decision, the policies
    /// that determined it and any evaluation errors.
    Explain {
        #[arg(
            long,
            short,
            env = "PORTCULLIS_CONFIG",
            default_value = "portcullis.toml"
        )]
        config: PathBuf,
        /// Request method, e.g. GET.
        method: String,
        /// Request target: path with an optional query, e.g. /lists/l1/tasks/t9?view=full.
        target: String,
        /// A JSON file of token claims, signed with a key generated for the run.
        #[arg(long, conflicts_with = "token")]
        claims: Option<PathBuf>,
        /// A real bearer token, verified with the issuer's keys (fetched now).
        #[arg(long)]
        token: Option<String>,
        #[arg(long)]
        host: Option<String>,
        /// A request header, "name: value"; repeatable.
        #[arg(long = "header", short = 'H')]
        headers: Vec<String>,
        #[arg(long, default_value = "127.0.0.1")]
        client_ip: IpAddr,
    },
    /// Policy bundles for a fleet: build, push, sign (and make a signing key).
    #[command(subcommand)]
    Bundle(BundleCommand),
    /// Start the demo in one process: the gateway with this repository's configuration, a sample
    /// tasks API behind it and a development token issuer, then print curl lines to try.
    #[cfg(feature = "demo")]
    Demo {
        /// Path to the demo's portcullis.toml.
        #[arg(
            long,
            short,
            env = "PORTCULLIS_CONFIG",
            default_value = "portcullis.toml"
        )]
        config: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum BundleCommand {
    /// Check the configuration, run the policy test suites, and pack routes.toml and policies/
    /// into a bundle file; nothing is written if either fails.
    Build {
        #[arg(
            long,
            short,
            env = "PORTCULLIS_CONFIG",
            default_value = "portcullis.toml"
        )]
        config: PathBuf,
        /// The bundle file to write.
        #[arg(long, short)]
        output: PathBuf,
        /// The bundle's version; gateways refuse one older than theirs (default: now, in Unix
        /// seconds).
        #[arg(long)]
        version: Option<u64>,
    },
    /// Push a bundle file to an OCI registry as `REFERENCE` (registry/repository:tag); prints
    /// its digest.
    Push {
        bundle: PathBuf,
        reference: String,
        /// Talk HTTP to the registry.
        #[arg(long)]
        plain_http: bool,
    },
    /// Sign the bundle at `REFERENCE` with an Ed25519 private key (PEM) and push the signature
    /// beside it.
    Sign {
        reference: String,
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        plain_http: bool,
    },
    /// Write a new Ed25519 key pair: `<name>.key` (private, mode 0600) and `<name>.pub`.
    Keygen { name: PathBuf },
}
