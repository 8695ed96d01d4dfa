//! Helpers shared by the end-to-end tests (`tests/cli/main.rs` declares
//! this module; each of its modules has `use crate::support;`): running
//! the binary, kit machines written out, the simulated target's settings,
//! assertions on what a run printed. Crates' tests include `prereq.rs`
//! alone (standard library only), or `symbols_http.rs` beside it.
//!
//! The project rule for prerequisites outside the repository (an external
//! tool, `../shared/`): with `CI=true` a test that needs one must fail when
//! it is missing; elsewhere it skips, saying so on stderr. [`require_tool`]
//! and [`shared_dir`] implement that rule; a test calls them first and
//! returns on `None`.

// The benches and the crates' tests include parts of this directory too,
// each using its own subset.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

mod prereq;
#[allow(unused_imports)] // some test binaries need none of them
pub use prereq::*;

/// The bundled sample: its dump and symbol store, as the README's commands
/// name them.
pub fn sample() -> (String, String) {
    let root = repo_root().join("testdata/sample");
    (
        root.join("MEMORY.DMP").display().to_string(),
        root.join("symbols").display().to_string(),
    )
}

/// The bundled sample's truth (`testdata/sample/truth.json`): what the
/// kit wrote into its dump.
pub fn sample_truth() -> serde_json::Value {
    let path = repo_root().join("testdata/sample/truth.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The kit machine `m` written into `dir` as pooldump reads it: a kernel
/// dump, `MEMORY.DMP`, and its symbol store, `symbols/`; their paths.
pub fn write_dump_and_symbols(m: &pooldump_kit::Machine, dir: &Path) -> (PathBuf, PathBuf) {
    let dump = dir.join("MEMORY.DMP");
    m.write_dump_file(pooldump_kit::DumpKind::KernelBitmap, &dump)
        .expect("write the dump");
    let symbols = dir.join("symbols");
    m.write_symbol_store(&symbols)
        .expect("write the symbol store");
    (dump, symbols)
}

/// The directory cargo built `pooldump` in (its examples are in
/// `examples/` below it).
pub fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_pooldump"))
        .parent()
        .expect("the binary's directory")
        .to_path_buf()
}

/// The example program `name` (examples/NAME.rs) that `cargo test` built
/// beside `pooldump`; `None` (a skip, or a failure under CI) when it is not
/// there.
pub fn example(name: &str) -> Option<PathBuf> {
    let exe = bin_dir()
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if exe.is_file() {
        return Some(exe);
    }
    missing(&format!(
        "{} (built by `cargo test`, or `cargo build --example {name}`)",
        exe.display()
    ))
}

/// A free UDP port on loopback, chosen by the system and released at once
/// for the CLI or a simulated target to bind.
pub fn free_port() -> u16 {
    let s = std::net::UdpSocket::bind((std::net::Ipv4Addr::LOCALHOST, 0)).expect("bind loopback");
    s.local_addr().expect("a bound address").port()
}

/// Settings for a simulated target whose debugger listens on loopback at a
/// free port, with the KDNET key `key`; and that port, for the CLI's
/// `--kdnet port=PORT,key=KEY,bind=127.0.0.1`.
pub fn loopback_sim(key: &str) -> (pooldump_kdnet_sim::SimConfig, u16) {
    let port = free_port();
    let cfg = pooldump_kdnet_sim::SimConfig::new(
        key.parse().expect("a KDNET key"),
        (std::net::Ipv4Addr::LOCALHOST, port).into(),
    );
    (cfg, port)
}

impl Finished {
    /// stdout, once the run has exited 0 (else fail, showing stderr).
    #[track_caller]
    pub fn ok(&self) -> &str {
        assert_eq!(self.code(), Some(0), "{}", self.stderr);
        &self.stdout
    }

    /// stdout read as JSON, once the run has exited 0.
    pub fn json(&self) -> serde_json::Value {
        assert_eq!(self.code(), Some(0), "{}", self.stderr);
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.stdout))
    }
}

