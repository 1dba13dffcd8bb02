//! The `portcullis` binary: parse the command line, load configuration, start.

#![deny(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use portcullis::cli::{BundleCommand, Cli, Command, Format};
use portcullis::server::{load_gateway, run};

/// mimalloc instead of glibc's allocator: a request allocates and frees a few hundred small
/// objects (pingora's buffers and headers, Cedar values, the decision record), and glibc's
/// malloc and free were a sixth of the gateway's CPU per request (loadtest/RESULTS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_log(cli.log_format);
    let command = cli.command.unwrap_or(Command::Run {
        config: std::env::var_os("PORTCULLIS_CONFIG")
            .map_or_else(|| "portcullis.toml".into(), Into::into),
        upgrade: false,
        listen: None,
        admin_listen: None,
    });
    if let Some(config) = config_of(&command) {
        if let Err(e) = std::fs::File::open(config) {
            eprintln!("error: cannot read {}: {e}", config.display());
            return ExitCode::from(EXIT_USAGE);
        }
    }
    match execute(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_PROBLEMS)
        }
    }
}

/// The gateway's own log (not the decision log) on stderr, filtered by `RUST_LOG`: `tracing`'s
/// subscriber, which also takes the `log` records of pingora and the other crates.
fn init_log(format: Format) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let installed = match format {
        Format::Text => builder.try_init(),
        Format::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
    if let Err(e) = installed {
        eprintln!("warning: the log could not be set up: {e}");
    }
}

/// Exit status when the configuration, a check, a policy test or the gateway found a problem.
const EXIT_PROBLEMS: u8 = 1;
/// Exit status of a usage error or an unreadable configuration file (clap exits 2 for the
/// former itself).
const EXIT_USAGE: u8 = 2;

/// The configuration file a command reads, if it reads one.
fn config_of(command: &Command) -> Option<&std::path::Path> {
    match command {
        Command::Run { config, .. }
        | Command::Check { config, .. }
        | Command::Test { config, .. }
        | Command::Explain { config, .. }
        | Command::Bundle(BundleCommand::Build { config, .. }) => Some(config),
        #[cfg(feature = "demo")]
        Command::Demo { config } => Some(config),
        Command::Bundle(_) => None,
    }
}

fn execute(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run {
            config,
            upgrade,
            listen,
            admin_listen,
        } => run_command(&config, upgrade, listen, admin_listen),
        Command::Check {
            config,
            format,
            strict,
        } => check_command(&config, format, strict),
        Command::Test { config, suites } => {
            let gateway = portcullis::offline::OfflineGateway::load(&config)?;
            run_suites(&gateway, suites)
        }
        Command::Bundle(command) => bundle(command),
        Command::Explain {
            config,
            method,
            target,
            claims,
            token,
            host,
            headers,
            client_ip,
        } => explain_command(
            &config,
            portcullis::offline::OfflineRequest {
                method,
                target,
                host,
                headers: parse_headers(&headers)?,
                client_ip,
                caller: portcullis::offline::OfflineCaller::Anonymous,
            },
            claims,
            token,
        ),
        #[cfg(feature = "demo")]
        Command::Demo { config } => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(portcullis::demo::run_demo(&config))?;
            Ok(())
        }
    }
}

/// `portcullis run`: the gateway until it is stopped.
fn run_command(
    config: &Path,
    upgrade: bool,
    listen: Option<SocketAddr>,
    admin_listen: Option<SocketAddr>,
) -> anyhow::Result<()> {
    let mut gateway = load_gateway(config)?;
    if let Some(listen) = listen {
        gateway.settings.listen = listen;
    }
    if let Some(admin_listen) = admin_listen {
        gateway.settings.admin_listen = admin_listen;
    }
    // What `check` warns about (plain-http key sources, unreachable routes), at start.
    for warning in portcullis::check::warnings(&gateway) {
        log::warn!("{warning}");
    }
    run(gateway, upgrade)?;
    Ok(())
}

