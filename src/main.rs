//! The `portcullis` binary: parse the command line, load configuration, start.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use portcullis::cli::{Cli, Command, Format};
use portcullis::server::{load_gateway, run};

/// mimalloc instead of glibc's allocator: a request allocates and frees a few hundred small
/// objects (pingora's buffers and headers, Cedar values, the decision record), and glibc's
/// malloc and free were a sixth of the gateway's CPU per request (loadtest/RESULTS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Run {
        config: "portcullis.toml".into(),
        upgrade: false,
    });
    match execute(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn execute(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run { config, upgrade } => {
            let gateway = load_gateway(&config)?;
            run(gateway, upgrade)?;
            Ok(())
        }
        Command::Check {
            config,
            format,
            strict,
        } => {
            let loaded = load_gateway(&config);
            let warnings = loaded
                .as_ref()
                .map(portcullis::check::warnings)
                .unwrap_or_default();
            match (format, loaded) {
                (Format::Json, loaded) => {
                    let errors = loaded.as_ref().err().map(|e| e.problems.clone());
                    let errors = errors.unwrap_or_default();
                    println!("{}", portcullis::check::json_report(&errors, &warnings));
                    if !errors.is_empty() {
                        anyhow::bail!("configuration has {} problem(s)", errors.len());
                    }
                }
                (Format::Text, loaded) => {
                    let gateway = loaded?;
                    print!("{}", portcullis::check::summary(&gateway));
                    for warning in &warnings {
                        eprintln!("warning: {warning}");
                    }
                }
            }
            if strict && !warnings.is_empty() {
                anyhow::bail!("{} warning(s) and --strict", warnings.len());
            }
            Ok(())
        }
        Command::Test { config, suites } => {
            let gateway = portcullis::offline::OfflineGateway::load(&config)?;
            let mut files = Vec::new();
            let dirs = if suites.is_empty() {
                vec![gateway.gateway.settings.policies_dir.join("tests")]
            } else {
                suites
            };
            for path in dirs {
                if path.is_dir() {
                    files.extend(portcullis::policy_test::suite_files(&path)?);
                } else {
                    files.push(path);
                }
            }
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let mut report = String::new();
            let summary = runtime.block_on(portcullis::policy_test::run_suites(
                &gateway,
                &files,
                &mut report,
            ))?;
            print!("{report}");
            println!("{} passed, {} failed", summary.passed, summary.failed);
            if summary.failed > 0 {
                anyhow::bail!("{} policy test case(s) failed", summary.failed);
            }
            Ok(())
        }
        Command::Explain {
            config,
            method,
            target,
            claims,
            token,
            host,
            headers,
            client_ip,
        } => {
            use portcullis::offline::{OfflineCaller, OfflineGateway, OfflineRequest};
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (gateway, caller) = match (claims, token) {
                (Some(file), _) => {
                    let text = std::fs::read_to_string(&file)
                        .with_context(|| format!("cannot read {}", file.display()))?;
                    let claims = serde_json::from_str(&text)
                        .with_context(|| format!("{} is not a JSON object", file.display()))?;
                    (
                        OfflineGateway::load(&config)?,
                        OfflineCaller::Claims(claims),
                    )
                }
                (None, Some(token)) => (
                    runtime.block_on(OfflineGateway::load_live(&config))?,
                    OfflineCaller::Token(token),
                ),
                (None, None) => (OfflineGateway::load(&config)?, OfflineCaller::Anonymous),
            };
            let headers = headers
                .iter()
                .map(|h| {
                    h.split_once(':')
                        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
                        .with_context(|| format!("--header {h:?} must look like \"name: value\""))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let request = OfflineRequest {
                method,
                target,
                host,
                headers,
                client_ip,
                caller,
            };
            let snapshot = gateway.gateway.snapshot();
            let outcome = runtime.block_on(gateway.evaluate(&snapshot, &request))?;
            print!(
                "{}",
                portcullis::explain::render(
                    &request,
                    &outcome,
                    &snapshot,
                    &gateway.gateway.settings.realm
                )
            );
            Ok(())
        }
        Command::Demo { config } => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(portcullis::demo::run_demo(&config))?;
            Ok(())
        }
    }
}
