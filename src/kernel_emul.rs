//! Test only: an emulation of the kernel's TLS record layer behind the
//! `sys` seam, so tests can drive the real offload state machine where the
//! host kernel has no kTLS, and can prove the keys rktls hands the kernel.
//!
//! It takes exactly the crypto-info bytes rktls passes to
//! `setsockopt(SOL_TLS, ...)`, and protects records with them using ring's
//! AEAD, independently of rustls' record layer. A peer that is a plain
//! rustls connection accepts what it encrypts, and its records decrypt with
//! those bytes only if the keys are right. Two kernels are modelled: with
//! rekey (Linux >= 6.14: a second TLS_TX/TLS_RX is allowed for TLS 1.3;
//! after a KeyUpdate is received, reads fail with EKEYEXPIRED until new RX
//! keys are installed) and without (a second setsockopt fails with EBUSY).
//! State is per thread; installed with [`install`], removed with [`remove`].
//! Also built with the `fuzzing` feature, for the `offload_records` target.
#![cfg_attr(not(test), allow(dead_code))]

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::os::fd::RawFd;

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};

/// One direction's state, parsed from the crypto-info bytes: a record
/// layer of its own (ring), which tests also use as an independent peer.
pub(crate) struct Key {
    version: u16,
    aead: LessSafeKey,
    /// The kernel's `iv` field (TLS 1.2 GCM: explicit nonce seed).
    iv: Vec<u8>,
    salt: Vec<u8>,
    seq: u64,
}

#[derive(Default)]
struct Sock {
    /// The socket's inode: fd numbers are reused after close.
    ino: u64,
    ulp: bool,
    tx: Option<Key>,
    rx: Option<Key>,
    rx_expired: bool,
    /// The crypto-info bytes last installed per direction (TX, RX).
    info: [Vec<u8>; 2],
    raw: Vec<u8>,
    /// Decrypted bytes of a record the caller's buffer could not hold.
    pending: Option<(u8, Vec<u8>)>,
    /// The socket error a failed read leaves (`sk_err`): like the real
    /// kernel, every send fails with it until `SO_ERROR` takes it.
    sk_err: i32,
}

pub(crate) struct Emu {
    rekey: bool,
    socks: HashMap<RawFd, Sock>,
    /// Every SOL_TLS setsockopt: (fd, TLS_TX or TLS_RX, bytes).
    pub(crate) log: Vec<(RawFd, i32, Vec<u8>)>,
    /// Records sent and received through the emulation, by fd.
    pub(crate) records: HashMap<RawFd, (u64, u64)>,
}

impl Emu {
    /// The keys installed on `fd`, in order: TLS_TX or TLS_RX each.
    pub(crate) fn installed(&self, fd: RawFd) -> Vec<i32> {
        self.log
            .iter()
            .filter(|(f, _, _)| *f == fd)
            .map(|(_, d, _)| *d)
            .collect()
    }
}

thread_local! {
    static EMU: RefCell<Option<Emu>> = const { RefCell::new(None) };
}

/// Emulate kTLS on this thread, with or without rekey support.
pub(crate) fn install(rekey: bool) {
    EMU.with(|e| {
        *e.borrow_mut() = Some(Emu {
            rekey,
            socks: HashMap::new(),
            log: Vec::new(),
            records: HashMap::new(),
        })
    });
}

/// Stop emulating; returns what happened.
pub(crate) fn remove() -> Option<Emu> {
    EMU.with(|e| e.borrow_mut().take())
}

pub(crate) fn active() -> bool {
    EMU.with(|e| e.borrow().is_some())
}

/// How many TX and RX keys were installed on `fd` so far (the
/// `offload_records` target checks the order of key installation).
pub(crate) fn installs(fd: RawFd) -> (usize, usize) {
    with(|e| {
        let keys = e.installed(fd);
        let n = |name| keys.iter().filter(|k| **k == name).count();
        (n(libc::TLS_TX), n(libc::TLS_RX))
    })
    .unwrap_or((0, 0))
}

