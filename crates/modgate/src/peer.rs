//! Who is at the other end of a loopback TCP connection: the uid that owns the client's socket,
//! read from the kernel's socket tables (`/proc/net/tcp`, `/proc/net/tcp6`). Loopback TCP
//! carries no credential of its own, so `modgate agent` uses this to lend its certificate only
//! to its own user (and to those named with `--allow-user`).
//!
//! Both ends of a loopback connection are sockets of this host, so the client's socket is in
//! the table: the row whose local address is the connection's remote one and whose remote
//! address is ours, compared by IP and port only (an IPv4-mapped address as its IPv4 one; the
//! scope id an IPv6 link-local peer address carries is not in the table). Only a socket some
//! process still holds counts: established, or closing with its descriptor open (a client that
//! half-closed after its request is in FIN_WAIT2). A socket no process holds any more (inode
//! 0: the kernel's "time-wait" entry, an orphan) reads as uid 0 and must not pass for root's.
//! The parsing is pure ([`find_owner`]); [`owner`] reads the tables.
//!
//! A peer whose owner is not found is on another host only if its address is not one of this
//! host's ([`on_this_host`], with the interface addresses from [`host_addresses`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The kernel's numbers (`st` column) for the states of a socket its process still holds
/// once connected: ESTABLISHED, FIN_WAIT1, FIN_WAIT2, CLOSE_WAIT, LAST_ACK, CLOSING. Not
/// SYN_SENT/SYN_RECV (not yet connected), TIME_WAIT/CLOSE (gone), LISTEN, NEW_SYN_RECV.
const LIVE: [u8; 6] = [0x01, 0x04, 0x05, 0x08, 0x09, 0x0B];

/// An address in the canonical form used for comparisons: an IPv4-mapped IPv6 address (a
/// dual-stack listener's view of an IPv4 client) is its IPv4 address.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// IP and port only, canonical: no IPv6 scope id or flow label, which the kernel's tables do
/// not show.
fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(canonical_ip(a.ip()), a.port())
}

/// Parses the kernel's `ADDR:PORT` hex form: the address as 32-bit words in host byte order
/// (one for IPv4, four for IPv6), the port as a plain hex number.
fn parse_addr(field: &str) -> Option<SocketAddr> {
    let (addr, port) = field.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |s: &str| u32::from_str_radix(s, 16).ok().map(u32::to_ne_bytes);
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(addr)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(addr.get(i * 8..i * 8 + 8)?)?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// The uid owning the live socket whose local address is `local` and remote address `remote`,
/// from the text of `/proc/net/tcp` or `/proc/net/tcp6`.
pub fn find_owner(table: &str, local: SocketAddr, remote: SocketAddr) -> Option<u32> {
    let (local, remote) = (canonical(local), canonical(remote));
    // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let l = canonical(parse_addr(f.get(1)?)?);
        let r = canonical(parse_addr(f.get(2)?)?);
        let state = u8::from_str_radix(f.get(3)?, 16).ok()?;
        let inode = f.get(9)?;
        if l != local || r != remote || !LIVE.contains(&state) || *inode == "0" {
            return None;
        }
        f.get(7)?.parse().ok()
    })
}

/// The uid owning the client end of the loopback connection from `client` to our `server`
/// address; `None` when no live socket of this host is that end (a peer on another host, or a
/// connection already closed).
pub fn owner(client: SocketAddr, server: SocketAddr) -> Option<u32> {
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().find_map(|p| {
        let table = std::fs::read_to_string(p).ok()?;
        find_owner(&table, client, server)
    })
}

/// Whether a peer at `client`, connected to our address `server`, is on this host: a loopback
/// address (an IPv4-mapped one included), the address the connection reached (a host talking
/// to itself), or one of this host's interface addresses `host`.
pub fn on_this_host(client: IpAddr, server: IpAddr, host: &[IpAddr]) -> bool {
    let client = canonical_ip(client);
    client.is_loopback()
        || client == canonical_ip(server)
        || host.iter().any(|a| canonical_ip(*a) == client)
}

/// The addresses of this host's interfaces (`getifaddrs(3)`); an error when they cannot be
/// listed.
pub fn host_addresses() -> std::io::Result<Vec<IpAddr>> {
    // libc, not rustix: rustix has no getifaddrs.
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills in `head` with a list it allocates, freed below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut at = head;
    while !at.is_null() {
        // SAFETY: `at` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*at };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points to a sockaddr whose family says its real type and size.
            match i32::from(unsafe { (*ifa.ifa_addr).sa_family }) {
                libc::AF_INET => {
                    // SAFETY: an AF_INET address is a sockaddr_in.
                    let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                    out.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                        sin.sin_addr.s_addr,
                    ))));
                }
                libc::AF_INET6 => {
                    // SAFETY: an AF_INET6 address is a sockaddr_in6.
                    let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                    out.push(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
                }
                _ => {}
            }
        }
        at = ifa.ifa_next;
    }
    // SAFETY: `head` came from getifaddrs and is freed once; nothing points into it any more.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// A user name for messages: `65534 (nobody)`, or the number alone when it has no name.
