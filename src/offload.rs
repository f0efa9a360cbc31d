//! What a config chooses for offloaded connections: which directions go to
//! the kernel (the `RKTLS_KTLS_*` flags) and the key usage limit; and the
//! probe for kernel rekey support. Shared by `config` and `connection`.

use crate::ffi::guard_value;
use crate::ktls;

/// kTLS direction flag: the kernel encrypts what is sent.
pub const RKTLS_KTLS_TX: u32 = 1;

/// kTLS direction flag: the kernel decrypts what is received.
pub const RKTLS_KTLS_RX: u32 = 2;

/// kTLS direction flag: for TLS 1.3, give RX to the kernel only if it can
/// install new keys (Linux >= 6.14); otherwise RX stays in userspace, so a
/// peer's KeyUpdate does not end the connection (one asking for our
/// KeyUpdate still does while TX is in such a kernel).
pub const RKTLS_KTLS_RX_NEEDS_REKEY: u32 = 4;

/// Every direction flag.
pub(crate) const KTLS_DIRS_ALL: u32 = RKTLS_KTLS_TX | RKTLS_KTLS_RX | RKTLS_KTLS_RX_NEEDS_REKEY;

/// Per-config choices for offloaded connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Options {
    pub(crate) dirs: u32,
    /// Records per key at most (0: the suite's confidentiality limit).
    pub(crate) key_limit: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            dirs: RKTLS_KTLS_TX | RKTLS_KTLS_RX,
            key_limit: 0,
        }
    }
}

/// Whether this kernel can install new keys on an offloaded TLS 1.3 socket
/// (KeyUpdate under kTLS; Linux >= 6.14). Probed once per process on a
/// throwaway loopback socket; false where the kernel has no kTLS at all.
/// Thread-safe.
#[no_mangle]
pub extern "C" fn rktls_ktls_can_rekey() -> bool {
    guard_value(false, ktls::can_rekey)
}
