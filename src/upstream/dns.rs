//! Service discovery by DNS: every configured `host:port` resolved with the system resolver, at
//! run time. A headless Kubernetes Service answers with one address per ready pod, so
//! re-resolving on an interval follows the pods. A name whose lookup fails keeps the addresses
//! it had last, so a DNS hiccup does not empty a pool; the `std` mutex guarding them is never
//! held across an await.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Mutex;

use async_trait::async_trait;
use pingora_core::{Error, ErrorType, Result};
use pingora_load_balancing::discovery::ServiceDiscovery;
use pingora_load_balancing::Backend;

use super::HostPort;

pub struct DnsDiscovery {
    addresses: Vec<HostPort>,
    /// What each name resolved to last, kept while a later lookup of it fails.
    last_resolved: Mutex<HashMap<(String, u16), Vec<SocketAddr>>>,
}

impl DnsDiscovery {
    pub fn new(addresses: Vec<HostPort>) -> Self {
        DnsDiscovery {
            addresses,
            last_resolved: Mutex::new(HashMap::new()),
        }
    }

    /// Every address is an IP literal: nothing to resolve, ever.
    pub fn is_literal(&self) -> bool {
        self.addresses.iter().all(|a| a.literal().is_some())
    }
}

fn backend(addr: SocketAddr) -> Backend {
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
        let mut failures = Vec::new();
        for address in &self.addresses {
            if let Some(literal) = address.literal() {
                backends.insert(backend(literal));
                continue;
            }
            let key = (address.host.clone(), address.port);
            let resolved = tokio::net::lookup_host((address.host.as_str(), address.port)).await;
            let mut last = self
                .last_resolved
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match resolved {
                Ok(found) => {
                    let found: Vec<SocketAddr> = found.collect();
                    backends.extend(found.iter().copied().map(backend));
                    last.insert(key, found);
                }
                Err(e) => {
                    log::warn!(
                        "resolving {}:{}: {e}; keeping its last addresses",
                        address.host,
                        address.port
                    );
                    backends.extend(last.get(&key).into_iter().flatten().copied().map(backend));
                    failures.push(e);
                }
            }
        }
        // Only when nothing at all is known does discovery fail (and the members stay as
        // they were, as pingora-load-balancing does on an error).
        if backends.is_empty() {
            if let Some(e) = failures.pop() {
                return Err(Error::because(
                    ErrorType::ConnectNoRoute,
                    "no upstream address resolves",
                    e,
                ));
            }
        }
        Ok((backends, HashMap::new()))
    }
}
