//! The peer limits rustls applies after the handshake (its
//! `TemperCounters`: four warning alerts, 32 KeyUpdates without
//! application data between them), with their alert.
//!
//! rustls 0.23 ends the connection without an alert when the peer goes
//! over one of them, and then keeps its keys: nothing can be sealed for the
//! peer any more. rktls counts what rustls consumes instead (one record at
//! a time after the handshake, see `rustls_view`; rustls decrypts in
//! place, so the record it consumed last is readable in the buffer) and,
//! once rustls' allowance is used up, moves the connection to its own
//! record layer (`use_own_records`): the state machine of the offloaded
//! path, with what is left of each allowance (none), answers the next one
//! with unexpected_message, as it does after the offload.

use super::engine::Action;
use super::Connection;
use crate::wire::{self, CT_ALERT, CT_APPLICATION_DATA, CT_HANDSHAKE};

/// Warning alerts rustls 0.23 accepts in a connection.
pub(super) const WARNINGS: u8 = 4;
/// KeyUpdates rustls 0.23 accepts without application data between them.
pub(super) const KEY_UPDATES: u8 = 32;
/// AEAD tag length (every suite rktls offers).
const TAG: usize = 16;

/// What rustls consumed so far that counts against its limits.
#[derive(Default)]
pub(super) struct PeerCounts {
    pub(super) warnings: u8,
    pub(super) key_updates: u8,
    /// rustls answered a KeyUpdate request with a KeyUpdate it holds until
    /// we next send (it has our next key already).
    pub(super) answer_held: bool,
    /// The move to rktls' own records was not possible: rustls reads on.
    pub(super) gave_up: bool,
}

/// What one consumed record was, read where rustls decrypted it.
#[derive(Default, Debug, PartialEq, Eq)]
pub(super) struct Seen {
    warnings: u8,
    key_updates: u8,
    key_update_requested: bool,
    app_data: bool,
}

/// Classify the whole records of `consumed` (as rustls left them after
/// decrypting them in place; none of them part of a handshake message
/// rustls joined from several records). TLS 1.3: the inner plaintext from
/// the record's start, its content type the last non-zero byte before the
/// tag. TLS 1.2: the outer content type; an alert record rustls consumed
/// without failing is a warning or close_notify (close_notify ends the
/// reading, so counting it changes nothing).
pub(super) fn classify(consumed: &[u8], tls13: bool) -> Seen {
    let mut seen = Seen::default();
    for r in wire::records(consumed) {
        let Some(payload) = r.payload() else {
            break;
        };
        let (typ, content) = if tls13 && r.header.typ == CT_APPLICATION_DATA {
            let inner = &payload[..payload.len().saturating_sub(TAG)];
            match inner.iter().rposition(|&b| b != 0) {
                Some(t) => (inner[t], &inner[..t]),
                None => continue,
            }
        } else {
            (r.header.typ, payload)
        };
        match typ {
            CT_APPLICATION_DATA => {
                seen.app_data = true;
                seen.key_updates = 0;
                seen.key_update_requested = false;
            }
            CT_ALERT if !tls13 => seen.warnings += 1,
            // TLS 1.3: only user_canceled survives as a warning.
            CT_ALERT
                if content.first() == Some(&crate::alert::WARNING)
                    && content.get(1) != Some(&0) =>
            {
                seen.warnings += 1
            }
            CT_HANDSHAKE if tls13 => {
                let mut rest = content;
                while let Some((t, len)) = wire::handshake_header(rest) {
                    let Some(body) = rest.get(wire::HS_HEADER..wire::HS_HEADER + len) else {
                        break;
                    };
                    if t == wire::HS_KEY_UPDATE {
                        seen.key_updates = seen.key_updates.saturating_add(1);
                        seen.key_update_requested |= body == [1];
                    }
                    rest = &rest[wire::HS_HEADER + len..];
                }
            }
            _ => {}
        }
    }
    seen
}

impl PeerCounts {
    /// rustls' allowance for warnings or KeyUpdates is used up.
    pub(super) fn reached(&self) -> bool {
        self.warnings >= WARNINGS || self.key_updates >= KEY_UPDATES
    }

    /// rustls is to be shown nothing more: its allowance is used up and
    /// rktls' own records are to take over.
    pub(super) fn switch_due(&self) -> bool {
        self.reached() && !self.gave_up
    }

    /// rustls consumed `records` records it had held (a handshake message
    /// joined from pieces, their bytes moved; or records whose discard it
    /// deferred): not classified, each counted as a KeyUpdate request (at
    /// least one), so the count never falls behind rustls' own.
    pub(super) fn add_joined(&mut self, records: usize) {
        let n = u8::try_from(records.max(1)).unwrap_or(u8::MAX);
        self.key_updates = self.key_updates.saturating_add(n);
    }

