//! The sync engine: upload the outbox, then pull changes, with retries, conflicts and
//! status, over a [`Transport`].
//!
//! One run ([`SyncEngine::sync_now`]) takes the engine's lock (a second caller returns
//! [`SyncOutcome::AlreadyRunning`] at once), uploads the outbox in order, pulls page by
//! page, each page and its token applied in one transaction, and releases the lock. Every
//! step is checkpointed in the local database, so a process killed at any point resumes
//! without losing or doubling anything: items left `sending` are sent again with the same
//! idempotency key and body (the server replays its stored result), and a pull resumes
//! from the last page it applied.
//!
//! | failure | what the engine does |
//! |---|---|
//! | network unavailable (connection refused, DNS) | the items go back to the queue without counting an attempt; the run pauses ([`PauseReason::Offline`]) |
//! | timeout, 5xx, 429, 409 (in progress) | the items wait with exponential backoff and jitter (honouring `Retry-After`), capped at [`EngineConfig::backoff_cap`], measured on [`EngineConfig::monotonic_clock`] (never the wall clock); dead after [`EngineConfig::max_attempts`] |
//! | 401/403 | the app's token refresher is called once and the request retried; then the run pauses ([`PauseReason::AuthFailed`]) |
//! | 426 (the server does not serve this model) | the items go back to the queue without counting an attempt, never dead; the run pauses ([`PauseReason::ModelNotServed`]) until the server serves the model or the app is updated |
//! | `conflict` result | the generated three-way merge combines both sides and the result is pushed; `manual` fields make the record `conflicted` until the user resolves it ([`LocalStore::conflicts`], [`LocalStore::keep_local`], [`LocalStore::keep_server`], [`LocalStore::resolve_with`]) |
//! | `rejected` result, 4xx | the item is dead with the reason, visible in [`LocalStore::status`], retried by [`LocalStore::retry_dead`] |
//! | 410 on a change token | the engine takes a new snapshot; once caught up, it asks the server about each record the device held as synced that the server no longer has: removed if the server collected it (`token-expired`), created on the server again if it lost it (a restored or replaced server). A record sent from another history than the device followed (a version number it knows with another commit time) starts the same over; an own write the pulls never show is asked about |
//!
//! After every response the engine hands the server's `Date` to
//! [`LocalStore::observe_server_time`], so local edits are stamped in the server's time.

mod background;
mod http;
mod retry;
mod transport;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value as Json;
use tracing::Instrument;
use uuid::Uuid;

pub use background::{EngineHandle, Triggers};
pub use http::HttpTransport;
pub use transport::{Transport, TransportError};

use crate::protocol::{
    ChangesResponse, Mutation, MutationResult, Problem, PushRequest, PushResponse, SnapshotResponse,
};
use crate::store::{
    EngineState, ItemOutcome, LocalStore, OutboxItem, PullProgress, REPLACES_MEMBER, Restart,
    StoreError, SyncState,
};

/// Gives the engine a fresh bearer token when the server answers 401/403.
pub type TokenRefresher = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// A monotonic clock: time since an arbitrary origin that never goes backwards and does
/// not follow changes of the device's wall clock. Retry schedules are measured on it.
pub type MonotonicClock = Arc<dyn Fn() -> Duration + Send + Sync>;

/// The default [`MonotonicClock`]: [`std::time::Instant`] since the first call.
fn system_monotonic() -> Duration {
    static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    ORIGIN.get_or_init(std::time::Instant::now).elapsed()
}

