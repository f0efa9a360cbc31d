//! Cipher suite names: the one table behind `rktls_cipher_suite_name()` and
//! `rktls_cipher_suite_from_name()` (C exports in `connection/ffi.rs`).

use std::ffi::CStr;

use rustls::CipherSuite as C;

/// One suite rktls supports: its IANA id and name, and the other names a
/// configuration may use for it (rustls' `TLS13_` spelling of the TLS 1.3
/// suites, OpenSSL's names of the TLS 1.2 suites; OpenSSL names the TLS 1.3
/// suites by their IANA names).
struct Suite {
    id: C,
    iana: &'static CStr,
    aliases: &'static [&'static str],
}

const SUITES: &[Suite] = &[
    Suite {
        id: C::TLS13_AES_128_GCM_SHA256,
        iana: c"TLS_AES_128_GCM_SHA256",
        aliases: &["TLS13_AES_128_GCM_SHA256"],
    },
    Suite {
        id: C::TLS13_AES_256_GCM_SHA384,
        iana: c"TLS_AES_256_GCM_SHA384",
        aliases: &["TLS13_AES_256_GCM_SHA384"],
    },
    Suite {
        id: C::TLS13_CHACHA20_POLY1305_SHA256,
        iana: c"TLS_CHACHA20_POLY1305_SHA256",
        aliases: &["TLS13_CHACHA20_POLY1305_SHA256"],
    },
    Suite {
        id: C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        iana: c"TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        aliases: &["ECDHE-ECDSA-AES128-GCM-SHA256"],
    },
    Suite {
        id: C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        iana: c"TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        aliases: &["ECDHE-ECDSA-AES256-GCM-SHA384"],
    },
    Suite {
        id: C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        iana: c"TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        aliases: &["ECDHE-ECDSA-CHACHA20-POLY1305"],
    },
    Suite {
        id: C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        iana: c"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        aliases: &["ECDHE-RSA-AES128-GCM-SHA256"],
    },
    Suite {
        id: C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        iana: c"TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        aliases: &["ECDHE-RSA-AES256-GCM-SHA384"],
    },
    Suite {
        id: C::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        iana: c"TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        aliases: &["ECDHE-RSA-CHACHA20-POLY1305"],
    },
];

/// The IANA name of a suite rktls supports, or "unknown".
pub(crate) fn name(id: u16) -> &'static CStr {
    SUITES
        .iter()
        .find(|s| u16::from(s.id) == id)
        .map_or(c"unknown", |s| s.iana)
}

/// The id of a suite rktls supports, by its IANA name or an alias, ignoring
/// ASCII case; `None` for anything else.
pub(crate) fn from_name(name: &str) -> Option<u16> {
    SUITES
        .iter()
        .find(|s| {
            s.iana.to_bytes().eq_ignore_ascii_case(name.as_bytes())
                || s.aliases.iter().any(|a| a.eq_ignore_ascii_case(name))
        })
        .map(|s| u16::from(s.id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_supported_suite_is_named_and_found_by_each_name() {
        let provider = crate::crypto::provider();
        // Both providers offer exactly the suites of the table.
        assert_eq!(provider.cipher_suites.len(), SUITES.len());
        for cs in &provider.cipher_suites {
            let id = u16::from(cs.suite());
            let n = name(id).to_str().unwrap();
            assert_ne!(n, "unknown", "0x{id:04x}");
            assert_eq!(from_name(n), Some(id), "{n}");
            assert_eq!(from_name(&n.to_ascii_lowercase()), Some(id), "{n}");
            // rustls' own spelling of the suite ("TLS13_AES_128_GCM_SHA256").
            let rustls_name = format!("{:?}", cs.suite());
            assert_eq!(from_name(&rustls_name), Some(id), "{rustls_name}");
        }
    }

    #[test]
    fn openssl_names() {
        assert_eq!(from_name("ECDHE-ECDSA-AES128-GCM-SHA256"), Some(0xc02b));
        assert_eq!(from_name("ECDHE-ECDSA-AES256-GCM-SHA384"), Some(0xc02c));
        assert_eq!(from_name("ECDHE-ECDSA-CHACHA20-POLY1305"), Some(0xcca9));
        assert_eq!(from_name("ECDHE-RSA-AES128-GCM-SHA256"), Some(0xc02f));
        assert_eq!(from_name("ECDHE-RSA-AES256-GCM-SHA384"), Some(0xc030));
        assert_eq!(from_name("ECDHE-RSA-CHACHA20-POLY1305"), Some(0xcca8));
        assert_eq!(from_name("TLS_CHACHA20_POLY1305_SHA256"), Some(0x1303));
    }

    #[test]
    fn unknown_names() {
        for n in [
            "",
            "unknown",
            "RC4-SHA",
            "TLS_RSA_WITH_AES_128_GCM_SHA256",
            "ECDHE-RSA-AES128-GCM-SHA256 ",
            "TLS_AES_128_GCM_SHA25",
        ] {
            assert_eq!(from_name(n), None, "{n:?}");
        }
        assert_eq!(name(0x009c).to_str().unwrap(), "unknown");
        assert_eq!(name(0).to_str().unwrap(), "unknown");
    }
}