fn with<R>(f: impl FnOnce(&mut Emu) -> R) -> Option<R> {
    EMU.with(|e| e.borrow_mut().as_mut().map(f))
}

fn inode(fd: RawFd) -> u64 {
    // SAFETY: a zeroed stat is valid; fstat fills it in.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } == 0 {
        st.st_ino
    } else {
        0
    }
}

fn err(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

/// A direction's keys from the kernel's crypto-info bytes.
pub(crate) fn parse(info: &[u8]) -> io::Result<Key> {
    if info.len() < 4 {
        return Err(err(libc::EINVAL));
    }
    let version = u16::from_ne_bytes([info[0], info[1]]);
    let cipher = u16::from_ne_bytes([info[2], info[3]]);
    let (alg, iv_len, key_len, salt_len): (&'static aead::Algorithm, usize, usize, usize) =
        match cipher {
            libc::TLS_CIPHER_AES_GCM_128 => (&aead::AES_128_GCM, 8, 16, 4),
            libc::TLS_CIPHER_AES_GCM_256 => (&aead::AES_256_GCM, 8, 32, 4),
            libc::TLS_CIPHER_CHACHA20_POLY1305 => (&aead::CHACHA20_POLY1305, 12, 32, 0),
            _ => return Err(err(libc::EINVAL)),
        };
    if info.len() != 4 + iv_len + key_len + salt_len + 8 {
        return Err(err(libc::EINVAL));
    }
    let mut at = 4;
    let mut take = |n: usize| {
        let s = info[at..at + n].to_vec();
        at += n;
        s
    };
    let iv = take(iv_len);
    let key = take(key_len);
    let salt = take(salt_len);
    let seq = u64::from_be_bytes(take(8).try_into().unwrap());
    Ok(Key {
        version,
        aead: LessSafeKey::new(UnboundKey::new(alg, &key).map_err(|_| err(libc::EINVAL))?),
        iv,
        salt,
        seq,
    })
}

impl Key {
    fn tls13(&self) -> bool {
        self.version == libc::TLS_1_3_VERSION
    }

    /// The 12-byte IV (salt || iv for GCM, iv for ChaCha20).
    fn full_iv(&self) -> [u8; 12] {
        let mut n = [0u8; 12];
        n[..self.salt.len()].copy_from_slice(&self.salt);
        n[self.salt.len()..].copy_from_slice(&self.iv);
        n
    }

    fn xor_nonce(&self) -> [u8; 12] {
        let mut n = self.full_iv();
        for (b, s) in n[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *b ^= s;
        }
        n
    }

    fn tls12_aad(&self, typ: u8, len: usize) -> [u8; 13] {
        let mut a = [0u8; 13];
        a[..8].copy_from_slice(&self.seq.to_be_bytes());
        a[8] = typ;
        a[9..11].copy_from_slice(&[3, 3]);
        a[11..].copy_from_slice(&(len as u16).to_be_bytes());
        a
    }

    /// Encrypt one record of `typ`, header included.
    pub(crate) fn seal(&mut self, typ: u8, plain: &[u8]) -> Vec<u8> {
        let mut out;
        if self.tls13() {
            let mut body = plain.to_vec();
            body.push(typ);
            let len = body.len() + 16;
            let hdr = [23, 3, 3, (len >> 8) as u8, len as u8];
            let nonce = Nonce::assume_unique_for_key(self.xor_nonce());
            self.aead
                .seal_in_place_append_tag(nonce, Aad::from(hdr), &mut body)
                .unwrap();
            out = hdr.to_vec();
            out.extend_from_slice(&body);
        } else {
            let aad = self.tls12_aad(typ, plain.len());
            let mut body = plain.to_vec();
            let (nonce, explicit) = if self.salt.is_empty() {
                (self.xor_nonce(), Vec::new())
            } else {
                // Like the kernel: the explicit nonce counts up from `iv`.
                let e = u64::from_be_bytes(self.iv[..8].try_into().unwrap())
                    .wrapping_add(self.seq)
                    .to_be_bytes();
                let mut n = [0u8; 12];
                n[..4].copy_from_slice(&self.salt);
                n[4..].copy_from_slice(&e);
                (n, e.to_vec())
            };
            self.aead
                .seal_in_place_append_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(aad),
                    &mut body,
                )
                .unwrap();
            let len = explicit.len() + body.len();
            out = vec![typ, 3, 3, (len >> 8) as u8, len as u8];
            out.extend_from_slice(&explicit);
            out.extend_from_slice(&body);
        }
        self.seq += 1;
        out
    }

    /// Decrypt one whole record: (content type, plaintext), or EBADMSG.
    pub(crate) fn open(&mut self, rec: &[u8]) -> io::Result<(u8, Vec<u8>)> {
        let hdr: [u8; 5] = rec[..5].try_into().unwrap();
        let mut body = rec[5..].to_vec();
        let r = if self.tls13() {
            let nonce = Nonce::assume_unique_for_key(self.xor_nonce());
            let plain = self
                .aead
                .open_in_place(nonce, Aad::from(hdr), &mut body)
                .map_err(|_| err(libc::EBADMSG))?;
            let end = plain
                .iter()
                .rposition(|&b| b != 0)
                .ok_or_else(|| err(libc::EBADMSG))?;
            (plain[end], plain[..end].to_vec())
        } else {
            let typ = hdr[0];
            let (nonce, ct) = if self.salt.is_empty() {
                (self.xor_nonce(), &mut body[..])
            } else {
                if body.len() < 8 {
                    return Err(err(libc::EBADMSG));
                }
                let mut n = [0u8; 12];
                n[..4].copy_from_slice(&self.salt);
                n[4..].copy_from_slice(&body[..8]);
                (n, &mut body[8..])
            };
            if ct.len() < 16 {
                return Err(err(libc::EBADMSG));
            }
            let aad = self.tls12_aad(typ, ct.len() - 16);
            let plain = self
                .aead
                .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), ct)
                .map_err(|_| err(libc::EBADMSG))?;
            (typ, plain.to_vec())
        };
        self.seq += 1;
        Ok(r)
    }
}

