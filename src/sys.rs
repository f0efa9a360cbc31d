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

/// Read up to `max` bytes appended to `v`, straight into its spare
/// capacity (nothing is zeroed first); retried on EINTR. `read(2)`, or with
/// `dont_wait` `recv(2)` with MSG_DONTWAIT: what has already arrived, never
/// waiting (EAGAIN otherwise, also on a blocking socket; on a non-socket,
/// EAGAIN).
pub(crate) fn read_append(
    fd: RawFd,
    v: &mut Vec<u8>,
    max: usize,
    dont_wait: bool,
) -> io::Result<usize> {
    v.reserve(max);
    loop {
        if let Some(e) = injected(fault::Op::Read) {
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        let spare = v.spare_capacity_mut();
        let len = short_len(fault::Op::Read, max.min(spare.len()));
        let p = spare.as_mut_ptr().cast();
        // SAFETY: p is valid for writes of len bytes (spare capacity).
        let r = check(unsafe {
            if dont_wait {
                libc::recv(fd, p, len, libc::MSG_DONTWAIT)
            } else {
                libc::read(fd, p, len)
            }
        });
        match r {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) if dont_wait && e.raw_os_error() == Some(libc::ENOTSOCK) => {
                return Err(io::Error::from_raw_os_error(libc::EAGAIN))
            }
            Ok(n) => {
                // SAFETY: the kernel initialised n <= len bytes past len().
                unsafe { v.set_len(v.len() + n) };
                return Ok(n);
            }
            r => return r,
        }
    }
}

/// `send(2)` with MSG_NOSIGNAL (a reset peer gives EPIPE, never SIGPIPE),
/// falling back to `write(2)` for fds that are not sockets; retried on EINTR.
pub(crate) fn send(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    loop {
        if let Some(e) = injected(fault::Op::Send) {
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        #[cfg(any(test, feature = "fuzzing"))]
        if let Some(e) = crate::kernel_emul::socket_error(fd) {
            return Err(e);
        }
        #[cfg(any(test, feature = "fuzzing"))]
        if crate::kernel_emul::tx_offloaded(fd) {
            return crate::kernel_emul::send(fd, crate::wire::CT_APPLICATION_DATA, buf);
        }
        let len = short_len(fault::Op::Send, buf.len());
        // SAFETY: buf is valid for reads of buf.len() >= len bytes.
        let mut r = check(unsafe { libc::send(fd, buf.as_ptr().cast(), len, libc::MSG_NOSIGNAL) });
        if matches!(&r, Err(e) if e.raw_os_error() == Some(libc::ENOTSOCK)) {
            // SAFETY: as above.
            r = check(unsafe { libc::write(fd, buf.as_ptr().cast(), len) });
        }
        match r {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            r => return r,
        }
    }
}

/// Whether tests emulate kTLS on this thread (never in other builds).
pub(crate) fn emulated() -> bool {
    #[cfg(any(test, feature = "fuzzing"))]
    return crate::kernel_emul::active();
    #[cfg(not(any(test, feature = "fuzzing")))]
    false
}

pub(crate) fn would_block(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EAGAIN)) || e.raw_os_error() == Some(libc::EWOULDBLOCK)
}

/// A failure a test asked for on this thread; never in other builds.
#[inline]
fn injected(op: fault::Op) -> Option<io::Error> {
    if cfg!(test) {
        fault::take(op).map(io::Error::from_raw_os_error)
    } else {
        None
    }
}

/// `len`, or 1 when a test cuts `op` to single bytes; never in other builds.
#[inline]
fn short_len(op: fault::Op, len: usize) -> usize {
    if cfg!(test) && fault::is_short(op) {
        len.min(1)
    } else {
        len
    }
}

/// `setsockopt(2)` with a byte-string value.
pub(crate) fn setsockopt(fd: RawFd, level: i32, name: i32, value: &[u8]) -> io::Result<()> {
    if let Some(e) = injected(fault::Op::SetSockOpt) {
        return Err(e);
    }
    if level == libc::SOL_TLS && name == libc::TLS_RX {
        if let Some(e) = injected(fault::Op::TlsRx(fd)) {
            return Err(e);
        }
    }
    #[cfg(any(test, feature = "fuzzing"))]
    if let Some(r) = crate::kernel_emul::setsockopt(fd, level, name, value) {
        return r;
    }
    // SAFETY: value is valid for reads of value.len() bytes.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            value.as_ptr().cast(),
            value.len() as libc::socklen_t,
        )
    };
    check(r as isize).map(|_| ())
}

