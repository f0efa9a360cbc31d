//! The kernel's TLS record layer (Documentation/networking/tls.rst):
//! attaching the "tls" ULP, installing keys, probing what the running
//! kernel supports, and moving control records across an offloaded socket.
//!
//! The `ktls` crate builds the kernel's crypto-info structs from rustls'
//! secrets; everything else is plain socket calls, made through `sys`.

use std::collections::HashMap;
use std::io;
use std::os::fd::RawFd;
use std::sync::Mutex;

use rustls::{ConnectionTrafficSecrets, SupportedCipherSuite};

use crate::result::rktls_result::{self, *};
use crate::result::Error;
use crate::sys;

/// Record content types carried in TLS_{SET,GET}_RECORD_TYPE control messages.
pub(crate) const CT_ALERT: u8 = 21;
pub(crate) const CT_HANDSHAKE: u8 = 22;
pub(crate) const CT_APPLICATION_DATA: u8 = 23;

/// Whether connections move their record layer into the kernel after the
/// handshake (fd mode only).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum rktls_ktls_mode {
    /// Never: the record layer stays in userspace.
    #[default]
    RKTLS_KTLS_OFF = 0,
    /// When the kernel and the negotiated cipher allow it; otherwise stay in
    /// userspace (logged once per reason). The default is off.
    RKTLS_KTLS_PREFER = 1,
    /// Always: the handshake fails with `RKTLS_ERR_KTLS_UNAVAILABLE` when
    /// the kernel cannot take the connection.
    RKTLS_KTLS_REQUIRE = 2,
}

impl rktls_ktls_mode {
    pub(crate) fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            0 => Self::RKTLS_KTLS_OFF,
            1 => Self::RKTLS_KTLS_PREFER,
            2 => Self::RKTLS_KTLS_REQUIRE,
            _ => return None,
        })
    }
}

/// The kernel's cipher id for a rustls suite, if kTLS can carry it.
fn kernel_cipher(suite: SupportedCipherSuite) -> Option<u16> {
    use rustls::CipherSuite as C;
    Some(match suite.suite() {
        C::TLS13_AES_128_GCM_SHA256
        | C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        | C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => libc::TLS_CIPHER_AES_GCM_128,
        C::TLS13_AES_256_GCM_SHA384
        | C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
        | C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => libc::TLS_CIPHER_AES_GCM_256,
        C::TLS13_CHACHA20_POLY1305_SHA256
        | C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        | C::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => libc::TLS_CIPHER_CHACHA20_POLY1305,
        _ => return None,
    })
}

fn kernel_version(suite: SupportedCipherSuite) -> u16 {
    match suite {
        SupportedCipherSuite::Tls12(_) => libc::TLS_1_2_VERSION,
        SupportedCipherSuite::Tls13(_) => libc::TLS_1_3_VERSION,
    }
}

pub(crate) fn attach_ulp(fd: RawFd) -> io::Result<()> {
    sys::setsockopt(fd, libc::SOL_TCP, libc::TCP_ULP, b"tls")
}

fn install_raw(fd: RawFd, dir: libc::c_int, info: &[u8]) -> io::Result<()> {
    sys::setsockopt(fd, libc::SOL_TLS, dir, info)
}

/// The kernel's crypto-info bytes for one direction's secrets.
pub(crate) fn crypto_info(
    suite: SupportedCipherSuite,
    secrets: (u64, ConnectionTrafficSecrets),
) -> Result<Vec<u8>, Error> {
    let info = ktls::CryptoInfo::from_rustls(suite, secrets).map_err(|e| {
        Error::new(
            RKTLS_ERR_KTLS_UNAVAILABLE,
            format!("kTLS cannot carry this suite: {e}"),
        )
    })?;
    // SAFETY: CryptoInfo points to a plain struct of `size()` bytes.
    Ok(unsafe { std::slice::from_raw_parts(info.as_ptr().cast::<u8>(), info.size()) }.to_vec())
}

fn dir_name(dir: libc::c_int) -> &'static str {
    if dir == libc::TLS_TX {
        "TLS_TX"
    } else {
        "TLS_RX"
    }
}

/// Install one direction's keys (`libc::TLS_TX` or `libc::TLS_RX`) from
/// its crypto info (`crypto_info`); a refusal is
/// `RKTLS_ERR_KTLS_UNAVAILABLE`.
pub(crate) fn install(fd: RawFd, dir: libc::c_int, info: &[u8]) -> Result<(), Error> {
    set_info(fd, dir, info, RKTLS_ERR_KTLS_UNAVAILABLE)
}

/// Replace one direction's keys after a TLS 1.3 KeyUpdate (Linux >= 6.14);
/// a refusal is `RKTLS_ERR_KTLS_REKEY_REFUSED`.
pub(crate) fn rekey(
    fd: RawFd,
    dir: libc::c_int,
    suite: SupportedCipherSuite,
    secrets: (u64, ConnectionTrafficSecrets),
) -> Result<(), Error> {
    set_keys(fd, dir, suite, secrets, RKTLS_ERR_KTLS_REKEY_REFUSED)
}