/// `setsockopt`: the TLS ULP and SOL_TLS keys are emulated; `None` for
/// anything else (the real call is made).
pub(crate) fn setsockopt(fd: RawFd, level: i32, name: i32, value: &[u8]) -> Option<io::Result<()>> {
    with(|emu| {
        if level == libc::SOL_TCP && name == libc::TCP_ULP {
            let ino = inode(fd);
            let s = emu.socks.entry(fd).or_default();
            if s.ino != ino {
                *s = Sock {
                    ino,
                    ..Sock::default()
                };
            }
            if s.ulp {
                return Some(Err(err(libc::EEXIST)));
            }
            s.ulp = value == b"tls";
            return Some(if s.ulp {
                Ok(())
            } else {
                Err(err(libc::ENOENT))
            });
        }
        if level != libc::SOL_TLS {
            return None;
        }
        let rekey = emu.rekey;
        let Some(s) = emu.socks.get_mut(&fd).filter(|s| s.ulp) else {
            return Some(Err(err(libc::ENOPROTOOPT)));
        };
        let key = match parse(value) {
            Ok(k) => k,
            Err(e) => return Some(Err(e)),
        };
        let slot = match name {
            libc::TLS_TX => &mut s.tx,
            libc::TLS_RX => &mut s.rx,
            _ => return Some(Err(err(libc::ENOPROTOOPT))),
        };
        if let Some(old) = slot {
            if !rekey || !old.tls13() || old.version != key.version {
                return Some(Err(err(libc::EBUSY)));
            }
        }
        *slot = Some(key);
        s.info[(name == libc::TLS_RX) as usize] = value.to_vec();
        if name == libc::TLS_RX {
            s.rx_expired = false;
        }
        emu.log.push((fd, name, value.to_vec()));
        Some(Ok(()))
    })
    .flatten()
}