/// Take (and clear) the socket's pending error, `getsockopt(SO_ERROR)`.
/// After the kernel's TLS layer fails to read a record (EBADMSG, EMSGSIZE)
/// it leaves that error on the socket, and every send fails with it until
/// it is taken: taking it lets the alert that the failure deserves go out.
pub(crate) fn take_socket_error(fd: RawFd) -> io::Result<i32> {
    #[cfg(any(test, feature = "fuzzing"))]
    if let Some(e) = crate::kernel_emul::take_socket_error(fd) {
        return Ok(e);
    }
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: v and len are valid for writes of their sizes.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    check(r as isize).map(|_| v)
}

/// `getsockopt(2)` into `buf`; returns the length the kernel wrote.
pub(crate) fn getsockopt(fd: RawFd, level: i32, name: i32, buf: &mut [u8]) -> io::Result<usize> {
    #[cfg(any(test, feature = "fuzzing"))]
    if let Some(r) = crate::kernel_emul::getsockopt(fd, level, name, buf) {
        return r;
    }
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: buf is valid for writes of len bytes.
    let r = unsafe { libc::getsockopt(fd, level, name, buf.as_mut_ptr().cast(), &mut len) };
    check(r as isize).map(|_| len as usize)
}

/// A control-message buffer aligned for `cmsghdr`, room for one small cmsg.
#[repr(C, align(8))]
struct CmsgBuf([u8; 64]);

/// `recvmsg(2)` on an RX-offloaded TLS socket: one record's worth of
/// decrypted bytes and its content type (TLS_GET_RECORD_TYPE), retried on
/// EINTR. A truncated control message is an error (EPROTO).
pub(crate) fn recv_record(fd: RawFd, buf: &mut [u8]) -> io::Result<(u8, usize)> {
    loop {
        if let Some(e) = injected(fault::Op::RecvMsg) {
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        #[cfg(any(test, feature = "fuzzing"))]
        if crate::kernel_emul::rx_offloaded(fd) {
            let r = crate::kernel_emul::recv_record(fd, buf);
            if r.is_ok() && cfg!(test) && fault::ctrunc() {
                return Err(io::Error::from_raw_os_error(libc::EPROTO));
            }
            return r;
        }
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let mut cbuf = CmsgBuf([0; 64]);
        // SAFETY: a zeroed msghdr is valid; the pointers set below outlive the call.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.0.as_mut_ptr().cast();
        msg.msg_controllen = cbuf.0.len();
        // SAFETY: msg describes valid buffers.
        let r = check(unsafe { libc::recvmsg(fd, &mut msg, 0) });
        let n = match r {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            r => r?,
        };
        if msg.msg_flags & libc::MSG_CTRUNC != 0 || (cfg!(test) && fault::ctrunc()) {
            return Err(io::Error::from_raw_os_error(libc::EPROTO));
        }
        let mut typ = crate::wire::CT_APPLICATION_DATA;
        // SAFETY: walking the control buffer the kernel filled in.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_TLS && (*c).cmsg_type == libc::TLS_GET_RECORD_TYPE {
                    typ = *libc::CMSG_DATA(c);
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        return Ok((typ, n));
    }
}

/// `sendmsg(2)` of one record of content type `typ` on a TX-offloaded TLS
/// socket (TLS_SET_RECORD_TYPE), with MSG_NOSIGNAL, retried on EINTR.
pub(crate) fn send_record(fd: RawFd, typ: u8, payload: &[u8]) -> io::Result<usize> {
    loop {
        if let Some(e) = injected(fault::Op::SendMsg) {
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        #[cfg(any(test, feature = "fuzzing"))]
        if crate::kernel_emul::tx_offloaded(fd) {
            return crate::kernel_emul::send(fd, typ, payload);
        }
        let mut iov = libc::iovec {
            iov_base: payload.as_ptr() as *mut libc::c_void,
            iov_len: payload.len(),
        };
        let mut cbuf = CmsgBuf([0; 64]);
        // SAFETY: as in recv_record; the cmsg fits (CMSG_SPACE(1) <= 64).
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.0.as_mut_ptr().cast();
        msg.msg_controllen = unsafe { libc::CMSG_SPACE(1) } as usize;
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_TLS;
            (*c).cmsg_type = libc::TLS_SET_RECORD_TYPE;
            (*c).cmsg_len = libc::CMSG_LEN(1) as usize;
            *libc::CMSG_DATA(c) = typ;
        }
        // SAFETY: msg describes valid buffers.
        let r = check(unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL) });
        match r {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            r => return r,
        }
    }
}

