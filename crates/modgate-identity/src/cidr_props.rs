//! Property tests of `cidr.rs`: canonical networks (IPv4 and IPv6, every prefix length) print
//! and parse back to themselves; `contains` agrees with a bit-by-bit reference implementation
//! (IPv4-mapped IPv6 addresses included); a network written with host bits set is masked by
//! `FromStr` and refused by `parse_canonical`; no string makes either panic.

use super::*;
use proptest::prelude::*;

/// Bit `i` (0 = most significant) of a big-endian byte string.
fn bit(bytes: &[u8], i: usize) -> bool {
    bytes[i / 8] & (0x80 >> (i % 8)) != 0
}

fn same_prefix(a: &[u8], b: &[u8], bits: usize) -> bool {
    (0..bits).all(|i| bit(a, i) == bit(b, i))
}

/// `::ffff:a.b.c.d` as 16 bytes.
fn mapped_octets(a: Ipv4Addr) -> [u8; 16] {
    let mut o = [0u8; 16];
    o[10] = 0xff;
    o[11] = 0xff;
    o[12..].copy_from_slice(&a.octets());
    o
}

/// What `Cidr::contains` should answer, written without masks or integer conversions.
fn reference_contains(net: &Cidr, addr: &IpAddr) -> bool {
    let bits = usize::from(net.prefix_len());
    match (net.network(), addr) {
        (IpAddr::V4(n), IpAddr::V4(a)) => same_prefix(&n.octets(), &a.octets(), bits),
        (IpAddr::V6(n), IpAddr::V6(a)) => same_prefix(&n.octets(), &a.octets(), bits),
        (IpAddr::V4(n), IpAddr::V6(a)) => {
            let o = a.octets();
            o[..10].iter().all(|&b| b == 0)
                && o[10..12] == [0xff, 0xff]
                && same_prefix(&n.octets(), &o[12..], bits)
        }
        (IpAddr::V6(n), IpAddr::V4(a)) => same_prefix(&n.octets(), &mapped_octets(*a), bits),
    }
}

/// An address of either family; IPv6 ones are sometimes IPv4-mapped.
fn address() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<u32>().prop_map(|a| IpAddr::V4(Ipv4Addr::from(a))),
        any::<u128>().prop_map(|a| IpAddr::V6(Ipv6Addr::from(a))),
        any::<u32>().prop_map(|a| IpAddr::V6(Ipv4Addr::from(a).to_ipv6_mapped())),
    ]
}

/// An address and a prefix length valid for its family.
fn address_and_prefix() -> impl Strategy<Value = (IpAddr, u8)> {
    address().prop_flat_map(|a| {
        let max = match a {
            IpAddr::V4(_) => 32u8,
            IpAddr::V6(_) => 128u8,
        };
        (Just(a), 0..=max)
    })
}

/// The address with every bit below `prefix` cleared, computed bit by bit.
fn reference_network(addr: IpAddr, prefix: u8) -> IpAddr {
    let keep = |octets: &mut [u8]| {
        for i in usize::from(prefix)..octets.len() * 8 {
            octets[i / 8] &= !(0x80 >> (i % 8));
        }
    };
    match addr {
        IpAddr::V4(a) => {
            let mut o = a.octets();
            keep(&mut o);
            IpAddr::V4(Ipv4Addr::from(o))
        }
        IpAddr::V6(a) => {
            let mut o = a.octets();
            keep(&mut o);
            IpAddr::V6(Ipv6Addr::from(o))
        }
    }
}

/// Replaces the bits of `addr` at and after `from` with those of `other` (same family).
fn splice(addr: IpAddr, other: IpAddr, from: u8) -> IpAddr {
    let mix = |a: &mut [u8], b: &[u8]| {
        for i in usize::from(from)..a.len() * 8 {
            let m = 0x80 >> (i % 8);
            a[i / 8] = (a[i / 8] & !m) | (b[i / 8] & m);
        }
    };
    match (addr, other) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let mut o = a.octets();
            mix(&mut o, &b.octets());
            IpAddr::V4(Ipv4Addr::from(o))
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let mut o = a.octets();
            mix(&mut o, &b.octets());
            IpAddr::V6(Ipv6Addr::from(o))
        }
        (a, _) => a,
    }
}

