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
//! | `conflict` result | the generated three-way merge combines both sides and the result is pushed; `manual` fields make the record `conflicted` until the user resolves it ([`LocalStore::conflicts`], [`LocalStore::keep_local`], [`LocalStore::keep_server`], [`LocalStore::resolve_with`]) |
//! | `rejected` result, 4xx | the item is dead with the reason, visible in [`LocalStore::status`], retried by [`LocalStore::retry_dead`] |
//! | 410 on a change token | the engine takes a new snapshot; once caught up, it asks the server about each record the device held as synced that the server no longer has: removed if the server collected it (`token-expired`), created on the server again if it lost it (a restored or replaced server). A record sent from another history than the device followed (a version number it knows with another commit time) starts the same over; an own write the pulls never show is asked about |
//!
//! After every response the engine hands the server's `Date` to
//! [`LocalStore::observe_server_time`], so local edits are stamped in the server's time.

mod http;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value as Json;
use tracing::Instrument;
use uuid::Uuid;

pub use http::HttpTransport;

use crate::protocol::{
    ChangesResponse, Mutation, Problem, PushRequest, PushResponse, SnapshotResponse,
};
use crate::store::{ItemOutcome, LocalStore, OutboxItem, Restart, StoreError, SyncState};

/// A failed request.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TransportError {
    /// The server could not be reached at all (no network, connection refused).
    #[error("server unreachable: {0}")]
    Unreachable(String),
    /// The request timed out (it may or may not have been applied).
    #[error("request timed out")]
    Timeout,
    /// The server answered with an error status.
    #[error("HTTP {status}{}", problem.as_ref().map(|p| format!(": {p}")).unwrap_or_default())]
    Http {
        /// The status code.
        status: u16,
        /// `Retry-After`, if the server sent one.
        retry_after: Option<Duration>,
        /// The problem body, if any.
        problem: Option<Box<Problem>>,
    },
    /// The response could not be understood.
    #[error("invalid response: {0}")]
    Invalid(String),
}

/// How the engine talks to a server. [`HttpTransport`] is the real one; tests wrap it to
/// inject faults, or implement it in process.
pub trait Transport: Send + Sync + 'static {
    /// `POST /push`.
    fn push(
        &self,
        token: &str,
        request: &PushRequest,
    ) -> impl Future<Output = Result<PushResponse, TransportError>> + Send;
    /// `GET /changes`.
    fn changes(
        &self,
        token: &str,
        since: Option<&str>,
        limit: u32,
    ) -> impl Future<Output = Result<ChangesResponse, TransportError>> + Send;
    /// `GET /snapshot`.
    fn snapshot(
        &self,
        token: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> impl Future<Output = Result<SnapshotResponse, TransportError>> + Send;
    /// `GET /health`: whether the server is reachable (the reachability check).
    fn health(&self) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// The server's wall time as of the last response (its `Date` header), if known. The
    /// engine hands it to [`LocalStore::observe_server_time`] after every request, so
    /// the device's hybrid logical clock follows the server's time. `None` (the default)
    /// leaves the device's clock as it is.
    fn server_time(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        None
    }
}

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
    /// Mutations per push (default 100).
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

/// Why a run stopped early. Nothing is lost: the next run continues.
#[derive(Debug, Clone, PartialEq)]
pub enum PauseReason {
    /// The server could not be reached.
    Offline(String),
    /// The server refused the token, also after a refresh.
    AuthFailed(String),
    /// The server is failing or busy; items wait for their backoff.
    Backoff(String),
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
    /// Records pulled and applied.
    pub pulled: usize,
    /// Whether the run took a snapshot.
    pub snapshot: bool,
    /// Why the run stopped early, if it did.
    pub paused: Option<PauseReason>,
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
}

