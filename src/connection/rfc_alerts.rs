//! Every failure sends the alert the RFC names, and the API reports exactly
//! that alert: the places where rustls 0.23 alone would not.
//!
//! rktls sees every record before rustls does, and whatever rustls leaves
//! in the buffer after it (rustls decrypts in place). Each workaround below
//! is small and marked "rustls 0.23:"; drop it when rustls does the same.
//!
//! - Screened before rustls sees them (`screen`): a record longer than
//!   TLS allows gets record_overflow, judged on its header alone (2^14
//!   bytes of plaintext, RFC 8446 §5.1 / RFC 5246 §6.2.1; 2^14 + 256 of
//!   TLS 1.3 ciphertext, §5.2; 2^14 + 2048 of TLS 1.2 ciphertext,
//!   RFC 5246 §6.2.3). rustls 0.23 takes plaintext up to 2^14 + 2048 and
//!   answers longer ciphertext with bad_record_mac or decode_error. An
//!   alert record with an empty body gets unexpected_message (RFC 8446
//!   §5.1, §6), and so does a record of an unknown content type (checked
//!   before the length; RFC 8446 §5, RFC 5246 §6); rustls 0.23 sends
//!   decode_error for both.
//! - The ClientHello (`hello_facts`): a TLS 1.3 ClientHello with
//!   supported_groups but no key_share gets missing_extension (RFC 8446
//!   §9.2), not rustls' handshake_failure; a non-empty renegotiation_info
//!   in an initial TLS 1.2 handshake gets handshake_failure (RFC 5746 §3.6),
//!   which rustls 0.23 accepts.
//! - Where rustls closes silently (an inner plaintext without a content
//!   type, data between the fragments of a handshake message, a handshake
//!   message over rustls' size limit, ...) the alert it owes is sent
//!   anyway: in plaintext while our records are, otherwise sealed with the
//!   connection's current keys, which rustls hands over (`send_own_alert`).
//! - What went out encrypted is reported as what it is: rustls 0.23 gives
//!   the same error for a record that fails to decrypt (bad_record_mac) and
//!   for a wrong Finished (decrypt_error), and for an alert with an invalid
//!   level (illegal_parameter) and a TLS 1.3 warning (decode_error); the
//!   record rustls consumed last tells them apart (`alert_rustls_sent`).
//!
//! - A third valid ChangeCipherSpec in a handshake (`screen`): rustls
//!   0.23 drops two in a TLS 1.3 handshake and closes silently on the
//!   next; rktls refuses it with unexpected_message (RFC 8446 §5), as the
//!   offloaded path answers a peer over its limits.
//!
//! During a TLS 1.3 handshake, once our records are encrypted, rustls
//! cannot hand its keys over (only after the handshake). There rktls makes
//! rustls send unexpected_message itself: an invalid ChangeCipherSpec in
//! place of the offending record (when rustls holds nothing before it) is
//! answered with exactly that alert through rustls' current keys
//! (`unexpected_message_via_rustls`).
//!
//! Documented exceptions, all during a TLS 1.3 handshake once encrypted:
//! an over-long ciphertext goes to rustls unchanged (its bad_record_mac, or
//! decode_error beyond 2^14 + 2048); data between handshake fragments and
//! an oversized handshake message end without an alert (rustls' silence).
//! What is reported is always what was sent (nothing, when nothing was).
//!
//! Too many warning alerts (rustls 0.23 takes four) and too many
//! KeyUpdates without data between them (32): rustls fails without an
//! alert and then keeps its keys. rktls counts them as rustls consumes
//! them and, once rustls' allowance is used up, its own record layer takes
//! over and answers the next one with unexpected_message (`limits.rs`).

use rustls::{ContentType, PeerIncompatible, PeerMisbehaved, ProtocolVersion};

use super::engine::{Action, Step};
use super::{Connection, Tls};
use crate::alert::{self, rktls_alert_description::*, FATAL, WARNING};
use crate::hello::{self, HelloFacts};
use crate::record::Sealer;
use crate::result::rktls_result::{self, *};
use crate::result::Error;
use crate::wire::{
    self, CT_ALERT, CT_APPLICATION_DATA, CT_CHANGE_CIPHER_SPEC, CT_HANDSHAKE, HEADER, MAX_FRAGMENT,
};

