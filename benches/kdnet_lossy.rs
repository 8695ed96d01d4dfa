//! `pooldump` over lossy KDNET links, measured as a user meets it: the
//! whole process, default settings (no `retry=`), against the simulated
//! target holding the bundled sample machine (`testdata/sample`).
//!
//! Links:
//! - `sim N%`: the simulated target on loopback dropping N% of the
//!   datagrams each way (its own fault injection);
//! - `relay N%`: a userspace link between the two (1-5 ms each way,
//!   uniformly random, so datagrams also overtake each other, and N% loss
//!   each way): what a LAN or VPN adds that loopback lacks;
//! - `netem`: a network namespace and a veth pair with `tc netem` (delay
//!   3 ms ± 2 ms, 10% loss, 5% duplicates, reordering) on both ends, when
//!   the machine allows it (root, `sch_netem`); skipped with the reason
//!   otherwise.
//!
//! Per link and command (`analyze`, `find --tag Leak`): wall time from the
//! target's first offer to the process's exit, round trips (requests),
//! reads, retransmissions, timeouts and RESETs, from `--json`'s `kdnet`.
//! The target offers every 3 s, as Windows does; pooldump is started first
//! so the first offer reaches it (a lost offer still costs 3 s, as it
//! would on a real link).
//!
//! Run: `cargo bench --bench kdnet_lossy` (`-- --runs N`, default 5;
//! `-- --quick` for analyze on sim links only).

mod common;
#[path = "../tests/support/netns.rs"]
mod netns;
#[path = "../tests/support/relay.rs"]
mod relay;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pooldump_kdnet_sim::{Faults, SimConfig, SimTarget};
use pooldump_kit::{Machine, scenario};
use serde_json::Value;

const KEY: &str = "1.2.3.4";

#[derive(Clone, Copy, Debug)]
enum Link {
    Sim(f64),
    Relay(f64),
    Netem,
}

