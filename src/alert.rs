//! TLS alert descriptions: names for logs, and recognising alert records.

use std::ffi::c_char;

use rustls::AlertDescription;

use crate::ffi::guard_value;

/// TLS alert descriptions (RFC 8446 and RFC 5246), as carried on the wire.
/// Functions that report an alert give its `uint8_t` value; compare it with
/// these constants.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum rktls_alert_description {
    /// The sender will send no more data (a clean close).
    RKTLS_ALERT_CLOSE_NOTIFY = 0,
    /// A message arrived that the protocol state does not allow.
    RKTLS_ALERT_UNEXPECTED_MESSAGE = 10,
    /// A record failed to decrypt or authenticate.
    RKTLS_ALERT_BAD_RECORD_MAC = 20,
    /// A record was longer than TLS allows.
    RKTLS_ALERT_RECORD_OVERFLOW = 22,
    /// No acceptable set of security parameters (e.g. no common suite).
    RKTLS_ALERT_HANDSHAKE_FAILURE = 40,
    /// A certificate was corrupt or failed verification.
    RKTLS_ALERT_BAD_CERTIFICATE = 42,
    /// A certificate was of an unsupported type.
    RKTLS_ALERT_UNSUPPORTED_CERTIFICATE = 43,
    /// A certificate was revoked by its signer.
    RKTLS_ALERT_CERTIFICATE_REVOKED = 44,
    /// A certificate has expired or is not yet valid.
    RKTLS_ALERT_CERTIFICATE_EXPIRED = 45,
    /// A certificate was unacceptable for another reason.
    RKTLS_ALERT_CERTIFICATE_UNKNOWN = 46,
    /// A field was out of range or inconsistent with others.
    RKTLS_ALERT_ILLEGAL_PARAMETER = 47,
    /// The certificate chain does not lead to a trusted CA.
    RKTLS_ALERT_UNKNOWN_CA = 48,
    /// Valid certificate, but access was refused by policy.
    RKTLS_ALERT_ACCESS_DENIED = 49,
    /// A message could not be decoded (bad length or field).
    RKTLS_ALERT_DECODE_ERROR = 50,
    /// A handshake signature or Finished check failed.
    RKTLS_ALERT_DECRYPT_ERROR = 51,
    /// No TLS version in common.
    RKTLS_ALERT_PROTOCOL_VERSION = 70,
    /// The peer's parameters are too weak.
    RKTLS_ALERT_INSUFFICIENT_SECURITY = 71,
    /// An error unrelated to the peer made continuing impossible.
    RKTLS_ALERT_INTERNAL_ERROR = 80,
    /// A downgrade retry was detected (RFC 7507).
    RKTLS_ALERT_INAPPROPRIATE_FALLBACK = 86,
    /// The handshake was canceled for a reason unrelated to the protocol.
    RKTLS_ALERT_USER_CANCELED = 90,
    /// Renegotiation was refused (TLS 1.2).
    RKTLS_ALERT_NO_RENEGOTIATION = 100,
    /// A required extension was missing.
    RKTLS_ALERT_MISSING_EXTENSION = 109,
    /// An extension appeared where it is not allowed.
    RKTLS_ALERT_UNSUPPORTED_EXTENSION = 110,
    /// No server name (SNI) matched.
    RKTLS_ALERT_UNRECOGNIZED_NAME = 112,
    /// An OCSP response was invalid.
    RKTLS_ALERT_BAD_CERTIFICATE_STATUS_RESPONSE = 113,
    /// No acceptable pre-shared key identity.
    RKTLS_ALERT_UNKNOWN_PSK_IDENTITY = 115,
    /// A client certificate was required but not sent.
    RKTLS_ALERT_CERTIFICATE_REQUIRED = 116,
    /// No ALPN protocol in common.
    RKTLS_ALERT_NO_APPLICATION_PROTOCOL = 120,
}

/// The RFC name of an alert description, NUL-terminated.
pub fn name(desc: u8) -> &'static str {
    match desc {
        0 => "close_notify\0",
        10 => "unexpected_message\0",
        20 => "bad_record_mac\0",
        21 => "decryption_failed\0",
        22 => "record_overflow\0",
        30 => "decompression_failure\0",
        40 => "handshake_failure\0",
        41 => "no_certificate\0",
        42 => "bad_certificate\0",
        43 => "unsupported_certificate\0",
        44 => "certificate_revoked\0",
        45 => "certificate_expired\0",
        46 => "certificate_unknown\0",
        47 => "illegal_parameter\0",
        48 => "unknown_ca\0",
        49 => "access_denied\0",
        50 => "decode_error\0",
        51 => "decrypt_error\0",
        60 => "export_restriction\0",
        70 => "protocol_version\0",
        71 => "insufficient_security\0",
        80 => "internal_error\0",
        86 => "inappropriate_fallback\0",
        90 => "user_canceled\0",
        100 => "no_renegotiation\0",
        109 => "missing_extension\0",
        110 => "unsupported_extension\0",
        111 => "certificate_unobtainable\0",
        112 => "unrecognized_name\0",
        113 => "bad_certificate_status_response\0",
        114 => "bad_certificate_hash_value\0",
        115 => "unknown_psk_identity\0",
        116 => "certificate_required\0",
        120 => "no_application_protocol\0",
        _ => "unknown_alert\0",
    }
}

