//! Moving TLS bytes: fd mode (rktls reads and writes the caller's socket:
//! record-exact while the kernel may take it over, greedy otherwise) and
//! buffer mode (the caller feeds and takes bytes).

use std::os::fd::RawFd;

use super::{Connection, IN_CAP};

/// Bytes read at most at once during the handshake in greedy mode (more
/// when one record needs more): a whole ClientHello, or a client's last
/// flight with its first request, in one read, without a 96 KiB buffer.
const HANDSHAKE_READ: usize = 4096;
use crate::result::Error;
use crate::sys;
use crate::wire;

pub(super) enum Fill {
    Got,
    Eof,
    WouldBlock,
}

impl Connection {
    /// Send queued TLS bytes. Ok(true) when none is left.
    pub(super) fn flush_out(&mut self) -> Result<bool, Error> {
        if self.fd < 0 {
            return Ok(self.pending_out() == 0);
        }
        self.started = true;
        while self.pending_out() > 0 {
            match sys::send(self.fd, &self.b.outgoing[self.b.out_pos..]) {
                Ok(n) => self.b.out_pos += n,
                Err(e) if sys::would_block(&e) => return Ok(false),
                Err(e) => {
                    self.errno = e.raw_os_error().unwrap_or(0);
                    let why = format!("then reset the connection ({e})");
                    return Err(self.renegotiation_ended(&why).unwrap_or(Error::io(&e)));
                }
            }
        }
        self.b.outgoing.clear();
        self.b.out_pos = 0;
        Ok(true)
    }

    /// Whether reads must stop at record boundaries: only while the kernel
    /// may still take the socket over (a kTLS mode, before the attempt, or
    /// after it with the record layer in the kernel), so no byte past the
    /// handshake's last record is taken from the socket. Otherwise rktls
    /// reads greedily: one read for whatever has arrived.
    pub(super) fn exact_reads(&self) -> bool {
        self.exact_reads_always && (!self.ktls_tried || self.in_kernel())
    }

    /// Read from the fd into the incoming buffer (fd mode only).
    pub(super) fn fill_in(&mut self) -> Result<Fill, Error> {
        self.fill(false)
    }

    /// As `fill_in`, but never waits, even on a blocking fd.
    pub(super) fn fill_in_now(&mut self) -> Result<Fill, Error> {
        self.fill(true)
    }

    pub(super) fn fill(&mut self, dont_wait: bool) -> Result<Fill, Error> {
        if self.fd < 0 {
            return Ok(Fill::WouldBlock);
        }
        if self.eof {
            return Ok(Fill::Eof);
        }
        self.started = true;
        let room = IN_CAP.saturating_sub(self.b.incoming.len());
        // From where rustls' view ends (a record boundary): not the whole
        // buffer again for every record of a long flight.
        let from = match self.common() {
            Some(_) => self.b.shown.min(self.b.incoming.len()),
            None => 0,
        };
        let want = if self.exact_reads() {
            wire::record_bytes_missing(&self.b.incoming[from..]).min(room)
        } else if self.is_handshaking() {
            let missing = wire::record_bytes_missing(&self.b.incoming[from..]);
            room.min(HANDSHAKE_READ.max(missing))
        } else {
            room
        };
        if want == 0 {
            return Err(self.input_overflow());
        }
        match sys::read_append(self.fd, &mut self.b.incoming, want, dont_wait) {
            Ok(0) => {
                self.eof = true;
                Ok(Fill::Eof)
            }
            Ok(_) => Ok(Fill::Got),
            Err(e) => {
                if sys::would_block(&e) {
                    // Idle after the handshake: hold no input buffer while
                    // waiting (greedy reads reserve up to 96 KiB).
                    if !self.is_handshaking() {
                        self.release_empty_input();
                    }
                    Ok(Fill::WouldBlock)
                } else {
                    self.errno = e.raw_os_error().unwrap_or(0);
                    let why = format!("then reset the connection ({e})");
                    Err(self.renegotiation_ended(&why).unwrap_or(Error::io(&e)))
                }
            }
        }
    }

    /// After the handshake, an empty input buffer is released when the
    /// connection waits: an idle connection holds none (the next read
    /// allocates what it needs).
    pub(super) fn release_empty_input(&mut self) {
        if self.b.incoming.is_empty() && self.b.incoming.capacity() > 0 {
            self.b.incoming = Vec::new();
            self.b.shown = 0;
        }
    }

    pub(crate) fn set_fd(&mut self, fd: RawFd) -> Result<(), Error> {
        if fd < 0 {
            return Err(Error::invalid("fd must be >= 0"));
        }
        if self.started || !self.b.incoming.is_empty() || self.pending_out() > 0 {
            return Err(Error::state("an fd can only be set before any I/O"));
        }
        self.fd = fd;
        Ok(())
    }

    pub(crate) fn feed(&mut self, data: &[u8]) -> Result<usize, Error> {
        if self.fd >= 0 {
            return Err(Error::state("connection does its own I/O on an fd"));
        }
        if self.eof {
            return Err(Error::state("bytes fed after end of file"));
        }
        self.started = true;
        let n = IN_CAP.saturating_sub(self.b.incoming.len()).min(data.len());
        self.b.incoming.extend_from_slice(&data[..n]);
        Ok(n)
    }

    pub(crate) fn feed_eof(&mut self) -> Result<(), Error> {
        if self.fd >= 0 {
            return Err(Error::state("connection does its own I/O on an fd"));
        }
        self.eof = true;
        Ok(())
    }

    pub(crate) fn take(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        if self.fd >= 0 {
            return Err(Error::state("connection does its own I/O on an fd"));
        }
        self.started = true;
        let n = self.pending_out().min(buf.len());
        let p = self.b.out_pos;
        buf[..n].copy_from_slice(&self.b.outgoing[p..p + n]);
        self.b.out_pos += n;
        if self.pending_out() == 0 {
            self.b.outgoing.clear();
            self.b.out_pos = 0;
        }
        Ok(n)
    }
}