/// `portcullis check`: load everything, print the summary (or the JSON report) and warnings.
fn check_command(config: &Path, format: Format, strict: bool) -> anyhow::Result<()> {
    // With [bundle] and nothing pulled yet, there are no routes or policies here to check
    // (`bundle build` checked them); `check` never contacts the registry. Settings that do
    // not load are reported below, in the format asked for.
    let settings = portcullis::config::Settings::load(config).ok();
    if let Some(bundle) = settings.as_ref().and_then(|s| s.bundle.as_ref()) {
        if portcullis::bundle::puller::read_active(&bundle.cache_dir).is_none() {
            println!(
                "{}: settings ok; bundle {} (every {} s, {} trusted key(s)): none in {} yet; \
                 the gateway pulls and verifies it at start, and `portcullis bundle build` \
                 checked its routes and policies",
                config.display(),
                bundle.reference,
                bundle.poll.as_secs(),
                bundle.trusted.len(),
                bundle.cache_dir.display()
            );
            return Ok(());
        }
    }
    let loaded = load_gateway(config);
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

/// `--header "name: value"` arguments as pairs.
fn parse_headers(headers: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    headers
        .iter()
        .map(|h| {
            h.split_once(':')
                .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
                .with_context(|| format!("--header {h:?} must look like \"name: value\""))
        })
        .collect()
}

/// `portcullis explain`: one request through the pipeline, offline, as the caller the claims
/// file or token says (anonymous without either).
fn explain_command(
    config: &Path,
    mut request: portcullis::offline::OfflineRequest,
    claims: Option<PathBuf>,
    token: Option<String>,
) -> anyhow::Result<()> {
    use portcullis::offline::{OfflineCaller, OfflineGateway};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let gateway = match (claims, token) {
        (Some(file), _) => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let claims = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a JSON object", file.display()))?;
            request.caller = OfflineCaller::Claims(claims);
            OfflineGateway::load(config)?
        }
        (None, Some(token)) => {
            request.caller = OfflineCaller::Token(token);
            runtime.block_on(OfflineGateway::load_live(config))?
        }
        (None, None) => OfflineGateway::load(config)?,
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

/// Runs the policy test suites (`suites`, or the policies' `tests` directory); an error when a
/// case fails.
fn run_suites(
    gateway: &portcullis::offline::OfflineGateway,
    suites: Vec<std::path::PathBuf>,
) -> anyhow::Result<()> {
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
        gateway,
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

fn bundle(command: BundleCommand) -> anyhow::Result<()> {
    use portcullis::bundle::format::Bundle;
    use portcullis::bundle::registry::Registry;
    use portcullis::bundle::signature::SigningKey;

    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    };
    match command {
        BundleCommand::Build {
            config,
            output,
            version,
        } => {
            let gateway = portcullis::offline::OfflineGateway::load(&config)
                .context("the configuration does not check; no bundle built")?;
            let settings = &gateway.gateway.settings;
            if settings.policies_dir.join("tests").is_dir() {
                run_suites(&gateway, Vec::new()).context("no bundle built")?;
            }
            let version = match version {
                Some(version) => version,
                None => std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)?
                    .as_secs(),
            };
            let bundle = Bundle::pack(&settings.routes_file, &settings.policies_dir, version)?;
            std::fs::write(&output, bundle.to_bytes())
                .with_context(|| format!("cannot write {}", output.display()))?;
            println!(
                "bundle version {version}: {} files written to {}",
                bundle.files.len(),
                output.display()
            );
            Ok(())
        }
        BundleCommand::Push {
            bundle,
            reference,
            plain_http,
        } => {
            let bytes = std::fs::read(&bundle)
                .with_context(|| format!("cannot read {}", bundle.display()))?;
            let parsed = Bundle::from_bytes(&bytes)?;
            let registry = Registry::new(plain_http, registry_auth()?);
            let digest = runtime()?.block_on(registry.push(&reference, &parsed))?;
            println!("{digest}");
            Ok(())
        }
        BundleCommand::Sign {
            reference,
            key,
            plain_http,
        } => {
            let text = std::fs::read_to_string(&key)
                .with_context(|| format!("cannot read {}", key.display()))?;
            let key = SigningKey::from_pem(&text)?;
            let registry = Registry::new(plain_http, registry_auth()?);
            let digest = runtime()?.block_on(registry.sign(&reference, &key))?;
            println!("signed {digest}");
            Ok(())
        }
        BundleCommand::Keygen { name } => {
            let (private, public) = SigningKey::generate()?;
            let private_path = name.with_extension("key");
            let public_path = name.with_extension("pub");
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            std::io::Write::write_all(
                &mut options
                    .open(&private_path)
                    .with_context(|| format!("cannot create {}", private_path.display()))?,
                private.as_bytes(),
            )?;
            std::fs::write(&public_path, public)?;
            println!("{} and {}", private_path.display(), public_path.display());
            Ok(())
        }
    }
}

/// Registry credentials for the push and sign commands: `PORTCULLIS_REGISTRY_USERNAME` and
/// `PORTCULLIS_REGISTRY_PASSWORD`, or anonymous.
fn registry_auth() -> anyhow::Result<oci_client::secrets::RegistryAuth> {
    match (
        std::env::var("PORTCULLIS_REGISTRY_USERNAME"),
        std::env::var("PORTCULLIS_REGISTRY_PASSWORD"),
    ) {
        (Ok(user), Ok(password)) => Ok(oci_client::secrets::RegistryAuth::Basic(user, password)),
        (Err(_), Err(_)) => Ok(oci_client::secrets::RegistryAuth::Anonymous),
        _ => anyhow::bail!(
            "set both PORTCULLIS_REGISTRY_USERNAME and PORTCULLIS_REGISTRY_PASSWORD, or neither"
        ),
    }
}
