//! Arbitrary peer traffic into an rktls server connection after a real
//! handshake (buffer and fd mode): see rktls::fuzzing::stream.
#![no_main]

mod common;

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rktls::fuzzing::stream::{Side, StreamTarget};

#[global_allocator]
static ALLOC: common::Counting = common::Counting;

fn target() -> &'static StreamTarget {
    static T: OnceLock<StreamTarget> = OnceLock::new();
    T.get_or_init(|| StreamTarget::new(Side::Server, &common::pems()))
}

fuzz_target!(|data: &[u8]| {
    target().run(data, Some(&common::in_use));
});