impl Link {
    fn name(self) -> String {
        match self {
            Link::Sim(p) => format!("sim {}%", p * 100.0),
            Link::Relay(p) => format!("relay 1-5 ms, {}%", p * 100.0),
            Link::Netem => "netem 1-5 ms, 10%, dup, reorder".into(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Cmd {
    Analyze,
    Find,
}

impl Cmd {
    fn name(self) -> &'static str {
        match self {
            Cmd::Analyze => "analyze",
            Cmd::Find => "find --tag Leak",
        }
    }
    fn args(self, spec: &str, syms: &Path) -> Vec<String> {
        let mut a: Vec<String> = match self {
            Cmd::Analyze => vec!["analyze".into()],
            Cmd::Find => vec!["find".into(), "--tag".into(), "Leak".into()],
        };
        a.extend(
            [
                "--kdnet",
                spec,
                "--symbol-path",
                &syms.display().to_string(),
                "--offline",
                "--json",
            ]
            .map(String::from),
        );
        a
    }
}

#[derive(Debug, Default, Clone)]
struct Run {
    ok: bool,
    wall: Duration,
    round_trips: u64,
    reads: u64,
    retransmissions: u64,
    timeouts: u64,
    resets: u64,
    error: String,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runs = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(5usize);
    let quick = args.iter().any(|a| a == "--quick");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let syms = root.join("testdata/sample/symbols");
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_pooldump"));

    let mut links = vec![Link::Sim(0.0), Link::Sim(0.01), Link::Sim(0.10)];
    let mut cmds = vec![Cmd::Analyze];
    if !quick {
        links.extend([Link::Relay(0.0), Link::Relay(0.10), Link::Netem]);
        cmds.push(Cmd::Find);
    }
    println!(
        "pooldump {} over KDNET, sample machine, default settings, {runs} runs each\n",
        exe.display()
    );
    println!(
        "| link | command | ok | wall median | wall max | round trips | reads | retransmissions | timeouts | RESETs (all runs) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut results: Vec<(Link, Cmd, Vec<Run>)> = Vec::new();
    for &link in &links {
        for &cmd in &cmds {
            let mut rs = Vec::new();
            let mut skipped = None;
            for i in 0..runs {
                match run_once(link, cmd, &exe, &syms, 100 + i as u64) {
                    Ok(r) => rs.push(r),
                    Err(why) => {
                        skipped = Some(why);
                        break;
                    }
                }
            }
            if let Some(why) = skipped {
                println!("| {} | {} | skipped: {why} |", link.name(), cmd.name());
                continue;
            }
            print_row(link, cmd, &rs);
            results.push((link, cmd, rs));
        }
    }
    goals(&results);
}

fn print_row(link: Link, cmd: Cmd, rs: &[Run]) {
    let ok: Vec<&Run> = rs.iter().filter(|r| r.ok).collect();
    let m = |f: fn(&Run) -> f64| common::median(ok.iter().map(|r| f(r)).collect());
    let max = ok.iter().map(|r| r.wall.as_secs_f64()).fold(0.0, f64::max);
    println!(
        "| {} | {} | {}/{} | {:.3} s | {:.3} s | {:.0} | {:.0} | {:.0} | {:.0} | {} |",
        link.name(),
        cmd.name(),
        ok.len(),
        rs.len(),
        m(|r| r.wall.as_secs_f64()),
        max,
        m(|r| r.round_trips as f64),
        m(|r| r.reads as f64),
        m(|r| r.retransmissions as f64),
        m(|r| r.timeouts as f64),
        ok.iter().map(|r| r.resets).sum::<u64>(),
    );
    for r in rs.iter().filter(|r| !r.ok) {
        println!("  failed: {}", r.error.lines().next().unwrap_or(""));
    }
}

/// Issue 13's goals, checked on what was measured.
fn goals(results: &[(Link, Cmd, Vec<Run>)]) {
    let find = |want: &dyn Fn(Link) -> bool, cmd: Cmd| {
        results
            .iter()
            .find(|(l, c, _)| want(*l) && *c == cmd)
            .map(|(_, _, r)| r)
    };
    let wall = |rs: &Vec<Run>| {
        common::median(
            rs.iter()
                .filter(|r| r.ok)
                .map(|r| r.wall.as_secs_f64())
                .collect(),
        )
    };
    println!();
    let pair = |a: Link, b: Link| {
        let same = move |x: Link, y: Link| format!("{x:?}") == format!("{y:?}");
        (
            find(&move |l| same(l, a), Cmd::Analyze),
            find(&move |l| same(l, b), Cmd::Analyze),
        )
    };
    for (clean, lossy) in [
        (Link::Sim(0.0), Link::Sim(0.10)),
        (Link::Relay(0.0), Link::Relay(0.10)),
    ] {
        if let (Some(c), Some(l)) = pair(clean, lossy) {
            let ratio = wall(l) / wall(c);
            println!(
                "goal: 10% loss within 3x lossless ({} vs {}): {:.1}x {}",
                lossy.name(),
                clean.name(),
                ratio,
                verdict(ratio <= 3.0)
            );
        }
    }
    if let (Some(c), _) = pair(Link::Sim(0.0), Link::Sim(0.0)) {
        let rt = common::median(c.iter().map(|r| r.round_trips as f64).collect());
        let reads = common::median(c.iter().map(|r| r.reads as f64).collect());
        println!(
            "goal: lossless round trips at most 1.2x the reads: {rt:.0} / {reads:.0} = {:.3} {}",
            rt / reads,
            verdict(rt <= 1.2 * reads)
        );
    }
    if let (Some(one), _) = pair(Link::Sim(0.01), Link::Sim(0.01)) {
        let resets: u64 = one.iter().map(|r| r.resets).sum();
        println!(
            "goal: no RESET at 1% loss: {resets} {}",
            verdict(resets == 0)
        );
    }
    for (cmd, limit) in [(Cmd::Analyze, 30.0), (Cmd::Find, 120.0)] {
        for lossy in [Link::Sim(0.10), Link::Relay(0.10), Link::Netem] {
            let same = move |x: Link| format!("{x:?}") == format!("{lossy:?}");
            if let Some(rs) = find(&same, cmd) {
                let worst = rs.iter().map(|r| r.wall.as_secs_f64()).fold(0.0, f64::max);
                let all_ok = rs.iter().all(|r| r.ok);
                println!(
                    "goal: {} over {} under {limit} s: worst {worst:.2} s {}",
                    cmd.name(),
                    lossy.name(),
                    verdict(all_ok && worst < limit)
                );
            }
        }
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok { "(met)" } else { "(NOT met)" }
}

/// One process against a fresh target; `Err` when the link cannot be made
/// here (netem).
fn run_once(link: Link, cmd: Cmd, exe: &Path, syms: &Path, seed: u64) -> Result<Run, String> {
    let m = Machine::build(&scenario::sample());
    let mut cfg = SimConfig::new(KEY.parse().unwrap(), (Ipv4Addr::LOCALHOST, 0).into());
    cfg.offer_interval = Duration::from_secs(3);
    cfg.seed = seed;
    let mut _pair = None;
    let mut _relay = None;
    let mut command;
    match link {
        Link::Sim(p) | Link::Relay(p) => {
            let port = common::free_port();
            let host = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            if let Link::Sim(_) = link {
                cfg.host = host;
                cfg.faults = Faults {
                    drop: p,
                    ..Faults::default()
                };
            } else {
                let how = relay::Impairment {
                    loss: p,
                    duplicate: 0.0,
                    seed,
                };
                let r = relay::Relay::spawn(host, Ipv4Addr::LOCALHOST.into(), how);
                cfg.host = r.target_side;
                _relay = Some(r);
            }
            command = Command::new(exe);
            command.args(cmd.args(&format!("port={port},key={KEY}"), syms));
        }
        Link::Netem => {
            let pair = netns::NetPair::create()?;
            pair.netem(netns::LOSSY_LINK)?;
            cfg.bind = pair.root_addr.into();
            cfg.host = (pair.ns_addr, 50000).into();
            command = pair.command(exe);
            command.args(cmd.args(&format!("port=50000,key={KEY}"), syms));
            _pair = Some(pair);
        }
    }
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run pooldump: {e}"))?;
    // Let it bind before the target's first offer.
    std::thread::sleep(Duration::from_millis(150));
    let start = Instant::now();
    let sim = SimTarget::spawn(m, cfg).map_err(|e| format!("simulated target: {e}"))?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let wall = start.elapsed();
    let running = sim.stats().running;
    drop(sim);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let k = &v["kdnet"];
    let n = |f: &str| k[f].as_u64().unwrap_or(0);
    Ok(Run {
        ok: out.status.success() && running,
        wall,
        round_trips: n("round_trips"),
        reads: n("reads"),
        retransmissions: n("retransmissions"),
        timeouts: n("timeouts"),
        resets: n("resets"),
        error: if running {
            String::from_utf8_lossy(&out.stderr).into_owned()
        } else {
            "the target was left stopped".into()
        },
    })
}
