//! Crawler verification (SPEC §2, "Crawlers that lie"): anyone can send
//! Googlebot's User-Agent, so a claim to be a crawler whose operator
//! publishes how to verify it is checked against the client address —
//! reverse DNS with forward confirmation ([`dns`]) or the operator's
//! published IP ranges ([`ranges`]).
//!
//! Checks never delay a request that does not need their answer: a claim
//! whose verdict is not cached starts one lookup in the background (one per
//! crawler and address, however many requests ask at once) and the request
//! goes on. Verdicts are cached — verified for [`VERIFIED_TTL`], failed for
//! [`FAILED_TTL`], unanswered for [`ERROR_TTL`] — in a bounded LRU.
//!
//! With `verify_crawlers = "enforce"`, [`RenderGate`] decides what a miss
//! may do: a failed claim is answered like a person, and bots that are not
//! verified crawlers share the per-site [`budget::UnverifiedBudget`].

pub mod budget;
pub mod claims;
pub mod dns;
pub mod ranges;

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use lru::LruCache;
use parking_lot::Mutex;
use prometheus::IntCounter;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::metrics::Metrics;
use claims::{ClaimMatcher, Method, CRAWLERS};
use dns::CrawlerDns;
use ranges::IpRanges;

/// A verified address stays verified this long (SPEC §2).
pub const VERIFIED_TTL: Duration = Duration::from_secs(24 * 3600);
/// A failed claim is not checked again for this long (SPEC §2).
pub const FAILED_TTL: Duration = Duration::from_secs(3600);
/// A check the resolver did not answer is tried again after this: a DNS
/// outage must not mark real crawlers as failed for an hour.
pub const ERROR_TTL: Duration = Duration::from_secs(60);
/// Verdicts kept (crawler and address each); the least recently used go
/// first. About 100 bytes each, so ≈ 10 MB at most.
pub const MAX_CACHED_VERDICTS: usize = 100_000;
/// DNS checks running at once. A flood of claims from new addresses gets
/// no more lookups than this; the rest count as `error` (not checked) and
/// are asked again by their next request.
pub const MAX_CHECKS_IN_FLIGHT: usize = 256;
/// With `enforce`, a miss waits this long for its claim's check, then
/// counts it as failed (SPEC §2).
pub const ENFORCE_WAIT: Duration = Duration::from_secs(2);

/// `verify_crawlers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyMode {
    /// Nothing is checked.
    Off,
    /// Claims are checked in the background and counted; nothing changes.
    Log,
    /// Failed claims are answered like people; unverified bots share a
    /// render budget.
    Enforce,
}

/// The outcome of one check, the `result` label of
/// `prerender_crawler_verifications_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The address is the claimed crawler's.
    Verified,
    /// It is not: no PTR record, a name outside the operator's domains, a
    /// name that does not resolve back, an address outside the published
    /// ranges, or a private address.
    Failed,
    /// No answer: the resolver failed or timed out, or too many checks were
    /// running. Treated as failed by `enforce`, cached only briefly.
    Error,
}

impl Verdict {
    pub const ALL: [Verdict; 3] = [Verdict::Verified, Verdict::Failed, Verdict::Error];

    pub fn label(self) -> &'static str {
        match self {
            Verdict::Verified => "verified",
            Verdict::Failed => "failed",
            Verdict::Error => "error",
        }
    }

    fn index(self) -> usize {
        match self {
            Verdict::Verified => 0,
            Verdict::Failed => 1,
            Verdict::Error => 2,
        }
    }

    fn ttl(self) -> Duration {
        match self {
            Verdict::Verified => VERIFIED_TTL,
            Verdict::Failed => FAILED_TTL,
            Verdict::Error => ERROR_TTL,
        }
    }
}

/// What is known of a request's claim when it arrives.
#[derive(Debug)]
pub enum Standing {
    /// `verify_crawlers = "off"`.
    Unchecked,
    /// The User-Agent claims no crawler that publishes a method (SEO tools,
    /// unknown bots): an unverified bot.
    NoClaim,
    /// The claim's verdict.
    Known(Verdict),
    /// A check of the claim is running.
    Pending(watch::Receiver<Option<Verdict>>),
}

impl Standing {
    /// For the log line: `off`, `none`, `pending` or the verdict.
    pub fn label(&self) -> &'static str {
        match self {
            Standing::Unchecked => "off",
            Standing::NoClaim => "none",
            Standing::Known(v) => v.label(),
            Standing::Pending(_) => "pending",
        }
    }

    /// The verdict, waiting up to `wait` for a running check; `None` when
    /// there is no claim or the check did not finish in time.
    pub async fn settle(self, wait: Duration) -> Option<Verdict> {
        match self {
            Standing::Known(v) => Some(v),
            Standing::Pending(mut rx) => {
                match tokio::time::timeout(wait, rx.wait_for(Option::is_some)).await {
                    Ok(Ok(v)) => *v,
                    _ => None,
                }
            }
            Standing::Unchecked | Standing::NoClaim => None,
        }
    }
}

