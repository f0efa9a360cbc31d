//! The switch to the kernel: once, after the handshake, when the mode asks
//! for it. Written as four steps (`maybe_offload`):
//! 1. validate (`kernel_plan`): the suite, the kernel and the config decide
//!    which directions move; any problem still falls back to userspace
//!    (`ktls_fallback`: carry on, or end cleanly when kTLS is required);
//! 2. the point of no return (`take_secrets`): rustls hands over its
//!    traffic secrets and its record layer is gone;
//! 3. build and install (`Switch`): the kernel crypto info of each
//!    offloaded direction, the userspace record layer of the others, the
//!    keys given to the kernel; a failure here is a sticky error, except
//!    the kernel refusing RX after taking TX in PREFER mode: RX then stays
//!    in userspace (from the RX secrets kept until TLS_RX succeeded);
//! 4. commit (`commit_kernel`), which cannot fail.

use std::os::fd::RawFd;

use rustls::SupportedCipherSuite;

use super::control::{self, Offload};
use super::engine::Action;
use super::transport::Fill;
use super::{Connection, Negotiated, Tls};
use crate::alert::rktls_alert_description as A;
use crate::ktls::{self, rktls_ktls_mode};
use crate::offload;
use crate::record::{Opener, Sealer};
use crate::result::rktls_result::{self, *};
use crate::result::Error;

/// What validation decided, before anything irreversible happened.
pub(super) struct Plan {
    suite: SupportedCipherSuite,
    tx_kernel: bool,
    rx_kernel: bool,
    /// The kernel can install new keys on an offloaded socket.
    rekey: bool,
}

/// One direction, ready to switch: the kernel's crypto-info bytes, or the
/// userspace record layer for a direction the kernel does not carry.
enum Ready<U> {
    Kernel(Vec<u8>),
    User(U),
}

type Secrets = (u64, rustls::ConnectionTrafficSecrets);

/// Everything the switch needs, built from rustls' secrets (step 3).
struct Switch {
    kc: control::Kc,
    tx: Ready<Sealer>,
    rx: Ready<Opener>,
    /// The RX secrets behind `rx`'s crypto info, kept until the kernel
    /// took them: on a refusal RX can still move to userspace.
    rx_secrets: Option<Secrets>,
}

impl Switch {
    fn build(
        plan: &Plan,
        secrets: rustls::ExtractedSecrets,
        kc: control::Kc,
    ) -> Result<Self, Error> {
        let suite = plan.suite;
        let tx = if plan.tx_kernel {
            Ready::Kernel(ktls::crypto_info(suite, &secrets.tx)?)
        } else {
            Ready::User(Sealer::new(suite, secrets.tx))
        };
        let (rx, rx_secrets) = if plan.rx_kernel {
            let info = ktls::crypto_info(suite, &secrets.rx)?;
            (Ready::Kernel(info), Some(secrets.rx))
        } else {
            (Ready::User(Opener::new(suite, secrets.rx)), None)
        };
        Ok(Switch {
            kc,
            tx,
            rx,
            rx_secrets,
        })
    }

    /// Give the kernel its keys (TX first); the offload state follows.
    /// When the kernel refuses RX after taking TX, `rx_fallback` keeps RX
    /// here (`ktls_rx` is false then); otherwise the connection ends with
    /// internal_error.
    fn install(
        self,
        fd: RawFd,
        plan: &Plan,
        key_limit: u64,
        fail_fast: bool,
        rx_fallback: bool,
        tx_set: &mut bool,
    ) -> Result<Offload, Error> {
        let tx = match self.tx {
            Ready::Kernel(info) => {
                ktls::install(fd, libc::TLS_TX, &info)?;
                *tx_set = true;
                control::Tx::Kernel
            }
            Ready::User(s) => control::Tx::User(s),
        };
        let mut rx_seq = 0;
        let rx = match self.rx {
            Ready::Kernel(info) => match ktls::install(fd, libc::TLS_RX, &info) {
                Ok(()) => {
                    rx_seq = ktls::info_seq(&info);
                    control::Rx::Kernel
                }
                Err(e) => match self.rx_secrets {
                    Some(secrets) if rx_fallback && matches!(tx, control::Tx::Kernel) => {
                        log::warn!("{}; RX stays in userspace (TX is in the kernel)", e.msg);
                        control::Rx::User(Opener::new(plan.suite, secrets))
                    }
                    _ => return Err(rx_refused(fd, tx, e)),
                },
            },
            Ready::User(o) => control::Rx::User(o),
        };
        let mut o = Offload::new(
            self.kc, plan.suite, tx, rx, plan.rekey, key_limit, fail_fast,
        );
        o.set_rx_seq_base(rx_seq);
        Ok(o)
    }
}

