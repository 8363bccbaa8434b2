//! Prometheus metrics: sessions by phase, decision latency, approvals.

use std::sync::{Arc, Mutex};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// Label set with one `phase` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabel {
    pub phase: String,
}

/// Label set for approval requests.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApprovalLabel {
    /// `approve` or `deny`.
    pub action: String,
    /// `accepted`, or the refusal's reason (`Forbidden`, `Conflict`, ...).
    pub result: String,
}

/// The operator's metrics, cheap to clone.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    /// Sessions currently known, by phase (set from the controller's cache at scrape time).
    pub sessions: Family<PhaseLabel, Gauge>,
    /// Phase transitions, by the phase entered.
    pub transitions: Family<PhaseLabel, Counter>,
    /// Seconds from a reconcile's start to its status write.
    pub decision_seconds: Histogram,
    /// Approve and deny requests, by outcome.
    pub approvals: Family<ApprovalLabel, Counter>,
    /// Reconcile failures.
    pub reconcile_errors: Counter,
    /// Bytes of recordings in the local spool, waiting for the store.
    pub spool_bytes: Gauge,
    /// Failed passes of the uploader (the store refused or was unreachable).
    pub storage_errors: Counter,
    /// 1 while this replica runs the controller (holds the lease), else 0.
    pub leader: Gauge,
    /// Session records written to the store, by `result` (`written`, `failed`).
    pub records: Family<ResultLabel, Counter>,
    /// Webhook notifications, by `result` (`delivered`, `retried`, `failed`, `dropped`).
    pub notifications: Family<ResultLabel, Counter>,
}

/// Label set with one `result` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("aexec");
        let sessions = Family::<PhaseLabel, Gauge>::default();
        let transitions = Family::<PhaseLabel, Counter>::default();
        let decision_seconds =
            Histogram::new([0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]);
        let approvals = Family::<ApprovalLabel, Counter>::default();
        let reconcile_errors = Counter::default();
        let leader = Gauge::default();
        registry.register("sessions", "ExecSessions by phase", sessions.clone());
        registry.register(
            "session_transitions",
            "ExecSession phase transitions",
            transitions.clone(),
        );
        registry.register(
            "decision_duration_seconds",
            "Time to reconcile a session and write its status",
            decision_seconds.clone(),
        );
        registry.register(
            "approval_requests",
            "Approve and deny requests by outcome",
            approvals.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Failed reconciles",
            reconcile_errors.clone(),
        );
        let spool_bytes = Gauge::default();
        let storage_errors = Counter::default();
        registry.register(
            "spool_bytes",
            "Bytes of recordings in the local spool, waiting for upload",
            spool_bytes.clone(),
        );
        registry.register(
            "storage_errors",
            "Failed upload passes to the recording store",
            storage_errors.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica runs the controller (holds the lease)",
            leader.clone(),
        );
        let records = Family::<ResultLabel, Counter>::default();
        registry.register(
            "session_records",
            "Signed session records written to the store (written) or not (failed, retried)",
            records.clone(),
        );
        let notifications = Family::<ResultLabel, Counter>::default();
        registry.register(
            "notifications",
            "Webhook notifications: delivered, retried (a try failed), failed (given up), dropped (queue full)",
            notifications.clone(),
        );
        Metrics {
            records,
            notifications,
            registry: Arc::new(Mutex::new(registry)),
            spool_bytes,
            storage_errors,
            sessions,
            transitions,
            decision_seconds,
            approvals,
            reconcile_errors,
            leader,
        }
    }
}

impl Metrics {
    /// The metrics in Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Ok(registry) = self.registry.lock() {
            // Writing to a String cannot fail.
            let _ = encode(&mut out, &registry);
        }
        out
    }
}
