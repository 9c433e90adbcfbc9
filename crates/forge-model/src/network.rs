//! `network:http` targets: the patterns a manifest (and the operator's allow-list) names, and the
//! address ranges an outbound request may reach only when a pattern names them literally.
//!
//! A pattern is `scheme://host[:port]`: `https://api.example.com`, `https://*.example.com:443`,
//! `http://10.0.0.0/8:8080` (CIDR), `http://[fd00::/8]:*`, ports `*` or ranges `8000-8100`. A bare
//! host (`api.example.com`) means `https://api.example.com:443`; a host `*` means any name.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// Longest pattern accepted: a DNS name is at most 253 characters, plus scheme and ports.
pub const HOST_PATTERN_MAX_CHARS: usize = 300;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn parse(scheme: &str) -> Option<Scheme> {
        match scheme.to_ascii_lowercase().as_str() {
            "http" => Some(Scheme::Http),
            "https" => Some(Scheme::Https),
            _ => None,
        }
    }

    pub const fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

/// An address or a CIDR range, named literally by a pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange {
    network: IpAddr,
    prefix: u8,
}

impl IpRange {
    fn new(address: IpAddr, prefix: u8) -> Option<IpRange> {
        let bits = if address.is_ipv4() { 32 } else { 128 };
        (prefix <= bits).then(|| IpRange { network: mask(address, prefix), prefix })
    }

    pub fn contains(&self, address: IpAddr) -> bool {
        let address = canonical(address);
        address.is_ipv4() == self.network.is_ipv4() && mask(address, self.prefix) == self.network
    }

    fn covers(&self, other: &IpRange) -> bool {
        other.prefix >= self.prefix && self.contains(other.network)
    }
}

fn mask(address: IpAddr, prefix: u8) -> IpAddr {
    match address {
        IpAddr::V4(v4) => {
            let keep = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & keep))
        }
        IpAddr::V6(v6) => {
            let keep = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & keep))
        }
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:127.0.0.1`) and NAT64 ones (`64:ff9b::127.0.0.1`, the
/// well-known prefix) are judged as the IPv4 address they reach.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) if v6.segments()[..6] == [0x64, 0xff9b, 0, 0, 0, 0] => {
            IpAddr::V4(Ipv4Addr::from(u128::from(v6) as u32))
        }
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        v4 => v4,
    }
}

/// Which hosts a pattern covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatcher {
    /// `*`: any host (the address checks still apply).
    Any,
    /// `api.example.com`, lowercase.
    Name(String),
    /// `*.example.com`, stored as `.example.com`: any name below it, not the domain itself.
    Subdomains(String),
    /// `10.0.0.0/8`, `127.0.0.1`, `[::1]`: addresses named literally.
    Addresses(IpRange),
}

/// Where a request goes: a DNS name (lowercase) or an address literal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    Name(&'a str),
    Address(IpAddr),
}

/// A parsed `network:http` host pattern; it displays as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    pub scheme: Scheme,
    pub host: HostMatcher,
    /// Inclusive port range.
    pub ports: (u16, u16),
    text: String,
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for HostPattern {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if text.len() > HOST_PATTERN_MAX_CHARS {
            return Err(format!("is longer than {HOST_PATTERN_MAX_CHARS} characters"));
        }
        let lower = text.to_ascii_lowercase();
        let (scheme, rest, bare) = match lower.split_once("://") {
            Some((scheme, rest)) => {
                let scheme =
                    Scheme::parse(scheme).ok_or_else(|| format!("scheme `{scheme}` is not http or https"))?;
                (scheme, rest, false)
            }
            None => (Scheme::Https, lower.as_str(), true),
        };
        let (host, port) = split_port(rest)?;
        if bare && port.is_some() {
            return Err("a bare host takes no port: write `https://host:port`".into());
        }
        let ports = match port {
            None => (scheme.default_port(), scheme.default_port()),
            Some(port) => parse_ports(port)?,
        };
        Ok(HostPattern { scheme, host: parse_host(host)?, ports, text: text.to_owned() })
    }
}

fn split_port(rest: &str) -> Result<(&str, Option<&str>), String> {
    if rest.starts_with('[') {
        let end = rest.find(']').ok_or("an IPv6 host must be written `[address]`")?;
        return match &rest[end + 1..] {
            "" => Ok((&rest[..=end], None)),
            after => match after.strip_prefix(':') {
                Some(port) => Ok((&rest[..=end], Some(port))),
                None => Err("an IPv6 host may be followed only by `:port`".into()),
            },
        };
    }
    Ok(match rest.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (rest, None),
    })
}

fn parse_ports(port: &str) -> Result<(u16, u16), String> {
    let number = |p: &str| p.parse::<u16>().ok().filter(|&p| p > 0);
    let ports = match port.split_once('-') {
        _ if port == "*" => Some((1, u16::MAX)),
        Some((first, last)) => number(first).zip(number(last)).filter(|(f, l)| f <= l),
        None => number(port).map(|p| (p, p)),
    };
    ports.ok_or_else(|| format!("port `{port}` is not a port (1-65535), a range `8000-8100` or `*`"))
}

