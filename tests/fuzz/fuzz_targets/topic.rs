//! `validate_topic_name` and `validate_topic_filter` never panic and agree with a
//! deliberately naive oracle that splits on `/` and checks each level.

#![no_main]

use libfuzzer_sys::fuzz_target;
use shardmq::protocol::topic::{validate_topic_filter, validate_topic_name};
use shardmq::protocol::{TopicFilter, TopicName};

/// 1..=65535 bytes, no U+0000 [MQTT-4.7.3-1..3].
fn oracle_common(s: &str) -> bool {
    !s.is_empty() && s.len() <= 65_535 && !s.contains('\0')
}

/// No wildcard characters at all [MQTT-4.7.1-1].
fn oracle_name(s: &str) -> bool {
    oracle_common(s) && !s.contains('+') && !s.contains('#')
}

/// `#` only as the whole last level, `+` only as a whole level [MQTT-4.7.1-2/3].
fn oracle_filter(s: &str) -> bool {
    if !oracle_common(s) {
        return false;
    }
    let levels: Vec<&str> = s.split('/').collect();
    levels.iter().enumerate().all(|(i, level)| {
        let hash_ok = !level.contains('#') || (*level == "#" && i == levels.len() - 1);
        let plus_ok = !level.contains('+') || *level == "+";
        hash_ok && plus_ok
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let name = validate_topic_name(s);
    let filter = validate_topic_filter(s);
    assert_eq!(name.is_ok(), oracle_name(s), "name {s:?}: {name:?}");
    assert_eq!(filter.is_ok(), oracle_filter(s), "filter {s:?}: {filter:?}");
    // Every topic name is also a filter that matches only itself.
    assert!(name.is_err() || filter.is_ok());
    // The types agree with the functions.
    assert_eq!(TopicName::try_from(s).is_ok(), name.is_ok());
    assert_eq!(TopicFilter::try_from(s).is_ok(), filter.is_ok());
    // An error names a clause of section 4.7.
    for e in [name.err(), filter.err()].into_iter().flatten() {
        assert!(e.clause.starts_with("MQTT-4.7."), "{e}");
    }
});
