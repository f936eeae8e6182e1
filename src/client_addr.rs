//! The real client address of a request, and the address rules that use it.
//!
//! - The **peer** is the address the connection came from: the socket's peer, or the source a
//!   trusted load balancer reported in a PROXY protocol header (see [`crate::proxy_protocol`],
//!   which rewrites the connection's socket digest before any request is read).
//! - When the peer is one of `switchboard.trusted_proxies`, the client is read from the
//!   forwarding header (`switchboard.forwarded_header`: `X-Forwarded-For`, the default, or RFC
//!   7239 `Forwarded: for=`; only that one header is ever read, so a client cannot slip in the
//!   other one past a proxy that only rewrites its own). The hops are walked from the right: the
//!   client is the rightmost address that is not a trusted proxy (or the leftmost, when every
//!   hop is trusted). A hop that is not an address (`unknown`, an obfuscated `_name`, garbage)
//!   ends the walk at the last address that was read. At most [`MAX_HOPS`] hops are looked at.
//! - From any other peer the forwarding headers are ignored: the peer is the client.
//! - `general_settings.allowed_ips` (LiteLLM's key; addresses or CIDRs) then admits or refuses
//!   the resolved client address ([`check_allowed`]).
//!
//! A leaf module: plain addresses and header values in, an address out.

use crate::error::{ErrorKind, GatewayError};
use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// Most forwarding hops looked at, from the right. A chain longer than this ends at the
/// leftmost hop looked at.
pub const MAX_HOPS: usize = 32;

/// An address block: `10.0.0.0/8`, `2001:db8::/32`, or one address (`/32`, `/128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is in this block. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, what a
    /// dual-stack socket reports for an IPv4 client) matches as its IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - self.prefix as u32).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - self.prefix as u32).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;

    /// `ADDR` or `ADDR/PREFIX`; host bits may be set (`10.1.2.3/8` is `10.0.0.0/8`).
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| format!("\"{s}\" is not an IP address or CIDR block (e.g. 10.0.0.0/8)"))?;
        let addr = canonical(addr);
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("\"{s}\": the prefix length must be 0-{max}"))?,
        };
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// An IPv4-mapped IPv6 address as its IPv4 address; anything else unchanged.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// Whether `ip` is in any of `blocks`.
pub fn in_any(blocks: &[Cidr], ip: IpAddr) -> bool {
    blocks.iter().any(|b| b.contains(ip))
}

/// Which forwarding header carries the client address from trusted proxies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2`.
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for="[2001:db8::1]:4711"`.
    Forwarded,
}

impl ForwardedHeader {
    pub fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "x-forwarded-for" => Some(ForwardedHeader::XForwardedFor),
            "forwarded" => Some(ForwardedHeader::Forwarded),
            _ => None,
        }
    }

    pub fn header_name(self) -> &'static str {
        match self {
            ForwardedHeader::XForwardedFor => "x-forwarded-for",
            ForwardedHeader::Forwarded => "forwarded",
        }
    }
}

/// The client address of a request from `peer` (`None`: a Unix-socket peer, which has no IP
/// and is trusted like a proxy: only local processes allowed by the socket's permissions reach
/// it). `headers` are the values of the configured forwarding header, in arrival order; they
/// are read only when the peer is trusted.
pub fn resolve<'h>(
    peer: Option<IpAddr>,
    trusted: &[Cidr],
    header: ForwardedHeader,
    headers: impl DoubleEndedIterator<Item = &'h [u8]>,
) -> Option<IpAddr> {
    let peer = peer.map(canonical);
    let peer_trusted = match peer {
        Some(ip) => in_any(trusted, ip),
        None => true,
    };
    if !peer_trusted {
        return peer;
    }
    let mut client = peer;
    let mut hops = 0;
    for value in headers.rev() {
        let Ok(value) = std::str::from_utf8(value) else {
            return client;
        };
        for hop in value.rsplit(',') {
            hops += 1;
            if hops > MAX_HOPS {
                return client;
            }
            let hop = match header {
                ForwardedHeader::XForwardedFor => parse_hop(hop),
                ForwardedHeader::Forwarded => forwarded_for(hop).and_then(parse_hop),
            };
            let Some(ip) = hop else {
                return client;
            };
            client = Some(ip);
            if !in_any(trusted, ip) {
                return client;
            }
        }
    }
    client
}

/// One hop's address: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`, `[2001:db8::1]:443`, optionally
/// in double quotes. `None` for anything else (`unknown`, `_hidden`, garbage).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    let hop = hop
        .strip_prefix('"')
        .and_then(|h| h.strip_suffix('"'))
        .unwrap_or(hop);
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(sa) = hop.parse::<SocketAddr>() {
        return Some(canonical(sa.ip()));
    }
    // `[v6]` without a port.
    hop.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .and_then(|h| h.parse::<Ipv6Addr>().ok())
        .map(|ip| canonical(IpAddr::V6(ip)))
}

