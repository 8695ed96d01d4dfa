//! `pooldump top` driven as a person drives it: in a real terminal (tmux),
//! typing PoolMon's keys with send-keys and reading the screen with
//! capture-pane. What the screen must show comes from the kit's ground
//! truth. Needs tmux (CI-or-skip rule).

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use pooldump_kdnet_sim::SimTarget;
use pooldump_kit::truth::TagUsage;
use pooldump_kit::{Machine, NtBuild, Scenario};
use support::{require_tool, run_bounded};

/// A tmux server of our own (its own socket), killed when dropped.
struct Tmux {
    bin: PathBuf,
    socket: String,
}

impl Tmux {
    fn start(bin: PathBuf, name: &str, width: u16, height: u16) -> Self {
        let t = Tmux {
            bin,
            socket: format!("pooldump-{name}-{}", std::process::id()),
        };
        // A plain shell with a known prompt, no user configuration.
        t.run(&[
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-s",
            "t",
            "-x",
            &width.to_string(),
            "-y",
            &height.to_string(),
            "env",
            "-i",
            &format!("PATH={}", std::env::var("PATH").unwrap_or_default()),
            "TERM=xterm-256color",
            "PS1=$ ",
            "sh",
        ]);
        t
    }

    fn run(&self, args: &[&str]) -> String {
        let mut c = Command::new(&self.bin);
        c.arg("-L").arg(&self.socket).args(args);
        let r = run_bounded(&mut c, Duration::from_secs(30));
        assert_eq!(r.code(), Some(0), "tmux {args:?}: {}", r.stderr);
        r.stdout
    }

    /// Type a line of text and press Enter.
    fn type_line(&self, line: &str) {
        self.run(&["send-keys", "-t", "t", "-l", line]);
        self.run(&["send-keys", "-t", "t", "Enter"]);
    }

    /// Press a key (tmux key names: `B`, `Down`, `NPage`).
    fn press(&self, key: &str) {
        self.run(&["send-keys", "-t", "t", key]);
    }

    /// `pooldump top ARGS` typed at the shell's prompt (ARGS quoted by
    /// the caller), the view's first screen returned once it shows `until`.
    fn top(&self, args: &str, until: &str) -> String {
        self.wait_for("a shell prompt", |s| s.contains('$'));
        let pooldump = sh_quote(Path::new(env!("CARGO_BIN_EXE_pooldump")));
        self.type_line(&format!("{pooldump} top {args}"));
        self.wait_for(until, |s| s.contains(until))
    }

    /// [`Self::top`] on a dump with its local symbol store.
    fn top_on_dump(&self, dump: &Path, symbols: &Path) -> String {
        self.top(
            &format!(
                "{} --symbol-path {} --offline --no-cache",
                sh_quote(dump),
                sh_quote(symbols)
            ),
            "Mapped_Driver",
        )
    }

    /// Press `key` to quit, and see the shell say `top` exited 0.
    fn quit_with_success(&self, key: &str) {
        self.press(key);
        self.wait_for("the shell again", |s| !s.contains("Mapped_Driver"));
        self.type_line("echo exit=$?");
        self.wait_for("exit status 0", |s| s.contains("exit=0"));
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "t"])
    }

    /// Wait until the screen satisfies `ok`; a hang detector (the bound
    /// is far above any real redraw), not a timing test.
    fn wait_for(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let s = self.screen();
            if ok(&s) {
                return s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the screen never showed {what}:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new(&self.bin)
            .arg("-L")
            .arg(&self.socket)
            .arg("kill-server")
            .status();
    }
}

fn sh_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

/// `top` on the dump of the kit's small machine built from `seed`, in a
/// `width` x `height` terminal named `name`: the directory holding the
/// dump and symbols (keep it while `top` runs), the machine, the terminal
/// and its first screen. `None` without tmux (CI-or-skip).
fn top_on_a_kit_dump(
    name: &str,
    seed: u64,
    width: u16,
    height: u16,
) -> Option<(tempfile::TempDir, Machine, Tmux, String)> {
    let tmux = require_tool("tmux")?;
    let dir = tempfile::tempdir().unwrap();
    let m = Machine::build(&Scenario::small(NtBuild::Win10_19041, seed));
    let (dump, symbols) = support::write_dump_and_symbols(&m, dir.path());
    let t = Tmux::start(tmux, name, width, height);
    let first = t.top_on_dump(&dump, &symbols);
    Some((dir, m, t, first))
}

/// The table's rows on screen: (tag, type) in order, between the dashed
/// rule and the status line (or the totals' rule).
fn rows(screen: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = screen.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.starts_with("---"))
        .expect("the table's rule");
    lines[start + 1..]
        .iter()
        .take_while(|l| !l.starts_with("---") && !l.contains("Sort:"))
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((w.next()?.to_string(), w.next()?.to_string()))
        })
        .collect()
}

/// A column of the truth's rows.
type Column = fn(&TagUsage) -> u64;

/// The truth's rows (with activity) sorted as PoolMon would, as (tag, type).
fn expected(tags: &[TagUsage], key: impl Fn(&TagUsage) -> u64) -> Vec<(String, String)> {
    let mut v: Vec<&TagUsage> = tags
        .iter()
        .filter(|t| t.reported_allocs > 0 || t.bytes > 0)
        .collect();
    v.sort_by(|a, b| {
        key(b)
            .cmp(&key(a))
            .then(a.tag_value.to_le_bytes().cmp(&b.tag_value.to_le_bytes()))
            .then((a.pool == "Paged").cmp(&(b.pool == "Paged")))
    });
    v.iter()
        .map(|t| (t.tag.trim_end().to_string(), t.pool.clone()))
        .collect()
}