pub fn describe(uid: u32) -> String {
    match user_name(uid) {
        Some(name) => format!("{uid} ({name})"),
        None => uid.to_string(),
    }
}

/// The name of `uid` in the user database.
fn user_name(uid: u32) -> Option<String> {
    // libc, not rustix: rustix has no passwd-database lookup (getpwuid_r goes through NSS).
    let mut buf = vec![0 as libc::c_char; 4096];
    // SAFETY: an all-zero passwd is a valid value for getpwuid_r to fill in.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call and `buf.len()` is its real size; the result
    // points into `pwd`/`buf`, which outlive its use below.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
    if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
        return None;
    }
    // SAFETY: pw_name is a NUL-terminated string inside `buf`.
    let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
    Some(name.to_string_lossy().into_owned())
}

/// The uid of a user given by name or number (`--allow-user`).
pub fn resolve_user(user: &str) -> Result<u32, String> {
    if let Ok(uid) = user.parse::<u32>() {
        return Ok(uid);
    }
    let name = std::ffi::CString::new(user).map_err(|_| format!("bad user name {user:?}"))?;
    let mut buf = vec![0 as libc::c_char; 4096];
    // SAFETY: as in `user_name`.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call and `buf.len()` is its real size.
    let rc = unsafe {
        libc::getpwnam_r(
            name.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        return Err(format!("no such user {user:?}"));
    }
    Ok(pwd.pw_uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table as the kernel writes it (little-endian host), with both ends of one loopback
    /// connection 127.0.0.1:40000 → 127.0.0.1:7070, a listener, and a closed client's entry.
    fn table_v4() -> String {
        let addr = |ip: [u8; 4], port: u16| format!("{:08X}:{:04X}", u32::from_ne_bytes(ip), port);
        let lo = [127, 0, 0, 1];
        let row = |sl: u32, l: String, r: String, st: u8, uid: u32, inode: u64| {
            format!(
                "{sl:4}: {l} {r} {st:02X} 00000000:00000000 00:00000000 00000000 {uid:5} 0 \
                 {inode} 1 0000000000000000 20 4 30 10 -1"
            )
        };
        [
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode".to_string(),
            row(0, addr(lo, 7070), addr([0, 0, 0, 0], 0), 0x0A, 1000, 111),
            row(1, addr(lo, 7070), addr(lo, 40000), 0x01, 1000, 222),
            row(2, addr(lo, 40000), addr(lo, 7070), 0x01, 65534, 333),
            // The same client port, from a connection closed earlier: time-wait, uid 0.
            row(3, addr(lo, 40001), addr(lo, 7070), 0x06, 0, 0),
            row(4, addr(lo, 40002), addr(lo, 7070), 0x01, 0, 0),
        ]
        .join("\n")
    }

    #[test]
    fn the_client_end_of_the_connection_names_its_owner() {
        let t = table_v4();
        let server: SocketAddr = "127.0.0.1:7070".parse().expect("addr");
        let client: SocketAddr = "127.0.0.1:40000".parse().expect("addr");
        assert_eq!(find_owner(&t, client, server), Some(65534));
        // Our own end is not the client's.
        assert_eq!(find_owner(&t, server, client), Some(1000));
        // A dual-stack listener sees the client as an IPv4-mapped address.
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:40000".parse().expect("addr");
        let mapped_server: SocketAddr = "[::ffff:127.0.0.1]:7070".parse().expect("addr");
        assert_eq!(find_owner(&t, mapped, mapped_server), Some(65534));
    }

    #[test]
    fn closed_or_unknown_sockets_name_nobody() {
        let t = table_v4();
        let server: SocketAddr = "127.0.0.1:7070".parse().expect("addr");
        for port in [40001, 40002, 40003] {
            let client = SocketAddr::new(server.ip(), port);
            assert_eq!(find_owner(&t, client, server), None, "port {port}");
        }
        assert_eq!(find_owner("", server, server), None);
        assert_eq!(find_owner("header\n garbage line\n", server, server), None);
    }

    #[test]
    fn ipv6_rows_are_four_host_order_words() {
        let ip: Ipv6Addr = "::1".parse().expect("addr");
        let words: String = ip
            .octets()
            .chunks(4)
            .map(|c| format!("{:08X}", u32::from_ne_bytes([c[0], c[1], c[2], c[3]])))
            .collect();
        let row = format!(
            "header\n   0: {words}:9C40 {words}:1B9E 01 00000000:00000000 00:00000000 00000000  \
             1234        0 4242 1 0000000000000000 20 4 30 10 -1"
        );
        let client: SocketAddr = "[::1]:40000".parse().expect("addr");
        let server: SocketAddr = "[::1]:7070".parse().expect("addr");
        assert_eq!(find_owner(&row, client, server), Some(1234));
        // As a little-endian kernel prints 127.0.0.1:7070.
        #[cfg(target_endian = "little")]
        assert_eq!(
            parse_addr("0100007F:1B9E"),
            Some("127.0.0.1:7070".parse().expect("addr"))
        );
    }

    /// A row for a socket `l` → `r` in state `st`, owned by `uid`.
    fn row_v4(l: ([u8; 4], u16), r: ([u8; 4], u16), st: u8, uid: u32, inode: u64) -> String {
        let addr =
            |(ip, port): ([u8; 4], u16)| format!("{:08X}:{:04X}", u32::from_ne_bytes(ip), port);
        format!(
            "   0: {} {} {st:02X} 00000000:00000000 00:00000000 00000000 {uid:5} 0 {inode} 1 \
             0000000000000000 20 4 30 10 -1",
            addr(l),
            addr(r)
        )
    }

    #[test]
    fn a_client_that_half_closed_or_is_closing_still_names_its_owner() {
        let lo = [127, 0, 0, 1];
        let client: SocketAddr = "127.0.0.1:40000".parse().expect("addr");
        let server: SocketAddr = "127.0.0.1:7070".parse().expect("addr");
        // ESTABLISHED, FIN_WAIT1, FIN_WAIT2 (after shutdown(SHUT_WR)), CLOSE_WAIT, LAST_ACK,
        // CLOSING: the client still holds the socket.
        for st in [0x01, 0x04, 0x05, 0x08, 0x09, 0x0B] {
            let t = format!(
                "header\n{}",
                row_v4((lo, 40000), (lo, 7070), st, 1002, 4242)
            );
            assert_eq!(find_owner(&t, client, server), Some(1002), "state {st:02X}");
            // A socket no process holds any more (inode 0) names nobody, whatever its state.
            let t = format!("header\n{}", row_v4((lo, 40000), (lo, 7070), st, 0, 0));
            assert_eq!(
                find_owner(&t, client, server),
                None,
                "state {st:02X}, inode 0"
            );
        }
        // SYN_SENT, SYN_RECV, TIME_WAIT, CLOSE, LISTEN, NEW_SYN_RECV: not a client's live end.
        for st in [0x02, 0x03, 0x06, 0x07, 0x0A, 0x0C] {
            let t = format!(
                "header\n{}",
                row_v4((lo, 40000), (lo, 7070), st, 1002, 4242)
            );
            assert_eq!(find_owner(&t, client, server), None, "state {st:02X}");
        }
    }

    #[test]
    fn a_link_local_peer_is_found_whatever_its_scope_id() {
        let ip: Ipv6Addr = "fe80::fc:ff:fe00:1".parse().expect("addr");
        let words: String = ip
            .octets()
            .chunks(4)
            .map(|c| format!("{:08X}", u32::from_ne_bytes([c[0], c[1], c[2], c[3]])))
            .collect();
        let row = format!(
            "header\n   0: {words}:9C40 {words}:1B9E 01 00000000:00000000 00:00000000 00000000  \
             1002        0 4242 1 0000000000000000 20 4 30 10 -1"
        );
        // As the accepted connection reports them: with the interface's scope id.
        let client = SocketAddr::V6(std::net::SocketAddrV6::new(ip, 40000, 0, 4));
        let server = SocketAddr::V6(std::net::SocketAddrV6::new(ip, 7070, 0, 4));
        assert_eq!(find_owner(&row, client, server), Some(1002));
    }

    #[test]
    fn this_hosts_addresses_are_local() {
        let server: IpAddr = "fe80::fc:ff:fe00:1".parse().expect("addr");
        // The connection's own local address is an address of this host.
        assert!(on_this_host(server, server, &[]));
        let lan: IpAddr = "192.0.2.2".parse().expect("addr");
        let far: IpAddr = "192.0.2.7".parse().expect("addr");
        assert!(on_this_host(lan, server, &[lan]));
        let mapped_lan: IpAddr = "::ffff:192.0.2.2".parse().expect("addr");
        assert!(on_this_host(mapped_lan, server, &[lan]));
        let mapped_lo: IpAddr = "::ffff:127.0.0.1".parse().expect("addr");
        assert!(on_this_host(mapped_lo, server, &[]));
        assert!(!on_this_host(far, server, &[lan]));
        // The real interface list holds at least the loopback address.
        let here = host_addresses().expect("getifaddrs");
        assert!(here.iter().any(|a| a.is_loopback()), "{here:?}");
    }

    #[test]
    fn users_by_name_or_number() {
        assert_eq!(resolve_user("0"), Ok(0));
        assert_eq!(resolve_user("root"), Ok(0));
        assert!(resolve_user("no-such-user-modgate").is_err());
        assert_eq!(describe(0), "0 (root)");
    }
}
