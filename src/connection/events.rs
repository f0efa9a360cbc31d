//! The C object `rktls_events`: the events one record produced in the event
//! style (`rktls_connection_process_record()`).

use super::control::Event;
use crate::ffi::{box_ref, box_take, guard, guard_value, out, Boxed, Handle};
use crate::result::rktls_result::{self, *};
use crate::result::Error;

// ---------------------------------------------------------------------------
// C API: the event style.

/// What happened when a record was processed (`rktls_events_type()`).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum rktls_event_type {
    /// No such event (index out of range).
    RKTLS_EVENT_NONE = 0,
    /// Application data: `rktls_events_data()` gives it.
    RKTLS_EVENT_APPLICATION_DATA = 1,
    /// The peer sent close_notify: no more data will come.
    RKTLS_EVENT_PEER_CLOSED = 2,
    /// The connection ended with an error (the call's result says which).
    RKTLS_EVENT_CLOSED = 3,
    /// New RX keys were installed (the peer sent KeyUpdate).
    RKTLS_EVENT_RX_KEY_UPDATED = 4,
    /// New TX keys take effect once the control records listed before this
    /// event were sent: call `rktls_connection_control_sent()` after
    /// sending them.
    RKTLS_EVENT_TX_KEY_UPDATED = 5,
    /// A control record to send, in order: `rktls_events_record_type()` and
    /// `rktls_events_data()` give its content type and plaintext payload
    /// (send with `sendmsg` and a TLS_SET_RECORD_TYPE control message).
    RKTLS_EVENT_SEND_CONTROL = 6,
    /// A TLS 1.2 server asked for renegotiation; it was refused.
    RKTLS_EVENT_RENEGOTIATION_REQUESTED = 7,
    /// A client received a session ticket (kept for resumption).
    RKTLS_EVENT_SESSION_TICKET = 8,
}

/// The events one record produced. Box handle: owned by the caller, freed
/// with `rktls_events_free()`; one thread at a time.
///
/// Call sequence (the event style, for hosts that do their own I/O on an
/// offloaded socket; TX and RX must both be in the kernel):
/// 1. After the handshake, check `rktls_connection_ktls_tx()` and
///    `rktls_connection_ktls_rx()`. Write application data on the socket
///    directly (the kernel encrypts it).
/// 2. For each record read with `recvmsg` (TLS_GET_RECORD_TYPE gives the
///    content type), call `rktls_connection_process_record()`: it returns
///    an `rktls_events` list, also on error.
/// 3. Walk it in order: `rktls_events_count()`, `rktls_events_type()`,
///    `rktls_events_data()`, `rktls_events_record_type()`. Deliver
///    `RKTLS_EVENT_APPLICATION_DATA`; send each `RKTLS_EVENT_SEND_CONTROL`
///    record with `sendmsg` and TLS_SET_RECORD_TYPE.
/// 4. If a `RKTLS_EVENT_TX_KEY_UPDATED` was listed, call
///    `rktls_connection_control_sent()` once those records are sent.
/// 5. `rktls_events_free()`. After `RKTLS_EVENT_PEER_CLOSED` or
///    `RKTLS_EVENT_CLOSED` (or an error result) the connection is over:
///    `rktls_connection_free()` and close the socket.
pub struct rktls_events {
    _private: [u8; 0],
}

impl Handle for rktls_events {
    type Rust = Vec<Event>;
    type Ownership = Boxed;
}

/// Number of events. 0 for NULL.
#[no_mangle]
pub extern "C" fn rktls_events_count(events: *const rktls_events) -> usize {
    guard_value(0, || {
        unsafe { box_ref(events, "events") }
            .map(|e| e.len())
            .unwrap_or(0)
    })
}

/// The type of event `i`; `RKTLS_EVENT_NONE` when out of range or NULL.
#[no_mangle]
pub extern "C" fn rktls_events_type(events: *const rktls_events, i: usize) -> rktls_event_type {
    use rktls_event_type::*;
    guard_value(RKTLS_EVENT_NONE, || {
        let Ok(ev) = (unsafe { box_ref(events, "events") }) else {
            return RKTLS_EVENT_NONE;
        };
        match ev.get(i) {
            None => RKTLS_EVENT_NONE,
            Some(Event::AppData(_)) => RKTLS_EVENT_APPLICATION_DATA,
            Some(Event::PeerClosed) => RKTLS_EVENT_PEER_CLOSED,
            Some(Event::Closed) => RKTLS_EVENT_CLOSED,
            Some(Event::RxKeyUpdated) => RKTLS_EVENT_RX_KEY_UPDATED,
            Some(Event::TxKeyUpdated) => RKTLS_EVENT_TX_KEY_UPDATED,
            Some(Event::SendControl(..)) => RKTLS_EVENT_SEND_CONTROL,
            Some(Event::RenegotiationRequested) => RKTLS_EVENT_RENEGOTIATION_REQUESTED,
            Some(Event::SessionTicket) => RKTLS_EVENT_SESSION_TICKET,
        }
    })
}

/// The record content type of a `RKTLS_EVENT_SEND_CONTROL` event `i`
/// (21 alert, 22 handshake); 0 for other events.
#[no_mangle]
pub extern "C" fn rktls_events_record_type(events: *const rktls_events, i: usize) -> u8 {
    guard_value(0, || {
        match unsafe { box_ref(events, "events") }.map(|e| e.get(i)) {
            Ok(Some(Event::SendControl(t, _))) => *t,
            _ => 0,
        }
    })
}

/// The bytes of event `i` (application data, or a control record's
/// payload): `*out_data` points into `events` and stays valid until
/// `rktls_events_free()`. Other events give length 0. Returns
/// `RKTLS_ERR_INVALID_ARGUMENT` when `i` is out of range.
#[no_mangle]
pub extern "C" fn rktls_events_data(
    events: *const rktls_events,
    i: usize,
    out_data: *mut *const u8,
    out_len: *mut usize,
) -> rktls_result {
    guard(|| {
        let ev = unsafe { box_ref(events, "events")? };
        let d = unsafe { out(out_data, "out_data")? };
        let l = unsafe { out(out_len, "out_len")? };
        let bytes: &[u8] = match ev.get(i) {
            None => return Err(Error::invalid("event index out of range")),
            Some(Event::AppData(b)) | Some(Event::SendControl(_, b)) => b,
            Some(_) => &[],
        };
        *d = bytes.as_ptr();
        *l = bytes.len();
        Ok(RKTLS_OK)
    })
}

/// Free events from `rktls_connection_process_record()`. NULL is ignored.
#[no_mangle]
pub extern "C" fn rktls_events_free(events: *mut rktls_events) {
    guard_value((), || drop(unsafe { box_take(events) }))
}