/// The kernel refused the RX keys after TX was set up (in the kernel or
/// here), and the mode or the directions do not allow RX in userspace:
/// the connection ends, and the peer gets internal_error through the TX
/// path rather than a truncated stream.
fn rx_refused(fd: RawFd, tx: control::Tx, e: Error) -> Error {
    let alert = [2, A::RKTLS_ALERT_INTERNAL_ERROR as u8];
    let sent = match tx {
        control::Tx::Kernel => ktls::send_record(fd, crate::wire::CT_ALERT, &alert).map(|_| ()),
        control::Tx::User(mut s) => {
            let mut rec = Vec::new();
            match s.seal(crate::wire::CT_ALERT, &alert, &mut rec) {
                Ok(()) => crate::sys::send(fd, &rec).map(|_| ()),
                Err(e) => Err(std::io::Error::other(e.msg)),
            }
        }
    };
    let how = match sent {
        Ok(()) => "sent alert internal_error".to_string(),
        Err(e) => format!("the alert internal_error could not be sent: {e}"),
    };
    Error::new(
        RKTLS_ERR_KTLS_UNAVAILABLE,
        format!(
            "{} after TX was set up, so the connection cannot continue ({how})",
            e.msg
        ),
    )
}

impl Connection {
    /// The kernel conversion is still to be attempted.
    pub(super) fn offload_pending(&self) -> bool {
        self.ktls_mode != rktls_ktls_mode::RKTLS_KTLS_OFF
            && !self.ktls_tried
            && self.fd >= 0
            && self.error.is_none()
    }

    /// Move the record layer into the kernel, once, after the handshake,
    /// if the mode asks for it. Nothing is lost: records already received
    /// are processed first (their plaintext stays queued for `read`), a
    /// partial record is completed, and queued output is sent.
    pub(super) fn maybe_offload(&mut self) -> Result<rktls_result, Error> {
        if !self.offload_pending() {
            return Ok(RKTLS_OK);
        }
        loop {
            if self.pump(&mut Action::None).is_err() {
                return self.deliver_error();
            }
            if self.b.incoming.is_empty() {
                break;
            }
            if self.eof {
                self.error = Some(Error::new(
                    RKTLS_ERR_TRUNCATED,
                    "connection closed in the middle of a record",
                ));
                return self.deliver_error();
            }
            match self.fill_in()? {
                Fill::Got | Fill::Eof => {}
                Fill::WouldBlock => return Ok(RKTLS_WANT_READ),
            }
        }
        if !self.flush_out()? {
            return Ok(RKTLS_WANT_WRITE);
        }
        self.ktls_tried = true;
        // 1. Validate: nothing irreversible has happened yet, so any
        //    problem still falls back to userspace (or ends cleanly).
        let plan = match self.kernel_plan() {
            Ok(p) => p,
            Err(r) => return r,
        };
        // 2. The point of no return: rustls hands over its secrets and its
        //    record layer is gone.
        let Some(taken) = self.take_secrets() else {
            return Ok(RKTLS_OK);
        };
        // 3. Build what each direction needs and give the kernel its keys.
        let fd = self.fd;
        let (key_limit, fail_fast) = (self.offload_opts.key_limit, self.reneg_fail_fast);
        // PREFER keeps RX in userspace when the kernel refuses it after
        // taking TX; REQUIRE ends the connection.
        let rx_fallback = self.ktls_mode == rktls_ktls_mode::RKTLS_KTLS_PREFER;
        let built = taken
            .map_err(|e| {
                Error::new(
                    RKTLS_ERR_KTLS_UNAVAILABLE,
                    format!("rustls could not hand the connection to the kernel: {e}"),
                )
            })
            .and_then(|(secrets, kc)| Switch::build(&plan, secrets, kc.lean()))
            .and_then(|sw| {
                sw.install(
                    fd,
                    &plan,
                    key_limit,
                    fail_fast,
                    rx_fallback,
                    &mut self.kernel_tx_set,
                )
            });
        match built {
            // 4. Commit: cannot fail.
            Ok(o) => {
                self.commit_kernel(o);
                Ok(RKTLS_OK)
            }
            Err(e) => {
                log::error!(
                    "kTLS conversion failed past the point of no return: {}",
                    e.msg
                );
                self.error = Some(e.clone());
                Err(e)
            }
        }
    }

