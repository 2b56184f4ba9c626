//! The PROXY protocol (HAProxy's, v1 text and v2 binary): the header a load
//! balancer writes before the client's first byte, naming the client's address.
//! Parsing is the `ppp` crate's; this module only decides what a listener does with
//! the result. Sans-IO.

use std::net::{IpAddr, SocketAddr};

use ppp::{v1, v2, HeaderResult, PartialResult};

/// The longest header read before giving up: a v1 header is at most 107 bytes, a
/// v2 header 16 plus its addresses and TLVs, which load balancers keep well under
/// this (AWS NLB, HAProxy: tens to a few hundred bytes).
pub(crate) const PROXY_HEADER_MAX: usize = 4096;

/// What the first bytes of a connection on a PROXY listener are.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ProxyHeader {
    /// Not all of the header yet.
    Incomplete,
    /// A header of `len` bytes; `source` is the client's address, `None` when the
    /// balancer speaks for itself (v2 LOCAL, v1 UNKNOWN: health checks) and the
    /// socket's own peer address stands.
    Done { len: usize, source: Option<SocketAddr> },
    /// Not a PROXY header: the connection must be closed.
    Invalid(String),
}

/// The longest v1 header, CRLF included (the spec's bound).
const V1_MAX: usize = 107;

/// Reads the PROXY header at the start of `bytes`.
pub(crate) fn parse(bytes: &[u8]) -> ProxyHeader {
    // A v1 header is parsed whole: `ppp` reads a line cut just after a space as a
    // bad field rather than a partial one, and TCP may cut it anywhere.
    if bytes.starts_with(b"PROXY ") {
        let line = &bytes[..bytes.len().min(V1_MAX)];
        if !line.windows(2).any(|w| w == b"\r\n") {
            if bytes.len() >= V1_MAX {
                return ProxyHeader::Invalid(format!(
                    "a PROXY v1 header longer than {V1_MAX} bytes"
                ));
            }
            return ProxyHeader::Incomplete;
        }
    }
    let result = HeaderResult::parse(bytes);
    if result.is_incomplete() {
        if bytes.len() >= PROXY_HEADER_MAX {
            return ProxyHeader::Invalid(format!("no PROXY header in {PROXY_HEADER_MAX} bytes"));
        }
        return ProxyHeader::Incomplete;
    }
    match result {
        HeaderResult::V1(Ok(header)) => {
            let source = match header.addresses {
                v1::Addresses::Tcp4(ip) => {
                    Some(SocketAddr::new(IpAddr::V4(ip.source_address), ip.source_port))
                }
                v1::Addresses::Tcp6(ip) => {
                    Some(SocketAddr::new(IpAddr::V6(ip.source_address), ip.source_port))
                }
                v1::Addresses::Unknown => None,
            };
            ProxyHeader::Done { len: header.header.len(), source }
        }
        HeaderResult::V2(Ok(header)) => {
            let source = match (header.command, header.addresses) {
                (v2::Command::Local, _) => None,
                (_, v2::Addresses::IPv4(ip)) => {
                    Some(SocketAddr::new(IpAddr::V4(ip.source_address), ip.source_port))
                }
                (_, v2::Addresses::IPv6(ip)) => {
                    Some(SocketAddr::new(IpAddr::V6(ip.source_address), ip.source_port))
                }
                (_, v2::Addresses::Unspecified | v2::Addresses::Unix(_)) => None,
            };
            ProxyHeader::Done { len: header.len(), source }
        }
        HeaderResult::V1(Err(e)) => ProxyHeader::Invalid(format!("bad PROXY v1 header: {e}")),
        HeaderResult::V2(Err(e)) => ProxyHeader::Invalid(format!("bad PROXY v2 header: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

    fn v2(command: u8, family: u8, addresses: &[u8]) -> Vec<u8> {
        let mut header = V2_SIGNATURE.to_vec();
        header.push(0x20 | command);
        header.push(family);
        header.extend_from_slice(&(addresses.len() as u16).to_be_bytes());
        header.extend_from_slice(addresses);
        header
    }

    fn v2_tcp4() -> Vec<u8> {
        // 192.0.2.7:51000 -> 10.0.0.1:1883
        let mut addresses = vec![192, 0, 2, 7, 10, 0, 0, 1];
        addresses.extend_from_slice(&51000u16.to_be_bytes());
        addresses.extend_from_slice(&1883u16.to_be_bytes());
        v2(0x1, 0x11, &addresses)
    }

    #[test]
    fn v1_tcp4_names_the_client_and_its_length() {
        let header = b"PROXY TCP4 192.0.2.7 10.0.0.1 51000 1883\r\n";
        let mut bytes = header.to_vec();
        bytes.extend_from_slice(&[0x10, 0x00]); // the CONNECT that follows
        assert_eq!(
            parse(&bytes),
            ProxyHeader::Done {
                len: header.len(),
                source: Some("192.0.2.7:51000".parse().expect("addr"))
            }
        );
    }

    #[test]
    fn v1_tcp6_and_unknown() {
        let header = b"PROXY TCP6 2001:db8::7 2001:db8::1 51000 1883\r\n";
        assert_eq!(
            parse(header),
            ProxyHeader::Done {
                len: header.len(),
                source: Some("[2001:db8::7]:51000".parse().expect("addr"))
            }
        );
        let unknown = b"PROXY UNKNOWN\r\n";
        assert_eq!(parse(unknown), ProxyHeader::Done { len: unknown.len(), source: None });
    }

    #[test]
    fn v2_tcp4_tcp6_and_local() {
        let header = v2_tcp4();
        let mut bytes = header.clone();
        bytes.extend_from_slice(&[0x10, 0x00]);
        assert_eq!(
            parse(&bytes),
            ProxyHeader::Done {
                len: header.len(),
                source: Some("192.0.2.7:51000".parse().expect("addr"))
            }
        );
        let mut addresses = [0u8; 36];
        addresses[..16]
            .copy_from_slice(&"2001:db8::7".parse::<std::net::Ipv6Addr>().expect("ip").octets());
        addresses[32..34].copy_from_slice(&51000u16.to_be_bytes());
        let header = v2(0x1, 0x21, &addresses);
        assert_eq!(
            parse(&header),
            ProxyHeader::Done {
                len: header.len(),
                source: Some("[2001:db8::7]:51000".parse().expect("addr"))
            }
        );
        let local = v2(0x0, 0x00, &[]);
        assert_eq!(parse(&local), ProxyHeader::Done { len: local.len(), source: None });
    }

    #[test]
    fn every_prefix_of_a_header_is_incomplete() {
        let v1 = b"PROXY TCP4 192.0.2.7 10.0.0.1 51000 1883\r\n".to_vec();
        for header in [v1, v2_tcp4()] {
            for end in 1..header.len() {
                assert_eq!(parse(&header[..end]), ProxyHeader::Incomplete, "{end} bytes");
            }
        }
    }

    #[test]
    fn garbage_and_plain_mqtt_are_refused() {
        // A client that speaks MQTT straight to a PROXY listener.
        let connect = b"\x10\x10\x00\x04MQTT\x04\x02\x00\x3c\x00\x04test";
        assert!(matches!(parse(connect), ProxyHeader::Invalid(_)));
        assert!(matches!(parse(b"GET / HTTP/1.1\r\n\r\n"), ProxyHeader::Invalid(_)));
        assert!(matches!(
            parse(b"PROXY TCP4 not-an-address 10.0.0.1 1 2\r\n"),
            ProxyHeader::Invalid(_)
        ));
    }

    #[test]
    fn a_header_that_never_ends_is_refused_at_the_bound() {
        let mut endless = b"PROXY TCP4 ".to_vec();
        endless.resize(PROXY_HEADER_MAX, b'1');
        assert!(matches!(parse(&endless), ProxyHeader::Invalid(_)));
    }
}