/// The handshake message type of Finished.
const HS_FINISHED: u8 = 20;
/// AEAD tag length (every suite rktls offers).
const TAG: usize = 16;
/// A ChangeCipherSpec whose value is not 1.
const INVALID_CCS: [u8; 6] = [CT_CHANGE_CIPHER_SPEC, 3, 3, 0, 1, 2];

/// What the screening of incoming records has learnt.
#[derive(Default)]
pub(super) struct Screen {
    /// Bytes at the front of the incoming buffer already screened.
    screened: usize,
    /// The peer sent ChangeCipherSpec: its records are encrypted from here.
    peer_ccs: bool,
    /// Server: the first ClientHello, read before rustls processed it.
    hello: Option<HelloFacts>,
    /// The renegotiation_info check was done (or is not needed).
    reneg_info_checked: bool,
    /// Valid ChangeCipherSpec records screened during the handshake.
    handshake_ccs: u8,
}

/// rustls 0.23 drops this many valid ChangeCipherSpec records during a
/// TLS 1.3 handshake (RFC 8446 §5 middlebox compatibility; one per
/// ClientHello) and fails on the next without an alert.
const MIDDLEBOX_CCS_LIMIT: u8 = 2;

/// A record rktls answers itself.
pub(super) struct Refusal {
    at: usize,
    len: usize,
    alert: u8,
    code: rktls_result,
    why: &'static str,
}

impl Refusal {
    pub(super) fn at(&self) -> usize {
        self.at
    }
}

fn name(desc: u8) -> &'static str {
    alert::name(desc).trim_end_matches('\0')
}

impl Connection {
    /// rustls discarded `n` bytes from the front of the incoming buffer.
    pub(super) fn screen_discarded(&mut self, n: usize) {
        self.screen.screened = self.screen.screened.saturating_sub(n);
    }

    /// Look at the records rustls has not been given yet; the first one
    /// rktls must answer itself, if any.
    pub(super) fn screen(&mut self) -> Option<Refusal> {
        // After close_notify rustls reads nothing more, and neither do we.
        if self.peer_closed {
            return None;
        }
        let version = self.common()?.protocol_version();
        let handshaking = self.common()?.is_handshaking();
        let tls13 = version == Some(ProtocolVersion::TLSv1_3);
        let server = matches!(self.tls, Tls::Server(_));
        if server && self.screen.hello.is_none() && version.is_none() {
            self.screen.hello = hello::hello_facts(&self.b.incoming);
        }
        let buf = &self.b.incoming;
        let mut pos = self.screen.screened;
        while let Some(wire::Header { typ, len }) = buf.get(pos..).and_then(wire::Header::parse) {
            // (A TLS 1.3 ChangeCipherSpec changes nothing.)
            let encrypted = typ == CT_APPLICATION_DATA || (self.screen.peer_ccs && !tls13);
            let limit = match (encrypted, tls13) {
                (false, _) => MAX_FRAGMENT,
                (true, true) => MAX_FRAGMENT + 256,
                (true, false) => MAX_FRAGMENT + 2048,
            };
            let refuse = |alert, code, why| {
                Some(Refusal {
                    at: pos,
                    len: HEADER + len,
                    alert,
                    code,
                    why,
                })
            };
            // rustls 0.23: decode_error for these three, or accepts the
            // plaintext over 2^14.
            if !(CT_CHANGE_CIPHER_SPEC..=CT_APPLICATION_DATA).contains(&typ) {
                return refuse(
                    RKTLS_ALERT_UNEXPECTED_MESSAGE as u8,
                    RKTLS_ERR_UNEXPECTED_MESSAGE,
                    "the peer sent a record of an unknown content type",
                );
            }
            if len > limit {
                return refuse(
                    RKTLS_ALERT_RECORD_OVERFLOW as u8,
                    RKTLS_ERR_PROTOCOL,
                    "the peer sent a record longer than TLS allows",
                );
            }
            if typ == CT_ALERT && len == 0 {
                return refuse(
                    RKTLS_ALERT_UNEXPECTED_MESSAGE as u8,
                    RKTLS_ERR_UNEXPECTED_MESSAGE,
                    "the peer sent an empty alert record",
                );
            }
            // rustls 0.23 skips an empty handshake fragment; rktls' own
            // record layer refuses one (`control::EMPTY_HANDSHAKE_RECORD`):
            // the same alert on both, told by the length of a sealed TLS
            // 1.2 record.
            if typ == CT_HANDSHAKE && !handshaking && !tls13 && self.screen.peer_ccs {
                let empty = self
                    .common()
                    .and_then(|c| c.negotiated_cipher_suite())
                    .map(crate::ktls::tls12_record_overhead);
                if empty == Some(len) {
                    return refuse(
                        RKTLS_ALERT_UNEXPECTED_MESSAGE as u8,
                        RKTLS_ERR_UNEXPECTED_MESSAGE,
                        super::control::EMPTY_HANDSHAKE_RECORD,
                    );
                }
            }
            if pos + HEADER + len > buf.len() {
                break;
            }
            // rustls 0.23: closes silently on a third valid ChangeCipherSpec
            // in a TLS 1.3 handshake. More than two is never right (TLS 1.2
            // has one), so this is judged before the version is known: a
            // ClientHello and its ChangeCipherSpecs arrive together.
            let valid_ccs = typ == CT_CHANGE_CIPHER_SPEC && buf[pos + HEADER..][..len] == [1];
            if valid_ccs && handshaking {
                if self.screen.handshake_ccs >= MIDDLEBOX_CCS_LIMIT {
                    // Counted once: screening resumes at this record.
                    self.screen.screened = pos;
                    return refuse(
                        RKTLS_ALERT_UNEXPECTED_MESSAGE as u8,
                        RKTLS_ERR_PEER_MISBEHAVED,
                        "the peer sent more than two ChangeCipherSpec records in the handshake",
                    );
                }
                self.screen.handshake_ccs += 1;
            }
            self.screen.peer_ccs |= typ == CT_CHANGE_CIPHER_SPEC && !tls13;
            pos += HEADER + len;
        }
        self.screen.screened = pos;
        None
    }