fn set_keys(
    fd: RawFd,
    dir: libc::c_int,
    suite: SupportedCipherSuite,
    secrets: (u64, ConnectionTrafficSecrets),
    refused: rktls_result,
) -> Result<(), Error> {
    let info = crypto_info(suite, secrets)?;
    set_info(fd, dir, &info, refused)
}

fn set_info(fd: RawFd, dir: libc::c_int, info: &[u8], refused: rktls_result) -> Result<(), Error> {
    install_raw(fd, dir, info).map_err(|e| {
        Error::new(
            refused,
            format!(
                "the kernel refused keys: setsockopt(SOL_TLS, {}): {e}",
                dir_name(dir)
            ),
        )
    })
}

/// The size of the kernel's crypto-info struct for `suite`.
fn info_size(suite: SupportedCipherSuite) -> usize {
    match kernel_cipher(suite) {
        Some(libc::TLS_CIPHER_AES_GCM_128) => {
            std::mem::size_of::<libc::tls12_crypto_info_aes_gcm_128>()
        }
        Some(libc::TLS_CIPHER_AES_GCM_256) => {
            std::mem::size_of::<libc::tls12_crypto_info_aes_gcm_256>()
        }
        _ => std::mem::size_of::<libc::tls12_crypto_info_chacha20_poly1305>(),
    }
}

/// The keys the kernel holds for one direction, with its current record
/// sequence number (`getsockopt(SOL_TLS, TLS_TX or TLS_RX)`).
pub(crate) fn current_info(
    fd: RawFd,
    dir: libc::c_int,
    suite: SupportedCipherSuite,
) -> io::Result<Vec<u8>> {
    let mut info = vec![0u8; info_size(suite)];
    let n = sys::getsockopt(fd, libc::SOL_TLS, dir, &mut info)?;
    if n != info.len() {
        return Err(io::Error::from_raw_os_error(libc::EPROTO));
    }
    Ok(info)
}

/// The record sequence number in crypto-info bytes: their last 8 bytes
/// (`rec_seq`, big-endian, in every cipher's struct).
pub(crate) fn info_seq(info: &[u8]) -> u64 {
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&info[info.len() - 8..]);
    u64::from_be_bytes(seq)
}

/// The kernel's next record sequence number for one direction.
pub(crate) fn current_seq(
    fd: RawFd,
    dir: libc::c_int,
    suite: SupportedCipherSuite,
) -> io::Result<u64> {
    current_info(fd, dir, suite).map(|info| info_seq(&info))
}

/// Give the kernel back the RX keys it holds, at its own sequence number:
/// resumes decryption after the kernel paused at what looked like a
/// KeyUpdate (Linux >= 6.14). A refusal is `RKTLS_ERR_KTLS_REKEY_REFUSED`.
pub(crate) fn reinstall_rx(fd: RawFd, suite: SupportedCipherSuite) -> Result<(), Error> {
    let info = current_info(fd, libc::TLS_RX, suite).map_err(|e| {
        Error::new(
            RKTLS_ERR_KTLS_REKEY_REFUSED,
            format!("cannot read the kernel's RX keys: getsockopt(SOL_TLS, TLS_RX): {e}"),
        )
    })?;
    set_info(fd, libc::TLS_RX, &info, RKTLS_ERR_KTLS_REKEY_REFUSED)
}

/// A zero-keyed crypto-info struct of the given version and cipher, for probing.
fn probe_info(version: u16, cipher: u16) -> Vec<u8> {
    fn bytes<T>(v: &T) -> Vec<u8> {
        // SAFETY: plain-old-data kernel structs.
        unsafe {
            std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>())
        }
        .to_vec()
    }
    let info = libc::tls_crypto_info {
        version,
        cipher_type: cipher,
    };
    // SAFETY: all-zero is a valid value of these plain structs.
    unsafe {
        match cipher {
            libc::TLS_CIPHER_AES_GCM_128 => {
                let mut s: libc::tls12_crypto_info_aes_gcm_128 = std::mem::zeroed();
                s.info = info;
                bytes(&s)
            }
            libc::TLS_CIPHER_AES_GCM_256 => {
                let mut s: libc::tls12_crypto_info_aes_gcm_256 = std::mem::zeroed();
                s.info = info;
                bytes(&s)
            }
            _ => {
                let mut s: libc::tls12_crypto_info_chacha20_poly1305 = std::mem::zeroed();
                s.info = info;
                bytes(&s)
            }
        }
    }
}

/// Why the kernel cannot take a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Unsupported {
    /// No "tls" ULP in this kernel (ENOENT), or no TCP loopback to probe.
    NoUlp(String),
    /// The suite is not one kTLS carries.
    Cipher(String),
    /// The kernel refused this version and cipher.
    Kernel(String),
}

