//! When a client connection must have sent something: the pure clock behind
//! [`super::guard::GuardedStream`]. A connection is *idle* until the first byte of a request
//! (`idle_timeout`), then *reading headers* until the request's headers are complete
//! (`header_timeout`, counted from that first byte, however the bytes trickle in), then *busy*
//! with no deadline of ours until the request ends. HTTP/1.1 connections go back to idle after
//! each request; HTTP/2 connections (recognised by their preface, on TLS and plaintext alike)
//! are busy from their first complete HEADERS block on, and `h2_idle_timeout` governs them.

use std::time::{Duration, Instant};

/// The two deadlines of a listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadlines {
    /// Silence allowed before a request's first byte (new and kept-alive connections).
    pub idle: Duration,
    /// Time allowed from a request's first byte to the end of its headers.
    pub headers: Duration,
}

/// Why a connection was cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    Idle,
    Headers,
}

impl Cut {
    /// The `reason` label of `modgate_connections_cut_total`.
    pub fn label(self) -> &'static str {
        match self {
            Cut::Idle => "idle",
            Cut::Headers => "headers",
        }
    }

    /// Every `reason` label a deadline cut gives (`match` without a wildcard: a new variant
    /// fails to compile until it is listed).
    pub fn labels() -> [&'static str; 2] {
        let _every = |c: Cut| match c {
            Cut::Idle | Cut::Headers => (),
        };
        [Cut::Idle.label(), Cut::Headers.label()]
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Idle { since: Instant },
    Headers { since: Instant },
    Busy,
}

/// The HTTP/2 connection preface every h2 client sends first.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;
const FRAME_HEADERS: u8 = 0x1;
const FRAME_CONTINUATION: u8 = 0x9;
const FLAG_END_HEADERS: u8 = 0x4;

/// What the connection's first bytes say it speaks.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Protocol {
    /// Still matching the h2 preface: this many bytes matched so far.
    Undecided(usize),
    Http1,
    /// HTTP/2 frames after the preface.
    Http2(FrameScan),
}

/// Follows HTTP/2 frame boundaries far enough to see the end of the first header block.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct FrameScan {
    header: [u8; FRAME_HEADER],
    have: usize,
    payload_left: usize,
    ends_headers: bool,
}

impl FrameScan {
    /// Consumes `bytes`; true once a HEADERS or CONTINUATION frame carrying END_HEADERS has
    /// been read whole.
    fn feed(&mut self, mut bytes: &[u8]) -> bool {
        while !bytes.is_empty() {
            if self.have < FRAME_HEADER {
                let take = (FRAME_HEADER - self.have).min(bytes.len());
                self.header[self.have..self.have + take].copy_from_slice(&bytes[..take]);
                self.have += take;
                bytes = &bytes[take..];
                if self.have < FRAME_HEADER {
                    return false;
                }
                let h = self.header;
                self.payload_left =
                    (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
                self.ends_headers = matches!(h[3], FRAME_HEADERS | FRAME_CONTINUATION)
                    && h[4] & FLAG_END_HEADERS != 0;
            }
            let take = self.payload_left.min(bytes.len());
            self.payload_left -= take;
            bytes = &bytes[take..];
            if self.payload_left == 0 {
                if self.ends_headers {
                    return true;
                }
                self.have = 0;
            }
        }
        false
    }
}

/// One connection's clock.
#[derive(Clone, Debug)]
pub struct Clock {
    limits: Deadlines,
    phase: Phase,
    protocol: Protocol,
}

impl Clock {
    /// A connection accepted (its TLS handshake done) at `now`.
    pub fn new(limits: Deadlines, now: Instant) -> Clock {
        Clock {
            limits,
            phase: Phase::Idle { since: now },
            protocol: Protocol::Undecided(0),
        }
    }

    /// Bytes arrived from the client at `now`.
    pub fn on_read(&mut self, bytes: &[u8], now: Instant) {
        if bytes.is_empty() {
            return;
        }
        if let Phase::Idle { .. } = self.phase {
            self.phase = Phase::Headers { since: now };
        }
        let mut rest = bytes;
        if let Protocol::Undecided(matched) = self.protocol {
            let take = (H2_PREFACE.len() - matched).min(rest.len());
            if rest[..take] != H2_PREFACE[matched..matched + take] {
                self.protocol = Protocol::Http1;
                return;
            }
            rest = &rest[take..];
            self.protocol = if matched + take == H2_PREFACE.len() {
                Protocol::Http2(FrameScan::default())
            } else {
                Protocol::Undecided(matched + take)
            };
        }
        if let Protocol::Http2(scan) = &mut self.protocol {
            if self.phase != Phase::Busy && scan.feed(rest) {
                self.phase = Phase::Busy;
            }
        }
    }

    /// The server has the request's headers (HTTP/1.1): no deadline until it ends.
    pub fn request_started(&mut self) {
        self.phase = Phase::Busy;
    }

