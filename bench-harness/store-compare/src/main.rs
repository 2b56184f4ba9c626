//! The disk work of a durable shard under `--sync always`, three ways: our log
//! (append to a segment, one fdatasync per pass: what `shard::log` does through
//! io_uring), fjall (an LSM tree, one `persist(SyncData)` per pass) and redb (a
//! B-tree, one durable commit per pass).
//!
//! Workload: passes of PASS records of RECORD bytes (a queued message and its
//! session's reference); every record is removed again (acknowledged) LAG passes
//! later: the log appends a small removal record, the stores delete the key.
//!
//! Usage: store-compare DIR [passes] — prints one line per store: records/s and
//! the commit latency per pass (p50, p99, µs).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::time::Instant;

const PASS: usize = 64;
const RECORD: usize = 150;
const LAG: u64 = 4;

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().expect("usage: store-compare DIR [passes]");
    let passes: u64 = args.next().map_or(2000, |p| p.parse().expect("passes"));
    let dir = Path::new(&dir);
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir).expect("dir");
    report("log (append + fdatasync)", log(&dir.join("log"), passes), passes);
    report("fjall 2 (persist SyncData)", fjall_run(&dir.join("fjall"), passes), passes);
    report("redb 2 (durable commit)", redb_run(&dir.join("redb"), passes), passes);
}

fn report(name: &str, mut commits_us: Vec<u64>, passes: u64) {
    let total: u64 = commits_us.iter().sum();
    commits_us.sort_unstable();
    let at = |q: f64| commits_us[((commits_us.len() - 1) as f64 * q) as usize];
    let records = passes * PASS as u64;
    println!(
        "{name:30} {:>9.0} records/s  pass commit p50 {:>6} us  p99 {:>6} us",
        records as f64 / (total as f64 / 1e6),
        at(0.5),
        at(0.99)
    );
}

fn value(seq: u64) -> Vec<u8> {
    let mut v = vec![0x5a; RECORD];
    v[..8].copy_from_slice(&seq.to_be_bytes());
    v
}

fn log(path: &Path, passes: u64) -> Vec<u64> {
    fs::create_dir_all(path).expect("dir");
    let mut file = OpenOptions::new().create(true).append(true).open(path.join("0.log")).expect("open");
    let mut times = Vec::new();
    for pass in 0..passes {
        let started = Instant::now();
        let mut buf = Vec::with_capacity(PASS * (RECORD + 8) + PASS * 40);
        for i in 0..PASS as u64 {
            buf.extend_from_slice(&value(pass * PASS as u64 + i));
        }
        if pass >= LAG {
            for i in 0..PASS as u64 {
                // A removal record: a kind, a session serial, a message id.
                buf.extend_from_slice(&[9u8; 33]);
                buf.extend_from_slice(&((pass - LAG) * PASS as u64 + i).to_be_bytes());
            }
        }
        file.write_all(&buf).expect("write");
        file.sync_data().expect("fdatasync");
        times.push(started.elapsed().as_micros() as u64);
    }
    let _: File = file;
    times
}

fn fjall_run(path: &Path, passes: u64) -> Vec<u64> {
    let keyspace = fjall::Config::new(path).open().expect("fjall");
    let part = keyspace.open_partition("q", fjall::PartitionCreateOptions::default()).expect("partition");
    let mut times = Vec::new();
    for pass in 0..passes {
        let started = Instant::now();
        let mut batch = keyspace.batch();
        for i in 0..PASS as u64 {
            let seq = pass * PASS as u64 + i;
            batch.insert(&part, seq.to_be_bytes(), value(seq));
        }
        if pass >= LAG {
            for i in 0..PASS as u64 {
                batch.remove(&part, ((pass - LAG) * PASS as u64 + i).to_be_bytes());
            }
        }
        batch.commit().expect("commit");
        keyspace.persist(fjall::PersistMode::SyncData).expect("persist");
        times.push(started.elapsed().as_micros() as u64);
    }
    times
}

fn redb_run(path: &Path, passes: u64) -> Vec<u64> {
    const TABLE: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("q");
    fs::create_dir_all(path).expect("dir");
    let db = redb::Database::create(path.join("db.redb")).expect("redb");
    let mut times = Vec::new();
    for pass in 0..passes {
        let started = Instant::now();
        let tx = db.begin_write().expect("tx");
        {
            let mut table = tx.open_table(TABLE).expect("table");
            for i in 0..PASS as u64 {
                let seq = pass * PASS as u64 + i;
                table.insert(seq, value(seq).as_slice()).expect("insert");
            }
            if pass >= LAG {
                for i in 0..PASS as u64 {
                    table.remove((pass - LAG) * PASS as u64 + i).expect("remove");
                }
            }
        }
        tx.commit().expect("commit");
        times.push(started.elapsed().as_micros() as u64);
    }
    times
}