/// Flips bit `i` of an address.
fn flip(addr: IpAddr, i: u8) -> IpAddr {
    let i = usize::from(i);
    match addr {
        IpAddr::V4(a) => {
            let mut o = a.octets();
            o[i / 8] ^= 0x80 >> (i % 8);
            IpAddr::V4(Ipv4Addr::from(o))
        }
        IpAddr::V6(a) => {
            let mut o = a.octets();
            o[i / 8] ^= 0x80 >> (i % 8);
            IpAddr::V6(Ipv6Addr::from(o))
        }
    }
}

/// The same address in the other notation where there is one: IPv4 ↔ IPv4-mapped IPv6.
fn other_notation(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(a) => IpAddr::V6(a.to_ipv6_mapped()),
        IpAddr::V6(a) => a.to_ipv4_mapped().map_or(addr, IpAddr::V4),
    }
}

/// Text that looks like a CIDR more often than random text would.
fn cidr_like_text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            "[0-9]{1,4}",
            "[0-9a-fA-F]{1,5}",
            Just(".".to_string()),
            Just(":".to_string()),
            Just("::".to_string()),
            Just("/".to_string()),
            Just("[".to_string()),
            Just("]".to_string()),
            Just("%".to_string()),
            Just("ffff".to_string()),
            "[ \t+-]",
            "\\PC",
        ],
        0..16,
    )
    .prop_map(|parts| parts.concat())
}

