//! The kernel's TLS record layer (Documentation/networking/tls.rst):
//! attaching the "tls" ULP, installing keys, probing what the running
//! kernel supports, and moving control records across an offloaded socket.
//!
//! The kernel's crypto-info structs come from `ktls-sys` (the ktls
//! project's bindings of `linux/tls.h`, no dependencies); they are filled
//! here from rustls' extracted secrets. Everything else is plain socket
//! calls, made through `sys`.

use std::collections::HashMap;
use std::io;
use std::os::fd::RawFd;
use std::sync::Mutex;

use rustls::{ConnectionTrafficSecrets, SupportedCipherSuite};

use crate::result::rktls_result::{self, *};
use crate::result::Error;
use crate::sys;

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

/// The bytes a TLS 1.2 record of `suite` adds to its plaintext: the
/// explicit nonce of AES-GCM (RFC 5288) and the tag (16 bytes); ChaCha20
/// has no explicit nonce (RFC 7905).
pub(crate) fn tls12_record_overhead(suite: SupportedCipherSuite) -> usize {
    match kernel_cipher(suite) {
        Some(libc::TLS_CIPHER_CHACHA20_POLY1305) => 16,
        _ => 8 + 16,
    }
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
/// The secrets are only read: a caller can keep them for a userspace
/// record layer in case the kernel refuses the keys.
pub(crate) fn crypto_info(
    suite: SupportedCipherSuite,
    (seq, secrets): &(u64, ConnectionTrafficSecrets),
) -> Result<Vec<u8>, Error> {
    use ConnectionTrafficSecrets as S;
    let seq = *seq;
    let unusable = |what: &str| {
        Error::new(
            RKTLS_ERR_KTLS_UNAVAILABLE,
            format!("kTLS cannot carry this suite: {what}"),
        )
    };
    let (cipher, key, iv) = match secrets {
        // rustls reports TLS 1.2 AES-256-GCM as `Aes128Gcm` with a 32-byte
        // key: the key length decides.
        S::Aes128Gcm { key, iv } | S::Aes256Gcm { key, iv } => match key.as_ref().len() {
            16 => (libc::TLS_CIPHER_AES_GCM_128, key, iv),
            32 => (libc::TLS_CIPHER_AES_GCM_256, key, iv),
            n => return Err(unusable(&format!("an AES-GCM key of {n} bytes"))),
        },
        S::Chacha20Poly1305 { key, iv } => (libc::TLS_CIPHER_CHACHA20_POLY1305, key, iv),
        _ => return Err(unusable("a cipher other than AES-GCM or ChaCha20-Poly1305")),
    };
    let iv: &[u8; 12] = iv
        .as_ref()
        .try_into()
        .map_err(|_| unusable("an IV that is not 12 bytes"))?;
    key_info(kernel_version(suite), cipher, key.as_ref(), iv, seq)
        .ok_or_else(|| unusable("a key of the wrong length"))
}

/// One direction's crypto-info struct (ktls-sys, the kernel's
/// `linux/tls.h`) as bytes: the 12-byte nonce is split into the kernel's
/// salt and IV the way each cipher wants (GCM: 4-byte salt, 8-byte IV;
/// ChaCha20-Poly1305: no salt, 12-byte IV). `None` for a key of the wrong
/// length or a cipher other than these three.
fn key_info(version: u16, cipher: u16, key: &[u8], iv: &[u8; 12], seq: u64) -> Option<Vec<u8>> {
    use ktls_sys::bindings as k;
    fn bytes<T>(v: &T) -> Vec<u8> {
        // SAFETY: the kernel's crypto-info structs are plain bytes after a
        // header of two u16, with no padding.
        unsafe {
            std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>())
        }
        .to_vec()
    }
    let info = k::tls_crypto_info {
        version,
        cipher_type: cipher,
    };
    let rec_seq = seq.to_be_bytes();
    let (salt, gcm_iv) = iv.split_at(4);
    Some(match cipher {
        libc::TLS_CIPHER_AES_GCM_128 => bytes(&k::tls12_crypto_info_aes_gcm_128 {
            info,
            iv: gcm_iv.try_into().ok()?,
            key: key.try_into().ok()?,
            salt: salt.try_into().ok()?,
            rec_seq,
        }),
        libc::TLS_CIPHER_AES_GCM_256 => bytes(&k::tls12_crypto_info_aes_gcm_256 {
            info,
            iv: gcm_iv.try_into().ok()?,
            key: key.try_into().ok()?,
            salt: salt.try_into().ok()?,
            rec_seq,
        }),
        libc::TLS_CIPHER_CHACHA20_POLY1305 => bytes(&k::tls12_crypto_info_chacha20_poly1305 {
            info,
            iv: *iv,
            key: key.try_into().ok()?,
            salt: Default::default(),
            rec_seq,
        }),
        _ => return None,
    })
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
    let info = crypto_info(suite, &secrets)?;
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
    let key_len = if cipher == libc::TLS_CIPHER_AES_GCM_128 {
        16
    } else {
        32
    };
    key_info(version, cipher, &[0; 32][..key_len], &[0; 12], 0).unwrap_or_default()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_info_lays_out_the_kernel_struct() {
        let iv: [u8; 12] = std::array::from_fn(|i| 0xa0 + i as u8);
        let key = [7u8; 16];
        let b = key_info(
            libc::TLS_1_3_VERSION,
            libc::TLS_CIPHER_AES_GCM_128,
            &key,
            &iv,
            0x0102,
        )
        .unwrap();
        let mut want = Vec::new();
        want.extend_from_slice(&libc::TLS_1_3_VERSION.to_ne_bytes());
        want.extend_from_slice(&libc::TLS_CIPHER_AES_GCM_128.to_ne_bytes());
        want.extend_from_slice(&iv[4..]);
        want.extend_from_slice(&key);
        want.extend_from_slice(&iv[..4]);
        want.extend_from_slice(&0x0102u64.to_be_bytes());
        assert_eq!(b, want);

        let c = key_info(
            libc::TLS_1_2_VERSION,
            libc::TLS_CIPHER_CHACHA20_POLY1305,
            &[9; 32],
            &iv,
            5,
        )
        .unwrap();
        assert_eq!(c.len(), 4 + 12 + 32 + 8);
        assert_eq!(&c[4..16], &iv);
        assert_eq!(&c[48..], &5u64.to_be_bytes());
    }

    #[test]
    fn wrong_key_lengths_are_errors_not_panics() {
        let iv = [0; 12];
        assert!(key_info(
            libc::TLS_1_3_VERSION,
            libc::TLS_CIPHER_AES_GCM_256,
            &[0; 16],
            &iv,
            0
        )
        .is_none());
        assert!(key_info(
            libc::TLS_1_3_VERSION,
            libc::TLS_CIPHER_AES_CCM_128,
            &[0; 16],
            &iv,
            0
        )
        .is_none());
        assert_eq!(
            probe_info(libc::TLS_1_2_VERSION, libc::TLS_CIPHER_AES_GCM_256).len(),
            56
        );
    }
}