/// `getsockopt(SOL_TLS, TLS_TX or TLS_RX)`: the keys installed, with the
/// current sequence number, as the kernel reports them; `None` for
/// anything else (the real call is made).
pub(crate) fn getsockopt(
    fd: RawFd,
    level: i32,
    name: i32,
    buf: &mut [u8],
) -> Option<io::Result<usize>> {
    if level != libc::SOL_TLS {
        return None;
    }
    with(|e| {
        let s = e.socks.get(&fd)?;
        let (key, info) = match name {
            libc::TLS_TX => (s.tx.as_ref(), &s.info[0]),
            libc::TLS_RX => (s.rx.as_ref(), &s.info[1]),
            _ => return Some(Err(err(libc::ENOPROTOOPT))),
        };
        let Some(key) = key else {
            return Some(Err(err(libc::EBUSY)));
        };
        if buf.len() != info.len() {
            return Some(Err(err(libc::EINVAL)));
        }
        buf.copy_from_slice(info);
        let n = buf.len();
        buf[n - 8..].copy_from_slice(&key.seq.to_be_bytes());
        Some(Ok(n))
    })
    .flatten()
}

/// The pending socket error, if any (sends fail with it).
pub(crate) fn socket_error(fd: RawFd) -> Option<io::Error> {
    with(|e| e.socks.get(&fd).map(|s| s.sk_err).filter(|&x| x != 0))
        .flatten()
        .map(err)
}

/// `getsockopt(SO_ERROR)` on an emulated socket: takes the error.
pub(crate) fn take_socket_error(fd: RawFd) -> Option<i32> {
    with(|e| e.socks.get_mut(&fd).map(|s| std::mem::take(&mut s.sk_err))).flatten()
}

/// Largest record the kernel reads (TLS_MAX_PAYLOAD_SIZE plus overhead).
const MAX_CIPHERTEXT: usize = 16384 + 256;

pub(crate) fn tx_offloaded(fd: RawFd) -> bool {
    with(|e| {
        e.socks
            .get(&fd)
            .is_some_and(|s| s.tx.is_some() && s.ino == inode(fd))
    })
    .unwrap_or(false)
}

pub(crate) fn rx_offloaded(fd: RawFd) -> bool {
    with(|e| {
        e.socks
            .get(&fd)
            .is_some_and(|s| s.rx.is_some() && s.ino == inode(fd))
    })
    .unwrap_or(false)
}

fn write_all(fd: RawFd, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: buf is valid for reads.
        let n = unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        buf = &buf[n as usize..];
    }
    Ok(())
}

/// Send `data` as records of `typ` on a TX-offloaded fd (blocking).
pub(crate) fn send(fd: RawFd, typ: u8, data: &[u8]) -> io::Result<usize> {
    if let Some(e) = socket_error(fd) {
        return Err(e);
    }
    let wire = with(|e| {
        let s = e.socks.get_mut(&fd).unwrap();
        let k = s.tx.as_mut().unwrap();
        let mut wire = Vec::new();
        let chunks: Vec<&[u8]> = if data.is_empty() {
            vec![&[][..]]
        } else {
            data.chunks(16384).collect()
        };
        let n = chunks.len() as u64;
        for c in chunks {
            wire.extend_from_slice(&k.seal(typ, c));
        }
        e.records.entry(fd).or_default().0 += n;
        wire
    })
    .unwrap();
    write_all(fd, &wire)?;
    Ok(data.len())
}

