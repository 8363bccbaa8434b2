//! Leader election: the controller (decisions, retention deletes, their Events) runs on one
//! replica at a time, elected through a `coordination.k8s.io/v1` Lease, while every replica
//! serves the aggregated API and brokers sessions.
//!
//! The Lease itself is handled by `kube-lease-manager`; this module owns what to do with it: run
//! the controller while this replica holds the lease, stop it as soon as the lease is lost *or
//! cannot be renewed* (a replica cut off from the API server must not keep deciding after its
//! lease ran out), and release the lease on shutdown so another replica takes over at once.
//!
//! Correctness does not rest on the lease: every status write carries the resourceVersion it
//! was decided on, so two controllers running for a moment (clock skew, a slow step-down) cannot
//! overwrite each other. The lease keeps the work, the Events and the retention deletes single.

use std::{future::Future, pin::Pin, time::Duration};

use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio::sync::watch;
use tracing::{info, warn};

/// Name of the Lease the replicas compete for.
pub const LEASE_NAME: &str = "aexec-operator";

/// How long the controller gets to finish its running reconciles when it must stop; then they
/// are abandoned (cancelled mid-request is safe: every write carries a resourceVersion). A
/// replica must not keep deciding long after its lease ran out, nor hang a shutdown.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// Resolves when the work done while leading must stop (lease lost, or shutdown).
pub type StopLeading = Pin<Box<dyn Future<Output = ()> + Send + Sync + 'static>>;

/// Where and as whom to compete for the lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Election {
    pub namespace: String,
    pub identity: String,
    pub timing: Timing,
}

/// The lease's timing, in the whole seconds the Lease API counts in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// How long a lease stays valid after its last renewal.
    pub duration_secs: u64,
    /// The holder renews this long before expiry; also the clock skew tolerated between nodes.
    pub grace_secs: u64,
    /// Bound on every lease request: a renewal that has not answered by then counts as failed,
    /// so the holder steps down before its lease can expire under it.
    pub request_timeout: Duration,
}

impl Timing {
    /// The timing for a lease `duration` (at least 3 s): renew a third of it before expiry, and
    /// give each request half of that margin.
    pub fn for_duration(duration: Duration) -> Result<Timing, String> {
        let secs = duration.as_secs();
        if secs < 3 || duration.subsec_nanos() != 0 {
            return Err(format!(
                "a lease duration must be whole seconds, at least 3s (got {duration:?})"
            ));
        }
        let grace = (secs / 3).max(1);
        Ok(Timing {
            duration_secs: secs,
            grace_secs: grace,
            request_timeout: Duration::from_millis(grace * 1000 / 2),
        })
    }
}

/// Parses `--leader-election-lease-duration` (a Go duration such as `15s`).
pub fn parse_lease_duration(s: &str) -> Result<Duration, String> {
    let d: kube::core::Duration = s
        .parse()
        .map_err(|e| format!("{s:?} is not a duration like 15s: {e}"))?;
    if d.is_negative() {
        return Err(format!("{s:?} is negative"));
    }
    let d: Duration = d.into();
    Timing::for_duration(d)?;
    Ok(d)
}

/// A client for lease requests only: the same credentials, with timeouts from `timing`, so a
/// renewal cannot hang past the lease's expiry.
pub fn lease_client(config: &kube::Config, timing: &Timing) -> kube::Result<Client> {
    let mut config = config.clone();
    config.connect_timeout = Some(timing.request_timeout);
    config.read_timeout = Some(timing.request_timeout);
    config.write_timeout = Some(timing.request_timeout);
    aexec_client::client(config)
}

/// What the election loop needs from a lease: `kube-lease-manager` in the operator, a script in
/// the unit tests.
pub trait Lease {
    /// Resolves when this replica's hold on the lease changes: `true` acquired, `false` lost. While
    /// held, it must keep being polled: that is what renews the lease.
    fn changed(&self) -> impl Future<Output = Result<bool, String>> + Send;
    /// Gives the lease up if this replica holds it.
    fn release(&self) -> impl Future<Output = Result<(), String>> + Send;
}