type CheckKey = (usize, IpAddr);

struct Check {
    /// Requests that asked while it ran, counted when it ends.
    claims: u64,
    done: watch::Sender<Option<Verdict>>,
}

struct State {
    verdicts: LruCache<CheckKey, (Verdict, Instant)>,
    running: HashMap<CheckKey, Check>,
}

/// Checks crawler claims and remembers the verdicts.
pub struct CrawlerVerifier {
    mode: VerifyMode,
    claims: ClaimMatcher,
    ranges: IpRanges,
    /// `None` when no resolver could be set up: DNS claims end as `error`.
    dns: Option<Arc<dyn CrawlerDns>>,
    state: Mutex<State>,
    /// `crawler_verifications_total` by crawler index, then verdict.
    counters: Vec<[IntCounter; 3]>,
    /// Where checks run (the shared runtime, not a listener thread's).
    runtime: tokio::runtime::Handle,
}

impl CrawlerVerifier {
    /// Must be called on the runtime the checks should run on.
    pub fn new(
        mode: VerifyMode,
        ranges: IpRanges,
        dns: Option<Arc<dyn CrawlerDns>>,
        metrics: &Metrics,
    ) -> Arc<CrawlerVerifier> {
        let counters = CRAWLERS
            .iter()
            .map(|c| Verdict::ALL.map(|v| metrics.crawler_verifications(c.name, v.label())))
            .collect();
        Arc::new(CrawlerVerifier {
            mode,
            claims: ClaimMatcher::new(),
            ranges,
            dns,
            state: Mutex::new(State {
                verdicts: LruCache::new(
                    NonZeroUsize::new(MAX_CACHED_VERDICTS).expect("non-zero constant"),
                ),
                running: HashMap::new(),
            }),
            counters,
            runtime: tokio::runtime::Handle::current(),
        })
    }

    pub fn mode(&self) -> VerifyMode {
        self.mode
    }

    /// Verdicts cached now.
    pub fn cached_verdicts(&self) -> usize {
        self.state.lock().verdicts.len()
    }

    fn count(&self, crawler: usize, verdict: Verdict, n: u64) {
        self.counters[crawler][verdict.index()].inc_by(n);
    }

    /// The standing of a request from `client` with `user_agent`: counts
    /// the claim and, when its verdict is not cached, starts (or joins) a
    /// check in the background. Never waits.
    pub fn standing(self: &Arc<Self>, user_agent: &str, client: IpAddr) -> Standing {
        self.standing_of(user_agent, || client)
    }

    /// [`CrawlerVerifier::standing`] where the client address is worked
    /// out only for a claim (most bots make none).
    pub fn standing_of(
        self: &Arc<Self>,
        user_agent: &str,
        client: impl FnOnce() -> IpAddr,
    ) -> Standing {
        self.standing_at(user_agent, client, Instant::now())
    }

    /// [`CrawlerVerifier::standing_of`] at `now` (cached verdicts older
    /// than their TTL at `now` are checked again).
    fn standing_at(
        self: &Arc<Self>,
        user_agent: &str,
        client: impl FnOnce() -> IpAddr,
        now: Instant,
    ) -> Standing {
        if self.mode == VerifyMode::Off {
            return Standing::Unchecked;
        }
        let Some(crawler) = self.claims.claim(user_agent) else {
            return Standing::NoClaim;
        };
        let client = client().to_canonical();
        let domains = match CRAWLERS[crawler].method {
            // No public crawler connects from an internal address (and its
            // PTR records are whatever the local network says): such claims
            // fail without a lookup, so none leaves for a local client.
            _ if crate::address::is_internal(client) => {
                self.count(crawler, Verdict::Failed, 1);
                return Standing::Known(Verdict::Failed);
            }
            Method::IpRanges => {
                let verdict = if self.ranges.contains(CRAWLERS[crawler].name, client) {
                    Verdict::Verified
                } else {
                    Verdict::Failed
                };
                self.count(crawler, verdict, 1);
                return Standing::Known(verdict);
            }
            Method::ReverseDns(domains) => domains,
        };
        let key = (crawler, client);
        let mut state = self.state.lock();
        if let Some(&(verdict, until)) = state.verdicts.get(&key) {
            if now < until {
                drop(state);
                self.count(crawler, verdict, 1);
                return Standing::Known(verdict);
            }
            state.verdicts.pop(&key);
        }
        if let Some(check) = state.running.get_mut(&key) {
            check.claims += 1;
            return Standing::Pending(check.done.subscribe());
        }
        let Some(dns) = self.dns.clone() else {
            drop(state);
            self.count(crawler, Verdict::Error, 1);
            return Standing::Known(Verdict::Error);
        };
        if state.running.len() >= MAX_CHECKS_IN_FLIGHT {
            drop(state);
            self.count(crawler, Verdict::Error, 1);
            return Standing::Known(Verdict::Error);
        }
        let (done, rx) = watch::channel(None);
        state.running.insert(key, Check { claims: 1, done });
        drop(state);
        let this = self.clone();
        self.runtime.spawn(async move {
            let verdict = dns::check(dns.as_ref(), client, domains).await;
            this.finish(key, verdict);
        });
        Standing::Pending(rx)
    }