fn parse_host(host: &str) -> Result<HostMatcher, String> {
    if host == "*" {
        return Ok(HostMatcher::Any);
    }
    if let Some(inner) = host.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or("an IPv6 host must be written `[address]`")?;
        return parse_range(inner, |a| a.parse::<Ipv6Addr>().ok().map(IpAddr::V6))
            .map(HostMatcher::Addresses);
    }
    if host.contains('/') || host.parse::<Ipv4Addr>().is_ok() {
        return parse_range(host, |a| a.parse::<Ipv4Addr>().ok().map(IpAddr::V4)).map(HostMatcher::Addresses);
    }
    let (name, wildcard) = match host.strip_prefix("*.") {
        Some(name) => (name, true),
        None => (host, false),
    };
    if !is_dns_name(name) {
        return Err(format!(
            "host `{host}` is not a DNS name, `*.domain`, `*`, an IPv4 address or CIDR, or `[IPv6]`"
        ));
    }
    Ok(if wildcard {
        HostMatcher::Subdomains(format!(".{name}"))
    } else {
        HostMatcher::Name(name.to_owned())
    })
}

fn parse_range(text: &str, address: impl Fn(&str) -> Option<IpAddr>) -> Result<IpRange, String> {
    let (addr, prefix) = match text.split_once('/') {
        Some((addr, prefix)) => (addr, Some(prefix)),
        None => (text, None),
    };
    let addr = address(addr).ok_or_else(|| format!("`{text}` is not an address or CIDR range"))?;
    let bits = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => Some(bits),
        Some(prefix) => prefix.parse::<u8>().ok(),
    };
    prefix.and_then(|p| IpRange::new(addr, p)).ok_or_else(|| format!("`{text}` has a prefix beyond /{bits}"))
}