/// Engine settings.
#[derive(Clone)]
pub struct EngineConfig {
    /// The account this engine syncs (one lock and one change token per account).
    pub account: String,
    /// The bearer token.
    pub token: String,
    /// Called once when the server refuses the token.
    pub refresher: Option<TokenRefresher>,
    /// Mutations per push (default 100). After a push the server refuses as too large
    /// (413), the limit becomes half of the smaller of itself and what the push held,
    /// down to one, for the rest of that sync run; a push of one transaction refused
    /// at a limit of one goes in parts; a single mutation the server refuses as too
    /// large is dead.
    pub batch_size: usize,
    /// Records per pulled page (default 500).
    pub page_size: u32,
    /// Attempts before an item is dead (default 8).
    pub max_attempts: i64,
    /// The first retry delay (default 1 s); doubles per attempt, with jitter.
    pub backoff_base: Duration,
    /// The longest retry delay (default 15 min).
    pub backoff_cap: Duration,
    /// Where retry schedules read the time (default: [`std::time::Instant`]). Tests move
    /// it; see [`MonotonicClock`].
    pub monotonic_clock: MonotonicClock,
    /// The seed of the retry jitter (default `None`: drawn from the system's entropy, so
    /// retries of many devices do not align). Set it for a reproducible run, as the
    /// fault simulation does.
    pub jitter_seed: Option<u64>,
}

impl EngineConfig {
    /// Defaults for `account` with `token`.
    pub fn new(account: impl Into<String>, token: impl Into<String>) -> Self {
        EngineConfig {
            account: account.into(),
            token: token.into(),
            refresher: None,
            batch_size: 100,
            page_size: 500,
            max_attempts: 8,
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(15 * 60),
            monotonic_clock: Arc::new(system_monotonic),
            jitter_seed: None,
        }
    }
}

impl std::fmt::Debug for EngineConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineConfig")
            .field("account", &self.account)
            .field("batch_size", &self.batch_size)
            .field("page_size", &self.page_size)
            .field("max_attempts", &self.max_attempts)
            .finish_non_exhaustive()
    }
}

/// Why a run stopped early. Nothing is lost: the next run continues. More reasons may
/// come in later versions.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum PauseReason {
    /// The server could not be reached.
    Offline(String),
    /// The server refused the token, also after a refresh.
    AuthFailed(String),
    /// The server is failing or busy; items wait for their backoff.
    Backoff(String),
    /// The server does not serve this app's model (426 `upgrade-required`): either the
    /// server is behind the app (the changes go once it serves the model) or the app is
    /// older than the server still serves (update the app). Nothing is dropped or counted
    /// as an attempt; every run tries again.
    ModelNotServed(String),
}

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SyncReport {
    /// The run's id (also in the logs as `sync_run_id`).
    pub run_id: Uuid,
    /// Mutations applied by the server.
    pub applied: usize,
    /// Mutations merged with a newer server record and pushed again.
    pub merged: usize,
    /// Records that became `conflicted`.
    pub conflicted: usize,
    /// Mutations dropped because the server deleted the record (delete wins).
    pub superseded: usize,
    /// Mutations the server rejected (now dead).
    pub dead: usize,
    /// Mutations the server did not apply because another mutation of their transaction
    /// (or of one beside it in the push) was answered `conflict` or rejected (PROTOCOL.md
    /// TXN-1): queued again, to go with that one's merge, all or none again. (Those of
    /// the transaction of a mutation that is dead now are dead with it.)
    pub requeued: usize,
    /// Records pulled and applied.
    pub pulled: usize,
    /// Whether the run took a snapshot.
    pub snapshot: bool,
    /// Why the run stopped early, if it did.
    pub paused: Option<PauseReason>,
}

impl SyncReport {
    /// Counts one item's outcome.
    fn count(&mut self, outcome: &ItemOutcome) {
        match outcome {
            ItemOutcome::Applied => self.applied += 1,
            ItemOutcome::Merged => self.merged += 1,
            ItemOutcome::Conflicted(_) => self.conflicted += 1,
            ItemOutcome::Superseded(_) => self.superseded += 1,
            ItemOutcome::Dead(_) => self.dead += 1,
        }
    }
}

/// Whether a push result is [`TRANSACTION_ABORTED`](crate::protocol::TRANSACTION_ABORTED):
/// not applied because another mutation of its transaction was not.
fn is_aborted(result: &MutationResult) -> bool {
    matches!(result, MutationResult::Rejected { problem, .. }
        if problem.problem_type.strip_prefix("https://syncgen.dev/problems/")
            == Some(crate::protocol::TRANSACTION_ABORTED))
}