    /// Answer a refused record with its alert and end the connection. If
    /// the alert cannot be sent here (see the module doc), the record goes
    /// to rustls instead: `None`.
    pub(super) fn refuse(&mut self, r: Refusal) -> Option<Step> {
        if let Err(why) = self.send_own_alert(r.alert) {
            if self.sent_close_notify {
                log::debug!("{}: {why}", r.why);
                return Some(Step::Ended(Error::new(r.code, r.why)));
            }
            let unexpected = r.alert == RKTLS_ALERT_UNEXPECTED_MESSAGE as u8;
            if !(unexpected && r.at == 0 && self.rustls_can_answer_invalid_ccs()) {
                log::debug!("{}; rustls answers it ({why})", r.why);
                self.screen.screened = r.at + r.len;
                return None;
            }
            self.unexpected_message_via_rustls(r.len);
        }
        let sent = match self.alert_sent {
            Some(d) => format!(" (sent alert {})", name(d)),
            None => String::new(),
        };
        let e = Error::new(r.code, format!("{}{sent}", r.why));
        log::debug!("connection failed: {}", e.msg);
        Some(Step::Ended(e))
    }

    /// Queue a fatal alert of ours as the next record: in plaintext while
    /// our records are, else sealed with the keys rustls hands over (it is
    /// gone afterwards). Only at a record boundary with nothing left inside
    /// rustls to send. Records it as the alert sent.
    pub(super) fn send_own_alert(&mut self, desc: u8) -> Result<(), String> {
        if self.sent_close_notify {
            return Err("nothing is sent after our close_notify".into());
        }
        if self.plaintext_alert_possible() {
            self.b
                .outgoing
                .extend_from_slice(&alert::Message { level: FATAL, desc }.plain_record());
        } else {
            let rec = self.seal_alerts(&[[FATAL, desc]])?;
            self.b.outgoing.extend_from_slice(&rec);
        }
        self.alert_sent = Some(desc);
        Ok(())
    }

