//! Which peers may speak for the client: trusted-proxy CIDRs and the client address they report.
//!
//! Forwarding headers (`Forwarded`, `X-Forwarded-*`, `X-Real-IP`, ...) are claims the sender
//! makes about someone else. The gateway believes them only from peers inside a configured
//! trusted-proxy range (none by default); from anyone else they are dropped. Pure: no I/O.

use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;

/// An address range such as `10.0.0.0/8` or `fd00::/8`; a bare address is a single host.
/// `ipnet` does the arithmetic; this adds the strictness a trust list wants (no host bits set)
/// and matches IPv4 ranges against IPv4-mapped IPv6 peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr(IpNet);

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let net = match text.split_once('/') {
            None => IpNet::from(
                text.parse::<IpAddr>()
                    .map_err(|_| format!("{text:?} is not an IP address or CIDR range"))?,
            ),
            Some((address, prefix)) => {
                let address: IpAddr = address
                    .parse()
                    .map_err(|_| format!("{text:?} is not an IP address or CIDR range"))?;
                let max = if address.is_ipv4() { 32 } else { 128 };
                prefix
                    .parse::<u8>()
                    .ok()
                    .and_then(|p| IpNet::new(address, p).ok())
                    .ok_or_else(|| format!("{text:?}: the prefix length must be 0..={max}"))?
            }
        };
        if net.trunc() != net {
            return Err(format!(
                "{text:?} has host bits set; write the network address ({})",
                net.trunc()
            ));
        }
        Ok(Cidr(net))
    }
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match (self.0, ip) {
            (IpNet::V4(_), IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => return false,
            },
            (_, ip) => ip,
        };
        self.0.contains(&ip)
    }
}

/// Is `peer` a trusted proxy?
pub fn is_trusted(peer: IpAddr, trusted: &[Cidr]) -> bool {
    trusted.iter().any(|range| range.contains(peer))
}

/// The client address: the TCP peer, unless the peer is a trusted proxy, in which case the
/// right-most `X-Forwarded-For` entry that is not itself a trusted proxy (what each trusted
/// hop appended). An unparsable entry stops the walk at the last trusted hop.
pub fn client_address(peer: IpAddr, forwarded_for: &[&str], trusted: &[Cidr]) -> IpAddr {
    let mut client = peer;
    if !is_trusted(peer, trusted) {
        return client;
    }
    let hops = forwarded_for
        .iter()
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .rev();
    for hop in hops {
        match hop.parse::<IpAddr>() {
            Ok(ip) => {
                client = ip;
                if !is_trusted(ip, trusted) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| c.parse().unwrap()).collect()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn ranges_parse_and_match() {
        let ranges = cidrs(&["10.0.0.0/8", "192.168.1.7", "fd00::/8", "0.0.0.0/0"]);
        assert!(ranges[0].contains(ip("10.255.0.1")));
        assert!(!ranges[0].contains(ip("11.0.0.1")));
        assert!(ranges[1].contains(ip("192.168.1.7")));
        assert!(!ranges[1].contains(ip("192.168.1.8")));
        assert!(ranges[2].contains(ip("fd12::1")));
        assert!(!ranges[2].contains(ip("fe80::1")));
        assert!(ranges[3].contains(ip("203.0.113.9")));
        assert!(ranges[0].contains(ip("::ffff:10.1.2.3")));
        assert!(!ranges[2].contains(ip("10.1.2.3")));
        for bad in ["10.0.0.1/8", "10.0.0.0/33", "nope", "10.0.0.0/", "::/129"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_client_is_the_peer_unless_the_peer_is_trusted() {
        let trusted = cidrs(&["10.0.0.0/8"]);
        let xff = ["203.0.113.9, 198.51.100.1", "10.0.0.2"];
        // An untrusted peer's header is ignored.
        assert_eq!(
            client_address(ip("198.51.100.7"), &xff, &trusted),
            ip("198.51.100.7")
        );
        // A trusted peer: walk right to left past trusted hops.
        assert_eq!(
            client_address(ip("10.0.0.1"), &xff, &trusted),
            ip("198.51.100.1")
        );
        // Only trusted hops: the left-most one.
        assert_eq!(
            client_address(ip("10.0.0.1"), &["10.0.0.3"], &trusted),
            ip("10.0.0.3")
        );
        assert_eq!(
            client_address(ip("10.0.0.1"), &[], &trusted),
            ip("10.0.0.1")
        );
        // Garbage stops the walk.
        assert_eq!(
            client_address(ip("10.0.0.1"), &["1.2.3.4, garbage, 10.0.0.4"], &trusted),
            ip("10.0.0.4")
        );
        // Nothing is trusted by default.
        assert_eq!(client_address(ip("10.0.0.1"), &xff, &[]), ip("10.0.0.1"));
    }
}
