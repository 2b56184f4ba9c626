//! Topic names and topic filters [MQTT-4.7].
//!
//! A *topic name* is what a PUBLISH (or a will) is published to: levels separated by
//! `/`, no wildcards. A *topic filter* is what a SUBSCRIBE or UNSUBSCRIBE names: a
//! topic name whose levels may also be `+` (exactly one level) or, as the last level,
//! `#` (that level and every level below it).
//!
//! | rule                                             | clause        |
//! |--------------------------------------------------|---------------|
//! | at least one character long                      | MQTT-4.7.3-1  |
//! | no U+0000                                        | MQTT-4.7.3-2  |
//! | at most 65535 bytes of UTF-8                     | MQTT-4.7.3-3  |
//! | no `+` or `#` in a topic name                    | MQTT-4.7.1-1  |
//! | `#` only alone in the last level of a filter     | MQTT-4.7.1-2  |
//! | `+` only alone in its level of a filter          | MQTT-4.7.1-3  |
//!
//! Empty levels (`a//b`, `/a`, `a/`) are valid and distinct from their neighbours
//! [MQTT-4.7.1]. A leading `$` is valid here; that `#` and `+` at the first level do
//! not match `$`-topics [MQTT-4.7.2-1] is the router's business, not validation's.
//!
//! # What these functions do not check
//!
//! * **UTF-8 well-formedness** [MQTT-1.5.3-1]. The input is a `&str`, so it already is
//!   well-formed: the codec builds every string with `ByteString::try_from(Bytes)`,
//!   which runs the standard library's UTF-8 check. That check rejects overlong
//!   forms, code points above U+10FFFF and the UTF-16 surrogates U+D800..U+DFFF, the
//!   last of which [MQTT-1.5.3-1] singles out.
//! * **Control characters and non-characters are accepted.** Section 1.5.3 says that
//!   strings SHOULD NOT contain U+0001..U+001F, U+007F..U+009F or the Unicode
//!   non-characters (U+FDD0..U+FDEF, U+xFFFE, U+xFFFF) and that a receiver MAY close
//!   the connection if they do. This broker, like Mosquitto, takes them: it is a MAY,
//!   rejecting them would cost a decode of every code point on the hot path, and a
//!   topic is matched as bytes anyway. Likewise U+FEFF (the byte sequence
//!   `EF BB BF`) is an ordinary character wherever it appears and is never skipped
//!   or stripped [MQTT-1.5.3-3]: the topic is kept byte for byte.
//!
//! Both validators scan bytes, not chars: `/`, `+`, `#` and NUL are ASCII, and no byte
//! of a multi-byte UTF-8 sequence is ASCII, so a byte match is a character match.

use super::packet::{BadShare, Share};
use super::ProtocolViolation;

/// The longest topic, in bytes: its length travels as a 16-bit prefix [MQTT-4.7.3-3].
pub const TOPIC_LEN_MAX: usize = u16::MAX as usize;

const EMPTY: ProtocolViolation =
    ProtocolViolation::new("MQTT-4.7.3-1", "topic name or filter is empty");
const TOO_LONG: ProtocolViolation =
    ProtocolViolation::new("MQTT-4.7.3-3", "topic name or filter longer than 65535 bytes");
const NUL: ProtocolViolation =
    ProtocolViolation::new("MQTT-4.7.3-2", "topic name or filter contains U+0000");
const WILDCARD_IN_NAME: ProtocolViolation =
    ProtocolViolation::new("MQTT-4.7.1-1", "wildcard character in a topic name");
const MISPLACED_HASH: ProtocolViolation =
    ProtocolViolation::new("MQTT-4.7.1-2", "'#' must be alone in the last level of a topic filter");
const MISPLACED_PLUS: ProtocolViolation =
    ProtocolViolation::new("MQTT-4.7.1-3", "'+' must be alone in its level of a topic filter");