impl<T: Transport> std::fmt::Debug for SyncEngine<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncEngine")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The delay before attempt `attempt + 1`: `backoff_base * 2^(attempt - 1)`, capped at
/// `backoff_cap`, scaled by `0.5 + 0.5 * jitter` (`jitter` in `[0, 1)`, so the delay lies
/// in `[d/2, d]`), and never shorter than the server's `Retry-After` (which may exceed
/// the cap).
fn retry_delay(
    config: &EngineConfig,
    attempt: i64,
    retry_after: Option<Duration>,
    jitter: f64,
) -> Duration {
    let exp = 2f64.powi(attempt.clamp(1, 30) as i32 - 1);
    let d = (config.backoff_base.as_secs_f64() * exp).min(config.backoff_cap.as_secs_f64());
    let d = Duration::from_secs_f64(d * (0.5 + 0.5 * jitter));
    retry_after
        .map_or(d, |r| d.max(r))
        .min(config.backoff_cap.max(retry_after.unwrap_or_default()))
}

fn to_mutation(item: &OutboxItem) -> Mutation {
    let get = |k: &str| item.payload.get(k).cloned().filter(|v| !v.is_null());
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
    /// An engine for `store`, talking through `transport`.
    pub fn new(store: LocalStore, transport: T, config: EngineConfig) -> Self {
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

    fn token(&self) -> String {
        self.token.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The delay before attempt `attempt + 1` ([`retry_delay`] with the next jitter).
    fn backoff(&self, attempt: i64, retry_after: Option<Duration>) -> Duration {
        let jitter = self.jitter.lock().unwrap_or_else(|e| e.into_inner()).f64();
        retry_delay(&self.config, attempt, retry_after, jitter)
    }

    /// Calls the server, refreshing the token once on 401/403.
    async fn call<R, F, Fut>(&self, f: F) -> Result<R, TransportError>
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = Result<R, TransportError>>,
    {
        let result = self.call_once(f).await;
        // A response (success or an error status) carries the server's time.
        if matches!(&result, Ok(_) | Err(TransportError::Http { .. }))
            && let Some(t) = self.transport.server_time()
        {
            self.store.observe_server_time(t);
        }
        result
    }

    async fn call_once<R, F, Fut>(&self, f: F) -> Result<R, TransportError>
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = Result<R, TransportError>>,
    {
        match f(self.token()).await {
            Err(TransportError::Http {
                status: 401 | 403, ..
            }) if self.config.refresher.is_some() => {
                let refreshed = (self.config.refresher.as_ref().expect("checked"))();
                match refreshed {
                    Some(t) => {
                        *self.token.lock().unwrap_or_else(|e| e.into_inner()) = t.clone();
                        f(t).await
                    }
                    None => f(self.token()).await,
                }
            }
            other => other,
        }
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
        async move {
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
        .instrument(span)
        .await
    }

    fn pause_for(&self, e: &TransportError) -> PauseReason {
        match e {
            TransportError::Unreachable(m) => PauseReason::Offline(m.clone()),
            TransportError::Http {
                status: 401 | 403, ..
            } => PauseReason::AuthFailed(e.to_string()),
            other => PauseReason::Backoff(other.to_string()),
        }
    }

    async fn upload(&self, report: &mut SyncReport) -> Result<Step<()>, SyncError> {
        let mut batch_size = self.config.batch_size.max(1);
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
            let ids: Vec<i64> = batch.iter().map(|i| i.id).collect();
            {
                let mut retry_at = self.retry_at.lock().unwrap_or_else(|e| e.into_inner());
                for id in &ids {
                    retry_at.remove(id);
                }
            }
            let request = PushRequest {
                mutations: batch.iter().map(to_mutation).collect(),
            };
            let request = &request;
            match self
                .call(|t| async move { self.transport.push(&t, request).await })
                .await
            {
                Ok(response) => {
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
                        let outcome = self.store.apply_result(item, result)?;
                        tracing::info!(outbox_item_id = item.id, idempotency_key = %item.idempotency_key, result = ?outcome, "pushed");
                        match outcome {
                            ItemOutcome::Applied => report.applied += 1,
                            ItemOutcome::Merged => report.merged += 1,
                            ItemOutcome::Conflicted(_) => report.conflicted += 1,
                            ItemOutcome::Superseded(_) => report.superseded += 1,
                            ItemOutcome::Dead(_) => report.dead += 1,
                        }
                    }
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
                Err(TransportError::Http { status: 413, .. }) if batch_size > 1 => {
                    self.store.mark_unsent(&ids)?;
                    batch_size = (batch_size / 2).max(1);
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
                    if !page.has_more {
                        break;
                    }
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
                    return Ok(Step::Done(()));
                }
            }
        }
    }
}

/// When the engine syncs on its own.
#[derive(Debug, Clone)]
pub struct Triggers {
    /// A periodic sync (default every 60 s).
    pub interval: Duration,
    /// A sync this long after the last local write (default 500 ms), so a burst of edits
    /// goes in one push.
    pub debounce: Duration,
}

impl Default for Triggers {
    fn default() -> Self {
        Triggers {
            interval: Duration::from_secs(60),
            debounce: Duration::from_millis(500),
        }
    }
}

/// A running background engine; dropping it (or [`EngineHandle::stop`]) stops it.
#[derive(Debug)]
pub struct EngineHandle {
    task: tokio::task::JoinHandle<()>,
    wake: Arc<tokio::sync::Notify>,
}

impl EngineHandle {
    /// Asks for a sync now (does not wait for it).
    pub fn sync_soon(&self) {
        self.wake.notify_one();
    }

    /// Stops the background engine.
    pub fn stop(self) {
        self.task.abort();
    }
}

impl Drop for EngineHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<T: Transport> SyncEngine<T> {
    /// Runs the engine in the background: a sync every `interval`, one `debounce` after
    /// local writes, and on [`EngineHandle::sync_soon`]. Before each run the engine checks
    /// that the server answers its health endpoint (never a network-interface flag), and
    /// skips the run while it does not.
    pub fn start(self: Arc<Self>, triggers: Triggers) -> EngineHandle {
        let wake = Arc::new(tokio::sync::Notify::new());
        let writes = self.store.subscribe();
        let wake_on_write = wake.clone();
        // Store events arrive on a std channel; forward them to the async side.
        std::thread::spawn(move || {
            while writes.recv().is_some() {
                wake_on_write.notify_one();
            }
        });
        let wake_loop = wake.clone();
        let task = tokio::spawn(async move {
            let mut interval = tokio::time::interval(triggers.interval);
            loop {
                tokio::select! {
                    _ = interval.tick() => {}
                    _ = wake_loop.notified() => {
                        tokio::time::sleep(triggers.debounce).await;
                    }
                }
                if self.transport.health().await.is_err() {
                    continue;
                }
                if let Err(e) = self.sync_now().await {
                    tracing::error!(error = %e, "sync failed");
                }
            }
        });
        EngineHandle { task, wake }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_grow_stay_capped_and_honour_retry_after() {
        let mut c = EngineConfig::new("a", "t");
        c.backoff_base = Duration::from_millis(10);
        c.backoff_cap = Duration::from_millis(50);
        let full = |n| retry_delay(&c, n, None, 0.999_999);
        let half = |n| retry_delay(&c, n, None, 0.0);
        assert_eq!(half(1), Duration::from_millis(5), "jitter halves at most");
        assert!(full(1) < Duration::from_millis(10) && full(1) > Duration::from_millis(9));
        assert!(full(3) > full(2) && full(2) > full(1), "grows");
        assert!(full(30) <= Duration::from_millis(50), "capped");
        assert_eq!(
            retry_delay(&c, 1, Some(Duration::from_secs(30)), 0.5),
            Duration::from_secs(30),
            "Retry-After wins, even above the cap"
        );
    }
}