/// Valid CIDR text in its many spellings (brackets, blanks, leading zeros), with a character
/// or two inserted or removed: often still valid, often wrong in one place.
fn damaged_cidr_text() -> impl Strategy<Value = String> {
    let edit = (
        any::<prop::sample::Index>(),
        prop::option::of(prop::sample::select(vec![
            '/', ':', '.', '[', ']', '0', '9', 'f', ' ', '%', '+',
        ])),
    );
    (
        address_and_prefix(),
        0u8..4,
        "0{0,2}",
        prop::collection::vec(edit, 0..3),
    )
        .prop_map(|((addr, prefix), style, zeros, edits)| {
            let text = match style {
                0 => format!("{addr}/{zeros}{prefix}"),
                1 => format!("[{addr}]/{prefix}"),
                2 => format!(" {addr}\t"),
                _ => format!("{}/{prefix}", reference_network(addr, prefix)),
            };
            let mut chars: Vec<char> = text.chars().collect();
            for (at, insert) in edits {
                match insert {
                    Some(c) => chars.insert(at.index(chars.len() + 1), c),
                    None if !chars.is_empty() => {
                        chars.remove(at.index(chars.len()));
                    }
                    None => {}
                }
            }
            chars.into_iter().collect()
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A network prints as `network/prefix` and that text parses back to the same network, with
    /// either parser, bracketed or not.
    #[test]
    fn canonical_display_round_trips((addr, prefix) in address_and_prefix()) {
        let net = Cidr::new(addr, prefix).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(net.network(), reference_network(addr, prefix));
        prop_assert_eq!(net.prefix_len(), prefix);
        let text = net.to_string();
        prop_assert_eq!(&text, &format!("{}/{prefix}", net.network()));
        prop_assert_eq!(text.parse::<Cidr>(), Ok(net));
        prop_assert_eq!(Cidr::parse_canonical(&text), Ok(net));
        prop_assert_eq!(Cidr::parse_canonical(&format!(" \t{text} ")), Ok(net));
        let bracketed = format!("[{}]/{prefix}", net.network());
        prop_assert_eq!(Cidr::parse_canonical(&bracketed), Ok(net));
        prop_assert_eq!(
            net.is_world_wide(),
            prefix < if addr.is_ipv4() { 8 } else { 16 }
        );
    }

    /// A bare address is the network of that one host, and is canonical.
    #[test]
    fn bare_address_is_a_host(addr in address()) {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let net = Cidr::parse_canonical(&addr.to_string())
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(net, Cidr::host(addr));
        prop_assert_eq!((net.network(), net.prefix_len()), (addr, max));
        prop_assert_eq!(net.to_string(), format!("{addr}/{max}"));
        prop_assert!(net.contains(&addr));
    }

    /// `FromStr` masks host bits away; `parse_canonical` refuses exactly the texts whose address
    /// has host bits set, naming the network the text would have meant.
    #[test]
    fn host_bits_are_masked_or_refused((addr, prefix) in address_and_prefix()) {
        let text = format!("{addr}/{prefix}");
        let network = reference_network(addr, prefix);
        let masked = text.parse::<Cidr>().map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!((masked.network(), masked.prefix_len()), (network, prefix));
        match Cidr::parse_canonical(&text) {
            Ok(net) => {
                prop_assert_eq!(addr, network, "{} accepted with host bits set", text);
                prop_assert_eq!(net, masked);
            }
            Err(e) => {
                prop_assert_ne!(addr, network, "canonical {} refused: {}", text, e);
                prop_assert_eq!(&e.input, &text);
                let msg = e.to_string();
                prop_assert!(msg.contains("not the network address"), "{}", msg);
                let meant = format!("{network}/{prefix}");
                prop_assert!(msg.contains(&meant), "{}", msg);
            }
        }
    }

    /// Prefix lengths past the family's width are refused by every constructor.
    #[test]
    fn overlong_prefixes_are_refused(addr in address(), extra in 1u8..=127) {
        let max = if addr.is_ipv4() { 32u8 } else { 128u8 };
        let prefix = max.saturating_add(extra);
        let text = format!("{addr}/{prefix}");
        let e = text.parse::<Cidr>().expect_err("overlong prefix");
        prop_assert!(e.to_string().contains("longer than the"), "{}", e);
        prop_assert!(Cidr::parse_canonical(&text).is_err());
        prop_assert!(Cidr::new(addr, prefix).is_err());
    }

    /// `contains` agrees with the reference on addresses inside the network (host bits random),
    /// just outside it (one prefix bit flipped), anywhere, and in the other notation.
    #[test]
    fn contains_matches_reference(
        (addr, prefix) in address_and_prefix(),
        other in address(),
        flip_at in any::<prop::sample::Index>(),
        kind in 0u8..3,
        renotate in any::<bool>(),
    ) {
        let net = Cidr::new(addr, prefix).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let same_family = match (addr, other) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => other,
            (IpAddr::V4(_), IpAddr::V6(o)) => IpAddr::V4(Ipv4Addr::from(u128::from(o) as u32)),
            (IpAddr::V6(_), IpAddr::V4(o)) => IpAddr::V6(o.to_ipv6_mapped()),
        };
        let (probe, expect) = match kind {
            0 => (splice(net.network(), same_family, prefix), Some(true)),
            1 if prefix > 0 => {
                let bit = flip_at.index(prefix.into()) as u8;
                (flip(splice(net.network(), same_family, prefix), bit), Some(false))
            }
            _ => (other, None),
        };
        let probe = if renotate { other_notation(probe) } else { probe };
        let got = net.contains(&probe);
        prop_assert_eq!(got, reference_contains(&net, &probe), "{} contains {}", net, probe);
        // Writing the address in the other notation never changes whether it is inside.
        if let Some(expect) = expect {
            prop_assert_eq!(got, expect, "{} contains {}", net, probe);
        }
        let set = CidrSet::new(vec![net, Cidr::host(other)]);
        prop_assert_eq!(set.contains(&probe), got || Cidr::host(other).contains(&probe));
    }

    /// No text makes the parsers panic; whatever they accept prints and parses back to itself,
    /// and an error quotes the input.
    #[test]
    fn arbitrary_text_never_panics(
        s in prop_oneof![cidr_like_text(), damaged_cidr_text(), any::<String>()],
    ) {
        match s.parse::<Cidr>() {
            Ok(net) => {
                prop_assert_eq!(net.to_string().parse::<Cidr>(), Ok(net));
                prop_assert_eq!(Cidr::parse_canonical(&net.to_string()), Ok(net));
            }
            Err(e) => {
                prop_assert_eq!(&e.input, &s);
                prop_assert!(e.to_string().contains(&format!("{s:?}")), "{}", e);
            }
        }
        match Cidr::parse_canonical(&s) {
            Ok(net) => prop_assert_eq!(s.parse::<Cidr>(), Ok(net)),
            Err(e) => prop_assert_eq!(&e.input, &s),
        }
        let _ = CidrSet::parse([s.as_str(), "10.0.0.0/8"]);
    }
}
