//! IP networks in CIDR notation (`10.0.0.0/8`, `fd00::/8`, a bare address for one host), used to
//! say which peers are trusted front proxies whose forwarded client-certificate headers count.
//!
//! Host bits set below the prefix (`10.1.2.3/8`) are accepted and masked away, so the network is
//! what [`Cidr`]'s `Display` prints. An IPv4-mapped IPv6 peer address (`::ffff:10.1.2.3`, what a
//! dual-stack listener reports for an IPv4 client) matches IPv4 networks, and an IPv4 address
//! matches an IPv6 network written in the mapped range (`::ffff:10.0.0.0/104`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// Why a CIDR string was refused; the message quotes the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid CIDR {input:?}: {problem}")]
pub struct CidrError {
    /// The text that was parsed.
    pub input: String,
    /// What is wrong with it.
    pub problem: String,
}

impl CidrError {
    fn new(input: &str, problem: impl Into<String>) -> Self {
        CidrError {
            input: input.to_string(),
            problem: problem.into(),
        }
    }
}

/// One IPv4 or IPv6 network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// A network from an address and prefix length; host bits are cleared.
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Self, CidrError> {
        let max = max_prefix(&addr);
        if prefix > max {
            return Err(CidrError::new(
                &format!("{addr}/{prefix}"),
                format!(
                    "prefix length {prefix} is longer than the {max} bits of an {} address",
                    family(&addr)
                ),
            ));
        }
        Ok(Cidr {
            network: mask(addr, prefix),
            prefix,
        })
    }

    /// A network holding exactly one address.
    pub fn host(addr: IpAddr) -> Self {
        Cidr {
            network: addr,
            prefix: max_prefix(&addr),
        }
    }

    /// The network address (host bits cleared).
    pub fn network(&self) -> IpAddr {
        self.network
    }

    /// The prefix length in bits.
    pub fn prefix_len(&self) -> u8 {
        self.prefix
    }

    /// Whether `addr` lies inside this network. IPv4-mapped IPv6 addresses are compared as the
    /// IPv4 address they carry, and the other way round.
    pub fn contains(&self, addr: &IpAddr) -> bool {
        match (self.network, *addr) {
            (IpAddr::V4(net), IpAddr::V4(a)) => v4_in(net, self.prefix, a),
            (IpAddr::V6(net), IpAddr::V6(a)) => v6_in(net, self.prefix, a),
            (IpAddr::V4(net), IpAddr::V6(a)) => match a.to_ipv4_mapped() {
                Some(a4) => v4_in(net, self.prefix, a4),
                None => false,
            },
            (IpAddr::V6(net), IpAddr::V4(a)) => v6_in(net, self.prefix, a.to_ipv6_mapped()),
        }
    }
}

fn family(addr: &IpAddr) -> &'static str {
    match addr {
        IpAddr::V4(_) => "IPv4",
        IpAddr::V6(_) => "IPv6",
    }
}

fn max_prefix(addr: &IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn v4_mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

fn v6_mask(prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(prefix))
    }
}

fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & v4_mask(prefix))),
        IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) & v6_mask(prefix))),
    }
}

fn v4_in(net: Ipv4Addr, prefix: u8, a: Ipv4Addr) -> bool {
    u32::from(a) & v4_mask(prefix) == u32::from(net)
}

fn v6_in(net: Ipv6Addr, prefix: u8, a: Ipv6Addr) -> bool {
    u128::from(a) & v6_mask(prefix) == u128::from(net)
}

impl Cidr {
    /// Parses like [`FromStr`], but refuses a network written with host bits set
    /// (`127.0.0.1/0`, `10.1.2.3/8`): in a list of trusted addresses such a typo silently
    /// trusts far more than it says.
    pub fn parse_canonical(s: &str) -> Result<Cidr, CidrError> {
        let cidr: Cidr = s.parse()?;
        let text = s.trim();
        let addr_text = text.split_once('/').map_or(text, |(a, _)| a);
        let addr_text = addr_text
            .strip_prefix('[')
            .and_then(|a| a.strip_suffix(']'))
            .unwrap_or(addr_text);
        let written: IpAddr = addr_text
            .parse()
            .map_err(|_| CidrError::new(s, "not an address"))?;
        if written != cidr.network {
            return Err(CidrError::new(
                s,
                format!(
                    "{written} is not the network address of a /{} (it would mean {}/{}); write \
                     {written}/{} for the one address or {}/{} for the network",
                    cidr.prefix,
                    cidr.network,
                    cidr.prefix,
                    max_prefix(&written),
                    cidr.network,
                    cidr.prefix
                ),
            ));
        }
        Ok(cidr)
    }

