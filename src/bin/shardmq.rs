//! The `shardmq` command: flags and an optional TOML file -> `Config` -> `Broker`;
//! and `shardmq passwd`, which reads a password and hands it to `security`. Nothing
//! else lives here.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use shardmq::config::ConfigLayer;
use shardmq::security::{self, PasswordHash};
use shardmq::{Broker, Config};
use tracing_subscriber::EnvFilter;

/// A thread-per-core MQTT broker for MQTT 3.1, 3.1.1 and 5.0. Every setting has a
/// built-in default, shown below; flags override the config file.
#[derive(Debug, Parser)]
// The settings start the broker; a subcommand does something else, so they don't mix.
#[command(version, long_about = None, args_conflicts_with_subcommands = true)]
struct Cli {
    /// TOML file with any of the settings below (snake_case keys, e.g. `inflight_max = 64`).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: ConfigLayer,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Adds, changes or removes a user in a password file.
    ///
    /// Adds or changes USER in the password file FILE (created if missing, mode 0600), or
    /// removes USER; other lines stay as they are. The password is asked twice on the
    /// terminal, or read as one line of standard input when that is not a terminal
    /// (`echo secret | shardmq passwd FILE USER`).
    Passwd(Passwd),
    /// Shows a cluster node's view of the cluster.
    #[command(subcommand)]
    Cluster(ClusterCommand),
}

#[derive(Debug, Subcommand)]
enum ClusterCommand {
    /// The members, their state and their links, from a node's metrics endpoint
    /// (`GET /cluster`).
    Status {
        /// The node's metrics address (its `metrics_listen`).
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9090")]
        metrics: std::net::SocketAddr,
        /// Prints the JSON as the node sent it.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
struct Passwd {
    /// Removes USER instead.
    #[arg(long, conflicts_with = "pbkdf2")]
    delete: bool,
    /// Writes PBKDF2-SHA512 with this many iterations (`$7$`, which Mosquitto 2.0 reads
    /// too; it writes 101) instead of argon2id.
    #[arg(long, value_name = "ITERATIONS", value_parser = clap::value_parser!(u32).range(1..))]
    pbkdf2: Option<u32>,
    /// The password file (Mosquitto's `password_file` format).
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// The username.
    #[arg(value_name = "USER")]
    user: String,
}

/// Parses the command line; exits with the usage status on bad flags, as clap does.
fn parse_cli() -> Cli {
    let matches = ConfigLayer::show_defaults(Cli::command()).get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

fn main() -> ExitCode {
    let cli = parse_cli();
    if let Some(Command::Cluster(ClusterCommand::Status { metrics, json })) = cli.command {
        return match cluster_status(metrics, json) {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("shardmq: {message}");
                ExitCode::from(1)
            }
        };
    }
    if let Some(Command::Passwd(passwd)) = cli.command {
        return match passwd.run() {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("shardmq: {message}");
                ExitCode::from(1)
            }
        };
    }
    let config = match Config::resolve(cli.config.as_deref(), cli.settings) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("shardmq: {e}");
            return ExitCode::from(2);
        }
    };
    let filter = match EnvFilter::try_from_default_env() {
        Ok(filter) => filter,
        Err(_) => match EnvFilter::try_new(&config.log_level) {
            Ok(filter) => filter,
            Err(e) => {
                eprintln!("shardmq: invalid setting `log_level`: {e}");
                return ExitCode::from(2);
            }
        },
    };
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();

    let broker = match Broker::new(config).and_then(Broker::start) {
        Ok(broker) => broker,
        Err(e) => {
            eprintln!("shardmq: {e}");
            return ExitCode::from(1);
        }
    };
    // SIGHUP rereads the password file, the ACL and the certificates.
    if let Err(e) = signal_hook::flag::register(signal_hook::consts::SIGHUP, broker.reload_flag()) {
        eprintln!("shardmq: cannot install a handler for SIGHUP: {e}");
        return ExitCode::from(1);
    }
    let stop = broker.stop_flag();
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(signal, std::sync::Arc::clone(&stop)) {
            eprintln!("shardmq: cannot install a handler for signal {signal}: {e}");
            return ExitCode::from(1);
        }
    }
    match broker.wait() {
        Ok(()) => {
            tracing::info!("shardmq stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("shardmq: {e}");
            ExitCode::from(1)
        }
    }
}

