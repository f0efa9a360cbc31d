//! Result codes, their categories and their messages.
//!
//! Codes are numbered in stable blocks of a hundred, one block per category.
//! A number, once published, is never reused for another meaning.

use std::ffi::{c_uint, CStr};
use std::fmt;

/// The result of every fallible rktls call.
///
/// Codes are grouped in stable blocks: 1xx would-block, 2xx closed, 3xx alert
/// received, 4xx protocol error detected here, 5xx I/O, 6xx usage and
/// configuration, 7xx kernel TLS, 9xx internal. Use `rktls_result_category()`
/// to branch once on the block, and `rktls_result_str()` for a message.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum rktls_result {
    /// Success.
    RKTLS_OK = 0,

    /// Would block: wait until the fd is readable (fd mode), or feed more
    /// received TLS bytes with `rktls_connection_feed_tls()` (buffer mode).
    RKTLS_WANT_READ = 100,
    /// Would block: wait until the fd is writable (fd mode), or take the
    /// pending TLS bytes with `rktls_connection_take_tls()` and send them
    /// (buffer mode).
    RKTLS_WANT_WRITE = 101,
    /// Buffer mode: the queue of received plaintext is full (64 KiB), so
    /// rktls takes no more TLS bytes: call `rktls_connection_read()` to take
    /// the data, then feed the rest (`rktls_connection_feed_tls()` returns
    /// this with `*consumed` below `len`).
    RKTLS_PLAINTEXT_FULL = 102,

    /// The peer closed the connection cleanly (close_notify). All its data
    /// has been delivered.
    RKTLS_CLOSED = 200,
    /// The transport reached end of file without the peer's close_notify:
    /// the data may have been truncated by an attacker or a crash.
    RKTLS_ERR_TRUNCATED = 201,

    /// The peer sent a fatal alert; `rktls_connection_alert_received()` says
    /// which.
    RKTLS_ERR_ALERT_RECEIVED = 300,

    /// A TLS protocol error not covered by a finer code. An alert was sent.
    RKTLS_ERR_PROTOCOL = 400,
    /// The peer sent a message that is not valid at this point.
    RKTLS_ERR_UNEXPECTED_MESSAGE = 401,
    /// The peer sent a message that could not be decoded.
    RKTLS_ERR_DECODE = 402,
    /// The peer has no protocol version, cipher suite or other parameter in
    /// common with this configuration.
    RKTLS_ERR_PEER_INCOMPATIBLE = 403,
    /// The peer deviated from the TLS protocol.
    RKTLS_ERR_PEER_MISBEHAVED = 404,
    /// The peer's certificate was rejected.
    RKTLS_ERR_BAD_CERTIFICATE = 405,
    /// The peer presented no certificate where one is required.
    RKTLS_ERR_NO_CERTIFICATE = 406,
    /// A record failed to decrypt (bad record MAC).
    RKTLS_ERR_DECRYPT = 407,
    /// ALPN was offered but no protocol is in common.
    RKTLS_ERR_NO_APPLICATION_PROTOCOL = 408,
    /// The key usage limit for the negotiated cipher was reached.
    RKTLS_ERR_KEY_EXHAUSTED = 409,
    /// TLS 1.2 renegotiation was requested by the peer and refused
    /// (no_renegotiation); the message names the cause and the fix.
    RKTLS_ERR_RENEGOTIATION = 410,
    /// The peer updated its TLS 1.3 keys, and this kernel cannot install
    /// new keys on an offloaded socket (Linux < 6.14). Data received before
    /// the update was delivered.
    RKTLS_ERR_KTLS_NO_REKEY = 411,
    /// The kernel refused the new keys of a TLS 1.3 key update on an
    /// offloaded socket (`setsockopt(SOL_TLS, TLS_TX/TLS_RX)` failed; the
    /// error message names the call and errno). The peer got
    /// internal_error; data received before the update was delivered.
    RKTLS_ERR_KTLS_REKEY_REFUSED = 412,

    /// An operating-system I/O call failed; `rktls_connection_errno()` gives
    /// errno.
    RKTLS_ERR_IO = 500,

    /// A required pointer argument was NULL.
    RKTLS_ERR_NULL_ARGUMENT = 600,
    /// An argument is out of range or malformed.
    RKTLS_ERR_INVALID_ARGUMENT = 601,
    /// The call is not valid in the object's current state.
    RKTLS_ERR_WRONG_STATE = 602,
    /// The output buffer is too small; the needed size was stored in the
    /// length out-parameter.
    RKTLS_ERR_BUFFER_TOO_SMALL = 603,
    /// The handle was consumed by an earlier call (e.g. an accepted
    /// ClientHello already turned into a connection); only its `_free` is
    /// still valid.
    RKTLS_ERR_HANDLE_CONSUMED = 604,
    /// The acceptor already accepted a ClientHello; make a new acceptor for
    /// a new connection.
    RKTLS_ERR_ALREADY_ACCEPTED = 605,
    /// The acceptor already failed and reported it; send its alert (if
    /// any), close the socket, and free it.
    RKTLS_ERR_ALREADY_FAILED = 606,
    /// A file named in the configuration could not be read.
    RKTLS_ERR_CONFIG_FILE = 610,
    /// PEM input is malformed or holds no item of the expected kind.
    RKTLS_ERR_CONFIG_PEM = 611,
    /// The private key does not match the certificate's public key.
    RKTLS_ERR_CONFIG_KEY_MISMATCH = 612,
    /// A certificate or private key could not be used.
    RKTLS_ERR_CONFIG_CERTIFICATE = 613,
    /// The ALPN list is not in wire format (length-prefixed, 1 to 255 bytes
    /// each).
    RKTLS_ERR_CONFIG_ALPN = 614,
    /// The protocol version list is empty or names an unsupported version.
    RKTLS_ERR_CONFIG_VERSIONS = 615,
    /// The cipher suite list is empty, names an unknown suite, or has none
    /// usable with the chosen versions.
    RKTLS_ERR_CONFIG_CIPHER_SUITES = 616,
    /// A server configuration has no certificate, or a client configuration
    /// has no trust roots.
    RKTLS_ERR_CONFIG_INCOMPLETE = 617,
    /// The server name is not a valid DNS name or IP address.
    RKTLS_ERR_CONFIG_SERVER_NAME = 618,
    /// A CA bundle could not be used for verification.
    RKTLS_ERR_CONFIG_CA = 619,

    /// Kernel TLS is not available for this connection.
    RKTLS_ERR_KTLS_UNAVAILABLE = 700,

    /// A Rust panic was caught at the C boundary. The connection, acceptor
    /// or accepted handle the call was on is failed from then on: every
    /// later call on it returns `RKTLS_ERR_PANIC` (getters their empty
    /// value); its `_free` still frees it.
    RKTLS_ERR_PANIC = 900,
    /// An internal error; please report it.
    RKTLS_ERR_INTERNAL = 901,
}

