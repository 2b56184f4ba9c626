//! Rules the build enforces, as rust-analyzer's `tidy` and glommio's `linters.rs` do.
//! The sans-IO modules never mention the executor, sockets, the clock, tasks, shared
//! mutable ownership or the layers above them, so they build and test anywhere
//! (ARCHITECTURE.md); `src/` logs through `tracing` and never prints, except `bin/`.

use std::fs;
use std::path::{Path, PathBuf};

/// The sans-IO modules, files or directories; `src/shard/core` counts from its first file.
const SANS_IO: &[&str] = &[
    "src/cluster",
    "src/protocol",
    "src/session",
    "src/router",
    "src/security",
    "src/message.rs",
    "src/small_map.rs",
    "src/shard/core",
];

/// Test harnesses inside a sans-IO module that play the IO layer's part: the
/// shard core's simulation builds its cores from the broker's `Config`, as the
/// shard does.
const SANS_IO_HARNESSES: &[&str] = &["src/shard/core/sim"];

/// Words a sans-IO module must not mention in code (comments may explain them).
const SANS_IO_FORBIDDEN: &[&str] = &[
    "glommio",
    "std::net",
    "Instant::now",
    "SystemTime::now",
    "spawn",
    "spawn_local",
    "Rc",
    "RefCell",
    "crate::shard",
    "crate::net",
    "crate::config",
];

/// Printing from the library bypasses the log filter and mixes into embedders' output.
const PRINTING: &[&str] = &["dbg!", "print!", "println!", "eprint!", "eprintln!"];

#[test]
fn sans_io_modules_mention_no_io() {
    let harnesses: Vec<PathBuf> = SANS_IO_HARNESSES.iter().map(|h| root().join(h)).collect();
    let files = SANS_IO
        .iter()
        .flat_map(|path| rust_files(&root().join(path)))
        .filter(|f| !harnesses.iter().any(|h| f.starts_with(h)));
    check(files, SANS_IO_FORBIDDEN);
}

#[test]
fn src_prints_nothing_outside_bin() {
    let bin = root().join("src/bin");
    check(rust_files(&root().join("src")).into_iter().filter(|f| !f.starts_with(&bin)), PRINTING);
}

fn check(files: impl Iterator<Item = PathBuf>, forbidden: &[&str]) {
    let mut problems = Vec::new();
    for file in files {
        let text = fs::read_to_string(&file).expect("readable source");
        // Comments may name what code must not use.
        let lines: Vec<&str> = text.lines().map(|l| l.split("//").next().unwrap_or("")).collect();
        let mut code = lines.join("\n");
        // Each item of a grouped import, `use crate::{config::X, ..};`, as a path.
        for group in lines.join("\n").split("crate::{").skip(1) {
            let group: String = group.split("};").next().unwrap_or("").split_whitespace().collect();
            code.extend(group.split(',').map(|item| format!(" crate::{item}")));
        }
        // The shard core is sans-IO itself: naming its own modules is not naming `shard`.
        let code = code.replace("crate::shard::core", "core");
        for word in forbidden.iter().filter(|word| mentions(&code, word)) {
            problems.push(format!("{}: `{word}`", file.display()));
        }
    }
    assert!(problems.is_empty(), "forbidden here:\n{}", problems.join("\n"));
}

/// Whether `word` occurs in `code` as a whole word (or path).
fn mentions(code: &str, word: &str) -> bool {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    code.match_indices(word)
        .any(|(at, _)| !code[..at].ends_with(ident) && !code[at + word.len()..].starts_with(ident))
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The `.rs` files at or under `path`; none when it does not exist.
fn rust_files(path: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(path) else {
        return path
            .extension()
            .is_some_and(|e| e == "rs")
            .then(|| path.to_owned())
            .into_iter()
            .collect();
    };
    entries.flat_map(|entry| rust_files(&entry.expect("readable directory").path())).collect()
}