    /// Whether this network is so wide it trusts (nearly) everyone: shorter than /8 for IPv4
    /// or /16 for IPv6 (`0.0.0.0/0`, `::/0`).
    pub fn is_world_wide(&self) -> bool {
        match self.network {
            IpAddr::V4(_) => self.prefix < 8,
            IpAddr::V6(_) => self.prefix < 16,
        }
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        if text.is_empty() {
            return Err(CidrError::new(s, "empty"));
        }
        let (addr_text, prefix_text) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        // Accept "[::1]" as well, the way addresses are written in URLs.
        let addr_text = addr_text
            .strip_prefix('[')
            .and_then(|a| a.strip_suffix(']'))
            .unwrap_or(addr_text);
        let addr: IpAddr = addr_text.parse().map_err(|_| {
            CidrError::new(
                s,
                format!(
                    "{addr_text:?} is not an IPv4 or IPv6 address (zone ids are not supported)"
                ),
            )
        })?;
        let Some(prefix_text) = prefix_text else {
            return Ok(Cidr::host(addr));
        };
        if prefix_text.is_empty() || !prefix_text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CidrError::new(
                s,
                format!("prefix length {prefix_text:?} is not a number"),
            ));
        }
        let prefix: u8 = prefix_text.parse().map_err(|_| {
            CidrError::new(s, format!("prefix length {prefix_text} is out of range"))
        })?;
        let max = max_prefix(&addr);
        if prefix > max {
            return Err(CidrError::new(
                s,
                format!(
                    "prefix length {prefix} is longer than the {max} bits of an {} address",
                    family(&addr)
                ),
            ));
        }
        Ok(Cidr {
            network: mask(addr, prefix),
            prefix,
        })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// A list of networks; an address is in the set when any network contains it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CidrSet {
    nets: Vec<Cidr>,
}

impl CidrSet {
    /// A set from networks already parsed.
    pub fn new(nets: Vec<Cidr>) -> Self {
        CidrSet { nets }
    }

    /// Parses every string; the first bad one is the error.
    pub fn parse<I, S>(items: I) -> Result<Self, CidrError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let nets = items
            .into_iter()
            .map(|s| s.as_ref().parse())
            .collect::<Result<Vec<Cidr>, _>>()?;
        Ok(CidrSet { nets })
    }

    /// Whether any network of the set contains `addr`.
    pub fn contains(&self, addr: &IpAddr) -> bool {
        self.nets.iter().any(|n| n.contains(addr))
    }

    /// Whether the set has no network (then it contains nothing).
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// Number of networks.
    pub fn len(&self) -> usize {
        self.nets.len()
    }

    /// The networks in the order given.
    pub fn iter(&self) -> impl Iterator<Item = &Cidr> {
        self.nets.iter()
    }
}

impl FromIterator<Cidr> for CidrSet {
    fn from_iter<T: IntoIterator<Item = Cidr>>(iter: T) -> Self {
        CidrSet {
            nets: iter.into_iter().collect(),
        }
    }
}

#[cfg(test)]
#[path = "cidr_props.rs"]
mod props;

#[cfg(test)]
mod canonical_tests {
    use super::Cidr;