use rktls_result::*;

/// The category of a result code, so an event loop can branch once.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum rktls_category {
    /// `RKTLS_OK`.
    RKTLS_CATEGORY_OK = 0,
    /// Want read / want write: wait and call again.
    RKTLS_CATEGORY_WOULD_BLOCK = 1,
    /// The connection ended (cleanly or by truncation).
    RKTLS_CATEGORY_CLOSED = 2,
    /// The peer sent a fatal alert.
    RKTLS_CATEGORY_ALERT = 3,
    /// A protocol error detected here; an alert was sent to the peer
    /// (none once our close_notify was sent: nothing follows it, and
    /// `rktls_connection_alert_sent()` says so).
    RKTLS_CATEGORY_PROTOCOL = 4,
    /// An operating-system I/O error.
    RKTLS_CATEGORY_IO = 5,
    /// A caller mistake or bad configuration input.
    RKTLS_CATEGORY_USAGE = 6,
    /// Kernel TLS could not be used.
    RKTLS_CATEGORY_KTLS = 7,
    /// An internal error or caught panic.
    RKTLS_CATEGORY_INTERNAL = 9,
    /// Not a known rktls result code.
    RKTLS_CATEGORY_UNKNOWN = 10,
}

impl rktls_result {
    /// Every code, for tests and for `from_u32`.
    pub const ALL: &'static [rktls_result] = &[
        RKTLS_OK,
        RKTLS_WANT_READ,
        RKTLS_WANT_WRITE,
        RKTLS_PLAINTEXT_FULL,
        RKTLS_CLOSED,
        RKTLS_ERR_TRUNCATED,
        RKTLS_ERR_ALERT_RECEIVED,
        RKTLS_ERR_PROTOCOL,
        RKTLS_ERR_UNEXPECTED_MESSAGE,
        RKTLS_ERR_DECODE,
        RKTLS_ERR_PEER_INCOMPATIBLE,
        RKTLS_ERR_PEER_MISBEHAVED,
        RKTLS_ERR_BAD_CERTIFICATE,
        RKTLS_ERR_NO_CERTIFICATE,
        RKTLS_ERR_DECRYPT,
        RKTLS_ERR_NO_APPLICATION_PROTOCOL,
        RKTLS_ERR_KEY_EXHAUSTED,
        RKTLS_ERR_RENEGOTIATION,
        RKTLS_ERR_KTLS_NO_REKEY,
        RKTLS_ERR_KTLS_REKEY_REFUSED,
        RKTLS_ERR_IO,
        RKTLS_ERR_NULL_ARGUMENT,
        RKTLS_ERR_INVALID_ARGUMENT,
        RKTLS_ERR_WRONG_STATE,
        RKTLS_ERR_BUFFER_TOO_SMALL,
        RKTLS_ERR_HANDLE_CONSUMED,
        RKTLS_ERR_ALREADY_ACCEPTED,
        RKTLS_ERR_ALREADY_FAILED,
        RKTLS_ERR_CONFIG_FILE,
        RKTLS_ERR_CONFIG_PEM,
        RKTLS_ERR_CONFIG_KEY_MISMATCH,
        RKTLS_ERR_CONFIG_CERTIFICATE,
        RKTLS_ERR_CONFIG_ALPN,
        RKTLS_ERR_CONFIG_VERSIONS,
        RKTLS_ERR_CONFIG_CIPHER_SUITES,
        RKTLS_ERR_CONFIG_INCOMPLETE,
        RKTLS_ERR_CONFIG_SERVER_NAME,
        RKTLS_ERR_CONFIG_CA,
        RKTLS_ERR_KTLS_UNAVAILABLE,
        RKTLS_ERR_PANIC,
        RKTLS_ERR_INTERNAL,
    ];

    pub fn from_u32(v: u32) -> Option<rktls_result> {
        Self::ALL.iter().copied().find(|r| *r as u32 == v)
    }

    pub fn category(self) -> rktls_category {
        use rktls_category::*;
        match self as u32 {
            0 => RKTLS_CATEGORY_OK,
            100..=199 => RKTLS_CATEGORY_WOULD_BLOCK,
            200..=299 => RKTLS_CATEGORY_CLOSED,
            300..=399 => RKTLS_CATEGORY_ALERT,
            400..=499 => RKTLS_CATEGORY_PROTOCOL,
            500..=599 => RKTLS_CATEGORY_IO,
            600..=699 => RKTLS_CATEGORY_USAGE,
            700..=799 => RKTLS_CATEGORY_KTLS,
            _ => RKTLS_CATEGORY_INTERNAL,
        }
    }

    /// A stable message, as a C string.
    pub fn c_message(self) -> &'static CStr {
        match self {
            RKTLS_OK => c"success",
            RKTLS_WANT_READ => c"would block: want read",
            RKTLS_WANT_WRITE => c"would block: want write",
            RKTLS_PLAINTEXT_FULL => c"would block: received plaintext queue full, read it first",
            RKTLS_CLOSED => c"peer closed the connection cleanly (close_notify)",
            RKTLS_ERR_TRUNCATED => c"connection closed without close_notify: data may be truncated",
            RKTLS_ERR_ALERT_RECEIVED => c"peer sent a fatal TLS alert",
            RKTLS_ERR_PROTOCOL => c"TLS protocol error",
            RKTLS_ERR_UNEXPECTED_MESSAGE => c"peer sent an unexpected TLS message",
            RKTLS_ERR_DECODE => c"peer sent a TLS message that could not be decoded",
            RKTLS_ERR_PEER_INCOMPATIBLE => {
                c"peer has no TLS version, cipher suite or parameter in common with us"
            }
            RKTLS_ERR_PEER_MISBEHAVED => c"peer violated the TLS protocol",
            RKTLS_ERR_BAD_CERTIFICATE => c"peer certificate rejected",
            RKTLS_ERR_NO_CERTIFICATE => c"peer presented no certificate",
            RKTLS_ERR_DECRYPT => c"TLS record failed to decrypt (bad record MAC)",
            RKTLS_ERR_NO_APPLICATION_PROTOCOL => c"no ALPN protocol in common with the peer",
            RKTLS_ERR_KEY_EXHAUSTED => c"key usage limit reached for this cipher",
            RKTLS_ERR_RENEGOTIATION => c"peer requested TLS 1.2 renegotiation, which is refused",
            RKTLS_ERR_KTLS_NO_REKEY => {
                c"peer updated its keys and this kernel cannot rekey an offloaded socket"
            }
            RKTLS_ERR_KTLS_REKEY_REFUSED => c"the kernel refused the new keys of a key update",
            RKTLS_ERR_IO => c"I/O error (see errno)",
            RKTLS_ERR_NULL_ARGUMENT => c"a required pointer argument was NULL",
            RKTLS_ERR_INVALID_ARGUMENT => c"invalid argument",
            RKTLS_ERR_WRONG_STATE => c"call not valid in the object's current state",
            RKTLS_ERR_BUFFER_TOO_SMALL => c"output buffer too small",
            RKTLS_ERR_HANDLE_CONSUMED => c"handle already consumed by an earlier call",
            RKTLS_ERR_ALREADY_ACCEPTED => c"acceptor already accepted a ClientHello",
            RKTLS_ERR_ALREADY_FAILED => c"acceptor already failed; send its alert and close",
            RKTLS_ERR_CONFIG_FILE => c"configuration file could not be read",
            RKTLS_ERR_CONFIG_PEM => c"malformed PEM, or no item of the expected kind",
            RKTLS_ERR_CONFIG_KEY_MISMATCH => c"private key does not match the certificate",
            RKTLS_ERR_CONFIG_CERTIFICATE => c"certificate or private key unusable",
            RKTLS_ERR_CONFIG_ALPN => c"ALPN list is not valid wire format",
            RKTLS_ERR_CONFIG_VERSIONS => c"protocol version list empty or unsupported",
            RKTLS_ERR_CONFIG_CIPHER_SUITES => c"cipher suite list empty, unknown or unusable",
            RKTLS_ERR_CONFIG_INCOMPLETE => {
                c"configuration incomplete (no certificate, or no trust roots)"
            }
            RKTLS_ERR_CONFIG_SERVER_NAME => c"invalid server name",
            RKTLS_ERR_CONFIG_CA => c"CA bundle unusable for verification",
            RKTLS_ERR_KTLS_UNAVAILABLE => c"kernel TLS unavailable",
            RKTLS_ERR_PANIC => c"internal panic caught at the C boundary",
            RKTLS_ERR_INTERNAL => c"internal error",
        }
    }

    /// A stable message.
    pub fn message(self) -> &'static str {
        self.c_message().to_str().unwrap_or("internal error")
    }
}

