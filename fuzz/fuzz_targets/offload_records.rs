//! Arbitrary (record type, payload) sequences into an offloaded rktls
//! connection over the kTLS emulation, through read and the event API:
//! see rktls::fuzzing::offload.
#![no_main]

mod common;

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rktls::fuzzing::offload::OffloadTarget;

#[global_allocator]
static ALLOC: common::Counting = common::Counting;

fn target() -> &'static OffloadTarget {
    static T: OnceLock<OffloadTarget> = OnceLock::new();
    T.get_or_init(|| OffloadTarget::new(&common::pems()))
}

fuzz_target!(|data: &[u8]| {
    target().run(data, Some(&common::in_use));
});
