use std::time::Duration;

use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn the_timer_follows_rfc_6298() {
    let t = Timeouts::default();
    let mut r = RttEstimator::new(&t);
    assert_eq!(r.rto(), t.initial_rto);
    assert_eq!(r.srtt(), None);
    // §2.2: SRTT = R, RTTVAR = R/2, RTO = SRTT + 4 RTTVAR.
    r.sample(ms(40));
    assert_eq!(r.srtt(), Some(ms(40)));
    assert_eq!(r.rttvar(), ms(20));
    assert_eq!(r.rto(), ms(120));
    // §2.3: RTTVAR = 3/4 RTTVAR + 1/4 |SRTT - R|, SRTT = 7/8 SRTT + 1/8 R.
    r.sample(ms(80));
    assert_eq!(r.rttvar(), ms(25));
    assert_eq!(r.srtt(), Some(ms(45)));
    assert_eq!(r.rto(), ms(145));
    // §5.5: back-off doubles, up to the ceiling.
    for _ in 0..10 {
        r.back_off();
    }
    assert_eq!(r.rto(), t.max_rto);
    // A new sample recomputes (§5.7).
    r.sample(ms(45));
    assert!(r.rto() < ms(200), "{:?}", r.rto());
    // A completed exchange ends the back-off without a sample.
    let before = r.rto();
    r.back_off();
    r.back_off();
    assert_eq!(r.rto(), before * 4);
    r.completed();
    assert_eq!(r.rto(), before);
}

#[test]
fn the_timer_has_a_floor_a_granularity_and_a_fixed_mode() {
    let t = Timeouts::default();
    let mut r = RttEstimator::new(&t);
    // A loopback target: many identical 50 us round trips drive the
    // variance to zero; the timer stays at SRTT + G, above the floor.
    for _ in 0..100 {
        r.sample(Duration::from_micros(50));
    }
    assert!(r.rttvar() < Duration::from_micros(5));
    assert_eq!(r.rto(), t.min_rto);
    let mut f = RttEstimator::new(&Timeouts::fixed(ms(50)));
    assert_eq!(f.rto(), ms(50));
    f.sample(ms(1));
    f.back_off();
    assert_eq!(f.rto(), ms(50));
    // Measurements are still kept for the statistics.
    assert_eq!(f.srtt(), Some(ms(1)));
}
