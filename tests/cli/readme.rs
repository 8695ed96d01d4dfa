//! The README is true:
//!
//! * every `pooldump ...` and `pooldump-kit ...` command line it shows
//!   names a real subcommand and options that subcommand's `--help` lists;
//!   the Commands table lists every subcommand; the shared-options table
//!   says exactly which commands take each option;
//! * the blocks marked `<!-- runnable -->` run as written, from a fresh
//!   directory holding only the repository's `testdata/` (so they also run
//!   on a fresh clone), and a block followed by `<!-- output -->` prints
//!   every line of the output shown (`...` lines aside);
//! * the "Use it as a library" code is `examples/library.rs`, which runs
//!   and prints what the README says.
//!
//! `cargo run [--release] [-p pooldump-kit-cli] -- ARGS` in a block runs
//! the binaries this test run built (a nested cargo build would take
//! minutes and contend for the build directory); any other cargo command
//! fails the block. The one change to the text: port 50000 becomes a free
//! port, so a parallel test or a real debugger on 50000 cannot interfere.

use crate::support;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use support::repo_root;

fn readme() -> String {
    std::fs::read_to_string(repo_root().join("README.md")).unwrap()
}

/// The `pooldump-kit` binary `cargo test --workspace` built beside
/// `pooldump` (crates/kit-cli has integration tests, so cargo builds it).
fn kit() -> Option<PathBuf> {
    let p = support::bin_dir().join(format!("pooldump-kit{}", std::env::consts::EXE_SUFFIX));
    if p.is_file() {
        Some(p)
    } else {
        support::missing(&format!(
            "{} (built by `cargo test --workspace`, or `cargo build -p pooldump-kit-cli`)",
            p.display()
        ))
    }
}

