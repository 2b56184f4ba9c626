//! The `shardmq` command line: what `--help` tells, and settings refused before any
//! shard starts (so these run without io_uring).

use std::process::{Command, Output};

fn shardmq(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shardmq")).args(args).output().expect("shardmq runs")
}

#[test]
fn help_names_every_protocol_version_and_shows_defaults() {
    let out = shardmq(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).expect("UTF-8");
    assert!(help.contains("MQTT 3.1, 3.1.1 and 5.0"), "{help}");
    for shown in ["--inflight-max <INFLIGHT_MAX>", "[default: 32]", "[default: 0.0.0.0:1883]"] {
        assert!(help.contains(shown), "{shown} missing from\n{help}");
    }
    let retry = help.split("--retry-interval-secs").nth(1).expect("retry flag");
    assert!(retry.contains("MQTT 3.1/3.1.1 only") && retry.contains("[MQTT-4.4.0-1]"), "{retry}");
}

#[test]
fn conflicting_settings_exit_with_both_names_before_starting() {
    let out = shardmq(&["--cores", "2", "--cpus", "0,1,2"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).expect("UTF-8");
    assert!(stderr.contains("`cores`") && stderr.contains("`cpus`"), "{stderr}");
}

#[test]
fn a_zero_where_zero_cannot_work_is_a_usage_error() {
    let out = shardmq(&["--mqueue-len-max", "0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--mqueue-len-max"));
}

/// Every flag earlier releases had still exists (users' scripts and units pass them).
#[test]
fn every_flag_of_earlier_releases_is_still_accepted() {
    let flags = "config listen cores cpus node-id spin-before-park-us ring-capacity \
        ring-batch-max ring-overflow-max listen-backlog read-buffer-bytes out-buffer-max-bytes \
        packet-size-max connect-timeout-secs session-expiry-secs mqueue-len-max \
        mqueue-store-qos0 inflight-max retry-interval-secs node-name sys-interval-secs metrics \
        connections-max topic-length-max topic-levels-max subscriptions-max retained-max \
        retained-bytes-max publish-rate-max publish-bytes-rate-max accept-rate-max \
        queued-bytes-max alarm-memory-high-bytes alarm-connections-ratio \
        alarm-mqueue-drops-per-sec alarm-lag-ms receive-maximum topic-alias-max keep-alive-max \
        shared-subscription-strategy log-level";
    let help = String::from_utf8(shardmq(&["--help"]).stdout).expect("UTF-8");
    for flag in flags.split_whitespace() {
        assert!(help.contains(&format!("--{flag} <")), "--{flag} is gone");
    }
}