/// The CLI under test, `pooldump args`, run from the repository root with
/// `_NT_SYMBOL_PATH` and `_NT_ALT_SYMBOL_PATH` removed, so that the
/// developer's environment cannot point it at other symbols.
pub fn pooldump_command(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pooldump"));
    c.args(args)
        .env_remove("_NT_SYMBOL_PATH")
        .env_remove("_NT_ALT_SYMBOL_PATH")
        .current_dir(repo_root());
    c
}

/// A new temporary directory holding the file `name` with `text`: the
/// directory (the file lives as long as it) and the file's path, as a
/// command line gives it.
pub fn temp_file(name: &str, text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (dir, path.display().to_string())
}

/// [`pooldump_command`] run to completion under [`CLI_LIMIT`].
pub fn pooldump(args: &[&str]) -> Finished {
    run_bounded(&mut pooldump_command(args), CLI_LIMIT)
}

/// [`pooldump`] with `--offline --symbol-path SYMBOLS` after `args`: the
/// symbols from the store `symbols` alone, never from a server.
pub fn pooldump_offline(args: &[&str], symbols: &Path) -> Finished {
    let symbols = symbols.to_str().expect("a UTF-8 path");
    pooldump(&[args, &["--offline", "--symbol-path", symbols]].concat())
}

/// The elements of the JSON array `array` (which must be one).
pub fn items(array: &serde_json::Value) -> std::slice::Iter<'_, serde_json::Value> {
    array
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {array}"))
        .iter()
}

/// `field` of every element of the JSON array `array`, each read with
/// `read` (`Value::as_f64`, ...), which must succeed.
pub fn fields<'a, T>(
    array: &'a serde_json::Value,
    field: &str,
    read: impl Fn(&'a serde_json::Value) -> Option<T>,
) -> Vec<T> {
    items(array)
        .map(|e| read(&e[field]).unwrap_or_else(|| panic!("{field:?} of {e}")))
        .collect()
}

/// The string `field` of every element of the JSON array `array`.
pub fn field_strs<'a>(array: &'a serde_json::Value, field: &str) -> Vec<&'a str> {
    fields(array, field, serde_json::Value::as_str)
}

/// Fails unless `text` contains `want`, showing `text`.
#[track_caller]
pub fn assert_contains(text: &str, want: &str) {
    assert!(text.contains(want), "{want:?} is not in:\n{text}");
}

/// `--csv` keeps stdout for the table: `stderr` must tell a warning that
/// mentions `want` on a line of its own (`pooldump: warning: ...`), and
/// `stdout` must not hold it.
#[track_caller]
pub fn assert_warned_on_stderr(stdout: &str, stderr: &str, want: &str) {
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("pooldump: warning: ") && l.contains(want)),
        "no `pooldump: warning:` line with {want:?} in:\n{stderr}"
    );
    assert!(!stdout.contains(want), "{want:?} is in the CSV:\n{stdout}");
}

/// [`assert_contains`] for each of `wants`, naming `case` (which of a
/// test's cases `text` is from) when one is missing.
#[track_caller]
pub fn assert_contains_all(case: impl std::fmt::Display, text: &str, wants: &[&str]) {
    for want in wants {
        assert!(text.contains(want), "{case}: {want:?} is not in:\n{text}");
    }
}

