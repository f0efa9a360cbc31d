//! The TLS wire vocabulary every module shares: the record header and its
//! parser, content types, sizes, and the handshake message types rktls
//! looks at itself. Alert messages are built in `alert` over the
//! `rktls_alert_description` enum.
//!
//! Nothing here knows about connections, sockets or the kernel, so every
//! module (and `sys`, which tags kTLS control messages) can import it.

/// Record header length: content type, version, payload length.
pub(crate) const HEADER: usize = 5;
/// Largest plaintext fragment in one record (2^14).
pub(crate) const MAX_FRAGMENT: usize = 16384;
/// Largest TLS record on the wire: header plus 2^14 + 2048 bytes.
pub(crate) const MAX_RECORD: usize = HEADER + MAX_FRAGMENT + 2048;
/// Largest record payload a userspace reader accepts from a kTLS socket
/// (a fragment plus room for the tag and padding).
pub(crate) const MAX_KTLS_PAYLOAD: usize = MAX_FRAGMENT + 256;

/// Record content type: ChangeCipherSpec (TLS 1.2 switches to encryption).
pub(crate) const CT_CHANGE_CIPHER_SPEC: u8 = 20;
/// Record content type: alert.
pub(crate) const CT_ALERT: u8 = 21;
/// Record content type: handshake.
pub(crate) const CT_HANDSHAKE: u8 = 22;
/// Record content type: application data.
pub(crate) const CT_APPLICATION_DATA: u8 = 23;

/// The record version every record after the first carries (TLS 1.2).
pub(crate) const RECORD_VERSION: [u8; 2] = [3, 3];

/// Handshake message header length: type and 24-bit length.
pub(crate) const HS_HEADER: usize = 4;
/// Handshake message types rktls handles itself.
pub(crate) const HS_HELLO_REQUEST: u8 = 0;
pub(crate) const HS_CLIENT_HELLO: u8 = 1;
pub(crate) const HS_NEW_SESSION_TICKET: u8 = 4;
pub(crate) const HS_KEY_UPDATE: u8 = 24;

/// A TLS record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) typ: u8,
    /// Payload length as the header says.
    pub(crate) len: usize,
}

impl Header {
    /// The header at the front of `buf`; `None` when fewer than
    /// `HEADER` bytes are there.
    pub(crate) fn parse(buf: &[u8]) -> Option<Header> {
        let h = buf.get(..HEADER)?;
        Some(Header {
            typ: h[0],
            len: u16::from_be_bytes([h[3], h[4]]) as usize,
        })
    }

    /// The whole record's length on the wire (header included).
    pub(crate) fn record_len(&self) -> usize {
        HEADER + self.len
    }
}

/// One record in a byte stream: where it starts, its header, and its bytes
/// (cut short when the stream ends inside it).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Record<'a> {
    pub(crate) at: usize,
    pub(crate) header: Header,
    pub(crate) bytes: &'a [u8],
}

impl<'a> Record<'a> {
    /// The payload, if the whole record is there.
    pub(crate) fn payload(&self) -> Option<&'a [u8]> {
        self.bytes.get(HEADER..self.header.record_len())
    }
}

/// The records in `buf`, in order, as far as their headers are there (the
/// last one may be cut short).
pub(crate) fn records(buf: &[u8]) -> impl Iterator<Item = Record<'_>> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let header = Header::parse(buf.get(at..)?)?;
        let end = (at + header.record_len()).min(buf.len());
        let r = Record {
            at,
            header,
            bytes: &buf[at..end],
        };
        at = end;
        Some(r)
    })
}

/// The whole-record length at the front of `buf`, if a whole record is there.
pub(crate) fn whole_record(buf: &[u8]) -> Option<usize> {
    let n = Header::parse(buf)?.record_len();
    (buf.len() >= n).then_some(n)
}

/// The whole record of `buf` that ends exactly at `end`, walking the
/// headers from the start; `None` if no record boundary falls there.
pub(crate) fn record_ending_at(buf: &[u8], end: usize) -> Option<&[u8]> {
    records(buf.get(..end)?)
        .find(|r| r.at + r.header.record_len() == end)
        .map(|r| r.bytes)
}

/// Bytes still needed to complete the last (partial) TLS record in `buf`
/// (a whole header's worth when it ends on a record boundary).
pub(crate) fn record_bytes_missing(buf: &[u8]) -> usize {
    match records(buf).last() {
        Some(r) if r.bytes.len() < r.header.record_len() => r.header.record_len() - r.bytes.len(),
        Some(r) => missing_header(&buf[r.at + r.bytes.len()..]),
        None => missing_header(buf),
    }
}

fn missing_header(rest: &[u8]) -> usize {
    HEADER - rest.len().min(HEADER)
}

/// A record of `typ` around `payload` (the payload must fit one record).
pub(crate) fn record(typ: u8, payload: &[u8]) -> Vec<u8> {
    let mut r = Vec::with_capacity(HEADER + payload.len());
    r.push(typ);
    r.extend_from_slice(&RECORD_VERSION);
    r.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    r.extend_from_slice(payload);
    r
}

/// The type and body length of the handshake message at the front of `buf`.
pub(crate) fn handshake_header(buf: &[u8]) -> Option<(u8, usize)> {
    let h = buf.get(..HS_HEADER)?;
    Some((h[0], u32::from_be_bytes([0, h[1], h[2], h[3]]) as usize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_headers_and_missing_bytes() {
        let mut s = record(CT_HANDSHAKE, &[1, 2, 3]);
        s.extend(record(CT_ALERT, &[2, 40]));
        let rs: Vec<_> = records(&s).collect();
        assert_eq!(rs.len(), 2);
        assert_eq!((rs[0].at, rs[0].header.typ, rs[0].header.len), (0, 22, 3));
        assert_eq!(rs[1].payload(), Some(&[2, 40][..]));
        assert_eq!(whole_record(&s), Some(8));
        assert_eq!(record_bytes_missing(&s), HEADER);
        assert_eq!(record_bytes_missing(&s[..10]), 3);
        assert_eq!(record_bytes_missing(&s[..13]), 2);
        assert_eq!(record_bytes_missing(&s[..2]), 3);
        assert_eq!(record_bytes_missing(&[]), HEADER);
        assert_eq!(whole_record(&s[..7]), None);
        assert_eq!(records(&s[..14]).last().unwrap().payload(), None);
        assert_eq!(handshake_header(&[24, 0, 0, 1, 0]), Some((24, 1)));
        assert_eq!(handshake_header(&[24, 0, 0]), None);
    }
}
