//! Whole processes, timed and measured as a user runs them (the root
//! benches only: it needs `libc`, which the crates' benches, sharing
//! `common/mod.rs`, do not have).

/// One whole process as [`run_process`] measured it.
pub struct Measured {
    /// Wall seconds from spawn to exit.
    pub secs: f64,
    /// Peak resident set in KiB (`wait4`'s `ru_maxrss`). Linux folds the
    /// spawning process's own peak into it (the child starts on its
    /// memory), so a bench that measures this must stay small itself.
    pub max_rss_kib: u64,
}

/// Run `cmd` to its end with its output going to `stdout` (`Stdio::null()`
/// or a file; never a pipe this process would have to hold), stderr
/// discarded, measuring wall time and peak RSS. Panics when the process
/// fails: a bench figure of a failed run would be meaningless.
pub fn run_process(cmd: &mut std::process::Command, stdout: std::process::Stdio) -> Measured {
    let t = std::time::Instant::now();
    // Reaped by wait4 below, which std's Child cannot do with rusage.
    #[allow(clippy::zombie_processes)]
    let child = cmd
        .stdout(stdout)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?} does not start: {e}"));
    let (mut status, pid) = (0, child.id() as libc::pid_t);
    // SAFETY: a zeroed rusage is a valid out-parameter; wait4 reaps only
    // our own child, which std's Child is never asked to wait for.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let secs = t.elapsed().as_secs_f64();
    assert!(r == pid && status == 0, "{cmd:?} failed ({status})");
    Measured {
        secs,
        max_rss_kib: usage.ru_maxrss as u64,
    }
}