/// `BIN ARGS --help`, once per command line.
fn help(bin: &Path, args: &[&str]) -> String {
    static CACHE: Mutex<Option<HashMap<String, String>>> = Mutex::new(None);
    let key = format!("{} {}", bin.display(), args.join(" "));
    let mut cache = CACHE.lock().unwrap();
    let cache = cache.get_or_insert_with(HashMap::new);
    if let Some(h) = cache.get(&key) {
        return h.clone();
    }
    let out = Command::new(bin).args(args).arg("--help").output().unwrap();
    assert!(
        out.status.success(),
        "{key} --help: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let h = String::from_utf8(out.stdout).unwrap();
    cache.insert(key, h.clone());
    h
}

/// The options a `--help` lists (`-s`, `--sort`, ...).
fn options(help: &str) -> BTreeSet<String> {
    let mut v = BTreeSet::new();
    for line in help.lines() {
        let t = line.trim_start();
        if !t.starts_with('-') {
            continue;
        }
        for tok in t.split(|c: char| c == ',' || c.is_whitespace()) {
            if tok.is_empty() {
                continue;
            }
            if tok.starts_with('<') {
                break;
            }
            if tok.starts_with('-') {
                v.insert(tok.split('=').next().unwrap().to_string());
            }
        }
    }
    v
}

/// The subcommands `--help` lists (without `help`).
fn subcommands(bin: &Path) -> BTreeSet<String> {
    help(bin, &[])
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

/// Inline code spans of a line of Markdown.
fn spans(line: &str) -> Vec<&str> {
    line.split('`').skip(1).step_by(2).collect()
}

/// The README's command lines: code spans and code-block lines, with
/// `cargo run ... --` rewritten to the binary it runs.
fn command_lines(md: &str) -> Vec<String> {
    let mut v = Vec::new();
    let mut fenced = false;
    for line in md.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced || line.starts_with("    ") {
            v.push(line.trim().to_string());
        } else {
            v.extend(spans(line).into_iter().map(str::to_string));
        }
    }
    v.into_iter().filter_map(|l| as_binary(&l)).collect()
}

/// `cargo run [--release] [-p pooldump-kit-cli] -- ARGS` as `BIN ARGS`,
/// a `pooldump ...` or `pooldump-kit ...` line as it is; else (an
/// example's run too) `None`.
fn as_binary(line: &str) -> Option<String> {
    let line = line
        .split(" #")
        .next()
        .unwrap()
        .trim()
        .trim_end_matches('&')
        .trim();
    if let Some(rest) = line.strip_prefix("cargo run ") {
        let (opts, args) = rest.split_once("-- ")?;
        // An example's arguments are its own (examples/*.rs are run by
        // their own tests).
        if opts.contains("--example") {
            return None;
        }
        let bin = if opts.contains("-p pooldump-kit-cli") {
            "pooldump-kit"
        } else {
            "pooldump"
        };
        return Some(format!("{bin} {args}"));
    }
    (line.starts_with("pooldump ") || line.starts_with("pooldump-kit ")).then(|| line.to_string())
}

#[test]
fn every_command_line_in_the_readme_is_true_to_the_cli() {
    let md = readme();
    let pooldump = Path::new(env!("CARGO_BIN_EXE_pooldump"));
    let kit = kit();
    let subs = subcommands(pooldump);
    let mut checked = 0;
    let mut wrong = Vec::new();
    for line in command_lines(&md) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let bin = match words[0] {
            "pooldump" => pooldump.to_path_buf(),
            "pooldump-kit" => match &kit {
                Some(k) => k.clone(),
                None => continue,
            },
            _ => continue,
        };
        // `pooldump COMMAND --help`: a placeholder, not a command.
        let Some(sub) = words
            .get(1)
            .filter(|w| !w.starts_with('-') && !w.chars().all(|c| c.is_ascii_uppercase()))
        else {
            continue;
        };
        let known = if words[0] == "pooldump" {
            subs.clone()
        } else {
            subcommands(&bin)
        };
        if !known.contains(*sub) {
            wrong.push(format!("`{line}`: no subcommand `{sub}`"));
            continue;
        }
        let opts = options(&help(&bin, &[sub]));
        let mut quoted = false;
        for w in &words[2..] {
            // Option values in quotes ("-k net:...") are values.
            let starts_quote = w.starts_with('\'') || w.starts_with('"');
            if !quoted && !starts_quote {
                let w = w.trim_matches(|c| c == '[' || c == ']' || c == ',');
                if w.starts_with('-') && w.len() > 1 {
                    let flag = w.split('=').next().unwrap();
                    if !opts.contains(flag) {
                        wrong.push(format!(
                            "`{line}`: `{words0} {sub} --help` has no {flag}",
                            words0 = words[0]
                        ));
                    }
                }
            }
            if starts_quote && !(w.len() > 1 && (w.ends_with('\'') || w.ends_with('"'))) {
                quoted = true;
            } else if quoted && (w.ends_with('\'') || w.ends_with('"')) {
                quoted = false;
            }
        }
        checked += 1;
    }
    assert!(
        wrong.is_empty(),
        "the README says what the CLI does not:\n{}",
        wrong.join("\n")
    );
    assert!(checked > 30, "only {checked} command lines found");
}

/// The rows of the Markdown table that follows `heading_line`.
fn table_after<'a>(md: &'a str, heading_line: &str) -> Vec<Vec<&'a str>> {
    md.lines()
        .skip_while(|l| !l.starts_with(heading_line))
        .skip(2) // the header and the |---| line
        .take_while(|l| l.starts_with('|'))
        .map(|l| l.trim_matches('|').split(" | ").collect())
        .collect()
}

#[test]
fn the_commands_table_lists_every_command() {
    let md = readme();
    let pooldump = Path::new(env!("CARGO_BIN_EXE_pooldump"));
    let mut listed = BTreeSet::new();
    for row in table_after(&md, "| Command | What it does | Docs |") {
        for s in spans(row[0]) {
            let mut w = s.split_whitespace();
            if w.next() == Some("pooldump")
                && let Some(sub) = w.next()
            {
                listed.insert(sub.to_string());
            }
        }
    }
    assert_eq!(
        listed,
        subcommands(pooldump),
        "README's Commands table vs `pooldump --help`"
    );
}