    /// Records a check's verdict, counts every claim that waited for it
    /// and wakes the requests waiting.
    fn finish(&self, key: CheckKey, verdict: Verdict) {
        let check = {
            let mut state = self.state.lock();
            state
                .verdicts
                .put(key, (verdict, Instant::now() + verdict.ttl()));
            state.running.remove(&key)
        };
        if verdict != Verdict::Verified {
            tracing::info!(
                crawler = CRAWLERS[key.0].name,
                client = %key.1,
                result = verdict.label(),
                "crawler claim not verified"
            );
        }
        if let Some(check) = check {
            self.count(key.0, verdict, check.claims);
            let _ = check.done.send(Some(verdict));
        }
    }
}

/// What a miss may do under `enforce`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Render it.
    Render,
    /// A failed claim: answer it like a person, from the origin.
    AsPerson,
    /// The site's budget for unverified bots is used up this minute.
    RateLimited,
}

/// The `enforce` decisions for misses (hits are never limited).
pub struct RenderGate {
    mode: VerifyMode,
    budget: budget::UnverifiedBudget,
}

impl RenderGate {
    pub fn new(mode: VerifyMode, budget: budget::UnverifiedBudget) -> Self {
        RenderGate { mode, budget }
    }

    /// Whether a request with this standing must be answered like a person
    /// before anything else (its claim is known to have failed).
    pub fn known_impostor(&self, standing: &Standing) -> bool {
        self.mode == VerifyMode::Enforce
            && matches!(standing, Standing::Known(Verdict::Failed | Verdict::Error))
    }

