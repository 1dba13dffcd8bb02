//! The TLS listener's pingora settings: certificates from the SNI-selecting store, TLS 1.2 and
//! 1.3 only (pingora's rustls defaults), ALPN `h2` then `http/1.1` when HTTP/2 is on, and the
//! client's SNI recorded on the connection so that the pipeline can compare it with `Host`.

use std::any::Any;
use std::sync::Arc;

use async_trait::async_trait;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::listeners::{TlsAccept, ALPN};
use pingora_core::protocols::tls::TlsRef;

use crate::config::TlsListener;

/// What the TLS handshake of a connection established, as its requests see it.
#[derive(Debug, Clone)]
pub struct ConnectionTls {
    /// The server name of the client hello, if it sent one.
    pub sni: Option<String>,
}

struct RecordSni;

#[async_trait]
impl TlsAccept for RecordSni {
    async fn handshake_complete_callback(
        &self,
        tls: &TlsRef,
    ) -> Option<Arc<dyn Any + Send + Sync>> {
        Some(Arc::new(ConnectionTls {
            sni: tls.server_name().map(str::to_string),
        }))
    }
}

/// pingora TLS settings for the listener; `build()` makes the acceptor.
pub fn tls_settings(listener: &TlsListener) -> pingora_core::Result<TlsSettings> {
    let mut settings = TlsSettings::with_callbacks(Box::new(RecordSni))?;
    settings.set_cert_resolver(listener.certificates.clone());
    settings.set_alpn(if listener.h2 { ALPN::H2H1 } else { ALPN::H1 });
    Ok(settings)
}