#[test]
fn the_shared_options_table_says_which_commands_take_each_option() {
    let md = readme();
    let pooldump = Path::new(env!("CARGO_BIN_EXE_pooldump"));
    let rows = table_after(&md, "| Option | Commands |");
    assert!(rows.len() >= 4, "{rows:?}");
    let mut wrong = Vec::new();
    for row in &rows {
        // The options the row is about: the spans before its `: what`
        // (`--kdnet port=...`, `-v`), not options its text mentions or a
        // value such as `-k net:`.
        let head = format!("{}`", row[0].split("`:").next().unwrap());
        let flags: Vec<String> = spans(&head)
            .into_iter()
            .filter(|s| s.starts_with("--") || (s.len() == 2 && s.starts_with('-')))
            .map(|s| s.split([' ', '=']).next().unwrap().to_string())
            .collect();
        let said: BTreeSet<&str> = spans(row[1]).into_iter().collect();
        for sub in subcommands(pooldump) {
            let opts = options(&help(pooldump, &[&sub]));
            for flag in &flags {
                let has = opts.contains(flag);
                if has != said.contains(sub.as_str()) {
                    wrong.push(format!(
                        "{flag}: the README says `{sub}` {} it; `pooldump {sub} --help` {} it",
                        if said.contains(sub.as_str()) {
                            "takes"
                        } else {
                            "does not take"
                        },
                        if has { "lists" } else { "does not list" }
                    ));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// A runnable block: its commands, and the output lines the README shows
/// for it (if any).
#[derive(Debug)]
struct Runnable {
    script: String,
    shown: Vec<String>,
}

/// The blocks after `<!-- runnable -->` (indented or fenced), each with
/// the fenced block after a following `<!-- output -->`.
fn runnable_blocks(md: &str) -> Vec<Runnable> {
    let lines: Vec<&str> = md.lines().collect();
    let block_at = |mut i: usize| -> (Vec<String>, usize) {
        while i < lines.len() && lines[i].trim().is_empty() {
            i += 1;
        }
        let mut v = Vec::new();
        if lines.get(i).is_some_and(|l| l.starts_with("```")) {
            i += 1;
            while i < lines.len() && !lines[i].starts_with("```") {
                v.push(lines[i].to_string());
                i += 1;
            }
            return (v, i + 1);
        }
        while i < lines.len() && lines[i].starts_with("    ") {
            v.push(lines[i][4..].to_string());
            i += 1;
        }
        (v, i)
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim() != "<!-- runnable -->" {
            i += 1;
            continue;
        }
        let (script, next) = block_at(i + 1);
        assert!(
            !script.is_empty(),
            "an empty runnable block at README line {}",
            i + 1
        );
        // Its shown output: an `<!-- output -->` before the next runnable
        // block or heading.
        let mut shown = Vec::new();
        let mut j = next;
        while j < lines.len()
            && !lines[j].starts_with('#')
            && lines[j].trim() != "<!-- runnable -->"
        {
            if lines[j].trim() == "<!-- output -->" {
                shown = block_at(j + 1).0;
                break;
            }
            j += 1;
        }
        out.push(Runnable {
            script: script.join("\n"),
            shown,
        });
        i = next;
    }
    out
}

/// A UDP port nothing listens on now.
fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What each command in a block must print (besides succeeding): the
/// README's claims about it.
fn key_output(script: &str) -> Vec<&'static str> {
    let mut v = Vec::new();
    for (word, want) in [
        (" hittag ", "leakydrv!LeakOneRecord+0x1e"),
        (" hittag ", "nt!PoolHitTag restored"),
        (" top ", " Leak Nonp"),
        (" watch ", "3 snapshot(s) written to watch"),
        (" trend ", "    1  Leak  Nonp"),
        (" stack ", "leakydrv!LkTouch+0x8"),
    ] {
        if script.contains(word) {
            v.push(want);
        }
    }
    v
}

#[cfg(unix)]
#[test]
fn the_runnable_blocks_run_as_written() {
    use std::os::unix::process::CommandExt;

    let md = readme();
    let blocks = runnable_blocks(&md);
    assert!(blocks.len() >= 3, "{blocks:?}");
    let Some(kit) = kit() else { return };
    let started = Instant::now();
    for b in &blocks {
        let dir = tempfile::Builder::new().prefix("readme").tempdir().unwrap();
        // A fresh clone's data, nothing else.
        std::os::unix::fs::symlink(repo_root().join("testdata"), dir.path().join("testdata"))
            .unwrap();
        let port = free_udp_port();
        let script = b.script.replace("50000", &port.to_string());
        let prelude = format!(
            r#"set -euo pipefail
cargo() {{
    [ "$1" = run ] || {{ echo "README: only \`cargo run\` is expected, not: cargo $*" >&2; return 90; }}
    shift
    local bin={pooldump}
    while [ $# -gt 0 ]; do
        case "$1" in
            --release) shift ;;
            -p) [ "$2" = pooldump-kit-cli ] || {{ echo "README: unknown package $2" >&2; return 91; }}; bin={kit}; shift 2 ;;
            --) shift; break ;;
            *) echo "README: unexpected cargo option $1" >&2; return 92 ;;
        esac
    done
    "$bin" "$@"
}}
"#,
            pooldump = env!("CARGO_BIN_EXE_pooldump"),
            kit = kit.display(),
        );
        let mut c = Command::new("bash");
        c.arg("-c")
            .arg(format!("{prelude}{script}\n"))
            .current_dir(dir.path())
            .env("POOLDUMP_CACHE_DIR", dir.path().join(".cache"))
            .env_remove("_NT_SYMBOL_PATH")
            .env_remove("_NT_ALT_SYMBOL_PATH")
            .env("HTTPS_PROXY", "http://127.0.0.1:9")
            .env("NO_PROXY", "")
            // Its own process group: the background target (and anything
            // else the block starts) is stopped with it.
            .process_group(0)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = c.spawn().unwrap();
        let pgid = child.id();
        let out_pipe = child.stdout.take().unwrap();
        let err_pipe = child.stderr.take().unwrap();
        let read = |mut r: Box<dyn std::io::Read + Send>| {
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = r.read_to_string(&mut s);
                s
            })
        };
        let (out_t, err_t) = (read(Box::new(out_pipe)), read(Box::new(err_pipe)));
        let limit = Duration::from_secs(90);
        let t0 = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break Some(s);
            }
            if t0.elapsed() > limit {
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        // The block's leftovers (the target started with `&`), by group.
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{pgid}")])
            .stderr(std::process::Stdio::null())
            .status();
        let _ = child.wait();
        let (stdout, stderr) = (out_t.join().unwrap(), err_t.join().unwrap());
        let Some(status) = status else {
            panic!("the block still ran after {limit:?}:\n{script}\n{stdout}\n{stderr}");
        };
        assert!(
            status.success(),
            "the README block failed ({status}):\n{script}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
        );
        for line in &b.shown {
            if line.trim() == "..." {
                continue;
            }
            assert!(
                stdout.lines().any(|l| l == line),
                "the README shows {line:?} for\n{script}\nbut it printed:\n{stdout}"
            );
        }
        for want in key_output(&script) {
            assert!(
                stdout.contains(want),
                "no {want:?} from\n{script}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
            );
        }
    }
    // A budget, not a timing test: the whole README within CI's patience.
    assert!(
        started.elapsed() < Duration::from_secs(240),
        "{:?}",
        started.elapsed()
    );
}