/// Return the RFC name of an alert description ("protocol_version", ...),
/// or "unknown_alert". The string is static: never free it. Thread-safe.
#[no_mangle]
pub extern "C" fn rktls_alert_description_str(description: u8) -> *const c_char {
    guard_value(std::ptr::null(), || name(description).as_ptr().cast())
}

/// If `bytes` starts with a plaintext alert record, return (level, description).
pub(crate) fn parse_plain_alert(bytes: &[u8]) -> Option<(u8, u8)> {
    if bytes.len() >= 7 && bytes[0] == 21 && bytes[3] == 0 && bytes[4] == 2 {
        Some((bytes[5], bytes[6]))
    } else {
        None
    }
}

/// The alert rustls sends for an error, for alerts that left encrypted and
/// so cannot be read back from the wire.
pub(crate) fn for_error(e: &rustls::Error) -> AlertDescription {
    use rustls::Error as E;
    match e {
        E::InvalidMessage(m) => AlertDescription::from(*m),
        E::InvalidCertificate(c) => AlertDescription::from(c.clone()),
        E::InappropriateMessage { .. } | E::InappropriateHandshakeMessage { .. } => {
            AlertDescription::UnexpectedMessage
        }
        E::DecryptError => AlertDescription::BadRecordMac,
        E::PeerIncompatible(_) => AlertDescription::HandshakeFailure,
        E::NoCertificatesPresented => AlertDescription::CertificateRequired,
        E::NoApplicationProtocol => AlertDescription::NoApplicationProtocol,
        E::PeerMisbehaved(
            rustls::PeerMisbehaved::MessageInterleavedWithHandshakeMessage
            // RFC 8446 §5.4: no content type in the inner plaintext.
            | rustls::PeerMisbehaved::IllegalTlsInnerPlaintext
            // rustls answers it with unexpected_message where it answers.
            | rustls::PeerMisbehaved::IllegalMiddleboxChangeCipherSpec
            | rustls::PeerMisbehaved::TooManyEmptyFragments
            | rustls::PeerMisbehaved::RejectedEarlyDataInterleavedWithHandshakeMessage,
        ) => AlertDescription::UnexpectedMessage,
        E::PeerMisbehaved(_) => AlertDescription::IllegalParameter,
        // TLS 1.2: the certificate's key can sign none of the client's
        // schemes (rustls sends handshake_failure for this in TLS 1.3).
        E::General(m) if m == "incompatible signing key" => AlertDescription::HandshakeFailure,
        _ => AlertDescription::InternalError,
    }
}

/// Alert levels.
pub(crate) const LEVEL_WARNING: u8 = 1;
pub(crate) const LEVEL_FATAL: u8 = 2;

/// A plaintext alert record (TLS 1.2 record version, as rustls uses).
pub(crate) fn plaintext(level: u8, desc: u8) -> [u8; 7] {
    [crate::ktls::CT_ALERT, 3, 3, 0, 2, level, desc]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_parsing() {
        assert_eq!(name(70), "protocol_version\0");
        assert_eq!(name(255), "unknown_alert\0");
        assert_eq!(
            name(rktls_alert_description::RKTLS_ALERT_NO_APPLICATION_PROTOCOL as u8),
            "no_application_protocol\0"
        );
        assert_eq!(parse_plain_alert(&[21, 3, 3, 0, 2, 2, 70]), Some((2, 70)));
        assert_eq!(parse_plain_alert(&[23, 3, 3, 0, 2, 2, 70]), None);
        assert_eq!(
            parse_plain_alert(&[21, 3, 3, 0, 26, 1, 2, 3, 4, 5, 6, 7]),
            None
        );
    }
}

// ---------------------------------------------------------------------------
// The alert object handed to C callers when an accept or a conversion fails.

/// The alert owed to a peer after a failed accept or conversion. Box handle:
/// one thread at a time; free with `rktls_alert_free()`.
pub struct rktls_alert {
    _private: [u8; 0],
}

impl crate::ffi::Handle for rktls_alert {
    type Rust = Alert;
    type Ownership = crate::ffi::Boxed;
}

/// An alert record (or none) and how much of it has been written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Alert {
    pub(crate) bytes: Vec<u8>,
    pub(crate) written: usize,
    pub(crate) level: u8,
    pub(crate) description: u8,
}