/// The `for=` value of one RFC 7239 forwarded-element (`for=1.2.3.4;proto=https;by=...`).
fn forwarded_for(element: &str) -> Option<&str> {
    element.split(';').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        k.trim().eq_ignore_ascii_case("for").then_some(v.trim())
    })
}

/// [`resolve`] for a request: `peer` is the connection's (already the PROXY protocol source
/// when a trusted load balancer sent one), `header` is read from `req` only for a trusted peer.
pub fn from_request(
    peer: Option<&pingora_core::protocols::l4::socket::SocketAddr>,
    req: &pingora_http::RequestHeader,
    trusted: &[Cidr],
    header: ForwardedHeader,
) -> Option<IpAddr> {
    let peer_ip = peer.and_then(|p| p.as_inet()).map(|inet| inet.ip());
    if trusted.is_empty() && peer_ip.is_some() {
        return peer_ip.map(canonical);
    }
    let values = req.headers.get_all(header.header_name());
    resolve(
        peer_ip,
        trusted,
        header,
        values.iter().map(|v| v.as_bytes()),
    )
}

/// Refuses a client outside `general_settings.allowed_ips` with LiteLLM's 403 and message.
pub fn check_allowed(allowed: &[Cidr], client: Option<IpAddr>) -> Result<(), GatewayError> {
    if client.is_some_and(|ip| in_any(allowed, ip)) {
        return Ok(());
    }
    let shown = client.map_or_else(|| "unknown".to_string(), |ip| ip.to_string());
    Err(GatewayError::new(
        ErrorKind::PermissionDenied,
        format!(
            "Access forbidden: IP address {shown} not allowed. Only the addresses in general_settings.allowed_ips may call this gateway."
        ),
    )
    .with_code("ip_not_allowed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn xff(peer: &str, trusted: &[&str], values: &[&str]) -> Option<IpAddr> {
        resolve(
            Some(ip(peer)),
            &cidrs(trusted),
            ForwardedHeader::XForwardedFor,
            values.iter().map(|v| v.as_bytes()),
        )
    }

    fn fwd(peer: &str, trusted: &[&str], values: &[&str]) -> Option<IpAddr> {
        resolve(
            Some(ip(peer)),
            &cidrs(trusted),
            ForwardedHeader::Forwarded,
            values.iter().map(|v| v.as_bytes()),
        )
    }

    #[test]
    fn cidr_blocks() {
        let c: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(c.contains(ip("10.200.1.1")));
        assert!(!c.contains(ip("11.0.0.1")));
        assert!(c.contains(ip("::ffff:10.1.1.1")), "v4-mapped matches v4");
        assert!(!c.contains(ip("2001:db8::1")));
        let one: Cidr = "192.168.1.1".parse().unwrap();
        assert!(one.contains(ip("192.168.1.1")));
        assert!(!one.contains(ip("192.168.1.2")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("8.8.8.8")));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")));
        assert!(!v6.contains(ip("2001:db9::1")));
        let v6all: Cidr = "::/0".parse().unwrap();
        assert!(v6all.contains(ip("::1")));
        assert!("[::1]".parse::<Cidr>().unwrap().contains(ip("::1")));
        for bad in ["10.0.0.0/33", "10.0.0/8", "x", "", "::/129", "1.2.3.4/-1"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn untrusted_peer_headers_are_ignored() {
        assert_eq!(
            xff("203.0.113.9", &[], &["1.1.1.1"]),
            Some(ip("203.0.113.9"))
        );
        assert_eq!(
            xff("203.0.113.9", &["10.0.0.0/8"], &["1.1.1.1"]),
            Some(ip("203.0.113.9"))
        );
    }

    #[test]
    fn rightmost_untrusted_hop_is_the_client() {
        let trusted = ["10.0.0.0/8", "127.0.0.1"];
        // A client-supplied spoofed entry on the left is skipped.
        assert_eq!(
            xff("127.0.0.1", &trusted, &["6.6.6.6, 198.51.100.7, 10.0.0.2"]),
            Some(ip("198.51.100.7"))
        );
        // Several header lines are one list, in order.
        assert_eq!(
            xff(
                "127.0.0.1",
                &trusted,
                &["6.6.6.6", "198.51.100.7", "10.0.0.2"]
            ),
            Some(ip("198.51.100.7"))
        );
        // Every hop trusted: the leftmost.
        assert_eq!(
            xff("127.0.0.1", &trusted, &["10.0.0.9, 10.0.0.2"]),
            Some(ip("10.0.0.9"))
        );
        // No header: the peer.
        assert_eq!(xff("127.0.0.1", &trusted, &[]), Some(ip("127.0.0.1")));
        // Ports and brackets.
        assert_eq!(
            xff("127.0.0.1", &trusted, &["198.51.100.7:5555"]),
            Some(ip("198.51.100.7"))
        );
        assert_eq!(
            xff("127.0.0.1", &trusted, &["[2001:db8::7]:443"]),
            Some(ip("2001:db8::7"))
        );
        assert_eq!(
            xff("127.0.0.1", &trusted, &["2001:db8::7"]),
            Some(ip("2001:db8::7"))
        );
        // Garbage ends the walk at the last address read.
        assert_eq!(
            xff("127.0.0.1", &trusted, &["1.2.3.4, bogus, 10.0.0.3"]),
            Some(ip("10.0.0.3"))
        );
        assert_eq!(
            xff("127.0.0.1", &trusted, &["unknown"]),
            Some(ip("127.0.0.1"))
        );
    }

    #[test]
    fn hops_are_bounded() {
        let long = vec!["10.0.0.1"; 1000].join(",");
        let chain = format!("9.9.9.9,{long}");
        // Past MAX_HOPS the walk stops at a trusted hop; the far-left client is never reached.
        assert_eq!(
            xff("127.0.0.1", &["10.0.0.0/8", "127.0.0.1"], &[&chain]),
            Some(ip("10.0.0.1"))
        );
    }

    #[test]
    fn forwarded_header() {
        let trusted = ["127.0.0.1", "10.0.0.0/8"];
        assert_eq!(
            fwd(
                "127.0.0.1",
                &trusted,
                &["for=6.6.6.6, for=\"[2001:db8:cafe::17]:4711\";proto=https, for=10.0.0.1;by=10.0.0.2"]
            ),
            Some(ip("2001:db8:cafe::17"))
        );
        assert_eq!(
            fwd("127.0.0.1", &trusted, &["proto=http;For=192.0.2.60"]),
            Some(ip("192.0.2.60"))
        );
        assert_eq!(
            fwd("127.0.0.1", &trusted, &["for=\"_hidden\", for=10.0.0.5"]),
            Some(ip("10.0.0.5"))
        );
        assert_eq!(
            fwd("127.0.0.1", &trusted, &["for=unknown"]),
            Some(ip("127.0.0.1"))
        );
        // An element without for= ends the walk.
        assert_eq!(
            fwd("127.0.0.1", &trusted, &["for=1.1.1.1, proto=https"]),
            Some(ip("127.0.0.1"))
        );
    }

    #[test]
    fn unix_socket_peer_is_trusted() {
        assert_eq!(
            resolve(
                None,
                &[],
                ForwardedHeader::XForwardedFor,
                [b"198.51.100.1".as_slice()].into_iter()
            ),
            Some(ip("198.51.100.1"))
        );
        assert_eq!(
            resolve(
                None,
                &[],
                ForwardedHeader::XForwardedFor,
                std::iter::empty()
            ),
            None
        );
    }

    #[test]
    fn allowed_ips() {
        let allowed = cidrs(&["192.168.1.1", "10.0.0.0/8"]);
        assert!(check_allowed(&allowed, Some(ip("192.168.1.1"))).is_ok());
        assert!(check_allowed(&allowed, Some(ip("::ffff:10.9.9.9"))).is_ok());
        let e = check_allowed(&allowed, Some(ip("192.168.1.2"))).unwrap_err();
        assert_eq!(e.status, 403);
        assert!(e
            .message
            .starts_with("Access forbidden: IP address 192.168.1.2 not allowed."));
        assert_eq!(check_allowed(&allowed, None).unwrap_err().status, 403);
    }
}
