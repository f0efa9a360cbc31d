//! TLS alerts: the description enum, their names, alert messages and the
//! records that carry them (built and parsed here, over `wire`), the alert
//! rustls sends for an error, and `Alert`, the alert owed to a peer.

use std::ffi::CStr;

use rustls::AlertDescription;

use crate::wire;
use rktls_alert_description::*;

pub mod ffi;
pub use ffi::*;

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

/// The RFC name of an alert description, as a C string.
pub fn c_name(desc: u8) -> &'static CStr {
    match desc {
        0 => c"close_notify",
        10 => c"unexpected_message",
        20 => c"bad_record_mac",
        21 => c"decryption_failed",
        22 => c"record_overflow",
        30 => c"decompression_failure",
        40 => c"handshake_failure",
        41 => c"no_certificate",
        42 => c"bad_certificate",
        43 => c"unsupported_certificate",
        44 => c"certificate_revoked",
        45 => c"certificate_expired",
        46 => c"certificate_unknown",
        47 => c"illegal_parameter",
        48 => c"unknown_ca",
        49 => c"access_denied",
        50 => c"decode_error",
        51 => c"decrypt_error",
        60 => c"export_restriction",
        70 => c"protocol_version",
        71 => c"insufficient_security",
        80 => c"internal_error",
        86 => c"inappropriate_fallback",
        90 => c"user_canceled",
        100 => c"no_renegotiation",
        109 => c"missing_extension",
        110 => c"unsupported_extension",
        111 => c"certificate_unobtainable",
        112 => c"unrecognized_name",
        113 => c"bad_certificate_status_response",
        114 => c"bad_certificate_hash_value",
        115 => c"unknown_psk_identity",
        116 => c"certificate_required",
        120 => c"no_application_protocol",
        _ => c"unknown_alert",
    }
}

/// The RFC name of an alert description ("protocol_version", ...).
pub fn name(desc: u8) -> &'static str {
    c_name(desc).to_str().unwrap_or("unknown_alert")
}

/// Alert level: warning.
pub(crate) const WARNING: u8 = 1;
/// Alert level: fatal.
pub(crate) const FATAL: u8 = 2;

impl rktls_alert_description {
    /// The description's byte on the wire.
    pub(crate) const fn code(self) -> u8 {
        self as u8
    }
}

/// One alert message as an alert record carries it: level, description.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Message {
    pub(crate) level: u8,
    pub(crate) desc: u8,
}

impl Message {
    /// close_notify (a warning: the sender sends no more data).
    pub(crate) const CLOSE_NOTIFY: Message = Message::warning(RKTLS_ALERT_CLOSE_NOTIFY);

    /// A fatal alert.
    pub(crate) const fn fatal(desc: rktls_alert_description) -> Self {
        Message {
            level: FATAL,
            desc: desc.code(),
        }
    }

    /// A warning alert.
    pub(crate) const fn warning(desc: rktls_alert_description) -> Self {
        Message {
            level: WARNING,
            desc: desc.code(),
        }
    }

    /// The message in an alert record's (decrypted) payload.
    pub(crate) fn parse(payload: &[u8]) -> Option<Self> {
        match payload {
            &[level, desc] => Some(Message { level, desc }),
            _ => None,
        }
    }

    /// The alert record's payload.
    pub(crate) fn payload(self) -> Vec<u8> {
        vec![self.level, self.desc]
    }

    /// The message as a plaintext record (before encryption starts).
    pub(crate) fn plain_record(self) -> Vec<u8> {
        wire::record(wire::CT_ALERT, &self.payload())
    }

    pub(crate) fn is_close_notify(self) -> bool {
        self.desc == RKTLS_ALERT_CLOSE_NOTIFY.code()
    }
}

/// If `bytes` starts with a plaintext alert record, the alert in it.
pub(crate) fn parse_plain_alert(bytes: &[u8]) -> Option<Message> {
    let r = wire::records(bytes).next()?;
    if r.header.typ != wire::CT_ALERT {
        return None;
    }
    Message::parse(r.payload()?)
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
            // Keys changing (ours on a refresh, or the peer's) while a
            // handshake message is only partly received.
            | rustls::PeerMisbehaved::KeyEpochWithPendingFragment
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_parsing() {
        assert_eq!(name(70), "protocol_version");
        assert_eq!(name(255), "unknown_alert");
        assert_eq!(c_name(70), c"protocol_version");
        assert_eq!(
            name(RKTLS_ALERT_NO_APPLICATION_PROTOCOL.code()),
            "no_application_protocol"
        );
        let fatal = Message::fatal(RKTLS_ALERT_PROTOCOL_VERSION);
        assert_eq!(fatal.plain_record(), [21, 3, 3, 0, 2, 2, 70]);
        assert_eq!(parse_plain_alert(&[21, 3, 3, 0, 2, 2, 70]), Some(fatal));
        assert_eq!(Message::CLOSE_NOTIFY.payload(), [1, 0]);
        assert_eq!(parse_plain_alert(&[23, 3, 3, 0, 2, 2, 70]), None);
        assert_eq!(
            parse_plain_alert(&[21, 3, 3, 0, 26, 1, 2, 3, 4, 5, 6, 7]),
            None
        );
    }
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
            Some(m) => (m.level, m.desc),
            None => (
                FATAL,
                description.unwrap_or(RKTLS_ALERT_INTERNAL_ERROR.code()),
            ),
        };
        Alert {
            bytes,
            written: 0,
            level,
            description,
        }
    }

    /// A fatal alert owed to the peer before any encryption started.
    pub(crate) fn fatal(desc: rktls_alert_description) -> Self {
        Alert::from_wire(Message::fatal(desc).plain_record(), None)
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
