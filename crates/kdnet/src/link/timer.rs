//! When to give up and when to try again: the [`Timeouts`] a session is
//! configured with, and the measured retransmission timer
//! ([`RttEstimator`]).

use std::time::Duration;

/// How long to wait, and when to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// How long to wait for the target's first offer. Targets offer every
    /// 3 s; the default covers three periods.
    pub offer: Duration,
    /// The retransmission timeout before any round trip was measured.
    pub initial_rto: Duration,
    /// The smallest retransmission timeout, however fast the link.
    pub min_rto: Duration,
    /// The largest, however slow the link or long the back-off.
    pub max_rto: Duration,
    /// A fixed retransmission timeout instead of the measured one
    /// (`retry=MS` in the connection spec): no adaptation, no back-off.
    pub fixed_rto: Option<Duration>,
    /// Timeouts of one request, each answered by resending the missing
    /// packet, before RESET is tried as well.
    pub resends_before_reset: u32,
    /// RESET is never sent before one request has waited this long: a
    /// short burst of loss is ridden out by resending alone.
    pub reset_after: Duration,
    /// A request (or break-in) that has not been answered after this long
    /// fails with [`KdnetError::NoResponse`](crate::KdnetError::NoResponse) and ends the session.
    pub give_up: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            offer: Duration::from_secs(10),
            // Before the first sample: well below WinDbg's ~0.5 s timer
            // (the first exchanges are idempotent: a response, a RESEND, a
            // break-in, so an early resend costs one datagram), above a
            // LAN's round trip.
            initial_rto: Duration::from_millis(100),
            // poll(2) waits with hrtimer precision (~50 us slack).
            min_rto: Duration::from_micros(100),
            max_rto: Duration::from_secs(2),
            fixed_rto: None,
            resends_before_reset: 4,
            reset_after: Duration::from_millis(250),
            give_up: Duration::from_secs(15),
        }
    }
}

impl Timeouts {
    /// `retry=`: a fixed retransmission timeout, everything else default.
    pub fn fixed(rto: Duration) -> Self {
        Self {
            fixed_rto: Some(rto),
            ..Self::default()
        }
    }
}

/// The retransmission timer of RFC 6298 (§2, §5): a smoothed round-trip
/// time and its variation, with exponential back-off. As in QUIC (RFC 9002
/// §6.2.1), the back-off ends when an exchange completes, not only when it
/// gives a sample: on a link that reorders, many exchanges are resent and
/// give none, and a back-off kept until the next sample ratchets the timer
/// up to its ceiling.
///
/// ```
/// use std::time::Duration;
/// use pooldump_kdnet::{RttEstimator, Timeouts};
/// let mut r = RttEstimator::new(&Timeouts::default());
/// assert_eq!(r.rto(), Duration::from_millis(100)); // no sample yet
/// r.sample(Duration::from_millis(10));
/// // SRTT 10 ms, RTTVAR 5 ms: RTO = 10 + 4 * 5 ms.
/// assert_eq!(r.rto(), Duration::from_millis(30));
/// r.back_off();
/// assert_eq!(r.rto(), Duration::from_millis(60));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RttEstimator {
    srtt: Option<Duration>,
    rttvar: Duration,
    /// The timer before back-off.
    base: Duration,
    /// Timeouts since the last completed exchange (the back-off exponent).
    backoff: u32,
    min: Duration,
    max: Duration,
    fixed: bool,
}

/// RFC 6298's clock granularity G: the variance term never goes below it.
/// The clock is `Instant` and the wait poll(2) with a timespec, so G is the
/// timer slack, not a tick.
const GRANULARITY: Duration = Duration::from_micros(50);

impl RttEstimator {
    /// An estimator with no measurement yet: its timeout is `t`'s fixed
    /// one, or its initial one clamped to its bounds.
    pub fn new(t: &Timeouts) -> Self {
        let (base, fixed) = match t.fixed_rto {
            Some(f) => (f, true),
            None => (t.initial_rto.clamp(t.min_rto, t.max_rto), false),
        };
        Self {
            srtt: None,
            rttvar: Duration::ZERO,
            base,
            backoff: 0,
            min: t.min_rto,
            max: t.max_rto.max(t.min_rto),
            fixed,
        }
    }

    /// The current retransmission timeout.
    pub fn rto(&self) -> Duration {
        if self.fixed {
            return self.base;
        }
        self.base
            .checked_mul(1u32 << self.backoff.min(16))
            .unwrap_or(self.max)
            .min(self.max)
    }

    /// The smoothed round-trip time, once measured.
    pub fn srtt(&self) -> Option<Duration> {
        self.srtt
    }

    /// The round-trip time's variation (zero until measured).
    pub fn rttvar(&self) -> Duration {
        self.rttvar
    }

    /// A round trip measured on an exchange that was not retransmitted.
    pub fn sample(&mut self, r: Duration) {
        let (srtt, rttvar) = match self.srtt {
            // §2.2: the first measurement.
            None => (r, r / 2),
            // §2.3: alpha = 1/8, beta = 1/4.
            Some(s) => {
                let err = s.abs_diff(r);
                ((s * 7 + r) / 8, (self.rttvar * 3 + err) / 4)
            }
        };
        self.srtt = Some(srtt);
        self.rttvar = rttvar;
        self.backoff = 0;
        if !self.fixed {
            self.base = (srtt + (rttvar * 4).max(GRANULARITY)).clamp(self.min, self.max);
        }
    }

    /// §5.5: a timeout doubles the timer, up to the ceiling.
    pub fn back_off(&mut self) {
        if self.rto() < self.max {
            self.backoff += 1;
        }
    }

    /// An exchange completed (perhaps after retransmissions, so without a
    /// sample): the link works again, and the back-off ends.
    pub fn completed(&mut self) {
        self.backoff = 0;
    }
}