/// The result of [`SyncEngine::sync_now`].
#[derive(Debug, Clone, PartialEq)]
pub enum SyncOutcome {
    /// The run happened (possibly paused part-way; see [`SyncReport::paused`]).
    Ran(SyncReport),
    /// Another run of this account is in progress; this call did nothing.
    AlreadyRunning,
}

/// Errors that stop a run and need attention (the local database failed).
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Syncs one account's [`LocalStore`] with a server.
pub struct SyncEngine<T: Transport> {
    store: LocalStore,
    transport: T,
    config: EngineConfig,
    token: Mutex<String>,
    running: tokio::sync::Mutex<()>,
    /// When each failed item may be tried again, on [`EngineConfig::monotonic_clock`].
    /// In memory: after a restart, failed items are due at once (their attempts, and so
    /// their next delay and when they go dead, are counted in the database).
    retry_at: Mutex<std::collections::HashMap<i64, Duration>>,
    /// The source of the retry jitter ([`EngineConfig::jitter_seed`]).
    jitter: Mutex<fastrand::Rng>,
    /// Whether this engine asked `GET /health` for the server's protocol already (see
    /// [`SyncEngine::learn_protocol`]).
    protocol_probed: std::sync::atomic::AtomicBool,
}

impl<T: Transport> std::fmt::Debug for SyncEngine<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncEngine")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// What of an outbox item's payload a server takes, by its protocol version.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Speaks {
    /// Dots and the record's dots (PROTOCOL.md SUM-2).
    dots: bool,
    /// `replaces` (IDEM-6).
    replaces: bool,
    /// A dot's `prev` and the record's gaps (SUM-3).
    gaps: bool,
    /// The item's transaction (TXN-1).
    transactions: bool,
}

/// The mutation of an outbox item, with what of its payload the server takes (`speaks`).
fn to_mutation(item: &OutboxItem, speaks: Speaks) -> Mutation {
    let Speaks {
        dots,
        replaces,
        gaps,
        transactions,
    } = speaks;
    let get = |k: &str| item.payload.get(k).cloned().filter(|v| !v.is_null());
    let dots_member = |k: &str| get(k).filter(|_| dots);
    Mutation {
        idempotency_key: item.idempotency_key.clone(),
        entity_type: item.entity_type.clone(),
        entity_id: item.entity_id,
        op: item.op,
        base_version: item.base_version,
        record: get("record").and_then(|r| match r {
            Json::Object(m) => Some(m),
            _ => None,
        }),
        clocks: get("clocks"),
        patch: get("patch"),
        hlc: get("hlc").and_then(|h| serde_json::from_value(h).ok()),
        // A payload's dot may hold more members (runtimes before dots were drawn at
        // queueing named the key it was drawn for); the wire's is `{session, seq, prev}`.
        dot: dots_member("dot").and_then(|d| {
            Some(crate::protocol::Dot {
                session: d.get("session")?.as_str()?.to_string(),
                seq: d.get("seq")?.as_u64()?,
                prev: d.get("prev").and_then(Json::as_u64).filter(|_| gaps),
            })
        }),
        dots: dots_member("dots").and_then(|d| serde_json::from_value(d).ok()),
        dot_gaps: dots_member("dot_gaps")
            .filter(|_| gaps)
            .and_then(|d| serde_json::from_value(d).ok()),
        replaces: get(REPLACES_MEMBER)
            .filter(|_| replaces)
            .and_then(|r| serde_json::from_value(r).ok()),
        transaction: crate::store::payload_txn(&item.payload).filter(|_| transactions),
    }
}

/// What a 410 means (see `LocalStore::reset_token`): `token-unknown` (a restored or
/// replaced server), or anything else (`token-expired`). Either way the records the new
/// snapshot no longer has are asked about, not dropped.
fn restart_reason(e: &TransportError) -> Restart {
    match e {
        TransportError::Http {
            problem: Some(p), ..
        } if p.problem_type.ends_with("/token-unknown") => Restart::Unknown,
        _ => Restart::Collected,
    }
}