#[test]
fn top_on_a_dump_answers_poolmons_keys() {
    let Some((_dir, m, t, s)) = top_on_a_kit_dump("dump", 61, 160, 45) else {
        return;
    };
    let truth = &m.truth;
    // The first screen, PoolMon's columns: the header lines.
    assert!(s.contains(&format!("Build: {}", truth.build_number)), "{s}");
    let pool_bytes = |pool: &str| -> u64 {
        truth
            .tags
            .iter()
            .filter(|t| t.pool == pool)
            .map(|t| t.bytes)
            .sum()
    };
    let (np, p) = (pool_bytes("Nonp"), pool_bytes("Paged"));
    assert!(
        s.contains(&format!("Pool N: {}K", np / 1024)) && s.contains(&format!("P: {}K", p / 1024)),
        "{s}"
    );
    for col in [
        "Tag",
        "Type",
        "Allocs",
        "Frees",
        "Diff",
        "Bytes",
        "Per Alloc",
    ] {
        assert!(s.contains(col), "{col}: {s}");
    }
    // PoolMon sorts by tag to start with.
    assert_eq!(rows(&s), expected(&truth.tags, |_| 0), "{s}");
    // A static dump: every change column reads (0).
    assert!(
        s.contains(" 0)") && !s.contains("(+") && !s.contains("(-"),
        "{s}"
    );

    // PoolMon's sort keys, each against the truth sorted the same way.
    let keys: [(&str, &str, Column); 5] = [
        ("B", "bytes", |t| t.bytes),
        ("A", "allocs", |t| t.reported_allocs),
        ("F", "frees", |t| t.reported_frees),
        ("S", "diff", |t| t.reported_allocs - t.reported_frees),
        ("M", "per alloc", |t| {
            t.bytes
                .checked_div(t.reported_allocs - t.reported_frees)
                .unwrap_or(0)
        }),
    ];
    for (key, name, value) in keys {
        t.press(key);
        let status = format!("Sort: {name}");
        let s = t.wait_for(&status, |s| s.contains(&status));
        assert_eq!(rows(&s), expected(&truth.tags, value), "{key}: {s}");
    }
    t.press("T");
    t.press("B");
    t.wait_for("sorted by bytes", |s| s.contains("Sort: bytes"));

    // P: nonpaged, then paged, then both.
    t.press("P");
    let s = t.wait_for("nonpaged only", |s| s.contains("Pool: nonpaged"));
    let r = rows(&s);
    assert!(!r.is_empty() && r.iter().all(|(_, ty)| ty == "Nonp"), "{s}");
    assert_eq!(
        r.len(),
        expected(&truth.tags, |_| 0)
            .iter()
            .filter(|x| x.1 == "Nonp")
            .count()
    );
    t.press("P");
    let s = t.wait_for("paged only", |s| s.contains("Pool: paged"));
    let r = rows(&s);
    assert!(
        !r.is_empty() && r.iter().all(|(_, ty)| ty == "Paged"),
        "{s}"
    );
    t.press("P");
    let s = t.wait_for("both pools", |s| s.contains("Pool: both"));
    assert_eq!(rows(&s), expected(&truth.tags, |t| t.bytes));

    // E: the totals across the bottom.
    t.press("E");
    let s = t.wait_for("the totals", |s| s.contains("TOTAL"));
    let total_np = s
        .lines()
        .find(|l| l.contains("TOTAL") && l.contains("Nonp"))
        .unwrap();
    assert!(total_np.contains(&format!(" {np} ")), "{total_np}");

    // Q quits back to the shell, with success.
    t.quit_with_success("Q");
}

#[test]
fn top_scrolls_in_a_small_terminal() {
    // Five header lines, a status line and room for 4 rows.
    let Some((_dir, m, t, s)) = top_on_a_kit_dump("small", 62, 120, 10) else {
        return;
    };
    let all = expected(&m.truth.tags, |_| 0);
    let page = rows(&s);
    assert_eq!(page, all[..page.len()], "{s}");
    assert!(
        page.len() < all.len(),
        "the terminal is too big for this test"
    );
    t.press("Down");
    let s = t.wait_for("one row down", |s| rows(s).first() == Some(&all[1]));
    assert_eq!(rows(&s), all[1..1 + page.len()]);
    t.press("NPage");
    t.press("NPage");
    t.press("NPage");
    let s = t.wait_for("the last page", |s| rows(s).last() == all.last());
    assert_eq!(rows(&s).len(), page.len());
    t.press("Home");
    t.wait_for("the first page", |s| rows(s).first() == all.first());
    t.quit_with_success("q");
}

#[test]
fn top_on_a_live_target_refreshes() {
    let Some(tmux) = require_tool("tmux") else {
        return;
    };
    let m = Machine::build(&Scenario::small(NtBuild::Win10_19041, 63));
    let dir = tempfile::tempdir().unwrap();
    let symbols = dir.path().join("symbols");
    m.write_symbol_store(&symbols).unwrap();
    let (cfg, port) = support::loopback_sim("1.2.3.4");
    let sim = SimTarget::spawn(m, cfg).unwrap();

    let t = Tmux::start(tmux, "live", 160, 40);
    let s = t.top(
        &format!(
            "--kdnet port={port},key=1.2.3.4,bind=127.0.0.1 --interval 300ms --symbol-path {} --offline --no-cache",
            sh_quote(&symbols)
        ),
        "(live)",
    );
    assert!(s.contains("Mapped_Driver"), "{s}");
    t.wait_for("the second refresh", |s| s.contains("refresh 2 "));
    t.quit_with_success("q");
    let stats = sim.stats();
    // Stopped for every refresh and let run after each.
    assert!(stats.breakins >= 3, "{stats:?}");
    assert!(stats.continues >= stats.breakins, "{stats:?}");
}
