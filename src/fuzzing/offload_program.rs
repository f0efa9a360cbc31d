//! The input programs of the `offload_records` target ([`OffOp`]), the
//! model of how the connection must end ([`Model`]), and the seeds.

use super::stream_program::Input;
use crate::result::rktls_result::{self, *};
use crate::wire::{self, MAX_FRAGMENT};

/// The most rktls writes per step (the emulation writes whole records).
pub(crate) const MAX_WRITE: usize = 16 * 1024;

/// One step of an input program.
#[derive(Debug)]
pub enum OffOp<'a> {
    /// The peer sends this many application bytes.
    PeerData(u64),
    /// A record of any type and payload (turns the peer bare).
    Record(u8, &'a [u8]),
    /// Bytes no record layer made.
    Raw(&'a [u8]),
    /// The peer updates its keys (asking for ours too).
    PeerKeyUpdate(bool),
    /// An alert record: (level, description).
    Alert(u8, u8),
    /// A renegotiation attempt: ClientHello to a server, HelloRequest to a
    /// client.
    Renegotiate,
    PeerCloseNotify,
    PeerEof,
    /// rktls reads (or processes records) with a buffer of this size.
    Read(usize),
    /// rktls writes this many bytes.
    Write(usize),
    RefreshKeys(bool),
    Shutdown,
    /// Transport delivers at most this many bytes per step from now on.
    Chunk(usize),
}

pub(crate) fn op<'a>(i: &mut Input<'a>) -> Option<OffOp<'a>> {
    let b = i.byte()?;
    Some(match b % 13 {
        0 => OffOp::PeerData(i.u16()? as u64),
        1 => OffOp::PeerData((i.byte()? as u64 % 16) * MAX_FRAGMENT as u64),
        2 => {
            let typ = i.byte()?;
            let n = i.u16()? as usize % (MAX_FRAGMENT + 1);
            OffOp::Record(typ, i.bytes(n))
        }
        3 => {
            let n = i.u16()? as usize;
            OffOp::Raw(i.bytes(n))
        }
        4 => OffOp::PeerKeyUpdate(b & 0x80 != 0),
        5 => OffOp::Alert(i.byte()?, i.byte()?),
        6 => OffOp::Renegotiate,
        7 if b & 0x80 != 0 => OffOp::PeerCloseNotify,
        7 => OffOp::PeerEof,
        8 => OffOp::Read(i.u16()? as usize % 20000 + 1),
        9 => OffOp::Write(i.u16()? as usize % MAX_WRITE + 1),
        10 => OffOp::RefreshKeys(b & 0x80 != 0),
        11 => OffOp::Shutdown,
        _ => OffOp::Chunk(i.u16()? as usize + 1),
    })
}

/// How the connection must end, predicted from the records the peer sent
/// while it sent only records the model understands.
#[derive(Debug, Default)]
pub(crate) struct Model {
    /// False once the peer sent anything else (or raw bytes, or EOF).
    pub(crate) known: bool,
    pub(crate) warnings: u32,
    pub(crate) key_updates: u32,
    pub(crate) hello_requests: u32,
    /// A TLS 1.2 client refused a renegotiation and the server has sent no
    /// data since: its close is reported as the refusal's consequence.
    pub(crate) refusal_pending: bool,
    /// The peer's keys no longer match what it announced (a bare peer
    /// sent KeyUpdate): the next record is garbage to rktls.
    pub(crate) desync: bool,
    /// The predicted end (code, alert rktls sends) and the application
    /// bytes sent before the record that causes it.
    pub(crate) end: Option<(rktls_result, Option<u8>, u64)>,
}

impl Model {
    /// The peer sends one record; `app_sent` counts the bytes before it.
    pub(crate) fn on_record(&mut self, typ: u8, p: &[u8], h: &Facts, app_sent: u64) {
        if !self.known || self.end.is_some() {
            return;
        }
        if self.desync {
            self.known = false;
            return;
        }
        let mut end = |code, alert| self.end = Some((code, alert, app_sent));
        match (typ, p) {
            (wire::CT_APPLICATION_DATA, p) if !p.is_empty() => {
                self.key_updates = 0;
                self.refusal_pending = false;
            }
            (wire::CT_ALERT, &[level @ (1 | 2), desc]) => {
                if desc == 0 && self.refusal_pending {
                    // The server ended after our refusal: rktls reports the
                    // refusal as the cause (the IIS case) unless it saw the
                    // server carry on, which depends on how the records were
                    // read; the model does not predict which.
                    self.known = false;
                } else if desc == 0 {
                    end(RKTLS_CLOSED, None);
                } else if desc == 90 || (level == 1 && !h.tls13) {
                    self.warnings += 1;
                    if self.warnings > 4 {
                        end(RKTLS_ERR_PEER_MISBEHAVED, Some(10));
                    }
                } else {
                    end(RKTLS_ERR_ALERT_RECEIVED, None);
                }
            }
            (wire::CT_HANDSHAKE, &[24, 0, 0, 1, req @ (0 | 1)]) if h.tls13 => {
                self.key_updates += 1;
                if self.key_updates > 32 {
                    end(RKTLS_ERR_PEER_MISBEHAVED, Some(10));
                } else if !h.rekey {
                    end(RKTLS_ERR_KTLS_NO_REKEY, Some(80));
                }
                let _ = req;
            }
            (wire::CT_HANDSHAKE, &[0, 0, 0, 0]) if h.client && !h.tls13 => {
                self.hello_requests += 1;
                self.refusal_pending = true;
                if self.hello_requests > 1 {
                    end(RKTLS_ERR_RENEGOTIATION, Some(100));
                }
            }
            (wire::CT_HANDSHAKE, p)
                if !h.client
                    && !h.tls13
                    && p.len() >= 4
                    && p[0] == 1
                    && u32::from_be_bytes([0, p[1], p[2], p[3]]) as usize == p.len() - 4 =>
            {
                end(RKTLS_ERR_RENEGOTIATION, Some(100));
            }
            _ => self.known = false,
        }
    }
}