/// Checks a topic name: 1..=65535 bytes, no U+0000, no `+` or `#`.
///
/// The wildcard rule is stated for names in general [MQTT-4.7.1-1] and for the
/// PUBLISH topic in particular [MQTT-3.3.2-2]; this function serves PUBLISH and the
/// will topic of CONNECT alike, so it cites the general one. Control characters and
/// non-characters are accepted (see the module documentation).
pub fn validate_topic_name(s: &str) -> Result<(), ProtocolViolation> {
    check_length(s)?;
    for b in s.bytes() {
        match b {
            0 => return Err(NUL),
            b'+' | b'#' => return Err(WILDCARD_IN_NAME),
            _ => {}
        }
    }
    Ok(())
}

/// Checks a topic filter: 1..=65535 bytes, no U+0000, `+` alone in its level, `#`
/// alone in the last level.
///
/// Control characters and non-characters are accepted (see the module
/// documentation).
pub fn validate_topic_filter(s: &str) -> Result<(), ProtocolViolation> {
    check_length(s)?;
    let bytes = s.as_bytes();
    let last = bytes.len() - 1; // check_length guarantees at least one byte
    for (i, &b) in bytes.iter().enumerate() {
        // A wildcard is alone in its level when the bytes on either side of it are
        // level separators or the ends of the string.
        let starts_level = i == 0 || bytes[i - 1] == b'/';
        match b {
            0 => return Err(NUL),
            b'+' if !starts_level || (i < last && bytes[i + 1] != b'/') => {
                return Err(MISPLACED_PLUS)
            }
            // `#` must start its level and end the filter, so nothing follows it.
            b'#' if !starts_level || i != last => return Err(MISPLACED_HASH),
            _ => {}
        }
    }
    Ok(())
}

/// The prefix of a shared subscription's filter [MQTT-4.8.2].
pub const SHARE_PREFIX: &str = "$share/";

/// Parses the `$share/{group}/{filter}` form of a valid filter [MQTT-4.8.2]. A
/// `$share/` filter that breaks the form is not malformed: the SUBSCRIBE refuses it
/// with 0x8F, so it is kept with the reason.
// Inlined into TopicFilter's constructor (another module): see its comment.
#[inline(always)]
pub(crate) fn parse_share(s: &str) -> Share {
    let Some(rest) = s.strip_prefix(SHARE_PREFIX) else {
        return Share::None;
    };
    let Some((group, filter)) = rest.split_once('/') else {
        return Share::Bad(BadShare::NoFilter);
    };
    if group.is_empty() || group.contains(['+', '#']) {
        return Share::Bad(BadShare::BadName);
    }
    if filter.is_empty() {
        return Share::Bad(BadShare::EmptyFilter);
    }
    let end = SHARE_PREFIX.len() + group.len();
    Share::Group { end: u16::try_from(end).expect("validated filters are at most 65,535 bytes") }
}