    /// Whether a miss of `site_key` from a request with `standing` may be
    /// rendered.
    pub async fn admit(&self, standing: Standing, site_key: &str) -> Admission {
        if self.mode != VerifyMode::Enforce {
            return Admission::Render;
        }
        match standing {
            Standing::Unchecked => Admission::Render,
            Standing::NoClaim => {
                if self.budget.admit(site_key).await {
                    Admission::Render
                } else {
                    Admission::RateLimited
                }
            }
            claim => match claim.settle(ENFORCE_WAIT).await {
                Some(Verdict::Verified) => Admission::Render,
                _ => Admission::AsPerson,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::dns::fake::FakeDns;
    use super::*;
    use std::sync::atomic::Ordering;

    const GOOGLEBOT: &str =
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
    const GPTBOT: &str = "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn fake(delay: Duration) -> Arc<FakeDns> {
        Arc::new(FakeDns::with_googlebot(delay))
    }

    fn verifier(mode: VerifyMode, dns: Arc<FakeDns>) -> (Arc<CrawlerVerifier>, Arc<Metrics>) {
        let metrics = Metrics::new();
        let v = CrawlerVerifier::new(mode, IpRanges::built_in(), Some(dns), &metrics);
        (v, metrics)
    }

    fn counted(metrics: &Metrics, family: &str, result: &str) -> u64 {
        metrics.crawler_verifications(family, result).get()
    }

    #[tokio::test]
    async fn concurrent_claims_from_one_address_share_one_lookup_and_are_all_counted() {
        let dns = fake(Duration::from_millis(200));
        let (v, metrics) = verifier(VerifyMode::Log, dns.clone());
        let standings: Vec<Standing> = (0..5)
            .map(|_| v.standing(GOOGLEBOT, ip("66.249.66.1")))
            .collect();
        assert!(standings.iter().all(|s| matches!(s, Standing::Pending(_))));
        for s in standings {
            assert_eq!(
                s.settle(Duration::from_secs(10)).await,
                Some(Verdict::Verified)
            );
        }
        assert_eq!(dns.reverse_calls.load(Ordering::SeqCst), 1);
        assert_eq!(counted(&metrics, "googlebot", "verified"), 5);
        // Cached from now on: no lookup, counted at once.
        assert!(matches!(
            v.standing(GOOGLEBOT, ip("66.249.66.1")),
            Standing::Known(Verdict::Verified)
        ));
        assert_eq!(dns.reverse_calls.load(Ordering::SeqCst), 1);
        assert_eq!(counted(&metrics, "googlebot", "verified"), 6);
    }

    #[tokio::test]
    async fn verdicts_expire_after_their_ttl() {
        let dns = fake(Duration::ZERO);
        let (v, _) = verifier(VerifyMode::Log, dns.clone());
        for (client, verdict, ttl) in [
            ("66.249.66.1", Verdict::Verified, VERIFIED_TTL),
            ("192.0.2.44", Verdict::Failed, FAILED_TTL),
            ("203.0.113.7", Verdict::Error, ERROR_TTL),
        ] {
            let calls = dns.reverse_calls.load(Ordering::SeqCst);
            let now = Instant::now();
            let s = v.standing_at(GOOGLEBOT, || ip(client), now);
            assert_eq!(s.settle(Duration::from_secs(10)).await, Some(verdict));
            let before = now + ttl - Duration::from_secs(1);
            assert!(
                matches!(v.standing_at(GOOGLEBOT, || ip(client), before), Standing::Known(x) if x == verdict)
            );
            let after = Instant::now() + ttl + Duration::from_secs(1);
            let again = v.standing_at(GOOGLEBOT, || ip(client), after);
            assert!(matches!(again, Standing::Pending(_)), "{client}");
            assert_eq!(again.settle(Duration::from_secs(10)).await, Some(verdict));
            assert_eq!(
                dns.reverse_calls.load(Ordering::SeqCst),
                calls + 2,
                "{client}"
            );
        }
    }

    #[tokio::test]
    async fn ranges_private_addresses_and_other_bots_need_no_lookup() {
        let dns = fake(Duration::ZERO);
        let (v, metrics) = verifier(VerifyMode::Log, dns.clone());
        assert!(matches!(
            v.standing(GPTBOT, ip("20.171.206.9")),
            Standing::Known(Verdict::Verified)
        ));
        assert!(matches!(
            v.standing(GPTBOT, ip("198.51.100.9")),
            Standing::Known(Verdict::Failed)
        ));
        for local in ["127.0.0.1", "10.1.2.3", "::1", "fd00::1", "100.64.0.1"] {
            assert!(
                matches!(
                    v.standing(GOOGLEBOT, ip(local)),
                    Standing::Known(Verdict::Failed)
                ),
                "{local}"
            );
        }
        assert!(matches!(
            v.standing("Mozilla/5.0 (compatible; AhrefsBot/7.0)", ip("66.249.66.1")),
            Standing::NoClaim
        ));
        assert_eq!(dns.reverse_calls.load(Ordering::SeqCst), 0);
        assert_eq!(counted(&metrics, "gptbot", "verified"), 1);
        assert_eq!(counted(&metrics, "gptbot", "failed"), 1);
        assert_eq!(counted(&metrics, "googlebot", "failed"), 5);
        let (off, _) = verifier(VerifyMode::Off, dns);
        assert!(matches!(
            off.standing(GOOGLEBOT, ip("66.249.66.1")),
            Standing::Unchecked
        ));
    }

    #[tokio::test]
    async fn a_pending_check_counts_as_failed_after_the_wait_and_goes_on() {
        let dns = fake(Duration::from_millis(300));
        let (v, _) = verifier(VerifyMode::Enforce, dns);
        let s = v.standing(GOOGLEBOT, ip("66.249.66.1"));
        assert_eq!(s.settle(Duration::from_millis(10)).await, None);
        // The check itself goes on and is cached.
        let s = v.standing(GOOGLEBOT, ip("66.249.66.1"));
        assert_eq!(
            s.settle(Duration::from_secs(10)).await,
            Some(Verdict::Verified)
        );
        assert!(matches!(
            v.standing(GOOGLEBOT, ip("66.249.66.1")),
            Standing::Known(Verdict::Verified)
        ));
    }

    #[tokio::test]
    async fn without_a_resolver_dns_claims_are_errors() {
        let metrics = Metrics::new();
        let v = CrawlerVerifier::new(VerifyMode::Log, IpRanges::built_in(), None, &metrics);
        assert!(matches!(
            v.standing(GOOGLEBOT, ip("66.249.66.1")),
            Standing::Known(Verdict::Error)
        ));
        assert_eq!(counted(&metrics, "googlebot", "error"), 1);
    }
}