/// `shardmq cluster status`: one HTTP request, a table (or the JSON).
fn cluster_status(metrics: std::net::SocketAddr, json: bool) -> Result<(), String> {
    use std::io::{Read, Write};
    let fail = |e: std::io::Error| format!("{metrics}: {e}");
    let mut stream =
        std::net::TcpStream::connect_timeout(&metrics, std::time::Duration::from_secs(5))
            .map_err(fail)?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(5))).map_err(fail)?;
    write!(stream, "GET /cluster HTTP/1.1\r\nHost: {metrics}\r\nConnection: close\r\n\r\n")
        .map_err(fail)?;
    let mut response = String::new();
    stream.read_to_string(&mut response).map_err(fail)?;
    let (head, body) = response.split_once("\r\n\r\n").ok_or("not an HTTP response")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("{metrics}: {}", body.trim()));
    }
    if json {
        print!("{body}");
        return Ok(());
    }
    let status: shardmq::cluster::ClusterStatus =
        serde_json::from_str(body).map_err(|e| format!("{metrics}: {e}"))?;
    if status.quorum > 0 {
        let serving = if status.fenced { "fenced: serving no client" } else { "serving" };
        println!("quorum {} nodes: {serving}", status.quorum);
    }
    println!(
        "{:<24} {:<22} {:>7} {:<6} {:>8} {:<10} {:>8} {:>12} {:>12} {:>9}",
        "NODE",
        "ADDRESS",
        "NODE_ID",
        "STATE",
        "SINCE_S",
        "LINK",
        "FILTERS",
        "MSGS_OUT",
        "MSGS_IN",
        "DROPPED"
    );
    for m in status.members {
        println!(
            "{:<24} {:<22} {:>7} {:<6} {:>8} {:<10} {:>8} {:>12} {:>12} {:>9}",
            m.name,
            m.addr,
            m.node_id,
            m.state,
            m.since_secs,
            m.link,
            m.filters,
            m.messages_out,
            m.messages_in,
            m.messages_dropped
        );
    }
    Ok(())
}

impl Passwd {
    fn run(&self) -> Result<(), String> {
        security::passwords::check_username(&self.user).map_err(|e| e.to_string())?;
        if self.delete {
            return match security::delete_user(&self.file, &self.user) {
                Ok(true) => Ok(()),
                Ok(false) => Err(format!("no user `{}` in {}", self.user, self.file.display())),
                Err(e) => Err(e.to_string()),
            };
        }
        let password = read_password()?;
        let hash = match self.pbkdf2 {
            Some(iterations) => PasswordHash::pbkdf2_sha512(password.as_bytes(), iterations),
            None => PasswordHash::argon2id(password.as_bytes()),
        };
        security::set_password(&self.file, &self.user, &hash).map_err(|e| e.to_string())
    }
}

/// The new password: asked twice on the terminal, not echoed; or, when standard input
/// is not a terminal, its first line (without the line end: blanks are part of it).
fn read_password() -> Result<String, String> {
    let stdin = std::io::stdin();
    let password = if stdin.is_terminal() {
        let ask = |prompt| {
            rpassword::prompt_password(prompt).map_err(|e| format!("cannot read the password: {e}"))
        };
        let password = ask("Password: ")?;
        if ask("Password again: ")? != password {
            return Err("the passwords do not match".into());
        }
        password
    } else {
        let mut line = String::new();
        let read = stdin.lock().read_line(&mut line);
        if read.map_err(|e| format!("cannot read the password from standard input: {e}"))? == 0 {
            return Err("no password on standard input".into());
        }
        let line = line.strip_suffix('\n').unwrap_or(&line);
        line.strip_suffix('\r').unwrap_or(line).to_owned()
    };
    if password.is_empty() {
        return Err("empty password".into());
    }
    Ok(password)
}