    /// Encrypt alerts as the next records we send, with the keys rustls
    /// hands over. rustls is gone afterwards, whatever happens. Only valid
    /// at a record boundary with nothing left inside rustls to send: the
    /// sequence number rustls reports is then the first alert's.
    pub(super) fn seal_alerts(&mut self, alerts: &[[u8; 2]]) -> Result<Vec<u8>, String> {
        let c = self
            .common()
            .ok_or("the record layer is not in userspace")?;
        if c.is_handshaking() {
            return Err("rustls gives no keys during the handshake".into());
        }
        if c.wants_write() {
            return Err("rustls still has records to send".into());
        }
        let suite = c.negotiated_cipher_suite().ok_or("no suite negotiated")?;
        // Only where rustls holds no input: after a record it could not
        // read (still in the buffer) it must be shown nothing again. Else
        // sealed all the same: a peer that asked for our new keys may not
        // read it (fuzz/pending: A1).
        if self.b.shown == 0 && !self.send_held_key_update() {
            log::debug!("rustls holds a KeyUpdate answer it cannot send");
        }
        let secrets = self
            .take_secrets()
            .ok_or("the record layer is not in userspace")?;
        let tx = secrets
            .map_err(|e| format!("rustls kept its keys: {e}"))?
            .0
            .tx;
        let mut sealer = Sealer::new(suite, tx);
        let mut out = Vec::new();
        for a in alerts {
            sealer
                .seal(ContentType::Alert.into(), a, &mut out)
                .map_err(|e| e.msg)?;
        }
        Ok(out)
    }

    /// rustls failed with `e` and queued nothing: send the alert it owes.
    /// rustls 0.23: silent on deframing errors after encryption starts.
    pub(super) fn send_owed_alert(&mut self, e: &rustls::Error) {
        // None is owed for the peer's own fatal alert; our keys running out
        // is no failure of the peer's (and leaves no key to seal with).
        if matches!(
            e,
            rustls::Error::AlertReceived(_) | rustls::Error::EncryptError
        ) {
            return;
        }
        let desc = u8::from(alert::for_error(e));
        if let Err(why) = self.send_own_alert(desc) {
            // The record rustls could not open is still at the front, and
            // decrypted in place: all zeros (then rustls holds nothing
            // before it).
            let zeros = matches!(
                e,
                rustls::Error::PeerMisbehaved(PeerMisbehaved::IllegalTlsInnerPlaintext)
            ) && wire::whole_record(&self.b.incoming).is_some_and(|n| {
                n > HEADER + TAG && self.b.incoming[HEADER..n - TAG].iter().all(|&b| b == 0)
            });
            if zeros && self.rustls_can_answer_invalid_ccs() {
                let n = wire::whole_record(&self.b.incoming).unwrap_or(0);
                self.unexpected_message_via_rustls(n);
            } else {
                log::debug!("no alert for \"{e}\": {why}");
            }
        }
    }

    /// During a TLS 1.3 handshake (where rustls gives no keys) rustls
    /// answers an invalid ChangeCipherSpec with unexpected_message through
    /// its own current keys (RFC 8446 §5).
    fn rustls_can_answer_invalid_ccs(&self) -> bool {
        self.common().is_some_and(|c| {
            c.is_handshaking()
                && c.protocol_version() == Some(ProtocolVersion::TLSv1_3)
                && !c.wants_write()
        })
    }

    /// Put an invalid ChangeCipherSpec in place of the `len`-byte record at
    /// the front of the incoming buffer (rustls holds nothing before it)
    /// and collect rustls' unexpected_message. rustls 0.23 workaround: it
    /// closes silently, or names another alert, for what is replaced.
    fn unexpected_message_via_rustls(&mut self, len: usize) {
        let n = len.min(self.b.incoming.len());
        self.b.incoming.splice(..n, INVALID_CCS);
        let before = self.b.outgoing.len();
        let mut failed = None;
        for _ in 0..16 {
            match self.step_rustls(&mut Action::None) {
                Step::Progress => {}
                Step::Failed(e) => failed = Some(e),
                _ => break,
            }
            if failed.is_some() && !self.rustls_has_output() {
                break;
            }
        }
        let expected = matches!(
            failed,
            Some(rustls::Error::PeerMisbehaved(
                PeerMisbehaved::IllegalMiddleboxChangeCipherSpec
            ))
        );
        if expected && self.b.outgoing.len() > before {
            self.alert_sent = Some(RKTLS_ALERT_UNEXPECTED_MESSAGE as u8);
        } else {
            log::debug!("rustls did not answer the invalid ChangeCipherSpec: {failed:?}");
        }
    }

