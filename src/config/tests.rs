//! Tests of the settings table, its sources and their validation.

use clap::{Args, Command, FromArgMatches};

use super::*;

/// The settings `args` (flags, without the program name) set.
fn flags(args: &[&str]) -> Result<ConfigLayer, clap::Error> {
    let command = ConfigLayer::augment_args(Command::new("shardmq"));
    let matches =
        command.try_get_matches_from(std::iter::once("shardmq").chain(args.iter().copied()))?;
    ConfigLayer::from_arg_matches(&matches)
}

fn file(text: &str) -> Result<ConfigLayer, toml::de::Error> {
    toml::from_str(text)
}

fn resolved(layers: impl IntoIterator<Item = ConfigLayer>) -> Result<Config, ConfigError> {
    let mut config = Config::default();
    for layer in layers {
        config.apply(layer);
    }
    config.validate().map(|()| config)
}

#[test]
fn defaults_and_the_test_settings_are_valid() {
    Config::default().validate().expect("defaults are valid");
    Config::test().validate().expect("test settings are valid");
}

/// A file written for the untyped settings (every key, zeros for "off") still
/// reads, into the typed values.
#[test]
fn every_key_of_existing_files_still_reads() {
    let text = r#"
        listen = ["127.0.0.1:1999", "[::1]:1999"]
        cores = 2
        cpus = [0, 1]
        node_id = 7
        spin_before_park_us = 50
        ring_capacity = 128
        ring_batch_max = 32
        ring_overflow_max = 512
        listen_backlog = 128
        read_buffer_bytes = 4096
        recv_buffers = 256
        recv_coalesce_us = 0
        out_buffer_max_bytes = 65536
        packet_size_max = 2048
        connect_timeout_secs = 5
        session_expiry_secs = 0
        receive_maximum = 10
        topic_alias_max = 0
        keep_alive_max_secs = 0
        shared_subscription_strategy = "round_robin"
        mqueue_len_max = 100
        mqueue_store_qos0 = false
        inflight_max = 8
        retry_interval_secs = 0
        log_level = "debug"
        node_name = ""
        cluster_listen = "127.0.0.1:4370"
        cluster_seeds = ["10.0.0.1:4370", "node-b:4370"]
        cluster_failure_timeout_ms = 1500
        cluster_quorum = 2
        cluster_link_buffer_bytes = 4096
        sys_interval_secs = 0
        metrics_listen = "127.0.0.1:9100"
        connections_max = 0
        topic_length_max = 1024
        topic_levels_max = 16
        subscriptions_max = 100
        retained_max = 1000
        retained_bytes_max = 0
        publish_rate_max = 0
        publish_bytes_rate_max = 0
        accept_rate_max = 0
        queued_bytes_max = 0
        alarm_memory_high_bytes = 0
        alarm_connections_ratio = 0.5
        alarm_mqueue_drops_per_sec = 10
        alarm_lag_ms = 100
        password_file = "/etc/shardmq/passwd"
        acl_file = "/etc/shardmq/acl"
        allow_anonymous = false
        login_failures_max = 5
    "#;
    let config = resolved([file(text).expect("parses")]).expect("valid");
    let expected = Config {
        listen: vec!["127.0.0.1:1999".parse().expect("addr"), "[::1]:1999".parse().expect("addr")],
        cores: Some(nz!(2)),
        cpus: Some(vec![0, 1]),
        node_id: 7,
        spin_before_park: Duration::from_micros(50),
        ring_capacity: nz!(128),
        ring_batch_max: nz!(32),
        ring_overflow_max: nz!(512),
        listen_backlog: nz!(128),
        read_buffer_bytes: nz!(4096),
        recv_buffers: nz!(256),
        recv_coalesce: None,
        out_buffer_max_bytes: nz!(65536),
        packet_size_max: 2048,
        connect_timeout: Duration::from_secs(5),
        session_expiry: None,
        receive_maximum: nz!(10),
        topic_alias_max: 0,
        keep_alive_max_secs: None,
        shared_subscription_strategy: SharedStrategy::RoundRobin,
        mqueue_len_max: nz!(100),
        mqueue_store_qos0: false,
        inflight_max: nz!(8),
        retry_interval: None,
        log_level: "debug".to_owned(),
        node_name: None,
        cluster_listen: Some("127.0.0.1:4370".parse().expect("addr")),
        cluster_seeds: Some(vec!["10.0.0.1:4370".to_owned(), "node-b:4370".to_owned()]),
        cluster_secret_file: None,
        cluster_tls_cert_file: None,
        cluster_tls_key_file: None,
        cluster_tls_ca_file: None,
        cluster_failure_timeout: Duration::from_millis(1500),
        cluster_quorum: Some(nz!(2)),
        cluster_link_buffer_bytes: nz!(4096),
        data_dir: None,
        sync: SyncMode::Interval,
        sync_interval: Duration::from_millis(10),
        data_segment_bytes: nz!(64 * 1024 * 1024),
        log_buffer_bytes: nz!(16 * 1024 * 1024),
        data_max_bytes: None,
        sys_interval: None,
        metrics_listen: Some("127.0.0.1:9100".parse().expect("addr")),
        connections_max: None,
        topic_length_max: nz!(1024),
        topic_levels_max: nz!(16),
        subscriptions_max: nz!(100),
        retained_max: nz!(1000),
        retained_bytes_max: None,
        publish_rate_max: None,
        publish_bytes_rate_max: None,
        accept_rate_max: None,
        queued_bytes_max: None,
        alarm_memory_high_bytes: None,
        alarm_connections_ratio: 0.5,
        alarm_mqueue_drops_per_sec: 10,
        alarm_lag: Duration::from_millis(100),
        password_file: Some("/etc/shardmq/passwd".into()),
        acl_file: Some("/etc/shardmq/acl".into()),
        allow_anonymous: Some(false),
        login_failures_max: 5,
        listeners: Vec::new(),
    };
    assert_eq!(config, expected);
}

