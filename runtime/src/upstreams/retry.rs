//! When a failed upstream exchange may be tried again, how long to wait, and the budget that
//! keeps retries a small fraction of a route's traffic during an outage.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use http::Method;

/// Retry settings of a route (`retries` in the handler options).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetrySettings {
    /// Retries after the first attempt (0: none).
    pub max_retries: u32,
    /// Retries allowed as a percentage of the route's requests (1–100), on top of a reserve of
    /// [`RESERVE_RETRIES`].
    pub budget_percent: u32,
    /// The base of the jittered exponential backoff between attempts on the same upstream.
    pub backoff: Duration,
}

/// Retries a route may make beyond its percentage: what lets a quiet route retry at all, and
/// the most a long healthy period can save up.
pub const RESERVE_RETRIES: i64 = 10;
/// The longest pause between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// One retry, in the budget's units.
const TOKEN: i64 = 1000;

/// A token bucket shared by every request of a route: each request adds `budget_percent`
/// hundredths of a retry, each retry takes one, and the balance never exceeds the reserve.
/// When every request fails, retries settle at `budget_percent` of the requests.
#[derive(Debug)]
pub struct RetryBudget {
    /// Thousandths of a retry.
    balance: AtomicI64,
    deposit: i64,
}

impl RetryBudget {
    /// A full budget allowing `percent` % retries.
    pub fn new(percent: u32) -> Self {
        RetryBudget { balance: AtomicI64::new(RESERVE_RETRIES * TOKEN), deposit: i64::from(percent.min(100)) * TOKEN / 100 }
    }

    /// Credits one request.
    pub fn deposit(&self) {
        let cap = RESERVE_RETRIES * TOKEN;
        if self.balance.load(Ordering::Relaxed) >= cap {
            return;
        }
        let _ = self.balance.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| Some((b + self.deposit).min(cap)));
    }

    /// Takes one retry; false when the budget is spent.
    pub fn withdraw(&self) -> bool {
        self.balance.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| (b >= TOKEN).then_some(b - TOKEN)).is_ok()
    }
}

/// Whether `method` is idempotent (RFC 9110 §9.2.2): sending it twice has the effect of once.
pub fn is_idempotent(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE)
}

/// The pause before retry number `retry` (0 for the first) on the same upstream: the base
/// doubled per retry, capped at one second, and a random part of it (between half and all),
/// so that clients failing together do not retry together.
pub fn backoff(base: Duration, retry: u32) -> Duration {
    let full = base.saturating_mul(1u32 << retry.min(10)).min(MAX_BACKOFF);
    let half = full / 2;
    let spread = u64::try_from((full - half).as_micros()).unwrap_or(0);
    half + Duration::from_micros(fastrand::u64(0..=spread))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_limits_retries_to_a_percentage_plus_the_reserve() {
        let b = RetryBudget::new(20);
        let mut retries = 0;
        // Every request fails and would retry once.
        for _ in 0..100 {
            b.deposit();
            if b.withdraw() {
                retries += 1;
            }
        }
        // The reserve (10), then one retry per five requests.
        assert!((28..=30).contains(&retries), "{retries}");
        assert!(!b.withdraw() || !b.withdraw(), "spent");
    }

    #[test]
    fn budget_saves_up_no_more_than_the_reserve() {
        let b = RetryBudget::new(50);
        for _ in 0..10_000 {
            b.deposit();
        }
        let mut n = 0;
        while b.withdraw() {
            n += 1;
        }
        assert_eq!(n, RESERVE_RETRIES);
        b.deposit();
        b.deposit();
        assert!(b.withdraw(), "two requests at 50 % pay one retry");
        assert!(!b.withdraw());
    }

    #[test]
    fn idempotent_methods() {
        for m in [Method::GET, Method::HEAD, Method::OPTIONS, Method::PUT, Method::DELETE] {
            assert!(is_idempotent(&m), "{m}");
        }
        for m in [Method::POST, Method::PATCH, Method::CONNECT] {
            assert!(!is_idempotent(&m), "{m}");
        }
    }

    #[test]
    fn backoff_is_jittered_grows_and_is_capped() {
        let base = Duration::from_millis(20);
        for _ in 0..100 {
            let d0 = backoff(base, 0);
            assert!(d0 >= Duration::from_millis(10) && d0 <= base, "{d0:?}");
            let d2 = backoff(base, 2);
            assert!(d2 >= Duration::from_millis(40) && d2 <= Duration::from_millis(80), "{d2:?}");
            assert!(backoff(base, 30) <= MAX_BACKOFF);
        }
        assert_eq!(backoff(Duration::ZERO, 3), Duration::ZERO);
    }
}