/// The library example: the README shows `examples/library.rs` as it is,
/// and it prints what the README says.
#[test]
fn the_library_example_is_the_readmes_and_runs() {
    let md = readme();
    let shown: String = md
        .lines()
        .skip_while(|l| *l != "```rust")
        .skip(1)
        .take_while(|l| *l != "```")
        .map(|l| format!("{l}\n"))
        .collect();
    let file = std::fs::read_to_string(repo_root().join("examples/library.rs")).unwrap();
    let code = &file[file.find("\nuse ").unwrap() + 1..];
    assert_eq!(
        shown, code,
        "README's library example differs from examples/library.rs"
    );

    let Some(exe) = support::example("library") else {
        return;
    };
    let stdout = support::run_ok(Command::new(&exe).current_dir(repo_root()));
    // The five tags with the most bytes, then NSbf's allocations (all of
    // them big-pool entries on the sample), as the README shows them.
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[..5],
        [
            "NSbf Nonp 94213 bytes",
            "FsFl Paged 76084 bytes",
            "LkBf Nonp 73728 bytes",
            "Proc Nonp 41680 bytes",
            "CM   Paged 39120 bytes"
        ]
    );
    assert!(lines.len() > 5, "no allocation of the top tag: {stdout}");
    assert!(lines[5..].iter().all(|l| l.contains(" NSbf ")), "{stdout}");
    assert!(
        md.contains(&format!("```\n{stdout}```\n")),
        "the README does not show what it prints:\n{stdout}"
    );
}