impl Lease for LeaseManager {
    async fn changed(&self) -> Result<bool, String> {
        LeaseManager::changed(self).await.map_err(|e| e.to_string())
    }

    async fn release(&self) -> Result<(), String> {
        LeaseManager::release(self).await.map_err(|e| e.to_string())
    }
}

/// Runs `lead` whenever this replica holds the lease described by `election`, until `stop`.
/// `leading` says whether it leads right now (readiness and metrics read it).
pub async fn run<F, Fut>(
    client: Client,
    election: Election,
    leading: watch::Sender<bool>,
    stop: impl Future<Output = ()>,
    lead: F,
) where
    F: FnMut(StopLeading) -> Fut,
    Fut: Future<Output = ()>,
{
    info!(
        namespace = %election.namespace,
        lease = LEASE_NAME,
        identity = %election.identity,
        duration_secs = election.timing.duration_secs,
        "competing for the controller's lease"
    );
    let make = || {
        let (client, e) = (client.clone(), election.clone());
        async move {
            LeaseManagerBuilder::new(client, LEASE_NAME)
                .with_namespace(e.namespace)
                .with_identity(e.identity)
                .with_duration(e.timing.duration_secs)
                .with_grace(e.timing.grace_secs)
                .build()
                .await
                .map_err(|err| err.to_string())
        }
    };
    let retry = Duration::from_secs(election.timing.grace_secs);
    elect(make, leading, stop, lead, retry, STOP_GRACE).await;
}

/// Why a term as leader ended.
enum TermEnd {
    Shutdown,
    Lost,
    RenewFailed(String),
    WorkEnded,
}

/// The election loop, generic over the lease so its decisions are unit-tested.
///
/// A fresh lease handle is made for every attempt after an error: after a failed request the old
/// handle's idea of who holds the lease can be stale, and a fresh one starts from the server.
async fn elect<L, Mk, MkFut, F, Fut>(
    mut make: Mk,
    leading: watch::Sender<bool>,
    stop: impl Future<Output = ()>,
    mut lead: F,
    retry: Duration,
    stop_grace: Duration,
) where
    L: Lease,
    Mk: FnMut() -> MkFut,
    MkFut: Future<Output = Result<L, String>>,
    F: FnMut(StopLeading) -> Fut,
    Fut: Future<Output = ()>,
{
    tokio::pin!(stop);
    leading.send_replace(false);
    'fresh: loop {
        let lease = tokio::select! {
            _ = &mut stop => return,
            made = make() => match made {
                Ok(l) => l,
                Err(e) => {
                    warn!(error = %e, "cannot read the lease; retrying in {retry:?}");
                    tokio::select! { _ = &mut stop => return, _ = tokio::time::sleep(retry) => {} }
                    continue 'fresh;
                }
            },
        };
        // Follow the lease until this replica holds it.
        loop {
            let changed = tokio::select! {
                _ = &mut stop => return,
                c = lease.changed() => c,
            };
            match changed {
                Ok(true) => break,
                Ok(false) => continue,
                Err(e) => {
                    warn!(error = %e, "cannot follow the lease; retrying in {retry:?}");
                    tokio::select! { _ = &mut stop => return, _ = tokio::time::sleep(retry) => {} }
                    continue 'fresh;
                }
            }
        }

        info!("this replica holds the lease: starting the controller");
        leading.send_replace(true);
        let (stop_tx, mut stop_rx) = watch::channel(false);
        // Boxed so that it can be dropped (its running reconciles cancelled) before the lease is
        // released.
        let mut work = Box::pin(lead(Box::pin(async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        })));
        // `changed` is polled all along: that is what renews the lease.
        let end = tokio::select! {
            _ = &mut stop => TermEnd::Shutdown,
            c = lease.changed() => match c {
                Ok(false) => TermEnd::Lost,
                Ok(true) => TermEnd::RenewFailed("the lease reported a second acquisition".into()),
                Err(e) => TermEnd::RenewFailed(e),
            },
            _ = work.as_mut() => TermEnd::WorkEnded,
        };
        // Stop the work before anything else: after a failed renewal the lease runs out soon.
        let _ = stop_tx.send(true);
        if !matches!(end, TermEnd::WorkEnded) {
            info!("stopping the controller");
            if tokio::time::timeout(stop_grace, work.as_mut())
                .await
                .is_err()
            {
                warn!(
                    "the controller did not stop within {stop_grace:?}; abandoning its reconciles"
                );
            }
        }
        drop(work);
        leading.send_replace(false);
        match end {
            TermEnd::Shutdown => {
                info!("controller stopped; releasing the lease");
                release_at_shutdown(&lease).await;
                return;
            }
            TermEnd::Lost => warn!("another replica holds the lease now: controller stopped"),
            TermEnd::RenewFailed(e) => {
                warn!(error = %e, "could not renew the lease: controller stopped")
            }
            TermEnd::WorkEnded => {
                warn!("the controller ended on its own; giving the lease up");
                if let Err(e) = lease.release().await {
                    warn!(error = %e, "releasing the lease");
                }
                tokio::select! { _ = &mut stop => return, _ = tokio::time::sleep(retry) => {} }
            }
        }
    }
}

