//! The one seam between rktls and the kernel's socket calls.
//!
//! Every syscall the library makes on a caller's fd goes through here, so
//! tests can inject failures (EINTR, EAGAIN, ECONNRESET, ...) without a
//! misbehaving kernel. Calls never block by themselves: on a non-blocking fd
//! EAGAIN is returned to the caller as want-read / want-write.

use std::io;
use std::os::fd::RawFd;

fn check(n: isize) -> io::Result<usize> {
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// `read(2)`, retried on EINTR.
pub(crate) fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        #[cfg(test)]
        if let Some(e) = fault::take(fault::Op::Read) {
            let err = io::Error::from_raw_os_error(e);
            if e == libc::EINTR {
                continue;
            }
            return Err(err);
        }
        // SAFETY: buf is valid for writes of buf.len() bytes.
        let r = check(unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) });
        match r {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            r => return r,
        }
    }
}

/// `send(2)` with MSG_NOSIGNAL (a reset peer gives EPIPE, never SIGPIPE),
/// falling back to `write(2)` for fds that are not sockets; retried on EINTR.
pub(crate) fn send(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    loop {
        #[cfg(test)]
        if let Some(e) = fault::take(fault::Op::Send) {
            if e == libc::EINTR {
                continue;
            }
            return Err(io::Error::from_raw_os_error(e));
        }
        // SAFETY: buf is valid for reads of buf.len() bytes.
        let mut r =
            check(unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) });
        if matches!(&r, Err(e) if e.raw_os_error() == Some(libc::ENOTSOCK)) {
            // SAFETY: as above.
            r = check(unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) });
        }
        match r {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            r => return r,
        }
    }
}

pub(crate) fn would_block(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EAGAIN)) || e.raw_os_error() == Some(libc::EWOULDBLOCK)
}

#[cfg(test)]
pub(crate) mod fault {
    //! Test-only fault injection, per thread.
    use std::cell::RefCell;
    use std::collections::VecDeque;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Op {
        Read,
        Send,
    }

    thread_local! {
        static QUEUE: RefCell<VecDeque<(Op, i32)>> = const { RefCell::new(VecDeque::new()) };
    }

    /// The next call of `op` on this thread fails with `errno`.
    pub fn inject(op: Op, errno: i32) {
        QUEUE.with(|q| q.borrow_mut().push_back((op, errno)));
    }

    pub(crate) fn take(op: Op) -> Option<i32> {
        QUEUE.with(|q| {
            let mut q = q.borrow_mut();
            let pos = q.iter().position(|(o, _)| *o == op)?;
            q.remove(pos).map(|(_, e)| e)
        })
    }
}