impl Unsupported {
    pub(crate) fn message(&self) -> &str {
        match self {
            Unsupported::NoUlp(m) | Unsupported::Cipher(m) | Unsupported::Kernel(m) => m,
        }
    }
}

/// Probe results by (kernel TLS version, kernel cipher id).
type ProbeCache = HashMap<(u16, u16), Result<(), Unsupported>>;

static PROBED: Mutex<Option<ProbeCache>> = Mutex::new(None);

/// Loopback TCP pair, so the probe touches no caller socket.
fn loopback_pair() -> io::Result<(std::net::TcpStream, std::net::TcpStream)> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    let c = std::net::TcpStream::connect(l.local_addr()?)?;
    let (s, _) = l.accept()?;
    Ok((c, s))
}

fn probe_uncached(version: u16, cipher: u16) -> Result<(), Unsupported> {
    use std::os::fd::AsRawFd;
    let (a, _b) =
        loopback_pair().map_err(|e| Unsupported::NoUlp(format!("cannot probe kTLS: {e}")))?;
    let fd = a.as_raw_fd();
    if let Err(e) = attach_ulp(fd) {
        return Err(Unsupported::NoUlp(match e.raw_os_error() {
            Some(libc::ENOENT) => {
                "this kernel has no TLS ULP (setsockopt TCP_ULP \"tls\": ENOENT)".into()
            }
            _ => format!("setsockopt TCP_ULP \"tls\" failed: {e}"),
        }));
    }
    let info = probe_info(version, cipher);
    for (dir, name) in [(libc::TLS_TX, "TLS_TX"), (libc::TLS_RX, "TLS_RX")] {
        install_raw(fd, dir, &info).map_err(|e| {
            Unsupported::Kernel(format!(
                "kernel refuses {name} for version 0x{version:04x} cipher {cipher}: {e}"
            ))
        })?;
    }
    Ok(())
}

/// Whether the kernel can carry `suite`, both ways. The answer is probed
/// once per version and cipher on a throwaway loopback connection and
/// cached for the process, so a refusal never costs a real connection.
pub(crate) fn supported(suite: SupportedCipherSuite) -> Result<(), Unsupported> {
    let Some(cipher) = kernel_cipher(suite) else {
        return Err(Unsupported::Cipher(format!(
            "kTLS cannot carry {:?}",
            suite.suite()
        )));
    };
    let key = (kernel_version(suite), cipher);
    if sys::emulated() {
        return probe_uncached(key.0, key.1);
    }
    let mut cache = PROBED.lock().unwrap_or_else(|e| e.into_inner());
    let cache = cache.get_or_insert_with(HashMap::new);
    if let Some(r) = cache.get(&key) {
        return r.clone();
    }
    let r = probe_uncached(key.0, key.1);
    match &r {
        Ok(()) => log::info!(
            "kTLS available for version 0x{:04x} cipher {}",
            key.0,
            key.1
        ),
        Err(e) => log::warn!(
            "kTLS unavailable, connections stay in userspace: {}",
            e.message()
        ),
    }
    cache.insert(key, r.clone());
    r
}

static REKEY: Mutex<Option<bool>> = Mutex::new(None);

/// Whether the kernel accepts a second `setsockopt(TLS_TX)` on a TLS 1.3
/// socket, i.e. can rekey (Linux >= 6.14; older kernels answer EBUSY).
fn probe_rekey() -> bool {
    use std::os::fd::AsRawFd;
    let Ok((a, _b)) = loopback_pair() else {
        return false;
    };
    let fd = a.as_raw_fd();
    if attach_ulp(fd).is_err() {
        return false;
    }
    let info = probe_info(libc::TLS_1_3_VERSION, libc::TLS_CIPHER_AES_GCM_128);
    install_raw(fd, libc::TLS_TX, &info).is_ok() && install_raw(fd, libc::TLS_TX, &info).is_ok()
}

/// Whether offloaded TLS 1.3 sockets can take new keys; probed once per
/// process (on a throwaway loopback connection) and cached.
pub(crate) fn can_rekey() -> bool {
    if sys::emulated() {
        return probe_rekey();
    }
    let mut cached = REKEY.lock().unwrap_or_else(|e| e.into_inner());
    *cached.get_or_insert_with(|| {
        let r = probe_rekey();
        log::info!(
            "kTLS rekey (TLS 1.3 KeyUpdate on offloaded sockets): {}",
            if r {
                "supported"
            } else {
                "not supported by this kernel"
            }
        );
        r
    })
}

/// Receive one record's worth from an RX-offloaded socket: (content type, bytes).
pub(crate) fn recv_record(fd: RawFd, buf: &mut [u8]) -> io::Result<(u8, usize)> {
    sys::recv_record(fd, buf)
}

/// Send one record of `typ` through a TX-offloaded socket.
pub(crate) fn send_record(fd: RawFd, typ: u8, payload: &[u8]) -> io::Result<usize> {
    sys::send_record(fd, typ, payload)
}
