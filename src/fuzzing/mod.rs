//! Entry points for the fuzz targets in `fuzz/` and for the test that
//! replays their findings (`fuzz/regressions/`). Not part of the C API.

use std::sync::Arc;

pub mod api;
#[cfg(any(test, feature = "fuzzing"))]
pub mod offload;
#[cfg(any(test, feature = "fuzzing"))]
mod offload_program;
pub mod stream;
mod stream_program;

use crate::acceptor::{Acceptor, Outcome};
use crate::config::ServerConfigBuilder;
use crate::connection::Connection;
use crate::result::rktls_result::{self, *};
use crate::wire;

/// Inputs longer than this are cut: a ClientHello flight fits many times.
pub const MAX_INPUT: usize = 16 * 1024;

/// Runs arbitrary client bytes through the acceptor path and the direct
/// path with the same config, and checks that they agree.
pub struct AcceptorParity {
    config: Arc<rustls::ServerConfig>,
}

/// How one path ended: its last result and the last record it sent.
#[derive(Debug, PartialEq, Eq)]
struct End {
    result: rktls_result,
    last_record: Vec<u8>,
}

/// The last TLS record in a byte stream (cut short if the stream is).
pub(crate) fn last_record(s: &[u8]) -> Vec<u8> {
    wire::records(s)
        .last()
        .map_or_else(Vec::new, |r| r.bytes.to_vec())
}

/// Drive a buffer-mode server connection over `pieces`, collecting output.
fn drive(
    c: &mut Connection,
    pieces: &mut dyn Iterator<Item = &[u8]>,
    out: &mut Vec<u8>,
) -> rktls_result {
    let mut buf = vec![0u8; 4096];
    let mut pending: Option<&[u8]> = None;
    for _ in 0..10_000 {
        let r = c.handshake().unwrap_or_else(|e| e.code);
        match r {
            RKTLS_WANT_WRITE => {
                let n = c.take(&mut buf).expect("take");
                out.extend_from_slice(&buf[..n]);
            }
            RKTLS_WANT_READ => {
                let piece = match pending.take() {
                    Some(p) => p,
                    None => match pieces.next() {
                        Some(p) => p,
                        None => return r,
                    },
                };
                let n = c.feed(piece).expect("feed");
                if n < piece.len() {
                    pending = Some(&piece[n..]);
                }
            }
            r => return r,
        }
    }
    panic!("no progress");
}

impl AcceptorParity {
    /// A server config with this certificate and key (PEM).
    pub fn new(cert_pem: &[u8], key_pem: &[u8]) -> Self {
        let mut b = ServerConfigBuilder::new();
        b.add_pem(cert_pem, key_pem).expect("certificate");
        AcceptorParity {
            config: b.build().expect("config").rustls,
        }
    }

    fn direct(&self, pieces: &[&[u8]]) -> End {
        let mut c = Connection::server(self.config.clone()).expect("connection");
        let mut out = Vec::new();
        let result = drive(&mut c, &mut pieces.iter().copied(), &mut out);
        End {
            result,
            last_record: last_record(&out),
        }
    }

    fn via_acceptor(&self, pieces: &[&[u8]]) -> End {
        let mut a = Acceptor::new();
        let mut rest = pieces.iter().copied();
        loop {
            let Some(piece) = rest.next() else {
                return End {
                    result: RKTLS_WANT_READ,
                    last_record: Vec::new(),
                };
            };
            let n = a.feed(piece).expect("feed");
            assert_eq!(n, piece.len(), "acceptor holds a whole fuzz input");
            match a.accept() {
                Ok(Outcome::Want(_)) => continue,
                Ok(Outcome::Accepted(mut acc)) => {
                    return match acc.make_connection(self.config.clone()) {
                        Ok(mut c) => {
                            let mut out = Vec::new();
                            let result = drive(&mut c, &mut rest, &mut out);
                            End {
                                result,
                                last_record: last_record(&out),
                            }
                        }
                        Err((e, alert)) => End {
                            result: e.code,
                            last_record: last_record(&alert.bytes),
                        },
                    };
                }
                Err((e, alert)) => {
                    return End {
                        result: e.code,
                        last_record: last_record(&alert.bytes),
                    }
                }
            }
        }
    }

    /// The first byte picks the piece size the input is delivered in (0:
    /// all at once); the rest are the client's bytes.
    pub fn run(&self, data: &[u8]) {
        let Some((&size, input)) = data.split_first() else {
            return;
        };
        let input = &input[..input.len().min(MAX_INPUT)];
        let size = if size == 0 {
            input.len().max(1)
        } else {
            size as usize
        };
        let pieces: Vec<&[u8]> = input.chunks(size).collect();
        let d = self.direct(&pieces);
        let a = self.via_acceptor(&pieces);
        // Where a path refused the client with a readable (plaintext) alert,
        // the other must have sent the very same alert.
        let plain_alert = |e: &End| crate::alert::parse_plain_alert(&e.last_record).is_some();
        if plain_alert(&d) || plain_alert(&a) {
            assert_eq!(
                d.last_record, a.last_record,
                "alerts differ: direct {d:?}, acceptor {a:?}"
            );
        }
        // A failure on one path is a failure on the other.
        let failed = |e: &End| !matches!(e.result, RKTLS_OK | RKTLS_WANT_READ | RKTLS_WANT_WRITE);
        assert_eq!(failed(&d), failed(&a), "direct {d:?}, acceptor {a:?}");
        // Every protocol failure sends an alert.
        for e in [&d, &a] {
            if e.result.category() == crate::result::rktls_category::RKTLS_CATEGORY_PROTOCOL {
                assert!(!e.last_record.is_empty(), "failure without alert: {e:?}");
            }
        }
    }
}