impl Alert {
    /// No alert is owed to the peer.
    pub(crate) fn none() -> Self {
        Alert::default()
    }

    /// An alert from the bytes rustls produced. `description` is used when
    /// the record cannot be read back (it is encrypted).
    pub(crate) fn from_wire(bytes: Vec<u8>, description: Option<u8>) -> Self {
        if bytes.is_empty() {
            return Alert::none();
        }
        let (level, description) = match parse_plain_alert(&bytes) {
            Some((l, d)) => (l, d),
            None => (2, description.unwrap_or(80)),
        };
        Alert {
            bytes,
            written: 0,
            level,
            description,
        }
    }

    pub(crate) fn present(&self) -> bool {
        !self.bytes.is_empty()
    }

    pub(crate) fn pending(&self) -> usize {
        self.bytes.len() - self.written
    }

    /// Write what is left to `fd`. Ok(true) when all of it has been written.
    pub(crate) fn write_fd(&mut self, fd: std::os::fd::RawFd) -> std::io::Result<bool> {
        while self.pending() > 0 {
            match crate::sys::send(fd, &self.bytes[self.written..]) {
                Ok(n) => self.written += n,
                Err(e) if crate::sys::would_block(&e) => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }
}

use crate::ffi::{box_mut, box_ref, box_take, guard, out};
use crate::result::rktls_result::{self, RKTLS_ERR_IO, RKTLS_OK, RKTLS_WANT_WRITE};

/// Free an alert. NULL is a no-op.
#[no_mangle]
pub extern "C" fn rktls_alert_free(alert: *mut rktls_alert) {
    guard(|| {
        drop(unsafe { box_take(alert) });
        Ok(RKTLS_OK)
    });
}

/// Whether there is an alert to send. false means the failure owes the
/// peer nothing (for example a caller error such as a NULL config, or a
/// client that closed first): just close the socket. false for NULL.
#[no_mangle]
pub extern "C" fn rktls_alert_present(alert: *const rktls_alert) -> bool {
    guard_value(false, || {
        unsafe { box_ref(alert, "alert") }.is_ok_and(|a| a.present())
    })
}

/// The alert's level: 2 fatal, 1 warning, 0 when there is none (or NULL).
#[no_mangle]
pub extern "C" fn rktls_alert_get_level(alert: *const rktls_alert) -> u8 {
    guard_value(0, || {
        unsafe { box_ref(alert, "alert") }.map_or(0, |a| a.level)
    })
}

/// The alert's description (see `rktls_alert_description`; name it with
/// `rktls_alert_description_str()`), 0 when there is none (or NULL).
#[no_mangle]
pub extern "C" fn rktls_alert_get_description(alert: *const rktls_alert) -> u8 {
    guard_value(0, || {
        unsafe { box_ref(alert, "alert") }.map_or(0, |a| a.description)
    })
}

/// The alert record's bytes, for callers that do their own I/O: `*bytes`
/// points into the alert (valid until it is freed), `*len` is its length
/// (0 when there is none). Send all of them, then close the connection.
#[no_mangle]
pub extern "C" fn rktls_alert_bytes(
    alert: *const rktls_alert,
    bytes: *mut *const u8,
    len: *mut usize,
) -> rktls_result {
    guard(|| {
        let a = unsafe { box_ref(alert, "alert")? };
        let b = unsafe { out(bytes, "bytes")? };
        let l = unsafe { out(len, "len")? };
        *b = a.bytes.as_ptr();
        *l = a.bytes.len();
        Ok(RKTLS_OK)
    })
}

/// How many of the alert's bytes rktls has not written yet (0 once it was
/// sent on the caller's fd, or when there is none). 0 for NULL.
#[no_mangle]
pub extern "C" fn rktls_alert_pending(alert: *const rktls_alert) -> usize {
    guard_value(0, || {
        unsafe { box_ref(alert, "alert") }.map_or(0, |a| a.pending())
    })
}

/// Write the rest of the alert to `fd`, handling short writes. Returns
/// `RKTLS_OK` once all of it has been written (at once if there is nothing
/// to write), `RKTLS_WANT_WRITE` if a non-blocking fd is full (call again
/// when writable), or `RKTLS_ERR_IO` (the peer is gone; just close). Does
/// not close the fd.
#[no_mangle]
pub extern "C" fn rktls_alert_write_fd(alert: *mut rktls_alert, fd: i32) -> rktls_result {
    guard(|| {
        let a = unsafe { box_mut(alert, "alert")? };
        match a.write_fd(fd) {
            Ok(true) => Ok(RKTLS_OK),
            Ok(false) => Ok(RKTLS_WANT_WRITE),
            Err(e) => Err(crate::result::Error::new(
                RKTLS_ERR_IO,
                format!("writing the alert failed: {e}"),
            )),
        }
    })
}