/// An error inside the library: a code plus a message naming the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub code: rktls_result,
    pub msg: String,
}

impl Error {
    pub fn new(code: rktls_result, msg: impl Into<String>) -> Self {
        Error {
            code,
            msg: msg.into(),
        }
    }

    pub fn code(code: rktls_result) -> Self {
        Error::new(code, code.message())
    }

    pub fn null(what: &str) -> Self {
        Error::new(RKTLS_ERR_NULL_ARGUMENT, format!("{what} must not be NULL"))
    }

    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::new(RKTLS_ERR_INVALID_ARGUMENT, msg)
    }

    pub fn state(msg: impl Into<String>) -> Self {
        Error::new(RKTLS_ERR_WRONG_STATE, msg)
    }

    pub fn io(e: &std::io::Error) -> Self {
        Error::new(RKTLS_ERR_IO, format!("I/O error: {e}"))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.msg, self.code as u32)
    }
}

/// The message of `RKTLS_ERR_RENEGOTIATION` on a client whose TLS 1.2
/// server asked to renegotiate (HelloRequest) and did not carry on. `outcome`
/// says what happened next, e.g. "then reset the connection". One text for
/// every path that sees a HelloRequest: the userspace record layer
/// (`connection/reneg.rs`) and the offloaded one (kTLS control records).
pub(crate) fn renegotiation_requested_message(outcome: &str) -> String {
    format!(
        "the server demanded TLS 1.2 renegotiation (HelloRequest; IIS does this to ask for a \
         client certificate) and {outcome}. rustls does not support renegotiation, so it was \
         refused with a no_renegotiation alert. Fix the server: negotiate client certificates \
         in the initial handshake (IIS: netsh http add sslcert ... \
         clientcertnegotiation=enable), or enable TLS 1.3"
    )
}

