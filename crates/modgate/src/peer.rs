//! Who is at the other end of a loopback TCP connection: the uid that owns the client's socket,
//! read from the kernel's socket tables (`/proc/net/tcp`, `/proc/net/tcp6`). Loopback TCP
//! carries no credential of its own, so `modgate agent` uses this to lend its certificate only
//! to its own user (and to those named with `--allow-user`).
//!
//! Both ends of a loopback connection are sockets of this host, so the client's socket is in
//! the table: the row whose local address is the connection's remote one and whose remote
//! address is ours. Only a live, established socket counts: a socket the client already
//! closed is kept by the kernel as a "time-wait" entry whose uid reads as 0, and must not pass
//! for root's. The parsing is pure ([`find_owner`]); [`owner`] reads the tables.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The kernel's number for an established TCP connection (`st` column).
const ESTABLISHED: u8 = 0x01;

/// The address in the canonical form used for comparisons: an IPv4-mapped IPv6 address (a
/// dual-stack listener's view of an IPv4 client) is its IPv4 address.
fn canonical(a: SocketAddr) -> SocketAddr {
    match a.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), a.port()),
            None => a,
        },
        IpAddr::V4(_) => a,
    }
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

/// The uid owning the established socket whose local address is `local` and remote address
/// `remote`, from the text of `/proc/net/tcp` or `/proc/net/tcp6`.
pub fn find_owner(table: &str, local: SocketAddr, remote: SocketAddr) -> Option<u32> {
    let (local, remote) = (canonical(local), canonical(remote));
    // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let l = canonical(parse_addr(f.get(1)?)?);
        let r = canonical(parse_addr(f.get(2)?)?);
        let state = u8::from_str_radix(f.get(3)?, 16).ok()?;
        let inode = f.get(9)?;
        if l != local || r != remote || state != ESTABLISHED || *inode == "0" {
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

/// A user name for messages: `65534 (nobody)`, or the number alone when it has no name.
pub fn describe(uid: u32) -> String {
    match user_name(uid) {
        Some(name) => format!("{uid} ({name})"),
        None => uid.to_string(),
    }
}

/// The name of `uid` in the user database.
fn user_name(uid: u32) -> Option<String> {
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

    #[test]
    fn users_by_name_or_number() {
        assert_eq!(resolve_user("0"), Ok(0));
        assert_eq!(resolve_user("root"), Ok(0));
        assert!(resolve_user("no-such-user-modgate").is_err());
        assert_eq!(describe(0), "0 (root)");
    }
}
