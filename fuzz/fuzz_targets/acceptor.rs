//! Arbitrary client bytes, delivered in pieces of a fuzzer-chosen size,
//! through the acceptor and the direct path: both must agree, every
//! protocol failure must send an alert, and nothing may panic.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rktls::fuzzing::AcceptorParity;

fn target() -> &'static AcceptorParity {
    static T: OnceLock<AcceptorParity> = OnceLock::new();
    T.get_or_init(|| {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        AcceptorParity::new(cert.pem().as_bytes(), key.serialize_pem().as_bytes())
    })
}

fuzz_target!(|data: &[u8]| {
    target().run(data);
});