/// Every input kept for a target: its seeds (`fuzz/seeds/TARGET/`, real
/// traffic) and its regressions (`fuzz/regressions/TARGET/`, crashes found
/// and fixed). `fuzz/pending/` holds crashes not fixed yet: not replayed.
#[cfg(test)]
pub(crate) fn kept_inputs(target: &str) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut v = Vec::new();
    for kind in ["seeds", "regressions"] {
        let Ok(dir) = std::fs::read_dir(root.join(kind).join(target)) else {
            continue;
        };
        for entry in dir {
            let path = entry.unwrap().path();
            if path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            {
                continue;
            }
            let data = std::fs::read(&path).unwrap();
            v.push((path, data));
        }
    }
    v.sort();
    v
}

/// Run `f` on every kept input of `target`, naming the one that fails.
#[cfg(test)]
pub(crate) fn replay(target: &str, f: impl Fn(&[u8])) {
    let inputs = kept_inputs(target);
    assert!(!inputs.is_empty(), "no kept inputs for {target}");
    let mut failed = Vec::new();
    for (path, data) in inputs {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&data)));
        if r.is_err() {
            failed.push(path.display().to_string());
        }
    }
    assert!(failed.is_empty(), "kept inputs fail: {failed:#?}");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replays every input the fuzzer kept for the acceptor, so its
    /// findings stay fixed without cargo-fuzz installed.
    #[test]
    fn replay_acceptor() {
        let (cert, key) = crate::testutil::pems();
        let t = AcceptorParity::new(cert.as_bytes(), key.as_bytes());
        replay("acceptor", |d| t.run(d));
    }

    fn pems() -> stream::Pems {
        let p = crate::testutil::pki();
        stream::Pems {
            ca: p.ca_pem.clone().into_bytes(),
            cert: p.server.0.clone().into_bytes(),
            key: p.server.1.clone().into_bytes(),
        }
    }

    #[test]
    fn replay_server_stream() {
        let t = stream::StreamTarget::new(stream::Side::Server, &pems());
        replay("server_stream", |d| t.run(d, None));
    }

    #[test]
    fn replay_client_stream() {
        let t = stream::StreamTarget::new(stream::Side::Client, &pems());
        replay("client_stream", |d| t.run(d, None));
    }

    /// Replays one file (a pending crash, say) for a stream target:
    /// `RKTLS_REPLAY=client_stream:PATH cargo test replay_one -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn replay_one() {
        let spec = std::env::var("RKTLS_REPLAY").expect("RKTLS_REPLAY=target:path");
        let (target, path) = spec.split_once(':').expect("target:path");
        let data = std::fs::read(path).unwrap();
        unsafe extern "C" fn print(
            _: *mut std::ffi::c_void,
            l: u32,
            m: *const std::ffi::c_char,
            n: usize,
        ) {
            let m = unsafe { std::slice::from_raw_parts(m.cast::<u8>(), n) };
            eprintln!("log {l}: {}", String::from_utf8_lossy(m));
        }
        if std::env::var("RKTLS_REPLAY_LOG").is_ok() {
            crate::logging::rktls_set_log_callback(Some(print), std::ptr::null_mut(), 5);
        }
        match target {
            "client_stream" => {
                stream::StreamTarget::new(stream::Side::Client, &pems()).run(&data, None)
            }
            "server_stream" => {
                stream::StreamTarget::new(stream::Side::Server, &pems()).run(&data, None)
            }
            "offload_records" => offload::OffloadTarget::new(&pems()).run(&data, None),
            t => panic!("unknown target {t}"),
        }
    }

    #[test]
    fn replay_offload_records() {
        let t = offload::OffloadTarget::new(&pems());
        replay("offload_records", |d| t.run(d, None));
    }

    #[test]
    fn replay_api_sequence() {
        let p = pems();
        replay("api_sequence", |d| api::run(&p, d, None));
    }

    /// Regenerates the seed inputs from real traffic:
    /// `cargo test write_fuzz_seeds -- --ignored`.
    #[test]
    #[ignore]
    fn write_fuzz_seeds() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
        for target in ["server_stream", "client_stream"] {
            let dir = root.join(target);
            std::fs::create_dir_all(&dir).unwrap();
            for (name, data) in stream::seeds() {
                std::fs::write(dir.join(name), data).unwrap();
            }
        }
        let dir = root.join("offload_records");
        std::fs::create_dir_all(&dir).unwrap();
        for (name, data) in offload::seeds() {
            std::fs::write(dir.join(name), data).unwrap();
        }
        let dir = root.join("api_sequence");
        std::fs::create_dir_all(&dir).unwrap();
        for (name, data) in api::seeds() {
            std::fs::write(dir.join(name), data).unwrap();
        }
    }
}