/// The message when a client attempted renegotiation and rktls (the
/// server) ended the connection.
pub(crate) const RENEGOTIATION_ATTEMPTED: &str =
    "the client attempted TLS 1.2 renegotiation (a new ClientHello); rktls never renegotiates \
     and ended the connection";

/// What a fail-fast client says happened.
pub(crate) const RENEGOTIATION_FAIL_FAST: &str = "rktls ended the connection at once (fail-fast)";

/// `RKTLS_ERR_RENEGOTIATION` with [`renegotiation_requested_message`].
pub(crate) fn renegotiation_requested(outcome: &str) -> Error {
    Error::new(
        rktls_result::RKTLS_ERR_RENEGOTIATION,
        renegotiation_requested_message(outcome),
    )
}

/// Map a rustls error to our result code.
pub fn code_for_tls_error(e: &rustls::Error) -> rktls_result {
    use rustls::Error as E;
    match e {
        E::AlertReceived(_) => RKTLS_ERR_ALERT_RECEIVED,
        E::InappropriateMessage { .. } | E::InappropriateHandshakeMessage { .. } => {
            RKTLS_ERR_UNEXPECTED_MESSAGE
        }
        E::InvalidMessage(_) => RKTLS_ERR_DECODE,
        E::PeerIncompatible(_) => RKTLS_ERR_PEER_INCOMPATIBLE,
        E::PeerMisbehaved(_) => RKTLS_ERR_PEER_MISBEHAVED,
        E::InvalidCertificate(_) => RKTLS_ERR_BAD_CERTIFICATE,
        E::NoCertificatesPresented => RKTLS_ERR_NO_CERTIFICATE,
        E::DecryptError => RKTLS_ERR_DECRYPT,
        E::NoApplicationProtocol => RKTLS_ERR_NO_APPLICATION_PROTOCOL,
        E::EncryptError => RKTLS_ERR_KEY_EXHAUSTED,
        E::General(_) | E::HandshakeNotComplete | E::UnsupportedNameType => RKTLS_ERR_PROTOCOL,
        _ => RKTLS_ERR_PROTOCOL,
    }
}

