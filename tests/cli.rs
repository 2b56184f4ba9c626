//! The `shardmq` command line: what `--help` tells, settings refused before any
//! shard starts, and `shardmq passwd` (so these run without io_uring).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use shardmq::security::PasswordFile;

fn shardmq(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shardmq")).args(args).output().expect("shardmq runs")
}

/// Runs `shardmq` with `stdin` piped in, as a script would.
fn shardmq_with_stdin(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_shardmq"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("shardmq runs");
    // A command refused before it reads (a usage error) closes its end first.
    match child.stdin.take().expect("piped").write_all(stdin.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => panic!("stdin: {e}"),
        _ => {}
    }
    child.wait_with_output().expect("shardmq ends")
}

/// A directory of its own under the system's temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("shardmq-cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temporary directory");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
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

#[test]
fn passwd_writes_users_read_from_stdin_and_deletes_them() {
    let dir = TempDir::new("passwd");
    let file = dir.0.join("passwd");
    let path = file.to_str().expect("UTF-8 path");

    let out = shardmq_with_stdin(&["passwd", path, "alice"], "correct horse \n");
    assert!(out.status.success(), "{}", stderr(&out));
    let out = shardmq_with_stdin(&["passwd", "--pbkdf2", "101", path, "bob"], "hunter2\r\n");
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(&file).expect("written");
    assert!(text.contains("alice:$argon2id$v=19$m=19456,t=2,p=1$"), "{text}");
    assert!(text.contains("bob:$7$101$"), "{text}");

    let users = PasswordFile::load(&file).expect("loads");
    let alice = users.get("alice").expect("alice");
    // The line end is dropped, blanks are kept.
    assert!(alice.verify(b"correct horse ") && !alice.verify(b"correct horse"));
    assert!(users.get("bob").expect("bob").verify(b"hunter2"));

    // A new password replaces the old one.
    let out = shardmq_with_stdin(&["passwd", path, "bob"], "hunter3\n");
    assert!(out.status.success(), "{}", stderr(&out));
    let users = PasswordFile::load(&file).expect("loads");
    let bob = users.get("bob").expect("bob");
    assert!(bob.verify(b"hunter3") && !bob.verify(b"hunter2"));

    let out = shardmq(&["passwd", "--delete", path, "alice"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let users = PasswordFile::load(&file).expect("loads");
    assert!(users.get("alice").is_none() && users.len() == 1);

    let out = shardmq(&["passwd", "--delete", path, "alice"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).starts_with("shardmq: no user `alice` in "), "{}", stderr(&out));
}

#[test]
fn passwd_refuses_what_it_cannot_write() {
    let dir = TempDir::new("passwd-errors");
    let path = dir.0.join("passwd");
    let path = path.to_str().expect("UTF-8 path");
    let cases: &[(&[&str], &str, &str)] = &[
        (
            &["passwd", path, "a:b"],
            "x\n",
            "shardmq: invalid username: a username may not contain `:`",
        ),
        (&["passwd", path, "carol"], "\n", "shardmq: empty password"),
        (&["passwd", path, "carol"], "", "shardmq: no password on standard input"),
        (&["passwd", "--delete", path, "carol"], "", "shardmq: cannot read "),
        (&["passwd", "/nonexistent/dir/passwd", "carol"], "x\n", "shardmq: cannot write "),
    ];
    for (args, stdin, expected) in cases {
        let out = shardmq_with_stdin(args, stdin);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(stderr(&out).starts_with(expected), "{args:?}: {}", stderr(&out));
    }
    assert!(!Path::new(path).exists(), "nothing was written");
    // Usage errors, as clap reports them.
    for args in [
        &["passwd", "--delete", "--pbkdf2", "5", path, "carol"][..],
        &["passwd", "--pbkdf2", "0", path, "carol"],
        &["passwd", path],
        &["--inflight-max", "8", "passwd", path, "carol"],
    ] {
        assert_eq!(shardmq_with_stdin(args, "x\n").status.code(), Some(2), "{args:?}");
    }
}

/// Lines `mosquitto_passwd` writes verify: Mosquitto 2.0's PBKDF2 and SHA-512 (1.x)
/// hashes. Runs where Mosquitto is installed; the unit tests hold fixed lines for
/// everywhere else.
#[test]
fn lines_written_by_mosquitto_passwd_verify() {
    let dir = TempDir::new("mosquitto-passwd");
    let file = dir.0.join("passwd");
    let path = file.to_str().expect("UTF-8 path");
    let mosquitto_passwd = |args: &[&str]| Command::new("mosquitto_passwd").args(args).output();
    let out = match mosquitto_passwd(&["-c", "-b", path, "alice", "s3cret"]) {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("skipped: mosquitto_passwd is not on PATH ({e})");
            return;
        }
        Err(e) => panic!("mosquitto_passwd does not run: {e}"),
    };
    assert!(out.status.success(), "{}", stderr(&out));
    // `-H` came with Mosquitto 2.0; an older one writes `$6$` by default.
    let out = mosquitto_passwd(&["-H", "sha512", "-b", path, "bob", "pa ss:w#rd"]).expect("runs");
    if !out.status.success() {
        eprintln!("no -H in this mosquitto_passwd: {}", stderr(&out));
    }
    let users = PasswordFile::load(&file).expect("mosquitto_passwd's file loads");
    let alice = users.get("alice").expect("alice");
    assert!(alice.verify(b"s3cret") && !alice.verify(b"s3cret "));
    if let Some(bob) = users.get("bob") {
        assert!(bob.verify(b"pa ss:w#rd") && !bob.verify(b"pa ss"));
    }
}