#[test]
fn listener_blocks_replace_the_default_listen_unless_it_is_set() {
    let blocks = r#"
        [[listener]]
        kind = "mqtts"
        bind = "0.0.0.0:8883"
        cert = "server.pem"
        key = "server.key"

        [[listener]]
        kind = "ws"
        bind = "0.0.0.0:8080"
        proxy_protocol = true
        allow_anonymous = true
    "#;
    let config = resolved([file(blocks).expect("parses")]).expect("valid");
    let listeners = config.listeners_effective();
    assert_eq!(listeners.len(), 2, "no 1883: the file declares its listeners");
    assert_eq!(listeners[0].kind, ListenerKind::Mqtts);
    assert_eq!(listeners[1].ws_path(), "/mqtt");
    assert!(listeners[1].proxy_protocol);
    assert!(config.anonymous_allowed(&listeners[1]));
    let with_listen = format!("listen = [\"127.0.0.1:1883\"]\n{blocks}");
    let config = resolved([file(&with_listen).expect("parses")]).expect("valid");
    assert_eq!(config.listeners_effective().len(), 3);
    assert_eq!(config.listeners_effective()[0].kind, ListenerKind::Mqtt);
}

#[test]
fn anonymous_clients_are_refused_by_default_once_there_is_a_password_file() {
    let mut config = Config::default();
    let plain = ListenerConfig::mqtt("127.0.0.1:1883".parse().expect("addr"));
    assert!(config.anonymous_allowed(&plain));
    config.password_file = Some("passwd".into());
    assert!(!config.anonymous_allowed(&plain));
    config.allow_anonymous = Some(true);
    assert!(config.anonymous_allowed(&plain));
    let closed = ListenerConfig { allow_anonymous: Some(false), ..plain };
    assert!(!config.anonymous_allowed(&closed));
}

#[test]
fn listener_settings_that_cannot_work_are_refused() {
    let cases = [
        ("kind = \"mqtts\"\nbind = \"0.0.0.0:8883\"", "needs `cert` and `key`"),
        ("bind = \"0.0.0.0:1884\"\ncert = \"c.pem\"", "`cert` is for TLS listeners"),
        ("bind = \"0.0.0.0:1884\"\npath = \"/mqtt\"", "`path` is for WebSocket"),
        ("kind = \"ws\"\nbind = \"0.0.0.0:8080\"\npath = \"mqtt\"", "must start with /"),
        (
            "kind = \"mqtts\"\nbind = \"0.0.0.0:8883\"\ncert = \"c\"\nkey = \"k\"\n\
             require_certificate = true",
            "need `ca_file`",
        ),
        ("bind = \"0.0.0.0:1884\"\nkind = \"quic\"", "unknown variant"),
        ("bind = \"0.0.0.0:1884\"\nmount_point = \"a/#\"", "mount_point"),
        ("bind = \"0.0.0.0:1884\"\nmount_point = \"$SYS/\"", "mount_point"),
    ];
    for (block, reason) in cases {
        let text = format!("[[listener]]\n{block}");
        let error = match file(&text) {
            Err(e) => e.to_string(),
            Ok(layer) => resolved([layer]).expect_err(block).to_string(),
        };
        assert!(error.contains(reason), "{block}: {error}");
    }
    let twice = "listen = [\"127.0.0.1:1883\"]\n[[listener]]\nbind = \"127.0.0.1:1883\"";
    let error = resolved([file(twice).expect("parses")]).expect_err("same address twice");
    assert!(error.to_string().contains("listed twice"), "{error}");
}

