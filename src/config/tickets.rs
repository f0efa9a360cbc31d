//! Session tickets under keys the host supplies, so that every worker
//! process and machine holding the same keys resumes the others' sessions.
//!
//! Key material is one 48- or 80-byte block per key, the layout of nginx's
//! `ssl_session_ticket_key` files: the first 16 bytes are the key name, the
//! rest (32 or 64 bytes) secret. The AES-256-GCM key that seals tickets is
//! derived from the secret with HKDF-SHA256, so an nginx key file works as
//! is (the tickets themselves are rktls's own format, not OpenSSL's).
//!
//! A ticket is `name(16) | nonce(12) | AES-256-GCM(issued_at(8) | session) |
//! tag(16)`, with the name as additional data: the name finds the key, the
//! tag rejects anything forged, truncated or sealed under another key, and
//! `issued_at` (seconds since the Unix epoch) enforces the lifetime. Every
//! failure is a plain "not accepted": rustls then does a full handshake.
//!
//! [`TicketKeys`] is shared (Arc) by any number of configs; its key list is
//! replaced as a whole under a lock, so a handshake sees either the old or
//! the new list, and a list is wiped (zeroize) when its last user drops it.

use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::server::ProducesTickets;
use zeroize::{Zeroize, Zeroizing};

use crate::crypto::primitives::{aead, hkdf, rand};
use crate::result::Error;

/// Bytes of a key name.
pub(crate) const NAME_LEN: usize = 16;
/// The accepted key material lengths (nginx's two file formats).
pub(crate) const KEY_LENS: [usize; 2] = [48, 80];
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const ISSUED_LEN: usize = 8;
/// Default and largest ticket lifetime: TLS 1.3's limit, 7 days.
pub(crate) const MAX_LIFETIME: u32 = 7 * 24 * 60 * 60;
/// Default lifetime: 12 hours.
pub(crate) const DEFAULT_LIFETIME: u32 = 12 * 60 * 60;
const HKDF_SALT: &[u8] = b"rktls session ticket key v1";

/// One ticket key: its public name and the derived AEAD key.
struct TicketKey {
    name: [u8; NAME_LEN],
    aead_key: Zeroizing<[u8; 32]>,
}

impl TicketKey {
    /// Parse one key's material (48 or 80 bytes, see the module doc).
    fn from_material(material: &[u8], what: &str) -> Result<Self, Error> {
        if !KEY_LENS.contains(&material.len()) {
            return Err(Error::invalid(format!(
                "{what}: a ticket key is 48 or 80 bytes (16-byte name, then the \
                 secret: `openssl rand 80`), not {}",
                material.len()
            )));
        }
        let mut name = [0u8; NAME_LEN];
        name.copy_from_slice(&material[..NAME_LEN]);
        let mut aead_key = Zeroizing::new([0u8; 32]);
        hkdf::Salt::new(hkdf::HKDF_SHA256, HKDF_SALT)
            .extract(&material[NAME_LEN..])
            .expand(&[&name], hkdf::HKDF_SHA256)
            .and_then(|okm| okm.fill(&mut aead_key[..]))
            .map_err(|_| Error::invalid(format!("{what}: key derivation failed")))?;
        Ok(TicketKey { name, aead_key })
    }

    /// A one-use AEAD context; the long-lived copy is only `aead_key`.
    fn aead(&self) -> Option<aead::LessSafeKey> {
        aead::UnboundKey::new(&aead::AES_256_GCM, &self.aead_key[..])
            .ok()
            .map(aead::LessSafeKey::new)
    }
}

/// A key list, first key encrypts. Wiped on drop (`aead_key` is Zeroizing;
/// names are wiped too, as they say which key a ticket used).
struct KeyList(Vec<TicketKey>);

impl Drop for KeyList {
    fn drop(&mut self) {
        for k in &mut self.0 {
            k.name.zeroize();
        }
    }
}

/// Ticket keys shared by configs (and by the C `rktls_ticket_keys` object).
pub(crate) struct TicketKeys {
    list: RwLock<Arc<KeyList>>,
}

impl fmt::Debug for TicketKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TicketKeys({} keys)", self.current().0.len())
    }
}

impl TicketKeys {
    /// An empty set: no ticket is issued or accepted until keys are set.
    pub(crate) fn new() -> Self {
        TicketKeys {
            list: RwLock::new(Arc::new(KeyList(Vec::new()))),
        }
    }

