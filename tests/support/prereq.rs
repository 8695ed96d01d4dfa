//! Prerequisites outside the repository (an external tool, `../shared/`):
//! with `CI=true` a test that needs one must fail when it is missing;
//! elsewhere it skips, saying so on stderr and in [`SKIP_LOG`]. Only the
//! standard library, so the tests of workspace crates include this file
//! alone (`#[path = "../../../tests/support/prereq.rs"] mod support;`).

#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// True when the environment says this is CI (`CI=true`), where missing
/// prerequisites are failures rather than skips.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// The repository root (where the root Cargo.toml is).
pub fn repo_root() -> PathBuf {
    // The crate whose test this is may be a workspace member
    // (crates/*/tests include this file too): the root is the directory
    // above it with the Cargo.lock.
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .find(|d| d.join("Cargo.lock").is_file())
        .map_or(here.clone(), |d| d.to_path_buf())
}

/// Report a missing prerequisite: panic in CI, else say that the test is
/// skipped and why, and return `None` (so callers can write `let Some(x) =
/// ... else { return }`).
///
/// libtest has no "skipped" outcome: such a test is reported `ok`, and
/// what it prints is captured and hidden. So the skip is written straight
/// to the process's stderr (past the capture, beside the test's line) and
/// recorded in [`SKIP_LOG`], which `.ci/run` counts and lists at the end.
pub fn missing<T>(what: &str) -> Option<T> {
    assert!(!in_ci(), "CI=true and {what} is missing");
    record(
        "SKIPPED",
        &format!("{what} is missing (set CI=true to make this a failure)"),
    );
    None
}

/// Where skips and degraded runs are recorded, one line each:
/// `KIND<TAB>test binary<TAB>test<TAB>why`, appended by every test binary.
pub const SKIP_LOG: &str = "test-skips.log";

/// Record a skipped test (`SKIPPED`) or one that ran in a documented,
/// weaker form (`NOTE`): say it on stderr, past libtest's capture, and
/// append it to `target/test-skips.log`.
pub fn record(kind: &str, why: &str) {
    use std::io::Write;
    let exe = std::env::current_exe().ok();
    let binary = exe
        .as_ref()
        .and_then(|p| p.file_stem())
        .map(|s| s.to_string_lossy().into_owned())
        .map(|s| match s.rsplit_once('-') {
            // `kdnet_capture-1a2b3c4d...`: the binary's name without
            // cargo's hash.
            Some((name, hash)) if hash.chars().all(|c| c.is_ascii_hexdigit()) => name.to_string(),
            _ => s,
        })
        .unwrap_or_else(|| "?".into());
    let test = std::thread::current().name().unwrap_or("?").to_string();
    let line = format!("{kind}\t{binary}\t{test}\t{why}\n");
    let _ = std::io::stderr().write_all(format!("{kind}: {binary} {test}: {why}\n").as_bytes());
    // target/<profile>/deps/<binary>: the log goes in target/.
    let target = exe
        .as_ref()
        .and_then(|p| p.parent()?.parent()?.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| repo_root().join("target"));
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(target.join(SKIP_LOG))
    {
        // One write per line: appends from parallel tests do not mix.
        let _ = f.write_all(line.as_bytes());
    }
}

/// An executable named `name` on PATH, under the CI-or-skip rule.
pub fn require_tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| is_executable(p))
    });
    found.or_else(|| missing(&format!("the tool `{name}` (not on PATH)")))
}

fn is_executable(p: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
    #[cfg(not(unix))]
    {
        p.is_file()
    }
}

/// `../shared/` next to the repository (specs, ISF files, captures), under
/// the CI-or-skip rule.
pub fn shared_dir() -> Option<PathBuf> {
    let dir = repo_root().join("..").join("shared");
    if dir.is_dir() {
        Some(dir)
    } else {
        missing(&format!("the shared directory {}", dir.display()))
    }
}

/// The file `../shared/REL` (a real third-party input), under the
/// CI-or-skip rule.
pub fn shared_file(rel: &str) -> Option<PathBuf> {
    let p = shared_dir()?.join(rel);
    if p.is_file() {
        Some(p)
    } else {
        missing(&p.display().to_string())
    }
}

/// What a bounded run of a command produced.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

/// How long one run of the CLI may take before a test calls it hung: a
/// hang detector far above any run's time, not a timing test.
pub const CLI_LIMIT: Duration = Duration::from_secs(300);

/// Run `cmd` to completion under [`CLI_LIMIT`], which must succeed, and
/// return its stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let r = run_bounded(cmd, CLI_LIMIT);
    assert_eq!(r.code(), Some(0), "{cmd:?}: {}", r.stderr);
    r.stdout
}

/// Run `cmd` to completion, killing it and failing the test if it is still
/// running after `limit`. This is a hang detector, not a timing test: pick
/// a limit far above any reasonable run time.
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> Finished {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    // Drain both pipes on threads so a chatty child cannot block on a full
    // pipe while we wait for it.
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            String::from_utf8_lossy(&v).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let err = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for the child") {
            break s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} still ran after {limit:?}: it hangs");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Finished {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}
