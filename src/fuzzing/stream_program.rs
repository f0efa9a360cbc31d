//! The input programs of the `server_stream` and `client_stream` targets
//! ([`Op`], read from the fuzzer's bytes), and their seeds from real
//! traffic.

use std::sync::Arc;

use rustls::pki_types::ServerName;

use crate::wire::MAX_FRAGMENT;

/// The peer's application byte at stream offset `i`.
pub fn app_byte(i: u64) -> u8 {
    (i.wrapping_mul(0x9e37_79b9) >> 11) as u8 ^ i as u8
}

/// One step of an input program.
#[derive(Debug)]
pub enum Op<'a> {
    /// The peer sends this many application bytes.
    PeerData(u64),
    /// A valid record of any content type and payload (turns the peer into
    /// a bare record layer).
    Record(u8, &'a [u8]),
    /// Bytes no record layer made.
    Raw(&'a [u8]),
    PeerKeyUpdate(bool),
    PeerCloseNotify,
    PeerEof,
    /// rktls reads with a buffer of this size.
    Read(usize),
    /// rktls writes this many bytes.
    Write(usize),
    RefreshKeys(bool),
    Shutdown,
    Handshake,
    /// Transport delivers at most this many bytes per step from now on.
    Chunk(usize),
}

pub(crate) struct Input<'a>(pub(crate) &'a [u8]);

impl<'a> Input<'a> {
    pub(crate) fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    pub(crate) fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes([self.byte()?, self.byte()?]))
    }
    pub(crate) fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
    pub(crate) fn op(&mut self) -> Option<Op<'a>> {
        let b = self.byte()?;
        Some(match b % 13 {
            0 => Op::PeerData(self.u16()? as u64),
            1 => Op::PeerData((self.byte()? as u64 % 64) * MAX_FRAGMENT as u64),
            2 => {
                let typ = self.byte()?;
                let n = self.u16()? as usize % (MAX_FRAGMENT + 1);
                Op::Record(typ, self.bytes(n))
            }
            3 => {
                let n = self.u16()? as usize;
                Op::Raw(self.bytes(n))
            }
            4 => Op::PeerKeyUpdate(b & 0x80 != 0),
            5 => Op::PeerCloseNotify,
            6 => Op::PeerEof,
            7 => Op::Read(self.u16()? as usize % 20000 + 1),
            8 => Op::Write(self.u16()? as usize * 2),
            9 => Op::RefreshKeys(b & 0x80 != 0),
            10 => Op::Shutdown,
            11 => Op::Handshake,
            _ => Op::Chunk(self.u16()? as usize + 1),
        })
    }
}

/// Seed inputs from real traffic: each is a program of honest and
/// dishonest steps. Written to `fuzz/seeds/` by a test.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let hello = real_client_hello();
    let mut v: Vec<(&'static str, Vec<u8>)> = Vec::new();
    for (name, variant) in [("tls13", 0u8), ("tls12", 2u8)] {
        for fd in [0u8, 4] {
            let head = variant | fd;
            let tag = |s: &str| -> &'static str {
                Box::leak(
                    format!("{s}-{name}-{}", if fd == 4 { "fd" } else { "buf" }).into_boxed_str(),
                )
            };
            // Data, read, close_notify, read.
            v.push((
                tag("data-close"),
                vec![head, 0, 0x10, 0x00, 7, 0x40, 0x00, 5, 7, 0x40, 0x00],
            ));
            // Bulk data then write and read in turns.
            v.push((
                tag("bulk"),
                vec![head, 1, 8, 8, 0x10, 0x00, 7, 0x40, 0x00, 7, 0x40, 0x00],
            ));
            // A renegotiating ClientHello (or HelloRequest) inside the session.
            let mut p = vec![head, 0, 0x01, 0x00, 7, 0x00, 0x80, 2, 22];
            let body: Vec<u8> = if name == "tls12" && fd == 0 {
                hello.clone()
            } else {
                vec![0, 0, 0, 0]
            };
            p.extend_from_slice(&(body.len() as u16).to_be_bytes());
            p.extend_from_slice(&body);
            p.extend_from_slice(&[7, 0x40, 0x00, 8, 0x00, 0x10]);
            v.push((tag("reneg"), p));
            // Warning alerts (below rustls' limit of 4), then a fatal one.
            let mut p = vec![head];
            for _ in 0..3 {
                p.extend_from_slice(&[2, 21, 0, 2, 1, 90]);
            }
            p.extend_from_slice(&[7, 0x40, 0x00, 2, 21, 0, 2, 2, 40, 7, 0x40, 0x00]);
            v.push((tag("alerts"), p));
            // KeyUpdates, requested and not, between data.
            let mut p = vec![head];
            for i in 0..40u8 {
                p.extend_from_slice(&[
                    if i % 2 == 0 { 4 | 0x80 } else { 4 },
                    0,
                    0,
                    0x20,
                    7,
                    0x40,
                    0x00,
                ]);
            }
            v.push((tag("keyupdates"), p));
            // Garbage after data; an unknown content type; EOF without close.
            v.push((
                tag("garbage"),
                vec![head, 0, 0, 0x40, 3, 0, 5, 23, 3, 3, 0, 9, 7, 0x40, 0x00],
            ));
            v.push((
                tag("badtype"),
                vec![head, 2, 99, 0, 3, 1, 2, 3, 7, 0x40, 0x00],
            ));
            v.push((
                tag("eof"),
                vec![head, 0, 0x02, 0x00, 6, 7, 0x40, 0x00, 7, 0x40, 0x00],
            ));
            // One byte at a time, refresh keys and shutdown.
            v.push((
                tag("slow"),
                vec![
                    head,
                    12,
                    0,
                    0,
                    0,
                    0x08,
                    0x00,
                    9 | 0x80,
                    7,
                    0x40,
                    0x00,
                    10,
                    7,
                    0x40,
                    0x00,
                ],
            ));
        }
    }
    v
}

/// A ClientHello handshake message (no record header) from rustls.
pub(crate) fn real_client_hello() -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    let _ = &mut roots;
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(crate::crypto::provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut c =
        rustls::ClientConnection::new(Arc::new(cfg), ServerName::try_from("localhost").unwrap())
            .unwrap();
    let mut v = Vec::new();
    c.write_tls(&mut v).unwrap();
    v[5..].to_vec()
}