/// `recvmsg` on an RX-offloaded fd: one record (type, length).
pub(crate) fn recv_record(fd: RawFd, buf: &mut [u8]) -> io::Result<(u8, usize)> {
    loop {
        // A record the caller's buffer could not hold, continued.
        let step = with(|e| {
            let s = e.socks.get_mut(&fd).unwrap();
            if let Some((t, p)) = s.pending.take() {
                let n = p.len().min(buf.len());
                buf[..n].copy_from_slice(&p[..n]);
                if n < p.len() {
                    s.pending = Some((t, p[n..].to_vec()));
                }
                return Some(Ok((t, n)));
            }
            if s.rx_expired {
                return Some(Err(err(libc::EKEYEXPIRED)));
            }
            if let Some(h) = crate::wire::Header::parse(&s.raw) {
                let len = h.record_len();
                // Like the kernel's parser: an oversized record fails as
                // soon as its header is seen, and the error stays.
                if h.len > MAX_CIPHERTEXT {
                    s.sk_err = libc::EMSGSIZE;
                    return Some(Err(err(libc::EMSGSIZE)));
                }
                if s.raw.len() >= len {
                    let rec: Vec<u8> = s.raw.drain(..len).collect();
                    let rekey = e.rekey;
                    let k = s.rx.as_mut().unwrap();
                    let tls13 = k.tls13();
                    let (t, p) = match k.open(&rec) {
                        Ok(v) => v,
                        Err(x) => {
                            s.sk_err = x.raw_os_error().unwrap_or(libc::EBADMSG);
                            return Some(Err(x));
                        }
                    };
                    if rekey
                        && tls13
                        && t == crate::wire::CT_HANDSHAKE
                        && p.first() == Some(&crate::wire::HS_KEY_UPDATE)
                    {
                        s.rx_expired = true;
                    }
                    if t != crate::wire::CT_APPLICATION_DATA && p.len() > buf.len() {
                        return Some(Err(err(libc::EMSGSIZE)));
                    }
                    let mut n = p.len().min(buf.len());
                    buf[..n].copy_from_slice(&p[..n]);
                    if n < p.len() {
                        s.pending = Some((t, p[n..].to_vec()));
                    }
                    let mut records = 1;
                    // Like the kernel, one read returns several data records
                    // when they are already here and the buffer has room. A
                    // record of another type is held for the next read.
                    while t == crate::wire::CT_APPLICATION_DATA
                        && s.pending.is_none()
                        && n < buf.len()
                    {
                        let Some(len) = crate::wire::whole_record(&s.raw) else {
                            break;
                        };
                        if len - crate::wire::HEADER > MAX_CIPHERTEXT {
                            break;
                        }
                        let k = s.rx.as_mut().unwrap();
                        let Ok((t2, p2)) = k.open(&s.raw[..len]) else {
                            break; // the error comes with the next read
                        };
                        s.raw.drain(..len);
                        records += 1;
                        if rekey
                            && tls13
                            && t2 == crate::wire::CT_HANDSHAKE
                            && p2.first() == Some(&crate::wire::HS_KEY_UPDATE)
                        {
                            s.rx_expired = true;
                        }
                        if t2 != crate::wire::CT_APPLICATION_DATA {
                            s.pending = Some((t2, p2));
                            break;
                        }
                        let m = p2.len().min(buf.len() - n);
                        buf[n..n + m].copy_from_slice(&p2[..m]);
                        if m < p2.len() {
                            s.pending = Some((t2, p2[m..].to_vec()));
                        }
                        n += m;
                    }
                    e.records.entry(fd).or_default().1 += records;
                    return Some(Ok((t, n)));
                }
            }
            None
        })
        .unwrap();
        if let Some(r) = step {
            return r;
        }
        let mut tmp = [0u8; 16384];
        // SAFETY: tmp is valid for writes.
        let n = unsafe { libc::read(fd, tmp.as_mut_ptr().cast(), tmp.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            let partial = with(|e| !e.socks[&fd].raw.is_empty()).unwrap();
            return if partial {
                Err(err(libc::EBADMSG))
            } else {
                Ok((23, 0))
            };
        }
        with(|e| {
            e.socks
                .get_mut(&fd)
                .unwrap()
                .raw
                .extend_from_slice(&tmp[..n as usize])
        });
    }
}