    /// The request ended at `now`; an HTTP/1.1 connection waits for the next one.
    pub fn request_finished(&mut self, now: Instant) {
        if !matches!(self.protocol, Protocol::Http2(_)) {
            self.phase = Phase::Idle { since: now };
        }
    }

    /// When the connection must be cut if nothing changes, and why.
    pub fn deadline(&self) -> Option<(Instant, Cut)> {
        match self.phase {
            Phase::Idle { since } => Some((since + self.limits.idle, Cut::Idle)),
            Phase::Headers { since } => Some((since + self.limits.headers, Cut::Headers)),
            Phase::Busy => None,
        }
    }

    /// Whether the connection speaks HTTP/2 (from its preface).
    pub fn is_http2(&self) -> bool {
        matches!(self.protocol, Protocol::Http2(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Deadlines = Deadlines {
        idle: Duration::from_secs(60),
        headers: Duration::from_secs(10),
    };

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![
            (len >> 16) as u8,
            (len >> 8) as u8,
            len as u8,
            kind,
            flags,
            0,
            0,
            0,
            1,
        ];
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn a_new_connection_is_idle_until_its_first_byte() {
        let t0 = Instant::now();
        let c = Clock::new(LIMITS, t0);
        assert_eq!(c.deadline(), Some((t0 + LIMITS.idle, Cut::Idle)));
    }

    #[test]
    fn the_header_deadline_counts_from_the_first_byte_not_the_last() {
        let t0 = Instant::now();
        let mut c = Clock::new(LIMITS, t0);
        let t1 = t0 + Duration::from_secs(3);
        c.on_read(b"GET / HT", t1);
        c.on_read(b"TP/1.1\r\n", t1 + Duration::from_secs(5));
        c.on_read(b"X: y\r\n", t1 + Duration::from_secs(9));
        assert_eq!(c.deadline(), Some((t1 + LIMITS.headers, Cut::Headers)));
        assert!(!c.is_http2());
    }

    #[test]
    fn http1_requests_have_no_deadline_and_rearm_when_they_end() {
        let t0 = Instant::now();
        let mut c = Clock::new(LIMITS, t0);
        c.on_read(b"GET / HTTP/1.1\r\n\r\n", t0);
        c.request_started();
        assert_eq!(c.deadline(), None);
        c.on_read(b"body or the next request", t0 + Duration::from_secs(100));
        assert_eq!(
            c.deadline(),
            None,
            "bytes read during a request change nothing"
        );
        let t2 = t0 + Duration::from_secs(200);
        c.request_finished(t2);
        assert_eq!(c.deadline(), Some((t2 + LIMITS.idle, Cut::Idle)));
        c.on_read(b"G", t2 + Duration::from_secs(1));
        assert_eq!(
            c.deadline(),
            Some((t2 + Duration::from_secs(1) + LIMITS.headers, Cut::Headers))
        );
    }

    #[test]
    fn http2_is_busy_after_its_first_complete_header_block() {
        let t0 = Instant::now();
        let mut c = Clock::new(LIMITS, t0);
        let mut bytes = H2_PREFACE.to_vec();
        bytes.extend(frame(0x4, 0, &[0; 12])); // SETTINGS
        bytes.extend(frame(FRAME_HEADERS, 0, &[1, 2, 3])); // HEADERS without END_HEADERS
        bytes.extend(frame(FRAME_CONTINUATION, FLAG_END_HEADERS, &[4, 5]));
        // Byte by byte: every split of frames and preface is seen.
        for (i, b) in bytes.iter().enumerate() {
            assert_ne!(c.deadline(), None, "busy too early, at byte {i}");
            c.on_read(std::slice::from_ref(b), t0);
        }
        assert!(c.is_http2());
        assert_eq!(c.deadline(), None);
        c.request_finished(t0);
        assert_eq!(
            c.deadline(),
            None,
            "h2 connections are not re-armed per stream"
        );
    }

    #[test]
    fn http2_preface_alone_keeps_the_header_deadline() {
        let t0 = Instant::now();
        let mut c = Clock::new(LIMITS, t0);
        c.on_read(H2_PREFACE, t0);
        c.on_read(&frame(0x4, 0, &[]), t0);
        c.on_read(&frame(FRAME_HEADERS, FLAG_END_HEADERS, &[9; 20])[..15], t0);
        assert_eq!(c.deadline(), Some((t0 + LIMITS.headers, Cut::Headers)));
    }

    #[test]
    fn a_header_block_with_end_headers_and_empty_payload_counts() {
        let mut s = FrameScan::default();
        assert!(s.feed(&frame(FRAME_HEADERS, FLAG_END_HEADERS, &[])));
    }

    #[test]
    fn data_frames_with_the_end_headers_bit_do_not_count() {
        let mut s = FrameScan::default();
        assert!(!s.feed(&frame(0x0, FLAG_END_HEADERS, &[1, 2])));
    }

    #[test]
    fn a_preface_lookalike_is_http1() {
        let t0 = Instant::now();
        let mut c = Clock::new(LIMITS, t0);
        c.on_read(b"PRI * HTTP/1.1\r\n", t0);
        assert!(!c.is_http2());
    }
}