fn check_length(s: &str) -> Result<(), ProtocolViolation> {
    if s.is_empty() {
        Err(EMPTY)
    } else if s.len() > TOPIC_LEN_MAX {
        Err(TOO_LONG)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Filter, TopicFilter};

    #[test]
    fn shared_filters_are_parsed_once_at_validation() {
        // [MQTT-4.8.2-1], [MQTT-4.8.2-2]
        let filter = |s: &str| TopicFilter::try_from(s).expect("valid filter");
        assert_eq!(filter("a/b").kind(), Filter::Plain("a/b"));
        let shared = filter("$share/g/a/+");
        assert_eq!(shared.kind(), Filter::Shared { group: "g", filter: "a/+" });
        let all = filter("$share/group/#");
        assert_eq!(all.kind(), Filter::Shared { group: "group", filter: "#" });
        for bad in ["$share/g", "$share//a", "$share/+/a", "$share/g/"] {
            assert!(matches!(filter(bad).kind(), Filter::BadShare(_)), "{bad}");
        }
        assert!(TopicFilter::try_from("$share/g/a").expect("valid").detached().is_shared());
    }

    fn clause<T>(r: Result<T, ProtocolViolation>) -> Option<&'static str> {
        r.err().map(|v| v.clause)
    }

    #[test]
    fn topic_names() {
        let long_ok = "a".repeat(TOPIC_LEN_MAX);
        let too_long = "a".repeat(TOPIC_LEN_MAX + 1);
        let cases: &[(&str, Option<&str>)] = &[
            ("a", None),
            ("/", None),
            ("//", None),
            ("a/b/c", None),
            ("/a/", None),
            ("$SYS/broker", None),
            ("sport/tennis/player1", None),
            ("caf\u{e9}/\u{1F600}", None),
            // Accepted on purpose: control characters, U+007F..U+009F, non-characters
            // and U+FEFF (see the module documentation).
            ("a\u{1}b\u{1f}", None),
            ("\u{7f}\u{9f}", None),
            ("\u{fdd0}\u{fffe}\u{10ffff}", None),
            ("\u{feff}a", None),
            (long_ok.as_str(), None),
            ("", Some("MQTT-4.7.3-1")),
            (too_long.as_str(), Some("MQTT-4.7.3-3")),
            ("a\0b", Some("MQTT-4.7.3-2")),
            ("\0", Some("MQTT-4.7.3-2")),
            ("+", Some("MQTT-4.7.1-1")),
            ("#", Some("MQTT-4.7.1-1")),
            ("a/+/b", Some("MQTT-4.7.1-1")),
            ("a/#", Some("MQTT-4.7.1-1")),
            ("a+b", Some("MQTT-4.7.1-1")),
        ];
        for (topic, expected) in cases {
            let name = if topic.len() > 40 { "<long>" } else { topic };
            assert_eq!(clause(validate_topic_name(topic)), *expected, "{name:?}");
        }
    }

    #[test]
    fn topic_filters() {
        let long_ok = format!("{}/#", "a".repeat(TOPIC_LEN_MAX - 2));
        let too_long = "+/".repeat(TOPIC_LEN_MAX / 2 + 1);
        let cases: &[(&str, Option<&str>)] = &[
            ("a", None),
            ("/", None),
            ("#", None),
            ("+", None),
            ("/#", None),
            ("+/", None),
            ("/+", None),
            ("+/+", None),
            ("a/+/b/#", None),
            ("sport/tennis/#", None),
            ("+/tennis/#", None),
            ("//+//#", None),
            ("$SYS/#", None),
            ("caf\u{e9}/+/\u{1F600}", None),
            ("\u{1}\u{9f}\u{ffff}", None),
            (long_ok.as_str(), None),
            ("", Some("MQTT-4.7.3-1")),
            (too_long.as_str(), Some("MQTT-4.7.3-3")),
            ("a/\0", Some("MQTT-4.7.3-2")),
            ("#/", Some("MQTT-4.7.1-2")),
            ("#/a", Some("MQTT-4.7.1-2")),
            ("a#", Some("MQTT-4.7.1-2")),
            ("a/b#", Some("MQTT-4.7.1-2")),
            ("a/#b", Some("MQTT-4.7.1-2")),
            ("##", Some("MQTT-4.7.1-2")),
            ("a/#/b", Some("MQTT-4.7.1-2")),
            ("sport/tennis#", Some("MQTT-4.7.1-2")),
            ("++", Some("MQTT-4.7.1-3")),
            ("a+", Some("MQTT-4.7.1-3")),
            ("+a", Some("MQTT-4.7.1-3")),
            ("a/+b/c", Some("MQTT-4.7.1-3")),
            ("a/b+/c", Some("MQTT-4.7.1-3")),
            ("sport+", Some("MQTT-4.7.1-3")),
            ("+#", Some("MQTT-4.7.1-3")),
            ("#+", Some("MQTT-4.7.1-2")),
        ];
        for (filter, expected) in cases {
            let name = if filter.len() > 40 { "<long>" } else { filter };
            assert_eq!(clause(validate_topic_filter(filter)), *expected, "{name:?}");
        }
    }

    #[test]
    fn every_valid_name_is_a_valid_filter() {
        for name in ["a", "/", "a/b", "$SYS/x", "caf\u{e9}"] {
            assert!(validate_topic_name(name).is_ok());
            assert!(validate_topic_filter(name).is_ok());
        }
    }
}
