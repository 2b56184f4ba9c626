//! `shardmq-bench`: a thread-per-core (glommio, io_uring) load generator for
//! any MQTT 3.1.1 broker. See README.md.

use clap::Parser;
use std::process::ExitCode;
use std::sync::Arc;

use bench_harness::cli::{Cli, Cmd, Common, Fleet};
use bench_harness::compare;
use bench_harness::engine::{self, Kind, Plan};
use bench_harness::report::{self, Report};

fn bench(
    kind: Kind,
    c: Common,
    wildcard: bool,
    hold: bool,
    concurrency: usize,
    fleet: Fleet,
) -> anyhow::Result<()> {
    let plan = Arc::new(Plan::new(kind, c, wildcard, hold, concurrency, fleet)?);
    let outcome = engine::execute(plan.clone())?;
    let report = Report::build(&plan, &outcome);
    print!("{}", report.table());
    if let Some(p) = &plan.c.json {
        report.write_json(p)?;
    }
    if let Some(p) = &plan.c.hdr_log {
        let (h, tag) =
            if kind.is_pubsub() { (&outcome.hist, "e2e") } else { (&outcome.connack, "connack") };
        report::write_hdr_log(p, h, tag, report.results.window_s, &report)?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::FanIn(a) => bench(Kind::FanIn, a.common, a.wildcard, false, 0, Fleet::default()),
        Cmd::FanOut(a) => bench(Kind::FanOut, a.common, false, false, 0, Fleet::default()),
        Cmd::Pairs(a) => bench(Kind::Pairs, a.common, false, false, 0, Fleet::default()),
        Cmd::Conn(a) => bench(Kind::Conn, a.common, false, a.hold, a.concurrency, Fleet::default()),
        Cmd::Idle(a) => bench(Kind::Idle, a.common, false, false, 0, Fleet::default()),
        Cmd::Connections(a) => bench(Kind::Connections, a.common, false, false, 0, a.fleet),
        Cmd::Compare(a) => compare::run(&a),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shardmq-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