#[test]
fn non_zero_values_read_into_their_types() {
    let layer = file(
        "session_expiry_secs = 60\nretry_interval_secs = 2\nkeep_alive_max_secs = 30\n\
         publish_rate_max = 100\nconnections_max = 5\nnode_name = \"n1\"\n\
         shared_subscription_strategy = \"sticky\"",
    );
    let config = resolved([layer.expect("parses")]).expect("valid");
    assert_eq!(config.session_expiry, Some(Duration::from_secs(60)));
    assert_eq!(config.retry_interval, Some(Duration::from_secs(2)));
    assert_eq!(config.keep_alive_max_secs, Some(nz!(30)));
    assert_eq!(config.publish_rate_max, Some(nz!(100)));
    assert_eq!(config.connections_max_effective(), 5);
    assert_eq!(config.node(), "n1");
    assert_eq!(config.shared_subscription_strategy, SharedStrategy::Sticky);
    assert_eq!(config.mqueue_len_max, Config::default().mqueue_len_max, "unset keeps default");
}

#[test]
fn values_that_cannot_be_represented_are_refused_by_name() {
    for (text, name) in [
        ("mqueue_len_max = 0", "mqueue_len_max"),
        ("inflight_max = 0", "inflight_max"),
        ("listen_backlog = 0", "listen_backlog"),
        ("connect_timeout_secs = -1", "connect_timeout_secs"),
        ("shared_subscription_strategy = \"fastest\"", "shared_subscription_strategy"),
        ("no_such_key = 1", "no_such_key"),
    ] {
        let error = file(text).expect_err(text).to_string();
        assert!(error.contains(name), "{text}: {error}");
    }
    let error = flags(&["--inflight-max", "0"]).expect_err("zero").to_string();
    assert!(error.contains("--inflight-max"), "{error}");
}

#[test]
fn flags_override_the_file_under_the_same_names() {
    let from_file =
        file("inflight_max = 8\nmqueue_len_max = 50\ncpus = [0, 1, 2]").expect("parses");
    let from_flags = flags(&[
        "--inflight-max",
        "64",
        "--keep-alive-max",
        "20",
        "--metrics",
        "127.0.0.1:9100",
        "--listen",
        "127.0.0.1:1883",
        "--listen",
        "127.0.0.1:1884",
        "--cores",
        "1",
        "--shared-subscription-strategy",
        "round-robin",
    ])
    .expect("flags parse");
    let config = resolved([from_file, from_flags]).expect("valid");
    assert_eq!(config.inflight_max, nz!(64));
    assert_eq!(config.mqueue_len_max, nz!(50), "from the file");
    assert_eq!(config.keep_alive_max_secs, Some(nz!(20)));
    assert_eq!(config.metrics_listen, Some("127.0.0.1:9100".parse().expect("addr")));
    assert_eq!(config.listen.len(), 2);
    assert_eq!((config.cores, config.cpus), (Some(nz!(1)), None), "--cores drops the file's cpus");
    // The names of the TOML keys work as flags too.
    let aliases = flags(&["--keep-alive-max-secs", "5", "--metrics-listen", "127.0.0.1:1"]);
    assert!(aliases.is_ok(), "{aliases:?}");
}