enum Step<R> {
    Done(R),
    Pause(PauseReason),
}

impl<T: Transport> SyncEngine<T> {
    /// An engine for `store`, talking through `transport`, which is given the store's
    /// model fingerprint to send ([`Transport::use_fingerprint`]).
    pub fn new(store: LocalStore, mut transport: T, config: EngineConfig) -> Self {
        transport.use_fingerprint(&store.fingerprint());
        let token = Mutex::new(config.token.clone());
        let config_jitter = config
            .jitter_seed
            .map_or_else(fastrand::Rng::new, fastrand::Rng::with_seed);
        SyncEngine {
            store,
            transport,
            config,
            token,
            running: tokio::sync::Mutex::new(()),
            retry_at: Mutex::new(std::collections::HashMap::new()),
            jitter: Mutex::new(config_jitter),
            protocol_probed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The store this engine syncs.
    pub fn store(&self) -> &LocalStore {
        &self.store
    }

    /// The transport.
    pub fn transport(&self) -> &T {
        &self.transport
    }

    /// One sync run: upload, then pull. Returns at once if a run is in progress.
    ///
    /// # Errors
    /// [`SyncError::Store`] if the local store fails: [`StoreError::Sqlite`] on a database
    /// error, [`StoreError::Corrupt`] if it holds sync data it cannot read back, or if a
    /// record or result the server sent does not fit the registered entity. The run stops
    /// there; what it committed stays, and the next run resumes from it. Network and
    /// server failures are not errors: the run pauses ([`SyncReport::paused`]) and the
    /// items wait for their retry.
    pub async fn sync_now(&self) -> Result<SyncOutcome, SyncError> {
        let Ok(_guard) = self.running.try_lock() else {
            return Ok(SyncOutcome::AlreadyRunning);
        };
        let run_id = Uuid::now_v7();
        let span = tracing::info_span!("sync_run", sync_run_id = %run_id, account_id = %self.config.account);
        self.store.set_engine_state(EngineState::Syncing);
        let outcome = self.run(run_id).instrument(span).await;
        self.store.set_pull_progress(None);
        self.store.set_engine_state(match &outcome {
            Ok(SyncOutcome::Ran(SyncReport {
                paused: Some(p), ..
            })) => self.paused_state(p),
            _ => EngineState::Idle,
        });
        outcome
    }

    /// What a pause means for [`SyncStatus::engine`](crate::store::SyncStatus::engine).
    fn paused_state(&self, p: &PauseReason) -> EngineState {
        match p {
            PauseReason::Offline(r) => EngineState::Offline { reason: r.clone() },
            PauseReason::AuthFailed(r) => EngineState::AuthFailed { reason: r.clone() },
            PauseReason::ModelNotServed(r) => EngineState::ModelNotServed { reason: r.clone() },
            PauseReason::Backoff(r) => {
                // The next retry, from the monotonic schedule to the store's wall clock.
                let now = (self.config.monotonic_clock)();
                let next = self
                    .retry_at
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .values()
                    .min()
                    .copied();
                let until = next.and_then(|at| {
                    let wait = at.saturating_sub(now);
                    let wall = i64::try_from(self.store.device_wall_millis()).ok()?;
                    let wait = i64::try_from(wait.as_millis()).ok()?;
                    chrono::DateTime::from_timestamp_millis(wall.saturating_add(wait))
                });
                EngineState::BackingOff {
                    until,
                    reason: r.clone(),
                }
            }
        }
    }

    /// [`SyncEngine::sync_now`]'s run, its state set around it.
    async fn run(&self, run_id: Uuid) -> Result<SyncOutcome, SyncError> {
        {
            let mut report = SyncReport {
                run_id,
                ..SyncReport::default()
            };
            self.store.recover_sending()?;
            if let Step::Pause(p) = self.upload(&mut report).await? {
                tracing::info!(reason = ?p, "sync paused");
                report.paused = Some(p);
                return Ok(SyncOutcome::Ran(report));
            }
            if let Step::Pause(p) = self.pull(&mut report).await? {
                tracing::info!(reason = ?p, "sync paused");
                report.paused = Some(p);
                return Ok(SyncOutcome::Ran(report));
            }
            self.store.record_success(&self.config.account)?;
            tracing::info!(
                applied = report.applied,
                pulled = report.pulled,
                "sync completed"
            );
            Ok(SyncOutcome::Ran(report))
        }
    }

    /// Before a push with dots, when the store does not know yet that the server speaks
    /// them (a device that never talked to it): asks `GET /health` once per engine, so
    /// that even a device's first push carries its dots (PROTOCOL.md SUM-2). A server
    /// that does not answer, or answers an earlier protocol, gets the push without.
    async fn learn_protocol(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        if self.store.server_takes_replaces() || self.protocol_probed.swap(true, Relaxed) {
            return;
        }
        if self.transport.health().await.is_ok()
            && let Some(v) = self.transport.server_protocol()
            && let Err(e) = self.store.observe_server_protocol(&v)
        {
            tracing::warn!(error = %e, "could not keep the server's protocol version");
        }
    }

    /// What of an outbox item's payload the server takes, as the store last learnt.
    fn speaks(&self) -> Speaks {
        Speaks {
            dots: self.store.server_speaks_dots(),
            replaces: self.store.server_takes_replaces(),
            gaps: self.store.server_takes_gaps(),
            transactions: self.store.server_applies_transactions(),
        }
    }

    async fn upload(&self, report: &mut SyncReport) -> Result<Step<()>, SyncError> {
        let mut batch_size = self.config.batch_size.max(1);
        // A push refused (422) by a server that said an older protocol than the push
        // assumed is sent again once per run (two server versions behind one address
        // would otherwise alternate).
        let mut resent_for_protocol = false;
        loop {
            let now = (self.config.monotonic_clock)();
            let batch = {
                let retry_at = self.retry_at.lock().unwrap_or_else(|e| e.into_inner());
                self.store.next_batch(batch_size, |item| {
                    retry_at.get(&item.id).is_none_or(|at| *at <= now)
                })?
            };
            if batch.is_empty() {
                return Ok(Step::Done(()));
            }
            if batch.iter().any(|i| {
                i.payload.get(crate::store::DOT_MEMBER).is_some()
                    || crate::store::payload_txn(&i.payload).is_some()
            }) {
                self.learn_protocol().await;
            }
            let ids: Vec<i64> = batch.iter().map(|i| i.id).collect();
            {
                let mut retry_at = self.retry_at.lock().unwrap_or_else(|e| e.into_inner());
                for id in &ids {
                    retry_at.remove(id);
                }
            }
            let speaks = self.speaks();
            let request = PushRequest {
                mutations: batch.iter().map(|i| to_mutation(i, speaks)).collect(),
            };
            let request = &request;
            match self
                .call(|t| async move { self.transport.push(&t, request).await })
                .await
            {
                Ok(response) => {
                    let mut answered = std::collections::BTreeSet::new();
                    // Items of a transaction the server did not apply (PROTOCOL.md
                    // TXN-1), and per such transaction whether the item that failed it
                    // is dead.
                    let mut aborted = Vec::new();
                    let mut failed = std::collections::BTreeMap::new();
                    for item in &batch {
                        let Some(result) = response
                            .results
                            .iter()
                            .find(|r| r.idempotency_key() == item.idempotency_key)
                        else {
                            // Not answered (the server stopped early): back to the queue.
                            self.store.mark_unsent(&[item.id])?;
                            continue;
                        };
                        let group = crate::store::payload_txn(&item.payload);
                        if let Some(group) = &group {
                            answered.insert(group.clone());
                        }
                        if is_aborted(result) {
                            aborted.push((item, result));
                            continue;
                        }
                        let outcome = self.store.apply_result(item, result)?;
                        tracing::info!(outbox_item_id = item.id, idempotency_key = %item.idempotency_key, result = ?outcome, "pushed");
                        if let Some(group) = group
                            && !matches!(result, MutationResult::Applied { .. })
                        {
                            // Dead if any item that failed it is (an item answered from
                            // its key with an old refusal, beside the one that failed now).
                            *failed.entry(group).or_insert(false) |=
                                matches!(outcome, ItemOutcome::Dead(_));
                        }
                        report.count(&outcome);
                    }
                    // The units of the push (TXN-1), and whether each holds an item
                    // that failed it: a server that aborts a unit without one is
                    // answered with dead items rather than a loop.
                    let answer_of =
                        |key: &str| response.results.iter().find(|r| r.idempotency_key() == key);
                    let units: Vec<((usize, usize), bool)> =
                        crate::protocol::transaction_units(&request.mutations)
                            .into_iter()
                            .map(|(first, last)| {
                                let failing = request.mutations[first..=last].iter().any(|m| {
                                    answer_of(&m.idempotency_key).is_some_and(|r| {
                                        !is_aborted(r)
                                            && !matches!(r, MutationResult::Applied { .. })
                                    })
                                });
                                ((first, last), failing)
                            })
                            .collect();
                    for (item, result) in aborted {
                        let group = crate::store::payload_txn(&item.payload);
                        let cause_is_dead = group.as_ref().and_then(|g| failed.get(g));
                        let at = request
                            .mutations
                            .iter()
                            .position(|m| m.idempotency_key == item.idempotency_key);
                        let unit_failed = at.is_some_and(|k| {
                            units.iter().any(|((first, last), failing)| {
                                *failing && (*first..=*last).contains(&k)
                            })
                        });
                        if unit_failed && cause_is_dead != Some(&true) {
                            // Not applied because its unit failed (TXN-1): a mutation of
                            // its transaction, or of one beside it in the push. The one
                            // that failed goes again (merged with the server's record,
                            // created again, superseded by a delete) or waits dead with
                            // its own transaction: this one goes again, in its
                            // transaction if it has one.
                            tracing::info!(outbox_item_id = item.id, idempotency_key = %item.idempotency_key, "its transaction was not applied; sent again");
                            self.store.requeue_aborted(item.id)?;
                            report.requeued += 1;
                        } else {
                            // Dead with it: the transaction waits for the user, whole
                            // (retried once the failing item is fixed or discarded).
                            let outcome = self.store.apply_result(item, result)?;
                            tracing::info!(outbox_item_id = item.id, idempotency_key = %item.idempotency_key, result = ?outcome, "pushed");
                            report.count(&outcome);
                        }
                        if let Some(group) = group {
                            answered.remove(&group);
                        }
                    }
                    // The transactions this push carried reached the server whole; what
                    // of them is sent again from here on (a change merged after a
                    // conflict) goes on its own. A transaction the server did not apply
                    // keeps its items together.
                    self.store.end_transactions(&answered)?;
                }
                Err(e @ TransportError::Unreachable(_)) => {
                    self.store.mark_unsent(&ids)?;
                    return Ok(Step::Pause(self.pause_for(&e)));
                }
                Err(
                    e @ TransportError::Http {
                        status: 401 | 403, ..
                    },
                ) => {
                    self.store.mark_unsent(&ids)?;
                    return Ok(Step::Pause(self.pause_for(&e)));
                }
                Err(e @ TransportError::Http { status: 426, .. }) => {
                    // A server behind the app (or an app behind the server): the changes
                    // are valid, they wait.
                    self.store.mark_unsent(&ids)?;
                    return Ok(Step::Pause(self.pause_for(&e)));
                }
                Err(TransportError::Http { status: 422, .. })
                    if self.speaks() != speaks && !resent_for_protocol =>
                {
                    resent_for_protocol = true;
                    // The response said the server speaks an older protocol than the
                    // push assumed (a deployment rolled back, or a load balancer in
                    // front of two versions): it refused a member it does not know. Sent
                    // again without it, not given up.
                    tracing::warn!(
                        "the server speaks an older protocol than the push assumed; sending it again"
                    );
                    self.store.mark_unsent(&ids)?;
                }
                Err(TransportError::Http { status: 413, .. }) if batch.len() > 1 => {
                    self.store.mark_unsent(&ids)?;
                    if batch_size > 1 {
                        // Half of what was refused, not of the limit: a batch of 15 under
                        // a limit of 100 would otherwise go three times more as it was
                        // (seen in the simulation with a server body limit of 6 KiB).
                        batch_size = (batch_size.min(batch.len()) / 2).max(1);
                    } else {
                        // A transaction larger than the server takes in one push: sent
                        // in parts rather than given up.
                        let groups: std::collections::BTreeSet<String> = batch
                            .iter()
                            .filter_map(|i| crate::store::payload_txn(&i.payload))
                            .collect();
                        tracing::warn!(
                            transactions = groups.len(),
                            "a transaction is too large for one push; sending it in parts"
                        );
                        self.store.end_transactions(&groups)?;
                    }
                }
                Err(e) => {
                    let retry_after = match &e {
                        TransportError::Http { retry_after, .. } => *retry_after,
                        _ => None,
                    };
                    let permanent = matches!(&e, TransportError::Http { status, .. } if (400..500).contains(status) && ![408, 409, 425, 429].contains(status));
                    let attempt = batch.iter().map(|i| i.attempt_count).max().unwrap_or(1);
                    let max_attempts = if permanent {
                        0
                    } else {
                        self.config.max_attempts
                    };
                    let delay = self.backoff(attempt, retry_after);
                    // The schedule is monotonic; the wall time written beside it is for
                    // display only (a device clock changed meanwhile moves nothing).
                    {
                        let due = now + delay;
                        let mut retry_at = self.retry_at.lock().unwrap_or_else(|e| e.into_inner());
                        for id in &ids {
                            retry_at.insert(*id, due);
                        }
                    }
                    let retry_at = crate::time::format(
                        chrono::Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default(),
                    );
                    self.store
                        .mark_failed(&ids, &e.to_string(), &retry_at, max_attempts)?;
                    tracing::warn!(error = %e, retry_in = ?delay, "push failed");
                    if permanent {
                        report.dead += ids.len();
                        continue;
                    }
                    return Ok(Step::Pause(self.pause_for(&e)));
                }
            }
        }
    }

    /// Once the pulls caught up: the entities a client migration gave new fields (or
    /// that it added) are fetched again, one entity's snapshot at a time, so that what
    /// newer devices set in those fields reaches this device (see
    /// `LocalStore::refetch_next`). Resumable page by page; a 410 starts the entity
    /// over. The changes feed goes on from the device's token: anything that changes
    /// meanwhile comes through it.
    async fn refetch(&self, account: &str, report: &mut SyncReport) -> Result<Step<()>, SyncError> {
        while let Some((entity, cursor)) = self.store.refetch_next()? {
            report.snapshot = true;
            let page = match self
                .call(|t| {
                    let (entity, cursor) = (entity.clone(), cursor.clone());
                    async move {
                        self.transport
                            .entity_snapshot(&t, &entity, cursor.as_deref(), self.config.page_size)
                            .await
                    }
                })
                .await
            {
                Ok(p) => p,
                Err(TransportError::Http { status: 410, .. }) => {
                    self.store.refetch_restart()?;
                    continue;
                }
                // A cursor the server refuses (it was upgraded meanwhile): start the
                // entity over; an entity it refuses (no longer served): skip it.
                Err(TransportError::Http { status: 400, .. }) if cursor.is_some() => {
                    self.store.refetch_restart()?;
                    continue;
                }
                Err(e @ TransportError::Http { status: 400, .. }) => {
                    tracing::warn!(%entity, error = %e, "the server will not snapshot this entity; not fetching it again");
                    self.store.refetch_skip(&entity)?;
                    continue;
                }
                Err(e) => return Ok(Step::Pause(self.pause_for(&e))),
            };
            let next_cursor = page.next_cursor.as_deref().filter(|_| page.has_more);
            report.pulled += self.store.apply_page(
                account,
                &page.records,
                crate::store::Page::Refetched {
                    entity: &entity,
                    next_cursor,
                },
            )?;
        }
        Ok(Step::Done(()))
    }

    async fn pull(&self, report: &mut SyncReport) -> Result<Step<()>, SyncError> {
        let account = self.config.account.clone();
        let mut restarted = false;
        loop {
            let state = self.store.sync_state(&account)?;
            let Some(token) = state.change_token.clone() else {
                // First sync, or after a 410: a snapshot, resumable page by page.
                report.snapshot = true;
                if state.snapshot_cursor.is_none() {
                    // What the device holds as synced is confirmed by this snapshot and
                    // the changes after it; what is not is asked about once caught up
                    // (collected, or lost by the server). Push results acknowledged
                    // before a first snapshot are checked the same way.
                    self.store.reset_token(&account, Restart::Collected)?;
                }
                let mut cursor = state.snapshot_cursor.clone();
                let mut progress = PullProgress::default();
                loop {
                    let page = match self
                        .call(|t| {
                            let cursor = cursor.clone();
                            async move {
                                self.transport
                                    .snapshot(&t, cursor.as_deref(), self.config.page_size)
                                    .await
                            }
                        })
                        .await
                    {
                        Ok(p) => p,
                        Err(e @ TransportError::Http { status: 410, .. }) => {
                            // The pinned token expired during the snapshot (or the server
                            // was restored meanwhile): start over.
                            self.store.reset_token(&account, restart_reason(&e))?;
                            cursor = None;
                            continue;
                        }
                        Err(e) => return Ok(Step::Pause(self.pause_for(&e))),
                    };
                    let next = if page.has_more {
                        SyncState {
                            change_token: None,
                            snapshot_cursor: page.next_cursor.clone(),
                            snapshot_token: Some(page.token.clone()),
                            last_sync_at: None,
                        }
                    } else {
                        SyncState {
                            change_token: Some(page.token.clone()),
                            ..SyncState::default()
                        }
                    };
                    report.pulled += self.store.apply_pulled(&account, &page.records, &next)?;
                    if cursor.is_none() {
                        // The first page: the count starts again, with the server's total.
                        progress = PullProgress {
                            pulled: 0,
                            expected: page.estimated_total,
                        };
                    }
                    progress.pulled += page.records.len() as u64;
                    if !page.has_more {
                        self.store.set_pull_progress(None);
                        break;
                    }
                    self.store.set_pull_progress(Some(progress));
                    cursor = page.next_cursor;
                }
                continue;
            };
            let mut since = token;
            loop {
                let page = match self
                    .call(|t| {
                        let since = since.clone();
                        async move {
                            self.transport
                                .changes(&t, Some(&since), self.config.page_size)
                                .await
                        }
                    })
                    .await
                {
                    Ok(p) => p,
                    Err(e @ TransportError::Http { status: 410, .. }) if !restarted => {
                        restarted = true;
                        self.store.reset_token(&account, restart_reason(&e))?;
                        break;
                    }
                    Err(e) => return Ok(Step::Pause(self.pause_for(&e))),
                };
                let next = SyncState {
                    change_token: Some(page.next_token.clone()),
                    ..SyncState::default()
                };
                report.pulled += self.store.apply_pulled(&account, &page.changes, &next)?;
                since = page.next_token;
                if !page.has_more {
                    if !restarted && self.store.restore_suspected(&account)? {
                        // The server was restored and the token survived it: start
                        // again, and send what it lost.
                        restarted = true;
                        self.store.reset_token(&account, Restart::Unknown)?;
                        break;
                    }
                    // Own writes the changes never showed are checked with the server
                    // (before a restart's end takes missing records for collected).
                    self.store.check_own_writes()?;
                    // Caught up: every record the server holds was delivered since the
                    // last snapshot began (by the snapshot if it changed before its pin,
                    // by these changes if after). Records a restart marked and nothing
                    // delivered are gone from the server.
                    self.store.finish_resnapshot(&account)?;
                    return self.refetch(&account, report).await;
                }
            }
        }
    }
}
