//! A fuzzer-chosen sequence of C API calls: see rktls::fuzzing::api.
#![no_main]

mod common;

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rktls::fuzzing::stream::Pems;

#[global_allocator]
static ALLOC: common::Counting = common::Counting;

fn pems() -> &'static Pems {
    static P: OnceLock<Pems> = OnceLock::new();
    P.get_or_init(|| {
        let p = common::pems();
        // Warm the library's one-time state before counting bytes.
        for (_, seed) in rktls::fuzzing::api::seeds() {
            rktls::fuzzing::api::run(&p, &seed, None);
        }
        p
    })
}

fuzz_target!(|data: &[u8]| {
    rktls::fuzzing::api::run(pems(), data, Some(&common::in_use));
});
