//! Throughput of kernel virtual reads through a live KDNET session against
//! the simulated target on loopback: the cost of the protocol (AES, HMAC,
//! one request and one ACK per chunk), not of any network. Run with
//! `cargo bench --bench kdnet`.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pooldump_core::{KernelVa, Memory};
use pooldump_kdnet::{KdnetConfig, Session, Timeouts};
use pooldump_kdnet_sim::{SimConfig, SimTarget};
use pooldump_kit::{Machine, NtBuild, Scenario};

const KEY: &str = "1.2.3.4";
/// Bytes per measured read: nt's first 64 KiB (all mapped).
const LEN: usize = 64 * 1024;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("kdnet_read_virtual");
    g.throughput(Throughput::Bytes(LEN as u64));
    g.sample_size(20);
    for chunk in [512u32, 1024, 2048] {
        let m = Machine::build(&Scenario::small(NtBuild::Win10_19041, 1));
        let base = KernelVa(m.truth.kernel.kern_base);
        let cfg = KdnetConfig {
            port: 0,
            key: KEY.parse().unwrap(),
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            timeouts: Timeouts::default(),
            chunk,
            cache_limit: 1 << 30,
        };
        let session = Session::bind(cfg).unwrap();
        let mut sc = SimConfig::new(KEY.parse().unwrap(), session.local_addr().unwrap());
        sc.offer_interval = Duration::from_secs(3);
        let sim = SimTarget::spawn(m, sc).unwrap();
        let live = session.accept().unwrap();
        let mut buf = vec![0u8; LEN];
        g.bench_function(format!("uncached/chunk_{chunk}"), |b| {
            b.iter(|| {
                live.flush_cache();
                live.read_virtual(base, &mut buf).unwrap();
            })
        });
        if chunk == 1024 {
            live.read_virtual(base, &mut buf).unwrap();
            g.bench_function("cached", |b| {
                b.iter(|| live.read_virtual(base, &mut buf).unwrap())
            });
        }
        live.resume().unwrap();
        drop(live);
        drop(sim);
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