/// `pread(2)` of up to `max` bytes appended to `v`, straight into its spare
/// capacity (nothing is zeroed first); retried on EINTR.
pub(crate) fn pread_append(
    fd: RawFd,
    v: &mut Vec<u8>,
    max: usize,
    offset: i64,
) -> io::Result<usize> {
    v.reserve(max);
    loop {
        let spare = v.spare_capacity_mut();
        let len = max.min(spare.len());
        // SAFETY: the spare capacity is valid for writes of len bytes.
        let r = check(unsafe { libc::pread(fd, spare.as_mut_ptr().cast(), len, offset) });
        match r {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Ok(n) => {
                // SAFETY: the kernel initialised n <= len bytes past len().
                unsafe { v.set_len(v.len() + n) };
                return Ok(n);
            }
            r => return r,
        }
    }
}

/// Run `f` (a call that cannot take MSG_NOSIGNAL, like `sendfile(2)`)
/// with SIGPIPE blocked on this thread, and consume the SIGPIPE it raised:
/// a reset peer is an error code (EPIPE, also when the call reported the
/// bytes it took before), never a signal. A thread that
/// already blocks SIGPIPE is left alone (its pending signals are its own).
fn without_sigpipe<T>(f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    // SAFETY: sigset_t values are initialised by sigemptyset before use;
    // the pointers passed are valid for the calls.
    unsafe {
        let mut pipe: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut pipe);
        libc::sigaddset(&mut pipe, libc::SIGPIPE);
        if libc::pthread_sigmask(libc::SIG_BLOCK, &pipe, &mut old) != 0 {
            return f();
        }
        if libc::sigismember(&old, libc::SIGPIPE) == 1 {
            return f();
        }
        let r = f();
        // Whatever the call returned: with TX in the kernel, TCP's send
        // raises SIGPIPE for a record while sendfile reports the bytes it
        // took before (or another errno, EBADMSG). SIGPIPE was unblocked
        // before the call, so a pending one is the call's own.
        let mut pending: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut pending);
        if libc::sigpending(&mut pending) == 0 && libc::sigismember(&pending, libc::SIGPIPE) == 1 {
            let zero = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            while libc::sigtimedwait(&pipe, std::ptr::null_mut(), &zero) < 0
                && *libc::__errno_location() == libc::EINTR
            {}
            libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
            // The peer is gone: what the kernel took will not arrive.
            return r.and(Err(io::Error::from_raw_os_error(libc::EPIPE)));
        }
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        r
    }
}