/// Dot-separated labels of letters, digits and inner hyphens, at most 253 characters.
fn is_dns_name(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

impl HostPattern {
    /// Whether a request to `scheme://target:port` is inside this pattern.
    pub fn matches(&self, scheme: Scheme, target: Target<'_>, port: u16) -> bool {
        let host = match (&self.host, target) {
            (HostMatcher::Any, _) => true,
            (HostMatcher::Name(name), Target::Name(host)) => host.eq_ignore_ascii_case(name),
            (HostMatcher::Subdomains(suffix), Target::Name(host)) => {
                host.to_ascii_lowercase().ends_with(suffix.as_str())
            }
            (HostMatcher::Addresses(range), Target::Address(address)) => range.contains(address),
            _ => false,
        };
        host && self.scheme == scheme && (self.ports.0..=self.ports.1).contains(&port)
    }

    /// Whether this pattern names `address` literally (an address or CIDR pattern), which is what
    /// lets a request reach a [`special_range`] address.
    pub fn names_address(&self, scheme: Scheme, address: IpAddr, port: u16) -> bool {
        matches!(self.host, HostMatcher::Addresses(_)) && self.matches(scheme, Target::Address(address), port)
    }

    /// Whether everything `other` allows is inside this pattern: how the operator's allow-list caps
    /// what a manifest may ask for.
    pub fn permits(&self, other: &HostPattern) -> bool {
        let host = match (&self.host, &other.host) {
            (HostMatcher::Any, _) => true,
            (HostMatcher::Name(a), HostMatcher::Name(b)) => a == b,
            (HostMatcher::Subdomains(s), HostMatcher::Name(name)) => name.ends_with(s.as_str()),
            (HostMatcher::Subdomains(s), HostMatcher::Subdomains(t)) => t.ends_with(s.as_str()),
            (HostMatcher::Addresses(r), HostMatcher::Addresses(q)) => r.covers(q),
            _ => false,
        };
        host && self.scheme == other.scheme && self.ports.0 <= other.ports.0 && other.ports.1 <= self.ports.1
    }
}

/// The range a special-purpose address belongs to (loopback, link-local, private, ...), or None
/// for an ordinary public address. Requests reach these only when a pattern names them literally.
pub fn special_range(address: IpAddr) -> Option<&'static str> {
    match canonical(address) {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            if v4.is_loopback() {
                Some("loopback")
            } else if v4.is_link_local() {
                Some("link-local")
            } else if v4.is_private() || (a == 100 && (64..128).contains(&b)) {
                Some("private")
            } else if v4.is_unspecified() || a == 0 {
                Some("unspecified")
            } else if v4.is_multicast() {
                Some("multicast")
            } else if v4.is_broadcast() || a >= 240 {
                Some("broadcast / reserved")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            if v6.is_loopback() {
                Some("loopback")
            } else if first & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if first & 0xfe00 == 0xfc00 {
                Some("unique-local")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if v6.is_multicast() {
                Some("multicast")
            } else {
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(text: &str) -> HostPattern {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn patterns_parse_with_their_defaults() {
        let bare = pattern("API.example.com");
        assert_eq!((bare.scheme, bare.ports), (Scheme::Https, (443, 443)));
        assert_eq!(bare.host, HostMatcher::Name("api.example.com".into()));
        assert_eq!(bare.to_string(), "API.example.com");
        assert_eq!(pattern("http://a.com").ports, (80, 80));
        assert_eq!(pattern("https://*.example.com:443").host, HostMatcher::Subdomains(".example.com".into()));
        assert_eq!(pattern("http://10.0.0.0/8:8080").ports, (8080, 8080));
        assert_eq!(pattern("http://127.0.0.1:*").ports, (1, 65535));
        assert_eq!(pattern("http://a.com:8000-8100").ports, (8000, 8100));
        assert!(matches!(pattern("http://[fd00::/8]:80").host, HostMatcher::Addresses(_)));
        assert_eq!(pattern("https://*").host, HostMatcher::Any);
    }

    #[test]
    fn malformed_patterns_say_why() {
        for bad in [
            "",
            "ftp://a.com",
            "a.com:443",
            "https://a.com:0",
            "https://a.com:99999",
            "https://a.com:9-1",
            "https://a.com/path",
            "https://bad host",
            "https://-a.com",
            "https://a..b",
            "http://10.0.0.0/33",
            "http://[::1",
            "http://[::1]x",
            "http://[1.2.3.4]",
            "https://a.com:x",
        ] {
            assert!(bad.parse::<HostPattern>().is_err(), "{bad:?} was accepted");
        }
        assert!("x".repeat(301).parse::<HostPattern>().unwrap_err().contains("300"));
    }

    #[test]
    fn matching_checks_scheme_host_and_port() {
        let api = pattern("api.example.com");
        assert!(api.matches(Scheme::Https, Target::Name("api.example.com"), 443));
        assert!(!api.matches(Scheme::Http, Target::Name("api.example.com"), 443));
        assert!(!api.matches(Scheme::Https, Target::Name("api.example.com"), 8443));
        assert!(!api.matches(Scheme::Https, Target::Name("api.example.com.evil.net"), 443));
        let sub = pattern("https://*.forge.dev");
        assert!(sub.matches(Scheme::Https, Target::Name("a.b.forge.dev"), 443));
        assert!(!sub.matches(Scheme::Https, Target::Name("forge.dev"), 443));
        assert!(!sub.matches(Scheme::Https, Target::Name("evilforge.dev"), 443));
        let cidr = pattern("http://10.0.0.0/8:8000-8100");
        assert!(cidr.matches(Scheme::Http, Target::Address(ip("10.1.2.3")), 8050));
        assert!(!cidr.matches(Scheme::Http, Target::Address(ip("11.1.2.3")), 8050));
        assert!(!cidr.matches(Scheme::Http, Target::Address(ip("10.1.2.3")), 8101));
        assert!(!cidr.matches(Scheme::Http, Target::Name("10.1.2.3.nip.io"), 8050));
        assert!(cidr.names_address(Scheme::Http, ip("::ffff:10.0.0.1"), 8000));
        assert!(!pattern("https://*").names_address(Scheme::Https, ip("127.0.0.1"), 443));
        assert!(pattern("http://[::1]:*").names_address(Scheme::Http, ip("::1"), 1234));
    }

    #[test]
    fn the_allow_list_permits_only_narrower_patterns() {
        let allow = pattern("https://*.example.com:*");
        assert!(allow.permits(&pattern("api.example.com")));
        assert!(allow.permits(&pattern("https://*.eu.example.com:8443")));
        assert!(!allow.permits(&pattern("example.com")));
        assert!(!allow.permits(&pattern("http://api.example.com")));
        assert!(!allow.permits(&pattern("https://*")));
        assert!(pattern("http://10.0.0.0/8:*").permits(&pattern("http://10.2.0.0/16:80")));
        assert!(!pattern("http://10.0.0.0/16:*").permits(&pattern("http://10.0.0.0/8:80")));
        assert!(!pattern("https://a.com:443").permits(&pattern("https://a.com:443-444")));
        assert!(pattern("https://*:*").permits(&pattern("https://127.0.0.1")));
    }

    #[test]
    fn special_ranges_are_classified() {
        for (address, range) in [
            ("127.0.0.1", "loopback"),
            ("127.0.0.2", "loopback"),
            ("::1", "loopback"),
            ("169.254.169.254", "link-local"),
            ("fe80::1", "link-local"),
            ("10.0.0.1", "private"),
            ("172.16.5.4", "private"),
            ("192.168.1.1", "private"),
            ("100.64.0.1", "private"),
            ("fd00::1", "unique-local"),
            ("0.0.0.0", "unspecified"),
            ("::", "unspecified"),
            ("224.0.0.1", "multicast"),
            ("ff02::1", "multicast"),
            ("255.255.255.255", "broadcast / reserved"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "link-local"),
            ("64:ff9b::a9fe:a9fe", "link-local"),
            ("64:ff9b::10.0.0.1", "private"),
        ] {
            assert_eq!(special_range(ip(address)), Some(range), "{address}");
        }
        for public in
            ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "172.32.0.1", "100.128.0.1", "64:ff9b::808:808"]
        {
            assert_eq!(special_range(ip(public)), None, "{public}");
        }
    }
}