    /// rustls failed with `e` and sent the alert record `sent` itself:
    /// correct it where rustls names the wrong alert (only while it is
    /// still plaintext), and return the alert it is.
    pub(super) fn alert_rustls_sent(&mut self, e: &rustls::Error, before: usize) -> u8 {
        let end = self.b.outgoing.len() - before;
        let last = wire::record_ending_at(&self.b.outgoing[before..], end).map_or(end, <[u8]>::len);
        let rec = &mut self.b.outgoing[before + end - last..];
        if let Some(alert::Message { desc, .. }) = alert::parse_plain_alert(rec) {
            // rustls 0.23: handshake_failure for a missing key_share.
            let missing_share = matches!(
                e,
                rustls::Error::PeerIncompatible(PeerIncompatible::KeyShareExtensionRequired)
            );
            if missing_share
                && desc == RKTLS_ALERT_HANDSHAKE_FAILURE as u8
                && self
                    .screen
                    .hello
                    .is_some_and(|h| h.groups_without_key_share)
                && rec.len() == 7
            {
                rec[6] = RKTLS_ALERT_MISSING_EXTENSION as u8;
                return RKTLS_ALERT_MISSING_EXTENSION as u8;
            }
            return desc;
        }
        // Encrypted: which of rustls' alerts for this error it was, from the
        // record rustls consumed last (decrypted in place). rustls 0.23:
        // one error for two alerts.
        let last = self.b.last_consumed.as_deref().unwrap_or_default();
        let tls13 = self.protocol_version() == u16::from(ProtocolVersion::TLSv1_3);
        match e {
            rustls::Error::DecryptError if self.is_handshaking() && holds_finished(last, tls13) => {
                RKTLS_ALERT_DECRYPT_ERROR as u8
            }
            rustls::Error::DecryptError => RKTLS_ALERT_BAD_RECORD_MAC as u8,
            // An invalid level, or (TLS 1.3) a warning other than
            // user_canceled; TLS 1.3 alerts are decrypted in place.
            rustls::Error::AlertReceived(_) if tls13 && last.get(HEADER) == Some(&WARNING) => {
                RKTLS_ALERT_DECODE_ERROR as u8
            }
            rustls::Error::AlertReceived(_) => RKTLS_ALERT_ILLEGAL_PARAMETER as u8,
            e => u8::from(alert::for_error(e)),
        }
    }

    /// RFC 5746 §3.6, after rustls processed a server's first ClientHello:
    /// a non-empty renegotiation_info ends an initial TLS 1.2 handshake.
    /// rustls 0.23 accepts it. Nothing rustls queued has left yet.
    pub(super) fn check_renegotiation_info(&mut self, out_before: usize) -> Option<Step> {
        if self.screen.reneg_info_checked || !matches!(self.tls, Tls::Server(_)) {
            return None;
        }
        let version = self.common()?.protocol_version()?;
        self.screen.reneg_info_checked = true;
        let bad = self
            .screen
            .hello
            .is_some_and(|h| h.renegotiation_info_not_empty);
        if version != ProtocolVersion::TLSv1_2 || !bad {
            return None;
        }
        // What rustls queued (its ServerHello) never leaves: the alert is
        // all the client gets, and the error (sticky) keeps rustls from
        // running again.
        self.b.outgoing.truncate(out_before);
        let desc = RKTLS_ALERT_HANDSHAKE_FAILURE as u8;
        self.b
            .outgoing
            .extend_from_slice(&alert::Message { level: FATAL, desc }.plain_record());
        self.alert_sent = Some(desc);
        let e = Error::new(
            RKTLS_ERR_PEER_MISBEHAVED,
            format!(
                "the client sent a non-empty renegotiation_info in its first ClientHello \
                 (sent alert {})",
                name(desc)
            ),
        );
        log::debug!("connection failed: {}", e.msg);
        Some(Step::Ended(e))
    }
}

/// Whether `record`, as rustls left it after decrypting it in place, holds
/// a Finished message: TLS 1.3 (inner plaintext from the start; messages
/// followed by the handshake content type), or TLS 1.2 (12-byte
/// verify_data; AES-GCM plaintext after the 8-byte explicit nonce).
fn holds_finished(record: &[u8], tls13: bool) -> bool {
    let Some(p) = record.get(HEADER..) else {
        return false;
    };
    if !tls13 {
        return [0, 8]
            .iter()
            .any(|&o| p.get(o..o + 4) == Some(&[HS_FINISHED, 0, 0, 12]));
    }
    let mut i = 0;
    while let Some(h) = p.get(i..i + 4) {
        let end = i + 4 + u32::from_be_bytes([0, h[1], h[2], h[3]]) as usize;
        if h[0] == HS_FINISHED && p.get(end) == Some(&CT_HANDSHAKE) {
            return true;
        }
        i = end;
    }
    false
}

#[cfg(test)]
mod tests;