/// Tries a few times: a request on a connection the shutdown has just broken fails at once
/// (`SendRequest`), and a lease left to expire keeps every replica from deciding for a lease
/// duration.
async fn release_at_shutdown(lease: &impl Lease) {
    const ATTEMPTS: u32 = 3;
    for attempt in 1..=ATTEMPTS {
        match lease.release().await {
            Ok(()) => {
                info!("lease released for another replica");
                return;
            }
            Err(e) if attempt < ATTEMPTS => {
                warn!(error = %e, attempt, "releasing the lease failed; trying again");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => warn!(error = %e, "releasing the lease (it will expire instead)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    };
    use tokio::sync::{Mutex as AsyncMutex, mpsc};

    #[test]
    fn timing_renews_a_third_before_expiry_and_bounds_requests() {
        let t = Timing::for_duration(Duration::from_secs(15)).expect("15s");
        assert_eq!((t.duration_secs, t.grace_secs), (15, 5));
        assert_eq!(t.request_timeout, Duration::from_millis(2500));
        let t = Timing::for_duration(Duration::from_secs(3)).expect("3s");
        assert_eq!((t.duration_secs, t.grace_secs), (3, 1));
        assert_eq!(t.request_timeout, Duration::from_millis(500));
        // The renewal plus its timeout always ends before the lease expires.
        for secs in 3..200 {
            let t = Timing::for_duration(Duration::from_secs(secs)).expect("valid");
            assert!(
                t.grace_secs >= 1 && t.grace_secs < t.duration_secs,
                "{secs}"
            );
            assert!(
                t.request_timeout < Duration::from_secs(t.grace_secs),
                "{secs}"
            );
        }
    }

    #[test]
    fn lease_durations_are_whole_seconds_of_at_least_three() {
        assert_eq!(parse_lease_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_lease_duration("1m"), Ok(Duration::from_secs(60)));
        for bad in ["2s", "1500ms", "3500ms", "-5s", "soon"] {
            assert!(parse_lease_duration(bad).is_err(), "{bad}");
        }
        let e = parse_lease_duration("2s").expect_err("too short");
        assert!(e.contains("at least 3s"), "{e}");
    }

    /// A lease whose `changed` answers come from a script; `release` is counted and logged.
    struct Scripted {
        answers: Arc<AsyncMutex<mpsc::UnboundedReceiver<Result<bool, String>>>>,
        released: Arc<AtomicUsize>,
        log: Arc<Mutex<Vec<String>>>,
        /// Releases that fail before one succeeds.
        failing_releases: usize,
    }

    /// Logs "dropped" when the work holding it is dropped.
    struct DropLog(Arc<Mutex<Vec<String>>>);

    impl Drop for DropLog {
        fn drop(&mut self) {
            if let Ok(mut l) = self.0.lock() {
                l.push("dropped".into());
            }
        }
    }

    impl Lease for Scripted {
        async fn changed(&self) -> Result<bool, String> {
            match self.answers.lock().await.recv().await {
                Some(a) => a,
                None => std::future::pending().await,
            }
        }
        async fn release(&self) -> Result<(), String> {
            let n = self.released.fetch_add(1, Ordering::SeqCst);
            self.log.lock().expect("log").push("release".into());
            if n < self.failing_releases {
                return Err("client error (SendRequest)".into());
            }
            Ok(())
        }
    }

    struct Harness {
        script: mpsc::UnboundedSender<Result<bool, String>>,
        made: Arc<AtomicUsize>,
        released: Arc<AtomicUsize>,
        log: Arc<Mutex<Vec<String>>>,
        leading: watch::Receiver<bool>,
        stop: watch::Sender<bool>,
        task: tokio::task::JoinHandle<()>,
    }

    /// Runs the election loop over a scripted lease; `make` fails for the first `failing_makes`
    /// attempts. The work logs "start" and "stop".
    fn harness(failing_makes: usize) -> Harness {
        harness_with(failing_makes, false)
    }

    /// As [`harness`]; a `stubborn` work ignores the request to stop.
    fn harness_with(failing_makes: usize, stubborn: bool) -> Harness {
        let (script, rx) = mpsc::unbounded_channel();
        let answers = Arc::new(AsyncMutex::new(rx));
        let made = Arc::new(AtomicUsize::new(0));
        let released = Arc::new(AtomicUsize::new(0));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (leading_tx, leading) = watch::channel(false);
        let (stop, stop_rx) = watch::channel(false);
        let make = {
            let (answers, made, released, log) =
                (answers.clone(), made.clone(), released.clone(), log.clone());
            move || {
                let n = made.fetch_add(1, Ordering::SeqCst);
                let lease = Scripted {
                    answers: answers.clone(),
                    released: released.clone(),
                    log: log.clone(),
                    failing_releases: 0,
                };
                async move {
                    if n < failing_makes {
                        Err("the API server is unreachable".to_owned())
                    } else {
                        Ok(lease)
                    }
                }
            }
        };
        let lead = {
            let log = log.clone();
            move |stop_leading: StopLeading| {
                let log = log.clone();
                async move {
                    log.lock().expect("log").push("start".into());
                    let _guard = stubborn.then(|| DropLog(log.clone()));
                    stop_leading.await;
                    if stubborn {
                        std::future::pending::<()>().await;
                    }
                    log.lock().expect("log").push("stop".into());
                }
            }
        };
        let mut stop_rx = stop_rx;
        let task = tokio::spawn(elect(
            make,
            leading_tx,
            async move {
                let _ = stop_rx.wait_for(|s| *s).await;
            },
            lead,
            Duration::from_millis(10),
            Duration::from_millis(200),
        ));
        Harness {
            script,
            made,
            released,
            log,
            leading,
            stop,
            task,
        }
    }

    impl Harness {
        fn say(&self, answer: Result<bool, &str>) {
            self.script
                .send(answer.map_err(str::to_owned))
                .expect("script");
        }
        async fn until_leading(&mut self, want: bool) {
            tokio::time::timeout(
                Duration::from_secs(5),
                self.leading.wait_for(|l| *l == want),
            )
            .await
            .expect("in time")
            .expect("leading channel");
        }
        fn log(&self) -> Vec<String> {
            self.log.lock().expect("log").clone()
        }
        async fn settle() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test]
    async fn leads_only_while_holding_the_lease_and_stops_when_it_is_lost() {
        let mut h = harness(0);
        Harness::settle().await;
        assert!(h.log().is_empty(), "no work before the lease is held");
        h.say(Ok(true));
        h.until_leading(true).await;
        Harness::settle().await;
        assert_eq!(h.log(), ["start"]);
        // Another replica took the lease: the work stops, and this replica waits again.
        h.say(Ok(false));
        h.until_leading(false).await;
        assert_eq!(h.log(), ["start", "stop"]);
        h.say(Ok(true));
        h.until_leading(true).await;
        Harness::settle().await;
        assert_eq!(h.log(), ["start", "stop", "start"]);
        assert_eq!(h.released.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_failed_renewal_stops_the_work_and_starts_from_a_fresh_lease() {
        let mut h = harness(0);
        h.say(Ok(true));
        h.until_leading(true).await;
        h.say(Err("timed out"));
        h.until_leading(false).await;
        assert_eq!(h.log(), ["start", "stop"]);
        Harness::settle().await;
        assert_eq!(h.made.load(Ordering::SeqCst), 2, "a fresh lease handle");
        // Still the holder after all: it leads again.
        h.say(Ok(true));
        h.until_leading(true).await;
        Harness::settle().await;
        assert_eq!(h.log(), ["start", "stop", "start"]);
    }

    #[tokio::test]
    async fn a_release_that_fails_at_shutdown_is_tried_again() {
        for (failing, calls) in [(1, 2), (2, 3), (5, 3)] {
            let lease = Scripted {
                answers: Arc::new(AsyncMutex::new(mpsc::unbounded_channel().1)),
                released: Arc::new(AtomicUsize::new(0)),
                log: Arc::new(Mutex::new(Vec::new())),
                failing_releases: failing,
            };
            tokio::time::timeout(Duration::from_secs(5), release_at_shutdown(&lease))
                .await
                .expect("bounded");
            // Up to three attempts, then it gives up (the lease expires instead).
            assert_eq!(lease.released.load(Ordering::SeqCst), calls, "{failing}");
        }
    }

    #[tokio::test]
    async fn shutdown_stops_the_work_before_releasing_the_lease() {
        let mut h = harness(2);
        h.say(Ok(true));
        h.until_leading(true).await;
        assert_eq!(
            h.made.load(Ordering::SeqCst),
            3,
            "retried until the lease was read"
        );
        h.stop.send(true).expect("stop");
        tokio::time::timeout(Duration::from_secs(5), &mut h.task)
            .await
            .expect("ends")
            .expect("no panic");
        assert_eq!(h.log(), ["start", "stop", "release"]);
        assert_eq!(h.released.load(Ordering::SeqCst), 1);
        assert!(!*h.leading.borrow());
    }

    #[tokio::test]
    async fn work_that_will_not_stop_is_abandoned_after_the_grace() {
        let mut h = harness_with(0, true);
        h.say(Ok(true));
        h.until_leading(true).await;
        h.stop.send(true).expect("stop");
        tokio::time::timeout(Duration::from_secs(5), &mut h.task)
            .await
            .expect("shutdown is bounded")
            .expect("no panic");
        // Never finished by itself; dropped (its reconciles cancelled) before the release.
        assert_eq!(h.log(), ["start", "dropped", "release"]);
    }

    #[tokio::test]
    async fn shutdown_while_waiting_neither_leads_nor_releases() {
        let mut h = harness(0);
        h.say(Ok(false));
        Harness::settle().await;
        h.stop.send(true).expect("stop");
        tokio::time::timeout(Duration::from_secs(5), &mut h.task)
            .await
            .expect("ends")
            .expect("no panic");
        assert!(h.log().is_empty());
        assert_eq!(h.released.load(Ordering::SeqCst), 0);
    }
}