    /// Step 1 of the switch: the suite, the kernel's support and the
    /// config decide which directions go to the kernel. `Err` holds what
    /// `maybe_offload` returns instead (after a fallback, or an error).
    pub(super) fn kernel_plan(&mut self) -> Result<Plan, Result<rktls_result, Error>> {
        let Some(c) = self.common() else {
            return Err(Ok(RKTLS_OK));
        };
        let Some(suite) = c.negotiated_cipher_suite() else {
            return Err(Err(Error::new(
                RKTLS_ERR_INTERNAL,
                "no suite after the handshake",
            )));
        };
        if let Err(u) = ktls::supported(suite) {
            return Err(self.ktls_fallback(u.message()));
        }
        if let Err(e) = ktls::attach_ulp(self.fd) {
            return Err(self.ktls_fallback(&format!("setsockopt TCP_ULP \"tls\" failed: {e}")));
        }
        // Which directions go to the kernel; TLS 1.3 RX only where new
        // keys can follow a KeyUpdate, if the config asks for that.
        let dirs = self.offload_opts.dirs;
        let tls13 = suite.tls13().is_some();
        let rekey = ktls::can_rekey();
        let tx_kernel = dirs & offload::RKTLS_KTLS_TX != 0;
        let rx_kernel = dirs & offload::RKTLS_KTLS_RX != 0
            && !(tls13 && dirs & offload::RKTLS_KTLS_RX_NEEDS_REKEY != 0 && !rekey);
        if !tx_kernel && !rx_kernel {
            return Err(self.ktls_fallback(
                "TLS 1.3 RX needs a kernel that can rekey, and TX is not to be offloaded",
            ));
        }
        Ok(Plan {
            suite,
            tx_kernel,
            rx_kernel,
            rekey,
        })
    }

    /// Step 4 of the switch: the record layer is in the kernel from now on.
    pub(super) fn commit_kernel(&mut self, o: Offload) {
        log::debug!(
            "record layer moved into the kernel ({})",
            match (o.tx_in_kernel(), o.rx_in_kernel()) {
                (true, true) => "TX and RX",
                (true, false) => "TX; RX stays in userspace",
                _ => "RX; TX stays in userspace",
            }
        );
        self.tls = Tls::Kernel(Box::new(o));
        // Only an acceptor's probe needs the ClientHello it was shown.
        self.seen_hello = None;
        // rustls' handshake state went with the conversion; release the
        // record buffers too (undelivered plaintext stays).
        self.b.incoming = Vec::new();
        self.b.outgoing.release();
        self.b.out_pos = 0;
    }

    /// Take rustls' traffic secrets (with sequence numbers) and what is left
    /// of it for key updates and tickets; rustls' record layer is gone
    /// afterwards, and what the handshake negotiated is kept for the
    /// getters. `None` when the record layer is not in userspace.
    pub(super) fn take_secrets(
        &mut self,
    ) -> Option<Result<(rustls::ExtractedSecrets, control::Kc), rustls::Error>> {
        self.keep_negotiated();
        let negotiated = Negotiated {
            version: self.protocol_version(),
            suite: self.cipher_suite(),
            alpn: None,
            resumed: self.is_resumed(),
            peer_certs: None,
        };
        let taken = match std::mem::replace(&mut self.tls, Tls::Gone) {
            Tls::Server(c) => c
                .dangerous_into_kernel_connection()
                .map(|(s, k)| (s, control::Kc::Server(Box::new(k)))),
            Tls::Client(c) => c
                .dangerous_into_kernel_connection()
                .map(|(s, k)| (s, control::Kc::Client(Box::new(k)))),
            other => {
                self.tls = other;
                return None;
            }
        };
        // Kept since the handshake completed (and never replaced).
        self.negotiated.get_or_insert(negotiated);
        Some(taken)
    }

    /// The kernel cannot take the connection: stay in userspace (prefer),
    /// or end it with a close_notify (require).
    pub(super) fn ktls_fallback(&mut self, why: &str) -> Result<rktls_result, Error> {
        if self.ktls_mode == rktls_ktls_mode::RKTLS_KTLS_PREFER {
            log::debug!("kTLS not used for this connection: {why}");
            return Ok(RKTLS_OK);
        }
        let _ = self.pump(&mut Action::CloseNotify);
        self.sent_close_notify = true;
        let _ = self.flush_out();
        let e = Error::new(
            RKTLS_ERR_KTLS_UNAVAILABLE,
            format!("kernel TLS required but unavailable: {why}"),
        );
        self.error = Some(e.clone());
        Err(e)
    }
}
