//! The `shardmq` command: flags and an optional TOML file -> `Config` -> `Broker`.
//! Nothing else lives here.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser};
use shardmq::config::ConfigLayer;
use shardmq::{Broker, Config};
use tracing_subscriber::EnvFilter;

/// A thread-per-core MQTT broker for MQTT 3.1, 3.1.1 and 5.0. Every setting has a
/// built-in default, shown below; flags override the config file.
#[derive(Debug, Parser)]
#[command(version, long_about = None)]
struct Cli {
    /// TOML file with any of the settings below (snake_case keys, e.g. `inflight_max = 64`).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: ConfigLayer,
}

/// Parses the command line; exits with the usage status on bad flags, as clap does.
fn parse_cli() -> Cli {
    let matches = ConfigLayer::show_defaults(Cli::command()).get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

fn main() -> ExitCode {
    let cli = parse_cli();
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
