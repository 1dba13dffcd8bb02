//! Hot reload of `routes.toml` and `policies/` when their files change.
//!
//! The directories are watched, not the files: editors replace files by rename, and a
//! Kubernetes ConfigMap volume swaps a `..data` symlink in the mounted directory, neither of
//! which a watch on the old file would see. Events are debounced (notify's debouncer: a path's
//! changes are reported once it has been quiet for the debounce period, and at least once a period
//! while it keeps changing), then the inputs are hashed
//! (`Gateway::reload_if_changed`, with `inputs::fingerprint`): an event that changed nothing
//! (an unrelated file, a touch) does not make a new snapshot. The new snapshot is built and
//! validated off the request path (`Gateway::reload`); on error the last good one keeps
//! serving and the error is logged with its file and line.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::RecursiveMode;
use notify_debouncer_mini::{new_debouncer, DebounceEventResult};

use crate::config::ConfigError;
use crate::snapshot::Gateway;

/// Reloads now and logs the result; `why` says what triggered it.
fn reload_and_log(gateway: &Gateway, why: &str) {
    log_reload(gateway, why, gateway.reload());
}

/// Reloads routes and policies (every file, or only if they changed) and the TLS certificates
/// on a blocking-pool thread: validating thousands of policies must not hold up the runtime
/// that runs key refreshes and signal handling.
pub async fn reload_in_background(gateway: Arc<Gateway>, why: &'static str, always: bool) {
    let finished = tokio::task::spawn_blocking(move || {
        reload_certificates(&gateway, why);
        if always {
            reload_and_log(&gateway, why);
        } else if let Some(result) = gateway.reload_if_changed() {
            log_reload(&gateway, why, result);
        }
    })
    .await;
    if let Err(e) = finished {
        log::error!("{why}: the reload did not finish: {e}");
    }
}

/// Reloads the TLS listener's certificates if their files changed; on error the running ones
/// stay.
fn reload_certificates(gateway: &Gateway, why: &str) {
    let Some(tls) = &gateway.settings.tls else {
        return;
    };
    match tls.certificates.reload_if_changed() {
        None => {}
        Some(Ok(())) => {
            gateway.metrics.certificates_reloaded(true);
            log::info!(
                "{why}: TLS certificates reloaded (serving {})",
                tls.certificates.current().names().join(", ")
            );
        }
        Some(Err(e)) => {
            gateway.metrics.certificates_reloaded(false);
            log::error!(
                "{why}: TLS certificates not reloaded, still serving the previous ones: {e}"
            );
        }
    }
}

fn log_reload(gateway: &Gateway, why: &str, result: Result<u64, ConfigError>) {
    match result {
        Ok(version) => log::info!("{why}: routes and policies reloaded (snapshot {version})"),
        Err(e) => log::error!(
            "{why}: reload failed, still serving snapshot {}:\n{e}",
            gateway.snapshot().version
        ),
    }
}

/// Watches the routes, policies, settings and certificate directories until the process ends,
/// reloading after each burst of changes to the routes, policies or certificates. A changed
/// `portcullis.toml` is only reported: its settings (listeners, issuers, limits) need a
/// restart.
pub async fn watch(gateway: Arc<Gateway>, debounce: Duration) -> notify::Result<()> {
    let settings = &gateway.settings;
    let policies_dir = canonical(&settings.policies_dir);
    let certificate_files: Vec<&Path> = settings
        .tls
        .iter()
        .flat_map(|tls| tls.certificates.files())
        .flat_map(|pair| [pair.cert.as_path(), pair.key.as_path()])
        .collect();
    let mut directories = vec![
        canonical(&parent_dir(&settings.routes_file)),
        policies_dir.clone(),
        canonical(&parent_dir(&settings.file)),
    ];
    directories.extend(certificate_files.iter().map(|f| canonical(&parent_dir(f))));
    directories.sort();
    directories.dedup();
    let names: Vec<OsString> = [settings.routes_file.as_path(), settings.file.as_path()]
        .into_iter()
        .chain(certificate_files.iter().copied())
        .filter_map(|f| f.file_name().map(OsString::from))
        .collect();
    // Only what can change the inputs counts: anything in the policies directory, the routes
    // and settings files by name, and ConfigMap swaps (`..data`, `..2026_...`) anywhere. A
    // decision log written beside portcullis.toml must not keep the debounce going.
    let relevant = move |path: &Path| {
        path.parent() == Some(policies_dir.as_path())
            || path.file_name().is_some_and(|name| {
                names.iter().any(|n| n == name) || name.to_string_lossy().starts_with("..")
            })
    };
    let (changed, mut changes) = tokio::sync::mpsc::unbounded_channel();
    let mut debouncer = new_debouncer(debounce, move |events: DebounceEventResult| {
        if events.is_ok_and(|events| events.iter().any(|e| relevant(&e.path))) {
            // The receiver lives as long as the debouncer; a send error cannot happen.
            let _ = changed.send(());
        }
    })?;
    for directory in &directories {
        debouncer
            .watcher()
            .watch(directory, RecursiveMode::NonRecursive)?;
    }
    log::info!(
        "watching {} for changes to routes and policies",
        directories
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );

    let static_settings = std::fs::read(&settings.file).ok();
    let mut restart_reported = false;
    while changes.recv().await.is_some() {
        // One batch of changed paths can be several sends (the reload below covers them all).
        while changes.try_recv().is_ok() {}
        if !restart_reported && std::fs::read(&settings.file).ok() != static_settings {
            log::warn!(
                "{} changed: its settings (listeners, issuers, limits, headers) are static and \
                 take effect only after a restart or a graceful upgrade",
                settings.file.display()
            );
            restart_reported = true;
        }
        reload_in_background(gateway.clone(), "files changed", false).await;
    }
    Ok(())
}

/// The absolute, symlink-free form of a directory, which is how the watcher reports paths.
fn canonical(directory: &Path) -> PathBuf {
    std::fs::canonicalize(directory).unwrap_or_else(|_| directory.to_path_buf())
}

fn parent_dir(file: &Path) -> PathBuf {
    match file.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}
