//! One direction of a TLS record layer in userspace, built from traffic
//! secrets: used after the offload for a direction the kernel does not
//! carry (TX-only or RX-only offload, TLS 1.3 RX on kernels that cannot
//! rekey), and by tests that check the keys rktls gives the kernel.
//!
//! The AEAD comes from the negotiated suite of the crypto provider, so the
//! records are exactly what rustls itself would produce and accept.

use rustls::crypto::cipher::{
    InboundOpaqueMessage, MessageDecrypter, MessageEncrypter, OutboundChunks, OutboundPlainMessage,
};
use rustls::{ConnectionTrafficSecrets, ContentType, ProtocolVersion, SupportedCipherSuite};

use crate::result::rktls_result::*;
use crate::result::Error;

/// Record header length.
pub(crate) const HEADER: usize = 5;
/// Largest plaintext fragment.
pub(crate) const MAX_FRAGMENT: usize = 16384;

fn key_iv(secrets: ConnectionTrafficSecrets) -> (rustls::crypto::cipher::AeadKey, [u8; 12]) {
    match secrets {
        ConnectionTrafficSecrets::Aes128Gcm { key, iv }
        | ConnectionTrafficSecrets::Aes256Gcm { key, iv }
        | ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
            let mut b = [0u8; 12];
            b.copy_from_slice(iv.as_ref());
            (key, b)
        }
        _ => unreachable!("rustls only extracts AEAD secrets"),
    }
}

fn is_gcm(secrets: &ConnectionTrafficSecrets) -> bool {
    matches!(
        secrets,
        ConnectionTrafficSecrets::Aes128Gcm { .. } | ConnectionTrafficSecrets::Aes256Gcm { .. }
    )
}

/// Encrypts records for one direction.
pub(crate) struct Sealer {
    enc: Box<dyn MessageEncrypter>,
    pub(crate) seq: u64,
}

/// Decrypts records for one direction.
pub(crate) struct Opener {
    dec: Box<dyn MessageDecrypter>,
    pub(crate) seq: u64,
}

impl Sealer {
    pub(crate) fn new(
        suite: SupportedCipherSuite,
        (seq, secrets): (u64, ConnectionTrafficSecrets),
    ) -> Self {
        let gcm = is_gcm(&secrets);
        let (key, iv) = key_iv(secrets);
        let enc = match suite {
            SupportedCipherSuite::Tls13(s) => s.aead_alg.encrypter(key, iv.into()),
            // TLS 1.2 GCM: 4-byte salt, then the explicit nonce seed;
            // ChaCha20 uses the whole 12 bytes as its fixed IV.
            SupportedCipherSuite::Tls12(s) if gcm => s.aead_alg.encrypter(key, &iv[..4], &iv[4..]),
            SupportedCipherSuite::Tls12(s) => s.aead_alg.encrypter(key, &iv, &[]),
        };
        let mut s = Sealer { enc, seq: 0 };
        // aws-lc's TLS record sealing keys check that nonces only grow,
        // counting from the first sequence number they see as 0. Show them
        // the ones already used (the output is discarded, never sent).
        let mut scratch = Vec::new();
        while s.seq < seq {
            let _ = s.seal(ContentType::ApplicationData.into(), &[], &mut scratch);
            scratch.clear();
        }
        s.seq = seq;
        s
    }

    /// Encrypt one record of `typ` (payload at most 16 KiB) and append it
    /// to `out`.
    pub(crate) fn seal(&mut self, typ: u8, payload: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
        debug_assert!(payload.len() <= MAX_FRAGMENT);
        let msg = OutboundPlainMessage {
            typ: ContentType::from(typ),
            version: ProtocolVersion::TLSv1_2,
            payload: OutboundChunks::Single(payload),
        };
        let rec = self
            .enc
            .encrypt(msg, self.seq)
            .map_err(|e| Error::new(RKTLS_ERR_INTERNAL, format!("cannot encrypt a record: {e}")))?;
        self.seq += 1;
        out.extend_from_slice(&rec.encode());
        Ok(())
    }
}

impl Opener {
    pub(crate) fn new(
        suite: SupportedCipherSuite,
        (seq, secrets): (u64, ConnectionTrafficSecrets),
    ) -> Self {
        let gcm = is_gcm(&secrets);
        let (key, iv) = key_iv(secrets);
        let dec = match suite {
            SupportedCipherSuite::Tls13(s) => s.aead_alg.decrypter(key, iv.into()),
            SupportedCipherSuite::Tls12(s) if gcm => s.aead_alg.decrypter(key, &iv[..4]),
            SupportedCipherSuite::Tls12(s) => s.aead_alg.decrypter(key, &iv),
        };
        Opener { dec, seq }
    }

    /// Decrypt the whole record in `record` (header included) in place.
    /// Returns the true content type and the plaintext's range in `record`.
    pub(crate) fn open(
        &mut self,
        record: &mut [u8],
    ) -> Result<(u8, std::ops::Range<usize>), Error> {
        if record.len() < HEADER {
            return Err(Error::new(RKTLS_ERR_DECODE, "short TLS record"));
        }
        let base = record.as_ptr() as usize;
        let typ = ContentType::from(record[0]);
        let version = ProtocolVersion::from(u16::from_be_bytes([record[1], record[2]]));
        let msg = InboundOpaqueMessage::new(typ, version, &mut record[HEADER..]);
        let plain = self.dec.decrypt(msg, self.seq).map_err(|_| {
            Error::new(
                RKTLS_ERR_DECRYPT,
                "a record failed to decrypt (bad record MAC)",
            )
        })?;
        self.seq += 1;
        let start = plain.payload.as_ptr() as usize - base;
        Ok((u8::from(plain.typ), start..start + plain.payload.len()))
    }
}

/// The whole-record length at the front of `buf`, if a whole record is there.
pub(crate) fn whole_record(buf: &[u8]) -> Option<usize> {
    if buf.len() < HEADER {
        return None;
    }
    let n = HEADER + u16::from_be_bytes([buf[3], buf[4]]) as usize;
    (buf.len() >= n).then_some(n)
}

/// A record header: (content type, body length), if `buf` holds one.
pub(crate) fn header(buf: &[u8]) -> Option<(u8, usize)> {
    (buf.len() >= HEADER).then(|| (buf[0], u16::from_be_bytes([buf[3], buf[4]]) as usize))
}

/// The whole record of `buf` that ends exactly at `end`, walking the
/// headers from the start; `None` if no record boundary falls there.
pub(crate) fn record_ending_at(buf: &[u8], end: usize) -> Option<&[u8]> {
    let mut pos = 0;
    while let Some((_, len)) = header(buf.get(pos..end)?) {
        let next = pos + HEADER + len;
        if next == end {
            return Some(&buf[pos..end]);
        }
        pos = next;
    }
    None
}
