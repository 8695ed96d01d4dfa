use std::time::Duration;

use super::*;
use crate::key::KdnetSpec;
use crate::link::Timeouts;

#[test]
fn chunk_sizes_are_powers_of_two_within_one_reply() {
    let cfg = |chunk| KdnetConfig {
        chunk,
        ..KdnetConfig::from("key=1.2.3.4".parse::<KdnetSpec>().unwrap())
    };
    assert_eq!(cfg(1024).block_size(), 1024);
    assert_eq!(cfg(1000).block_size(), 512);
    assert_eq!(cfg(3944).block_size(), 2048);
    assert_eq!(cfg(0).block_size(), 64);
    assert_eq!(cfg(u32::MAX).block_size(), 2048);
}

#[test]
fn retry_fixes_the_timer() {
    let c = KdnetConfig::from("key=1.2.3.4,retry=50".parse::<KdnetSpec>().unwrap());
    assert_eq!(c.timeouts.fixed_rto, Some(Duration::from_millis(50)));
    let c = KdnetConfig::from("key=1.2.3.4".parse::<KdnetSpec>().unwrap());
    assert_eq!(c.timeouts, Timeouts::default());
}