/// What the model needs to know of the connection.
pub(crate) struct Facts {
    pub(crate) tls13: bool,
    pub(crate) client: bool,
    pub(crate) rekey: bool,
}

/// Seed inputs from real traffic: honest programs, and the peer limits
/// just below and just over. Written to `fuzz/seeds/` by a test.
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let mut v = Vec::new();
    // (name, suite variant, rekey)
    for (name, variant) in [
        ("tls13", 0u8),
        ("chacha13", 1),
        ("tls12", 2),
        ("chacha12", 3),
    ] {
        for (side, sb) in [("server", 0u8), ("client", 4)] {
            for (style, eb) in [("read", 0u8), ("events", 8)] {
                let head = variant | sb | eb;
                let mut add = |what: &str, prog: Vec<u8>| {
                    let mut d = vec![head];
                    d.extend(prog);
                    v.push((format!("{what}-{name}-{side}-{style}"), d));
                };
                let read = [8u8, 0x40, 0x00];
                // Data both ways, then close_notify.
                let mut p = vec![0, 0x10, 0x00];
                p.extend(read);
                p.extend([9, 0x08, 0x00]);
                p.extend([1, 3]);
                p.extend(read);
                p.push(7 | 0x80);
                p.extend(read);
                add("data-close", p);
                // Warning alerts: 4 then data, 5 (the limit).
                let warn = if variant < 2 {
                    [5u8, 1, 90]
                } else {
                    [5u8, 1, 100]
                };
                let mut p = Vec::new();
                for _ in 0..5 {
                    p.extend(warn);
                    p.extend(read);
                }
                add("warnings", p);
                // A fatal alert after data.
                let mut p = vec![0, 0x01, 0x00, 5, 2, 40];
                p.extend(read);
                add("fatal", p);
                // Renegotiation attempts (two).
                let mut p = vec![6];
                p.extend(read);
                p.extend([0, 0, 0x20, 6]);
                p.extend(read);
                add("reneg", p);
                // Garbage, and an unknown record type.
                let mut p = vec![0, 0, 0x40, 3, 0, 5, 23, 3, 3, 0, 9];
                p.extend(read);
                add("garbage", p);
                let mut p = vec![2, 99, 0, 3, 1, 2, 3];
                p.extend(read);
                add("badtype", p);
                // EOF without close_notify; slow delivery.
                let mut p = vec![0, 0x02, 0x00, 7];
                p.extend(read);
                add("eof", p);
                let mut p = vec![12, 0, 0, 0, 0x08, 0x00];
                p.extend(read);
                p.extend(read);
                add("slow", p);
                if variant < 2 {
                    // KeyUpdates: 33 without data (the limit), and with
                    // data between; ours, asked for and not.
                    let mut p = Vec::new();
                    for _ in 0..33 {
                        p.push(4);
                        p.extend(read);
                    }
                    add("keyupdates", p);
                    let mut p = Vec::new();
                    for i in 0..40u8 {
                        p.extend([4, 0, 0, 0x20]);
                        p.extend(read);
                        if i % 8 == 0 {
                            p.extend([10 | 0x80, 9, 0, 0x40]);
                        }
                    }
                    add("keyupdates-data", p);
                    // A bare peer's KeyUpdate asking for ours.
                    let mut p = vec![5, 1, 90, 4 | 0x80];
                    p.extend(read);
                    add("bare-keyupdate", p);
                }
            }
        }
    }
    // The same on a kernel that cannot rekey.
    let extra: Vec<_> = v
        .iter()
        .filter(|(n, _)| n.starts_with("keyupdates-tls13") || n.starts_with("data-close-tls13"))
        .map(|(n, d)| {
            let mut d = d.clone();
            d[0] |= 16;
            (format!("{n}-norekey"), d)
        })
        .collect();
    v.extend(extra);
    v
}