    /// Count what rustls consumed; whether its allowance is used up.
    pub(super) fn add(&mut self, s: &Seen) -> bool {
        if s.app_data {
            self.key_updates = 0;
        }
        self.warnings = self.warnings.saturating_add(s.warnings);
        self.key_updates = self.key_updates.saturating_add(s.key_updates);
        self.answer_held |= s.key_update_requested;
        self.reached()
    }
}

impl Connection {
    /// Before rustls' keys are taken: rustls may hold its answer to a
    /// KeyUpdate request (sealed with our previous key, while it already
    /// has our next one) until it next sends, and taking the keys would
    /// lose it. A key refresh of ours sends it, then our own request.
    /// Input is kept away from rustls meanwhile. Whether nothing is held.
    pub(super) fn send_held_key_update(&mut self) -> bool {
        if !self.limits.answer_held {
            return true;
        }
        let act = self.step_rustls_on_shown(Action::RefreshKeys);
        self.limits.answer_held = !matches!(act, Action::None);
        !self.limits.answer_held
    }

    /// Run rustls until it is quiet, shown only what it was shown before
    /// (it keeps positions in that); the action left undone, if any.
    fn step_rustls_on_shown<'a>(&mut self, mut act: Action<'a>) -> Action<'a> {
        let shown = self.b.shown.min(self.b.incoming.len());
        let input = self.b.incoming.split_off(shown);
        for _ in 0..8 {
            let s = self.step_rustls(&mut act);
            if !matches!(s, super::engine::Step::Progress) {
                break;
            }
        }
        // What rustls discarded of it meanwhile (as `step` does).
        self.screen_discarded(shown - self.b.incoming.len());
        self.b.shown = self.b.incoming.len();
        self.b.incoming.extend_from_slice(&input);
        act
    }

    /// rustls' allowance for warnings or KeyUpdates is used up: move to
    /// rktls' own record layer before rustls sees the next record, which
    /// would end the connection without an alert.
    pub(super) fn own_records_at_limit(&mut self) {
        if self.offload_pending() {
            // The switch to the kernel is under way (it reads what is
            // buffered through rustls first); its state machine applies the
            // same limits afterwards.
            self.limits.gave_up = true;
            return;
        }
        if self.b.shown != 0 {
            // rustls may hold records it has processed and not discarded
            // yet: let it, shown nothing new.
            self.step_rustls_on_shown(Action::None);
        }
        if self.b.shown != 0 {
            // A handshake message in pieces inside rustls: it carries on.
            log::debug!("peer limit reached while rustls holds a partial message");
            self.limits.gave_up = true;
            return;
        }
        if !self.send_held_key_update() {
            log::debug!("peer limit reached; rustls could not send its KeyUpdate answer");
            self.limits.gave_up = true;
            return;
        }
        let left = (
            WARNINGS.saturating_sub(self.limits.warnings),
            KEY_UPDATES.saturating_sub(self.limits.key_updates),
        );
        if self.use_own_records() {
            if let Ok(o) = self.offload() {
                o.set_peer_allowance(left.0, left.1);
            }
            log::debug!("peer limit reached: rktls' own record layer reads on");
        } else {
            self.limits.gave_up = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec13(inner: &[u8]) -> Vec<u8> {
        let len = inner.len() + TAG;
        let mut r = vec![CT_APPLICATION_DATA, 3, 3, (len >> 8) as u8, len as u8];
        r.extend_from_slice(inner);
        r.extend_from_slice(&[0xee; TAG]);
        r
    }

    #[test]
    fn classifies_what_rustls_left_decrypted() {
        // Two KeyUpdate requests in one record, padding after the type.
        let mut ku = vec![24, 0, 0, 1, 1, 24, 0, 0, 1, 0, CT_HANDSHAKE, 0, 0];
        let s = classify(&rec13(&ku), true);
        assert_eq!((s.key_updates, s.key_update_requested), (2, true));
        ku[4] = 0;
        assert!(!classify(&rec13(&ku), true).key_update_requested);
        // user_canceled warning; close_notify is not counted.
        assert_eq!(classify(&rec13(&[1, 90, CT_ALERT]), true).warnings, 1);
        assert_eq!(classify(&rec13(&[1, 0, CT_ALERT]), true).warnings, 0);
        // Data after KeyUpdates resets their count.
        let mut two = rec13(&[24, 0, 0, 1, 1, CT_HANDSHAKE]);
        two.extend(rec13(b"x\x17"));
        let s = classify(&two, true);
        assert_eq!((s.key_updates, s.app_data), (0, true));
        // TLS 1.2: the outer type.
        let alert12 = [CT_ALERT, 3, 3, 0, 2, 1, 90];
        assert_eq!(classify(&alert12, false).warnings, 1);
        let mut c = PeerCounts::default();
        let four = Seen {
            warnings: 4,
            ..Seen::default()
        };
        assert!(!c.add(&Seen::default()));
        assert!(c.add(&four));
    }
}