#[test]
fn settings_that_conflict_are_refused_with_both_names() {
    let addr = "127.0.0.1:1883";
    for (args, names) in [
        (&["--cores", "2", "--cpus", "0,1,2"][..], ["cores", "cpus"]),
        (&["--listen", addr, "--metrics", addr][..], ["metrics_listen", "listen"]),
        (&["--cluster-secret-file", "/etc/secret"][..], ["cluster_secret_file", "cluster_listen"]),
        (&["--cluster-quorum", "2"][..], ["cluster_quorum", "cluster_listen"]),
        (
            &["--cluster-tls-cert-file", "/n.pem"][..],
            ["cluster_tls_cert_file", "cluster_tls_key_file"],
        ),
        (
            &["--cluster-tls-cert-file", "/n.pem", "--cluster-tls-key-file", "/n.key"][..],
            ["cluster_tls_cert_file", "cluster_tls_ca_file"],
        ),
        (
            &[
                "--cluster-tls-cert-file",
                "/n.pem",
                "--cluster-tls-key-file",
                "/n.key",
                "--cluster-tls-ca-file",
                "/ca.pem",
            ][..],
            ["cluster_tls_cert_file", "cluster_listen"],
        ),
    ] {
        let error = resolved([flags(args).expect("flags parse")]).expect_err("conflict");
        let text = error.to_string();
        assert!(matches!(error, ConfigError::Conflict { .. }), "{text}");
        assert!(names.iter().all(|name| text.contains(name)), "{text}");
    }
    let twice = flags(&["--listen", addr, "--listen", addr]).expect("flags parse");
    assert!(resolved([twice]).expect_err("twice").to_string().contains("listed twice"));
    let port_zero = flags(&["--listen", "127.0.0.1:0", "--listen", "127.0.0.1:0"]);
    resolved([port_zero.expect("flags parse")]).expect("port 0 binds a fresh port each time");
    let both = flags(&["--cores", "2", "--cpus", "0,1"]).expect("flags parse");
    resolved([both]).expect("cores and cpus may agree");
}

#[test]
fn values_out_of_range_are_refused_by_name() {
    let sub_second = Config { retry_interval: Some(Duration::from_millis(500)), ..Config::test() };
    let tiny = Config { packet_size_max: 63, ..Config::test() };
    let huge = Config { packet_size_max: PACKET_SIZE_MAX + 1, ..Config::test() };
    let ratio = Config { alarm_connections_ratio: 0.0, ..Config::test() };
    let no_wait = Config { connect_timeout: Duration::ZERO, ..Config::test() };
    let no_cpu = Config { cpus: Some(Vec::new()), cores: None, ..Config::test() };
    let odd_buffers = Config { recv_buffers: nz!(1000), ..Config::test() };
    let long_coalesce =
        Config { recv_coalesce: Some(Duration::from_micros(10_001)), ..Config::test() };
    let big_quorum = Config {
        cluster_listen: Some("127.0.0.1:4370".parse().expect("addr")),
        cluster_quorum: Some(nz!(1000)),
        ..Config::test()
    };
    for (config, name) in [
        (sub_second, "retry_interval_secs"),
        (tiny, "packet_size_max"),
        (huge, "packet_size_max"),
        (ratio, "alarm_connections_ratio"),
        (no_wait, "connect_timeout_secs"),
        (no_cpu, "cpus"),
        (odd_buffers, "recv_buffers"),
        (long_coalesce, "recv_coalesce_us"),
        (big_quorum, "cluster_quorum"),
    ] {
        let error = config.validate().expect_err(name).to_string();
        assert!(error.contains(name), "{error}");
    }
}

/// `--help` shows every default, and what it shows is the default: given back as
/// flags, the shown values change nothing.
#[test]
fn help_shows_the_real_defaults() {
    let mut command =
        ConfigLayer::show_defaults(ConfigLayer::augment_args(Command::new("shardmq")));
    let help = command.render_long_help().to_string();
    let mut args = Vec::new();
    for (id, written, unset) in Config::written_defaults() {
        let flag = command
            .get_arguments()
            .find(|arg| arg.get_id() == id)
            .and_then(|arg| arg.get_long())
            .expect("every setting has a flag");
        let shown = written.clone().or(unset.map(str::to_owned)).expect("a default to show");
        assert!(help.contains(&format!("[default: {shown}]")), "--{flag}: {help}");
        if let Some(written) = written {
            args.push(format!("--{flag}"));
            args.push(written);
        }
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let layer = flags(&args).expect("the shown defaults parse");
    assert_eq!(resolved([layer]).expect("valid"), Config::default());
    assert!(help.contains("[default: 32]") && help.contains("[default: 0.0.0.0:1883]"));
}