    fn current(&self) -> Arc<KeyList> {
        // Nothing panics while holding the lock; recover the value anyway.
        self.list.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replace the whole key list at once, first key encrypts. Every key is
    /// validated before anything changes; an empty list is refused.
    pub(crate) fn set(&self, materials: &[&[u8]]) -> Result<(), Error> {
        if materials.is_empty() {
            return Err(Error::invalid("ticket key list is empty"));
        }
        let mut keys = Vec::with_capacity(materials.len());
        for (i, m) in materials.iter().enumerate() {
            keys.push(TicketKey::from_material(m, &format!("ticket key {i}"))?);
        }
        let new = Arc::new(KeyList(keys));
        // The old list is dropped (and wiped) here, or by the last
        // handshake still using it.
        *self.list.write().unwrap_or_else(|e| e.into_inner()) = new;
        Ok(())
    }

    /// Replace the key list with the keys in these files (nginx
    /// `ssl_session_ticket_key` format: one 48- or 80-byte key per file),
    /// first file encrypts.
    pub(crate) fn set_files(&self, paths: &[&str]) -> Result<(), Error> {
        let mut blobs = Vec::with_capacity(paths.len());
        for p in paths {
            blobs.push(Zeroizing::new(super::common::read_file(
                p,
                "ticket key file",
            )?));
        }
        let mut keys = Vec::with_capacity(paths.len());
        for (p, b) in paths.iter().zip(&blobs) {
            keys.push(TicketKey::from_material(b, p)?);
        }
        if keys.is_empty() {
            return Err(Error::invalid("ticket key file list is empty"));
        }
        *self.list.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(KeyList(keys));
        Ok(())
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.current().0.len()
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// rustls' ticket producer over shared keys, with a lifetime.
#[derive(Debug)]
pub(crate) struct Ticketer {
    pub(crate) keys: Arc<TicketKeys>,
    pub(crate) lifetime: u32,
}

impl ProducesTickets for Ticketer {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        self.lifetime
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let list = self.keys.current();
        let key = list.0.first()?;
        let mut nonce = [0u8; NONCE_LEN];
        rand::SecureRandom::fill(&rand::SystemRandom::new(), &mut nonce).ok()?;
        let mut out = Vec::with_capacity(NAME_LEN + NONCE_LEN + ISSUED_LEN + plain.len() + TAG_LEN);
        out.extend_from_slice(&key.name);
        out.extend_from_slice(&nonce);
        let mut body = Zeroizing::new(Vec::with_capacity(ISSUED_LEN + plain.len() + TAG_LEN));
        body.extend_from_slice(&now_secs().to_be_bytes());
        body.extend_from_slice(plain);
        key.aead()?
            .seal_in_place_append_tag(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(&key.name),
                &mut *body,
            )
            .ok()?;
        out.extend_from_slice(&body);
        Some(out)
    }

    fn decrypt(&self, ticket: &[u8]) -> Option<Vec<u8>> {
        if ticket.len() < NAME_LEN + NONCE_LEN + ISSUED_LEN + TAG_LEN {
            return None;
        }
        let (name, rest) = ticket.split_at(NAME_LEN);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let list = self.keys.current();
        let key = list.0.iter().find(|k| k.name[..] == *name)?;
        let nonce = aead::Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut body = Zeroizing::new(sealed.to_vec());
        let plain = key
            .aead()?
            .open_in_place(nonce, aead::Aad::from(name), &mut body)
            .ok()?;
        let (issued, session) = plain.split_at(ISSUED_LEN);
        let issued = u64::from_be_bytes(issued.try_into().ok()?);
        if now_secs().saturating_sub(issued) > u64::from(self.lifetime) {
            return None;
        }
        Some(session.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(materials: &[&[u8]]) -> Arc<TicketKeys> {
        let k = Arc::new(TicketKeys::new());
        k.set(materials).unwrap();
        k
    }

    fn ticketer(k: &Arc<TicketKeys>) -> Ticketer {
        Ticketer {
            keys: k.clone(),
            lifetime: DEFAULT_LIFETIME,
        }
    }

    #[test]
    fn lengths_and_empty_lists() {
        let k = TicketKeys::new();
        for bad in [0usize, 16, 32, 47, 49, 64, 79, 81, 96] {
            assert!(k.set(&[&vec![7u8; bad]]).is_err(), "{bad}");
        }
        assert!(k.set(&[]).is_err());
        assert!(k.set(&[&[1u8; 48], &[2u8; 80]]).is_ok());
        assert_eq!(k.len(), 2);
        // A failed set leaves the list as it was.
        assert!(k.set(&[&[3u8; 80], &[4u8; 50]]).is_err());
        assert_eq!(k.len(), 2);
    }

    #[test]
    fn round_trip_and_tampering() {
        let k = keys(&[&[1u8; 80]]);
        let t = ticketer(&k);
        let sealed = t.encrypt(b"session state").unwrap();
        assert_eq!(&sealed[..16], &[1u8; 16]);
        assert_eq!(t.decrypt(&sealed).unwrap(), b"session state");
        // Two tickets of the same state differ (random nonce).
        assert_ne!(t.encrypt(b"session state").unwrap(), sealed);
        // Every single-bit flip and every truncation is refused.
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x20;
            assert!(t.decrypt(&bad).is_none(), "flip at {i}");
        }
        for n in 0..sealed.len() {
            assert!(t.decrypt(&sealed[..n]).is_none(), "truncated to {n}");
        }
        assert!(t.decrypt(&[0u8; 200]).is_none());
    }

    #[test]
    fn other_processes_with_the_same_material_decrypt() {
        // Two independent key objects from the same bytes, as two workers
        // that read the same file.
        let a = ticketer(&keys(&[&[9u8; 48]]));
        let b = ticketer(&keys(&[&[9u8; 48]]));
        let sealed = a.encrypt(b"x").unwrap();
        assert_eq!(b.decrypt(&sealed).unwrap(), b"x");
        // Same name, different secret: refused.
        let mut other = [9u8; 48];
        other[40] = 0;
        assert!(ticketer(&keys(&[&other])).decrypt(&sealed).is_none());
    }

    #[test]
    fn rotation_keeps_old_keys_while_listed() {
        let old = [1u8; 80];
        let mut new = [2u8; 80];
        new[0] = 0xaa;
        let k = keys(&[&old]);
        let t = ticketer(&k);
        let under_old = t.encrypt(b"old").unwrap();
        k.set(&[&new, &old]).unwrap();
        assert_eq!(t.decrypt(&under_old).unwrap(), b"old");
        let under_new = t.encrypt(b"new").unwrap();
        assert_eq!(&under_new[..16], &new[..16]);
        k.set(&[&new]).unwrap();
        assert!(t.decrypt(&under_old).is_none());
        assert_eq!(t.decrypt(&under_new).unwrap(), b"new");
    }

    #[test]
    fn lifetime_is_enforced() {
        let k = keys(&[&[5u8; 80]]);
        let t = ticketer(&k);
        let sealed = t.encrypt(b"s").unwrap();
        let expired = Ticketer {
            keys: k.clone(),
            lifetime: 0,
        };
        // Issued "now": age 0 is within a 0-second lifetime ...
        assert!(expired.decrypt(&sealed).is_some());
        // ... but a ticket issued two seconds ago is not.
        let list = k.current();
        let key = &list.0[0];
        let nonce = [3u8; NONCE_LEN];
        let mut body = (now_secs() - 2).to_be_bytes().to_vec();
        body.extend_from_slice(b"s");
        key.aead()
            .unwrap()
            .seal_in_place_append_tag(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(&key.name),
                &mut body,
            )
            .unwrap();
        let mut old = key.name.to_vec();
        old.extend_from_slice(&nonce);
        old.extend_from_slice(&body);
        assert_eq!(t.decrypt(&old).unwrap(), b"s");
        assert!(expired.decrypt(&old).is_none());
    }

    #[test]
    fn empty_set_issues_nothing() {
        let t = ticketer(&Arc::new(TicketKeys::new()));
        assert!(t.encrypt(b"s").is_none());
    }

    #[test]
    fn concurrent_rotation_while_sealing() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let k = keys(&[&[1u8; 80]]);
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..3)
            .map(|_| {
                let t = ticketer(&k);
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut sealed = 0u32;
                    // At least a few tickets each, and on until the
                    // rotations are over (a loaded machine may run the
                    // rotating thread late or early).
                    while sealed < 20 || !stop.load(Ordering::Relaxed) {
                        let s = t.encrypt(b"abc").unwrap();
                        // Sealed under key 1 or 2; both stay listed.
                        assert_eq!(t.decrypt(&s).unwrap(), b"abc");
                        sealed += 1;
                    }
                    sealed
                })
            })
            .collect();
        let (a, b) = ([1u8; 80], [2u8; 80]);
        for rotation in 0..200 {
            if rotation % 2 == 0 {
                k.set(&[&a, &b]).unwrap();
            } else {
                k.set(&[&b, &a]).unwrap();
            }
        }
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            assert!(w.join().unwrap() >= 20);
        }
    }
}