/// `sendfile(2)` from `in_fd` at `*offset`, advancing it; retried on EINTR.
/// A reset peer gives EPIPE, never SIGPIPE (`without_sigpipe`).
pub(crate) fn sendfile(
    out_fd: RawFd,
    in_fd: RawFd,
    offset: &mut i64,
    count: usize,
) -> io::Result<usize> {
    loop {
        if let Some(e) = injected(fault::Op::SendFile) {
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        #[cfg(any(test, feature = "fuzzing"))]
        if crate::kernel_emul::tx_offloaded(out_fd) {
            let mut chunk = Vec::new();
            let n = pread_append(in_fd, &mut chunk, count.min(65536), *offset)?;
            let n =
                crate::kernel_emul::send(out_fd, crate::wire::CT_APPLICATION_DATA, &chunk[..n])?;
            *offset += n as i64;
            return Ok(n);
        }
        let mut off: libc::off_t = *offset;
        // SAFETY: off is a valid off_t.
        let r =
            without_sigpipe(|| check(unsafe { libc::sendfile(out_fd, in_fd, &mut off, count) }));
        match r {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Ok(n) => {
                *offset = off;
                return Ok(n);
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg_attr(not(test), allow(dead_code))]
pub(crate) mod fault {
    //! Test-only fault injection, per thread (consulted only in test builds):
    //! a queue of one-shot failures, a plan that fails the Nth call of one
    //! kind (for tests that walk every call of a connection's life), and a
    //! mode that cuts reads or sends to one byte.
    use std::cell::{Cell, RefCell};
    use std::collections::VecDeque;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Op {
        Read,
        Send,
        SetSockOpt,
        RecvMsg,
        SendMsg,
        SendFile,
        /// `setsockopt(SOL_TLS, TLS_RX)` on this fd only.
        TlsRx(std::os::fd::RawFd),
    }

    impl Op {
        /// Its slot in the per-kind call counts (a TLS_RX setsockopt counts
        /// as a setsockopt).
        pub(crate) fn slot(self) -> usize {
            match self {
                Op::Read => 0,
                Op::Send => 1,
                Op::SetSockOpt | Op::TlsRx(_) => 2,
                Op::RecvMsg => 3,
                Op::SendMsg => 4,
                Op::SendFile => 5,
            }
        }
    }

    thread_local! {
        static QUEUE: RefCell<VecDeque<(Op, i32)>> = const { RefCell::new(VecDeque::new()) };
        /// (op, index of the call to fail, errno).
        static PLAN: Cell<Option<(Op, u64, i32)>> = const { Cell::new(None) };
        static COUNTS: RefCell<[u64; 6]> = const { RefCell::new([0; 6]) };
        static SHORT: Cell<Option<Op>> = const { Cell::new(None) };
        /// Records to let through before recvmsg reports MSG_CTRUNC.
        static CTRUNC: Cell<Option<u64>> = const { Cell::new(None) };
    }

    /// The record `nth` (0-based, counted from now) that recvmsg returns
    /// on this thread comes with MSG_CTRUNC (its control message cut).
    pub fn ctrunc_nth(nth: u64) {
        CTRUNC.with(|c| c.set(Some(nth)));
    }

    /// Whether this record's recvmsg reports MSG_CTRUNC (counts it).
    pub(crate) fn ctrunc() -> bool {
        CTRUNC.with(|c| match c.get() {
            Some(0) => {
                c.set(None);
                true
            }
            Some(n) => {
                c.set(Some(n - 1));
                false
            }
            None => false,
        })
    }

    /// The next call of `op` on this thread fails with `errno`.
    pub fn inject(op: Op, errno: i32) {
        QUEUE.with(|q| q.borrow_mut().push_back((op, errno)));
    }

    /// Call `nth` (0-based, counted from now) of `op` on this thread fails
    /// with `errno`; the counts restart.
    pub fn fail_nth(op: Op, nth: u64, errno: i32) {
        reset_counts();
        PLAN.with(|p| p.set(Some((op, nth, errno))));
    }

    /// Reads (or sends) on this thread move at most one byte per call.
    pub fn short(op: Option<Op>) {
        SHORT.with(|s| s.set(op));
    }

    pub(crate) fn is_short(op: Op) -> bool {
        SHORT.with(|s| s.get() == Some(op))
    }

    /// How many calls of `op` this thread made since the counts restarted.
    pub fn count(op: Op) -> u64 {
        COUNTS.with(|c| c.borrow()[op.slot()])
    }

    /// Forget the plan, the short mode and the queue; restart the counts.
    pub fn clear() {
        PLAN.with(|p| p.set(None));
        SHORT.with(|s| s.set(None));
        QUEUE.with(|q| q.borrow_mut().clear());
        CTRUNC.with(|c| c.set(None));
        reset_counts();
    }

    fn reset_counts() {
        COUNTS.with(|c| *c.borrow_mut() = [0; 6]);
    }

    pub(crate) fn take(op: Op) -> Option<i32> {
        let n = COUNTS.with(|c| {
            let mut c = c.borrow_mut();
            c[op.slot()] += 1;
            c[op.slot()] - 1
        });
        let queued = QUEUE.with(|q| {
            let mut q = q.borrow_mut();
            let pos = q.iter().position(|(o, _)| *o == op)?;
            q.remove(pos).map(|(_, e)| e)
        });
        queued.or_else(|| match PLAN.with(|p| p.get()) {
            Some((o, nth, errno)) if o == op && n == nth => Some(errno),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::os::fd::AsRawFd;

    thread_local! {
        static SIGPIPES: Cell<u32> = const { Cell::new(0) };
    }

    extern "C" fn count_sigpipe(_: libc::c_int) {
        SIGPIPES.with(|c| c.set(c.get() + 1));
    }

    #[test]
    fn sendfile_to_a_reset_peer_raises_no_sigpipe() {
        // Rust ignores SIGPIPE; a C server keeps the default (death). A
        // handler stands for it here: it must not run.
        let file = std::fs::File::open("/proc/self/exe").unwrap();
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        drop(b);
        // SAFETY: a handler that only touches a const thread-local.
        let old = unsafe {
            libc::signal(
                libc::SIGPIPE,
                count_sigpipe as *const () as libc::sighandler_t,
            )
        };
        let mut off = 0;
        let r = super::sendfile(a.as_raw_fd(), file.as_raw_fd(), &mut off, 4096);
        // The control case: a plain write(2) does raise it here.
        // SAFETY: writing one byte from a valid buffer.
        let w = unsafe { libc::write(a.as_raw_fd(), b"x".as_ptr().cast(), 1) };
        unsafe { libc::signal(libc::SIGPIPE, old) };
        assert_eq!(r.map_err(|e| e.raw_os_error()), Err(Some(libc::EPIPE)));
        assert_eq!(w, -1);
        assert_eq!(
            SIGPIPES.with(Cell::get),
            1,
            "only the plain write raised SIGPIPE"
        );
        // The thread's mask is as before: SIGPIPE not blocked.
        // SAFETY: querying this thread's mask.
        unsafe {
            let mut m: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut m);
            assert_eq!(libc::sigismember(&m, libc::SIGPIPE), 0);
        }
    }
}
