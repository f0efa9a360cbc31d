//! Entry points for the fuzz targets in `fuzz/` and for the test that
//! replays their findings (`fuzz/regressions/`). Not part of the C API.

use std::sync::Arc;

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

#[cfg(test)]
mod tests {
    use super::*;

    /// Replays every input the fuzzer kept (fuzz/regressions/) and a few
    /// seeds, so its findings stay fixed without cargo-fuzz installed.
    #[test]
    fn replay_fuzz_regressions() {
        let (cert, key) = crate::testutil::pems();
        let t = AcceptorParity::new(cert.as_bytes(), key.as_bytes());
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).expect("fuzz/regressions exists") {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| t.run(&data)));
            assert!(r.is_ok(), "regression {} fails", path.display());
            n += 1;
        }
        assert!(n > 0, "no regression inputs in {}", dir.display());
    }
}