    #[test]
    fn host_bits_and_world_wide_networks() {
        for bad in ["127.0.0.1/0", "10.1.2.3/8", "::1/0", "192.168.1.1/24"] {
            let e = Cidr::parse_canonical(bad).expect_err(bad);
            assert!(
                e.to_string().contains("not the network address"),
                "{bad}: {e}"
            );
        }
        for good in [
            "127.0.0.1",
            "127.0.0.1/32",
            "10.0.0.0/8",
            "::1",
            "fd00::/8",
            "0.0.0.0/0",
        ] {
            Cidr::parse_canonical(good).expect(good);
        }
        let wide = |s: &str| Cidr::parse_canonical(s).expect(s).is_world_wide();
        assert!(wide("0.0.0.0/0") && wide("::/0") && wide("0.0.0.0/1") && wide("::/15"));
        assert!(!wide("10.0.0.0/8") && !wide("fd00::/16") && !wide("127.0.0.1"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    fn cidr(s: &str) -> Cidr {
        s.parse().expect("test cidr")
    }

    #[test]
    fn parses_v4_v6_and_hosts() {
        assert_eq!(cidr("10.0.0.0/8").to_string(), "10.0.0.0/8");
        assert_eq!(cidr("::1/128").to_string(), "::1/128");
        assert_eq!(cidr("192.168.1.7").to_string(), "192.168.1.7/32");
        assert_eq!(cidr("fd00::1").to_string(), "fd00::1/128");
        assert_eq!(cidr("[::1]/128").to_string(), "::1/128");
        assert_eq!(cidr(" 0.0.0.0/0 ").to_string(), "0.0.0.0/0");
        assert_eq!(cidr("::/0").to_string(), "::/0");
        assert_eq!(cidr("10.0.0.0/8").prefix_len(), 8);
    }

    #[test]
    fn host_bits_are_masked() {
        assert_eq!(cidr("10.1.2.3/8").to_string(), "10.0.0.0/8");
        assert_eq!(cidr("fd12:3456::1/16").to_string(), "fd12::/16");
        assert_eq!(cidr("10.1.2.3/8"), cidr("10.0.0.0/8"));
        assert_eq!(
            Cidr::new(ip("172.16.9.9"), 12).expect("new").to_string(),
            "172.16.0.0/12"
        );
    }

    #[test]
    fn rejects_bad_input_with_clear_errors() {
        for (bad, needle) in [
            ("", "empty"),
            ("10.0.0.0/33", "longer than the 32 bits of an IPv4"),
            ("::/129", "longer than the 128 bits of an IPv6"),
            ("10.0.0/8", "not an IPv4 or IPv6 address"),
            ("10.0.0.0/", "not a number"),
            ("10.0.0.0/+8", "not a number"),
            ("10.0.0.0/-1", "not a number"),
            ("10.0.0.0/8/8", "not a number"),
            ("10.0.0.0/999", "out of range"),
            ("fe80::1%eth0", "zone ids"),
            ("example.com", "not an IPv4 or IPv6 address"),
        ] {
            let e = bad.parse::<Cidr>().expect_err(bad).to_string();
            assert!(e.contains(needle), "{bad}: {e}");
            assert!(e.contains(&format!("{bad:?}")), "{bad}: {e}");
        }
        assert!(Cidr::new(ip("10.0.0.0"), 40).is_err());
    }

    #[test]
    fn contains_v4_and_v6() {
        let n = cidr("10.0.0.0/8");
        assert!(n.contains(&ip("10.255.0.1")));
        assert!(!n.contains(&ip("11.0.0.1")));
        let h = cidr("127.0.0.1");
        assert!(h.contains(&ip("127.0.0.1")));
        assert!(!h.contains(&ip("127.0.0.2")));
        let all = cidr("0.0.0.0/0");
        assert!(all.contains(&ip("8.8.8.8")));
        assert!(!all.contains(&ip("2001:db8::1")));
        let v6 = cidr("2001:db8::/32");
        assert!(v6.contains(&ip("2001:db8:1::5")));
        assert!(!v6.contains(&ip("2001:db9::5")));
        assert!(!v6.contains(&ip("10.0.0.1")));
        assert!(cidr("::1").contains(&ip("::1")));
    }

    #[test]
    fn ipv4_mapped_addresses_match_ipv4_networks() {
        let n = cidr("10.0.0.0/8");
        assert!(n.contains(&ip("::ffff:10.1.2.3")));
        assert!(!n.contains(&ip("::ffff:11.1.2.3")));
        // IPv4-compatible (deprecated) addresses are not mapped addresses.
        assert!(!n.contains(&ip("::10.1.2.3")));
        let mapped_net = cidr("::ffff:10.0.0.0/104");
        assert!(mapped_net.contains(&ip("10.9.9.9")));
        assert!(mapped_net.contains(&ip("::ffff:10.9.9.9")));
        assert!(!mapped_net.contains(&ip("11.9.9.9")));
    }

    #[test]
    fn set_contains_any() {
        let set = CidrSet::parse(["127.0.0.1", "10.0.0.0/8", "::1"]).expect("set");
        assert_eq!(set.len(), 3);
        assert!(set.contains(&ip("127.0.0.1")));
        assert!(set.contains(&ip("10.2.3.4")));
        assert!(set.contains(&ip("::1")));
        assert!(set.contains(&ip("::ffff:127.0.0.1")));
        assert!(!set.contains(&ip("192.168.0.1")));
        let e = CidrSet::parse(["10.0.0.0/8", "nope"]).expect_err("bad");
        assert_eq!(e.input, "nope");
        let empty = CidrSet::default();
        assert!(empty.is_empty());
        assert!(!empty.contains(&ip("127.0.0.1")));
        let collected: CidrSet = [cidr("10.0.0.0/8")].into_iter().collect();
        assert_eq!(collected.iter().count(), 1);
    }
}
