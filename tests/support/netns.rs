//! A real network between two ends of a KDNET session: a network namespace
//! joined to the root namespace by a veth pair, with `tc netem` delay,
//! jitter, loss, duplication and reordering on both ends, so the timing a
//! session sees is the kernel's, not a simulator's.
//!
//! The simulated target runs in the test process on the root side
//! (`root_addr`); `pooldump` runs inside the namespace (`command`,
//! `ip netns exec`), listening on `ns_addr`. Needs root (CAP_SYS_ADMIN and
//! CAP_NET_ADMIN), iproute2 and, for [`NetPair::netem`], the kernel's
//! `sch_netem` qdisc. Self-contained (errors are strings), so the
//! `kdnet_lossy` bench includes it too.

#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// netem with what a lab link does: 1-5 ms of delay each way (3 ms ± 2 ms),
/// 10% loss, duplicates and reordering (a quarter of the datagrams go out
/// at once, overtaking delayed ones).
pub const LOSSY_LINK: &[&str] = &[
    "delay",
    "3ms",
    "2ms",
    "loss",
    "10%",
    "duplicate",
    "5%",
    "reorder",
    "25%",
    "50%",
];

/// A namespace, a veth pair and their addresses; removed on drop.
pub struct NetPair {
    pub ns: String,
    pub root_if: String,
    pub ns_if: String,
    pub root_addr: Ipv4Addr,
    pub ns_addr: Ipv4Addr,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Run `program args`; the error says what failed and what it printed.
fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `{program}`: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl NetPair {
    /// Make the namespace and the pair, addresses 10.b.c.1 (root side)
    /// and 10.b.c.2 (namespace side), unique per process and call.
    pub fn create() -> Result<Self, String> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        // Interface names have at most 15 characters.
        let tag = format!("{:04x}{}", pid & 0xFFFF, n % 100);
        let b = 100 + (pid % 100) as u8;
        let c = (n % 250) as u8 + 1;
        let pair = Self {
            ns: format!("pooldump-{pid}-{n}"),
            root_if: format!("pdk{tag}r"),
            ns_if: format!("pdk{tag}n"),
            root_addr: Ipv4Addr::new(10, b, c, 1),
            ns_addr: Ipv4Addr::new(10, b, c, 2),
        };
        run("ip", &["netns", "add", &pair.ns])?;
        // From here on, drop cleans up whatever was made.
        let (ns, r, i) = (pair.ns.as_str(), pair.root_if.as_str(), pair.ns_if.as_str());
        run("ip", &["link", "add", r, "type", "veth", "peer", "name", i])?;
        run("ip", &["link", "set", i, "netns", ns])?;
        run(
            "ip",
            &["addr", "add", &format!("{}/24", pair.root_addr), "dev", r],
        )?;
        run("ip", &["link", "set", r, "up"])?;
        run(
            "ip",
            &[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{}/24", pair.ns_addr),
                "dev",
                i,
            ],
        )?;
        run("ip", &["-n", ns, "link", "set", i, "up"])?;
        run("ip", &["-n", ns, "link", "set", "lo", "up"])?;
        Ok(pair)
    }

    /// `tc qdisc add ... root netem SPEC` on both ends, so both directions
    /// are impaired.
    pub fn netem(&self, spec: &[&str]) -> Result<(), String> {
        let mut a = vec![
            "qdisc",
            "add",
            "dev",
            self.root_if.as_str(),
            "root",
            "netem",
        ];
        a.extend_from_slice(spec);
        run("tc", &a)?;
        let mut b = vec![
            "-n",
            self.ns.as_str(),
            "qdisc",
            "add",
            "dev",
            self.ns_if.as_str(),
            "root",
            "netem",
        ];
        b.extend_from_slice(spec);
        run("tc", &b)
    }

    /// `program`, to be run inside the namespace.
    pub fn command(&self, program: &Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns]).arg(program);
        c
    }
}

impl Drop for NetPair {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the pair, and with it
        // the other end; the explicit delete covers a half-made pair.
        let _ = run("ip", &["link", "del", &self.root_if]);
        let _ = run("ip", &["netns", "del", &self.ns]);
    }
}
