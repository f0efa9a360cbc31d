//! How much heap a connection holds, counted by a global allocator of the
//! test binary (a count, not a timing): an offloaded connection keeps only
//! what its control records need (issue #14: at most 1 KiB per idle
//! connection after the offload).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

use super::Connection;
use crate::kernel_emul;
use crate::ktls::rktls_ktls_mode::*;
use crate::offload::{Options, RKTLS_KTLS_RX, RKTLS_KTLS_TX};
use crate::result::rktls_result::*;
use crate::testutil::{client_config, server_config, Opts};

/// The system allocator, counting the bytes live per thread: what a thread
/// allocated minus what it freed (a connection used by one thread is
/// measured exactly by what dropping it frees).
struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

fn count(delta: isize) {
    let _ = LIVE.try_with(|l| l.set(l.get() + delta));
}

// SAFETY: every call is forwarded to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        System.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize));
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as isize - layout.size() as isize);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

fn live() -> isize {
    LIVE.with(Cell::get)
}

/// Heap held by a server connection (the C API's box included), measured
/// as what dropping it frees, after a handshake and one request and
/// response: offloaded to the (emulated) kernel or not. Returned as (ours,
/// rustls' `KernelConnection` kept for key updates).
fn held_by_server(suite: u16, offload: bool) -> (isize, isize) {
    let o = Opts {
        suites: Some(vec![suite]),
        ..Opts::default()
    };
    let scfg = server_config(&o);
    let ccfg = client_config(&o);
    let (a, b) = UnixStream::pair().unwrap();
    let client = std::thread::spawn(move || {
        let mut c = Connection::client(ccfg, "localhost").unwrap();
        c.set_fd(b.as_raw_fd()).unwrap();
        assert_eq!(c.handshake().unwrap(), RKTLS_OK);
        assert_eq!(c.write(b"GET / HTTP/1.1\r\n\r\n").unwrap().0, RKTLS_OK);
        let mut buf = [0u8; 64];
        assert_eq!(c.read(&mut buf).unwrap(), (RKTLS_OK, 5));
        // Held open until the server side is measured.
        let _ = c.read(&mut buf);
    });
    if offload {
        kernel_emul::install(true);
    }
    let mut s = Box::new(Connection::server(scfg).unwrap());
    s.set_fd(a.as_raw_fd()).unwrap();
    if offload {
        s.set_ktls_mode(
            RKTLS_KTLS_REQUIRE,
            Options {
                dirs: RKTLS_KTLS_TX | RKTLS_KTLS_RX,
                key_limit: 0,
            },
        );
    }
    assert_eq!(s.handshake().unwrap(), RKTLS_OK);
    assert_eq!((s.ktls_tx(), s.ktls_rx()), (offload, offload));
    let mut buf = [0u8; 64];
    let (r, n) = s.read(&mut buf).unwrap();
    assert_eq!((r, &buf[..n]), (RKTLS_OK, &b"GET / HTTP/1.1\r\n\r\n"[..]));
    assert_eq!(s.write(b"hello").unwrap(), (RKTLS_OK, 5));
    let mut before = live();
    let mut rustls_part = 0;
    if offload {
        drop(s.offload().unwrap().take_kc());
        rustls_part = before - live();
        before = live();
    }
    drop(s);
    let held = (before - live(), rustls_part);
    kernel_emul::remove();
    drop(a);
    client.join().unwrap();
    held
}

#[test]
fn offloaded_connection_holds_at_most_1_kib() {
    // TLS 1.3 and 1.2, AES-GCM and ChaCha20.
    for suite in [0x1301, 0x1302, 0x1303, 0xc02b, 0xcca9] {
        let (ours, kc) = held_by_server(suite, true);
        eprintln!(
            "suite {suite:04x}: {} bytes held after the offload: rktls {ours}, rustls' KernelConnection {kc}",
            ours + kc
        );
        // Ours: at most 1 KiB, whatever the version.
        assert!(ours <= 1024, "suite {suite:04x}: {ours} bytes held");
        if suite >= 0xc000 {
            // TLS 1.2 keeps nothing of rustls (no key updates, no tickets).
            assert_eq!(kc, 0, "suite {suite:04x}");
        } else {
            // TLS 1.3 key updates need rustls' KernelConnection (its
            // size is rustls', ~790 bytes, ~450 of them QUIC state).
            assert!(kc > 0 && kc <= 1024, "suite {suite:04x}: {kc}");
        }
    }
}

#[test]
fn userspace_connection_is_measured_too() {
    // The same measure before the offload: the record buffers are there
    // (so the measure sees what a connection holds).
    let (held, _) = held_by_server(0x1301, false);
    eprintln!("userspace: {held} bytes held");
    assert!(held > 1024, "{held}");
}