/// [`run_bounded`], also returning the child's peak resident set in
/// bytes. A memory bound, not a timing: the kernel records the peak
/// whatever the machine's load.
///
/// Why a launcher: Linux reports a child's `ru_maxrss` as at least the
/// high-water mark of the address space it was spawned from (exec keeps
/// the larger of the old mm's peak and the new one's), so a child of this
/// test process, which may have held hundreds of MiB for other tests,
/// would inherit that figure. The test binary is therefore run again as a
/// small launcher (its test `measure_launcher`, which calls
/// [`measure_launcher_main`]) that spawns the command and reads its
/// `ru_maxrss` with `wait4`; the figure can only be high by the
/// launcher's own few MiB.
#[cfg(target_os = "linux")]
pub fn run_measured(cmd: &mut Command, limit: Duration) -> (Finished, u64) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let spec = serde_json::json!({
        "program": cmd.get_program().to_string_lossy(),
        "args": cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>(),
        "cwd": cmd.get_current_dir().map(|d| d.display().to_string()),
        "env_remove": cmd.get_envs().filter(|(_, v)| v.is_none()).map(|(k, _)| k.to_string_lossy().into_owned()).collect::<Vec<_>>(),
        "env": cmd.get_envs().filter_map(|(k, v)| Some((k.to_string_lossy().into_owned(), v?.to_string_lossy().into_owned()))).collect::<Vec<_>>(),
        "dir": dir.path().display().to_string(),
        "limit_ms": limit.as_millis() as u64,
    });
    let mut launcher = Command::new(std::env::current_exe().expect("the test binary"));
    launcher
        .args([
            "--exact",
            "measure_launcher",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("POOLDUMP_MEASURE", spec.to_string());
    let ran = run_bounded(&mut launcher, limit + Duration::from_secs(30));
    let read = |n: &str| std::fs::read_to_string(dir.path().join(n));
    let (Ok(status), Ok(peak)) = (read("status"), read("peak")) else {
        panic!("the launcher failed: {}\n{}", ran.stdout, ran.stderr);
    };
    use std::os::unix::process::ExitStatusExt;
    let finished = Finished {
        status: ExitStatus::from_raw(status.trim().parse().expect("a wait status")),
        stdout: read("stdout").unwrap_or_default(),
        stderr: read("stderr").unwrap_or_default(),
    };
    (finished, peak.trim().parse().expect("a peak in bytes"))
}

/// The launcher half of [`run_measured`]: a test that does nothing unless
/// `POOLDUMP_MEASURE` describes a command, which it then runs, writing the
/// command's stdout, stderr, wait status and peak RSS (bytes) into files.
#[cfg(target_os = "linux")]
pub fn measure_launcher_main() {
    let Ok(spec) = std::env::var("POOLDUMP_MEASURE") else {
        return;
    };
    let spec: serde_json::Value = serde_json::from_str(&spec).expect("a launcher spec");
    let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    let dir = PathBuf::from(s(&spec["dir"]));
    let file = |n: &str| std::fs::File::create(dir.join(n)).expect("an output file");
    let mut cmd = Command::new(s(&spec["program"]));
    for a in spec["args"].as_array().into_iter().flatten() {
        cmd.arg(s(a));
    }
    if let Some(d) = spec["cwd"].as_str() {
        cmd.current_dir(d);
    }
    for k in spec["env_remove"].as_array().into_iter().flatten() {
        cmd.env_remove(s(k));
    }
    for kv in spec["env"].as_array().into_iter().flatten() {
        cmd.env(s(&kv[0]), s(&kv[1]));
    }
    // Reaped by wait4 below, which std's Child cannot do with rusage.
    #[allow(clippy::zombie_processes)]
    let child = cmd
        .stdin(Stdio::null())
        .stdout(file("stdout"))
        .stderr(file("stderr"))
        .spawn()
        .expect("spawn the measured command");
    let pid = child.id() as libc::pid_t;
    let limit = Duration::from_millis(spec["limit_ms"].as_u64().unwrap_or(300_000));
    let start = Instant::now();
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid out-parameter; wait4 reaps only
    // our own child `pid`, and std's Child is never waited on after it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        assert!(r >= 0, "wait4: {}", std::io::Error::last_os_error());
        if r == pid {
            break;
        }
        if start.elapsed() > limit {
            // SAFETY: signalling our own unreaped child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // Linux reports ru_maxrss in KiB.
    let peak = usage.ru_maxrss as u64 * 1024;
    std::fs::write(dir.join("status"), status.to_string()).expect("write the status");
    std::fs::write(dir.join("peak"), peak.to_string()).expect("write the peak");
}

pub mod netns;
pub mod relay;
pub mod symbols_http;