impl From<rustls::Error> for Error {
    fn from(e: rustls::Error) -> Self {
        Error::new(code_for_tls_error(&e), format!("TLS error: {e}"))
    }
}

/// Return a stable, NUL-terminated English message for a result code.
///
/// The string is static: never free it. Unknown values give
/// "unknown result code". Thread-safe. (A static lookup that cannot fail,
/// so it needs no panic guard.)
#[no_mangle]
pub extern "C" fn rktls_result_str(result: c_uint) -> *const std::ffi::c_char {
    let s = match rktls_result::from_u32(result) {
        Some(r) => r.c_message(),
        None => c"unknown result code",
    };
    s.as_ptr()
}

/// Return the category of a result code (would-block, closed, alert,
/// protocol, I/O, usage, kTLS, internal), so an event loop branches once.
///
/// Unknown values give `RKTLS_CATEGORY_UNKNOWN`. Thread-safe. (A static
/// lookup that cannot fail, so it needs no panic guard.)
#[no_mangle]
pub extern "C" fn rktls_result_category(result: c_uint) -> rktls_category {
    match rktls_result::from_u32(result) {
        Some(r) => r.category(),
        None => rktls_category::RKTLS_CATEGORY_UNKNOWN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_are_unique_and_messages_nul_terminated() {
        let mut seen = HashSet::new();
        for r in rktls_result::ALL {
            assert!(seen.insert(*r as u32), "duplicate code {r:?}");
            let m = r.c_message();
            assert!(!m.is_empty(), "{r:?}");
            assert_eq!(m.to_bytes_with_nul().last(), Some(&0));
            assert_eq!(r.message().as_bytes(), m.to_bytes());
            assert_eq!(rktls_result::from_u32(*r as u32), Some(*r));
        }
        assert_eq!(rktls_result::from_u32(12345), None);
    }

    #[test]
    fn categories_follow_blocks() {
        use rktls_category::*;
        assert_eq!(RKTLS_OK.category(), RKTLS_CATEGORY_OK);
        assert_eq!(RKTLS_WANT_WRITE.category(), RKTLS_CATEGORY_WOULD_BLOCK);
        assert_eq!(RKTLS_PLAINTEXT_FULL.category(), RKTLS_CATEGORY_WOULD_BLOCK);
        assert_eq!(RKTLS_ERR_TRUNCATED.category(), RKTLS_CATEGORY_CLOSED);
        assert_eq!(RKTLS_ERR_ALERT_RECEIVED.category(), RKTLS_CATEGORY_ALERT);
        assert_eq!(RKTLS_ERR_DECRYPT.category(), RKTLS_CATEGORY_PROTOCOL);
        assert_eq!(RKTLS_ERR_IO.category(), RKTLS_CATEGORY_IO);
        assert_eq!(RKTLS_ERR_CONFIG_PEM.category(), RKTLS_CATEGORY_USAGE);
        assert_eq!(RKTLS_ERR_KTLS_UNAVAILABLE.category(), RKTLS_CATEGORY_KTLS);
        assert_eq!(RKTLS_ERR_PANIC.category(), RKTLS_CATEGORY_INTERNAL);
        assert_eq!(rktls_result_category(9999), RKTLS_CATEGORY_UNKNOWN);
    }

    #[test]
    fn result_str_handles_unknown() {
        let p = rktls_result_str(4242);
        let s = unsafe { std::ffi::CStr::from_ptr(p) };
        assert_eq!(s.to_str().unwrap(), "unknown result code");
        let p = rktls_result_str(RKTLS_WANT_READ as u32);
        let s = unsafe { std::ffi::CStr::from_ptr(p) };
        assert_eq!(s.to_str().unwrap(), "would block: want read");
    }
}
