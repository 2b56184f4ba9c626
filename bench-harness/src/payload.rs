//! The header every benchmark payload starts with.
//!
//! Layout (big-endian): publisher id `u32`, sequence `u64`, intended send time
//! `u64` (nanoseconds on the CLOCK_MONOTONIC clock of the generating host).
//! The rest of the payload is filler up to `--payload` bytes.

/// Size of the header: the smallest payload the harness can send.
pub const HEADER_LEN: usize = 4 + 8 + 8;

/// The header of one benchmark message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub publisher: u32,
    pub seq: u64,
    pub intended_ns: u64,
}

impl Header {
    /// Writes the header into the first [`HEADER_LEN`] bytes of `out`.
    #[inline]
    pub fn write_to(&self, out: &mut [u8; HEADER_LEN]) {
        out[0..4].copy_from_slice(&self.publisher.to_be_bytes());
        out[4..12].copy_from_slice(&self.seq.to_be_bytes());
        out[12..20].copy_from_slice(&self.intended_ns.to_be_bytes());
    }

    /// Appends the header to `out`.
    #[inline]
    pub fn append(&self, out: &mut Vec<u8>) {
        let mut b = [0u8; HEADER_LEN];
        self.write_to(&mut b);
        out.extend_from_slice(&b);
    }

    /// Reads a header from the front of a payload; `None` if it is too short.
    #[inline]
    pub fn parse(payload: &[u8]) -> Option<Header> {
        let b: &[u8; HEADER_LEN] = payload.get(..HEADER_LEN)?.try_into().ok()?;
        let mut p = [0u8; 4];
        let mut s = [0u8; 8];
        let mut t = [0u8; 8];
        p.copy_from_slice(&b[0..4]);
        s.copy_from_slice(&b[4..12]);
        t.copy_from_slice(&b[12..20]);
        Some(Header {
            publisher: u32::from_be_bytes(p),
            seq: u64::from_be_bytes(s),
            intended_ns: u64::from_be_bytes(t),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip() {
        for h in [
            Header { publisher: 0, seq: 0, intended_ns: 0 },
            Header { publisher: 7, seq: 123_456_789, intended_ns: 987_654_321_000 },
            Header { publisher: u32::MAX, seq: u64::MAX, intended_ns: u64::MAX - 1 },
        ] {
            let mut v = Vec::new();
            h.append(&mut v);
            assert_eq!(v.len(), HEADER_LEN);
            v.extend_from_slice(b"filler");
            assert_eq!(Header::parse(&v), Some(h));
        }
    }

    #[test]
    fn layout_is_big_endian() {
        let mut v = Vec::new();
        Header { publisher: 1, seq: 2, intended_ns: 3 }.append(&mut v);
        assert_eq!(v, [0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 3]);
    }

    #[test]
    fn short_payload_is_rejected() {
        assert_eq!(Header::parse(&[0u8; HEADER_LEN - 1]), None);
        assert_eq!(Header::parse(&[]), None);
    }
}
