//! Service discovery by DNS: every configured `host:port` resolved with the system resolver, at
//! run time. A headless Kubernetes Service answers with one address per ready pod, so
//! re-resolving on an interval follows the pods. A lookup that fails keeps the last members
//! (pingora-load-balancing leaves membership as it was when discovery returns an error).

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;
use pingora_core::{Error, ErrorType, Result};
use pingora_load_balancing::discovery::ServiceDiscovery;
use pingora_load_balancing::Backend;

use super::HostPort;

pub struct DnsDiscovery {
    addresses: Vec<HostPort>,
}

impl DnsDiscovery {
    pub fn new(addresses: Vec<HostPort>) -> Self {
        DnsDiscovery { addresses }
    }

    /// Every address is an IP literal: nothing to resolve, ever.
    pub fn is_literal(&self) -> bool {
        self.addresses.iter().all(|a| a.literal().is_some())
    }
}

fn backend(addr: std::net::SocketAddr) -> Backend {
    Backend {
        addr: pingora_core::protocols::l4::socket::SocketAddr::Inet(addr),
        weight: 1,
        ext: http::Extensions::new(),
    }
}

#[async_trait]
impl ServiceDiscovery for DnsDiscovery {
    async fn discover(&self) -> Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        let mut backends = BTreeSet::new();
        for address in &self.addresses {
            if let Some(literal) = address.literal() {
                backends.insert(backend(literal));
                continue;
            }
            let resolved = tokio::net::lookup_host((address.host.as_str(), address.port))
                .await
                .map_err(|e| {
                    Error::because(
                        ErrorType::ConnectNoRoute,
                        format!("resolving {}:{}", address.host, address.port),
                        e,
                    )
                })?;
            backends.extend(resolved.map(backend));
        }
        Ok((backends, HashMap::new()))
    }
}
