//! The local store: SQLite as the source of truth, with a durable, coalescing outbox.
//!
//! Every write is one SQLite transaction that changes the entity row (typed columns, so
//! the data can be queried with plain SQL), its sync metadata (`sync_status = 'pending'`,
//! the hybrid-logical-clock stamp `sync_updated_at`, per-field `sync_clocks`) and the
//! outbox row that tells the server about it. A crash at any point leaves either all of
//! it or none of it.
//!
//! ```
//! # use sync_runtime::prelude::*;
//! # use sync_runtime::store::{LocalStore, Migrations};
//! # #[derive(Syncable, Clone, Debug, PartialEq)]
//! # pub struct Note { #[sync(id)] pub id: Uuid, pub body: String }
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let gen_dir = dir.path().join("gen");
//! # std::fs::create_dir_all(gen_dir.join("m"))?;
//! # std::fs::write(gen_dir.join("m/0001_init.sql"), sync_runtime::store::__doc_migration())?;
//! let store = LocalStore::builder(dir.path().join("app.db"))
//!     .entity::<Note>()
//!     .migrations(Migrations::from_dir(gen_dir.join("m"))?)
//!     .open()?;
//! let note = Note { id: Uuid::now_v7(), body: "hello".into() };
//! store.create(&note)?;
//! store.update(&Note { body: "hello world".into(), ..note.clone() })?;
//! store.update(&Note { body: "hello, world".into(), ..note.clone() })?;
//! assert_eq!(store.get::<Note>(note.id)?.unwrap().body, "hello, world");
//! // Not yet sent: the create, and one update the two edits were composed into.
//! assert_eq!(store.outbox()?.len(), 2);
//! # Ok(()) }
//! ```
//!
//! # Outbox
//!
//! Entities with `outbox = "coalesce"` (the default) compose pending mutations of one
//! record: update + update = one update whose patch is the composition (sums add, `lww`
//! keeps the latest edit, `union` composes adds and removes, `manual` keeps the first
//! base); update + delete = delete; a create is never composed: an update or a delete
//! after it queues behind it. Only an item that was never attempted is
//! rewritten, and it takes a new idempotency key: once an item has been handed to the
//! network (`sending`, or `failed` after an attempt), its key and body are frozen and
//! later edits queue behind it. An item that adds to a `sum` field (a non-zero `add`, or
//! a create with a non-zero sum) is frozen from the start: later edits of the record
//! queue behind it too.
//!
//! Why: a device restored from a backup of its own database (a phone restored from a
//! cloud backup) sends again the items the backup held unsent, under their keys, and the
//! life of the database the restore replaced may have sent them already. A key that
//! names one body in every life is answered from the server's record of the first
//! sending (counted once); a body rewritten under its old key would be refused as
//! `idempotency-key-reused`, and a rewritten body under a new key carries the sums of the
//! first body again. Items without sums are safe to send twice (`lww` stamps, `union`
//! operations and `manual` bases say the same thing again). A create is never composed
//! with later edits: the server takes a create that carries a stamp its record holds for
//! the same create sent again, so what was folded into it would be dropped. A create
//! deleted before it was sent is sent with the delete after it: the other life may
//! have sent the create, and another device may hold the record.
//! Delete then create of the same id queues a delete and a create, so the server ends
//! with the new record and nothing of the old one. `outbox = "history"` entities keep
//! every mutation, in order.
//!
//! # Transactions
//!
//! [`LocalStore::transaction`] commits several writes, of any entities, as one: the
//! rows and outbox items of all of them, or of none. Their outbox items are marked as
//! one transaction (a `txn` member of the item's body, so no client migration is
//! needed), and the engine sends them in one push, never split across pushes.
//!
//! # Base copies
//!
//! Three-way merges need the last server-acknowledged copy of each record (the *base*).
//! A clean row is that copy, so the `sync_base_<table>` table holds one only for records
//! the device has changed locally: the first local write to a clean, acknowledged row
//! copies it there in the same transaction, and every path that moves the base keeps the
//! copy up to date while it exists. A pulled record the device never touched is written
//! once, to its row (see `BENCHMARKS.md`: this halved the work of applying a page).

mod acklog;
mod columns;
mod conflicts;
mod migrations;
mod open;
mod outbox;
mod pull;
mod push;
mod query;
mod restart;
mod status;
mod transaction;
mod watch;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use rusqlite::types::Value as Sql;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params, params_from_iter};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use sync_model::{Entity, Model, OutboxMode};
use uuid::Uuid;

pub use crate::protocol::MutationOp;
pub use acklog::AckLog;
pub(crate) use acklog::*;
pub use conflicts::Conflict;
pub(crate) use conflicts::*;
pub use migrations::{MigrationFile, Migrations};
pub(crate) use open::*;
pub(crate) use outbox::*;
pub(crate) use pull::*;
pub(crate) use push::*;
pub(crate) use query::*;
pub use restart::SyncState;
pub(crate) use restart::*;
pub(crate) use status::*;
pub use transaction::Transaction;
pub use watch::{Watch, WatchStream};

use crate::hlc::{Hlc, HlcClock, NodeId};
use crate::syncable::{Clocks, DiffError, InvalidValue, Patch, Record, RecordError, Syncable};

impl From<crate::migrations::MigrationsError> for StoreError {
    fn from(e: crate::migrations::MigrationsError) -> Self {
        StoreError::Migrations(e.to_string())
    }
}

/// Errors of the local store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("local database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The migrations could not be read.
    #[error("client migrations: {0}")]
    Migrations(String),
    /// A migration failed to apply; the database is unchanged by it.
    #[error("client migration {version:04}_{name} failed: {source}")]
    MigrationFailed {
        /// Its number.
        version: u32,
        /// Its name.
        name: String,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// The database was migrated by a newer version of the app.
    #[error(
        "the local database is at migration {database} but this app only knows migrations up to {app}: it was written by a newer version of the app; update the app"
    )]
    NewerDatabase {
        /// The database's last migration.
        database: u32,
        /// The app's last migration.
        app: u32,
    },
    /// The database's schema is not the compiled model's.
    #[error(
        "the local database at {path} was migrated for model fingerprint {database}, but the entities registered with the store ({entities}) have fingerprint {compiled}; regenerate the client migrations with `sync-cli generate`, embed them in the app, and register every entity of the model with `LocalStore::builder(..).entity::<T>()`"
    )]
    FingerprintMismatch {
        /// The database file.
        path: PathBuf,
        /// The fingerprint recorded by the last migration.
        database: String,
        /// The fingerprint of the registered entities.
        compiled: String,
        /// The registered entities.
        entities: String,
    },
    /// The registered entities are not the model the migrations were generated for; found
    /// before any migration was applied, so the database is untouched.
    #[error(
        "the local database at {path} was not opened: the entities registered with the store ({entities}) are not the model its migrations were generated for; nothing was applied:\n{}",
        problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n")
    )]
    RegistrationMismatch {
        /// The database file.
        path: PathBuf,
        /// The registered entities.
        entities: String,
        /// Each difference, naming the entity or table and what to do.
        problems: Vec<String>,
    },
    /// The type was not registered with the store.
    #[error(
        "entity `{0}` is not registered with this store; add `.entity::<T>()` to the store builder"
    )]
    UnknownEntity(&'static str),
    /// No live record with this id.
    #[error("no `{entity}` with id {id}")]
    NotFound {
        /// The entity.
        entity: &'static str,
        /// The id.
        id: Uuid,
    },
    /// A live record with this id exists already.
    #[error("a `{entity}` with id {id} exists already; use update")]
    AlreadyExists {
        /// The entity.
        entity: &'static str,
        /// The id.
        id: Uuid,
    },
    /// A filter or ordering names a field the entity does not sync.
    #[error("`{entity}` has no synced field `{field}`")]
    UnknownField {
        /// The entity.
        entity: &'static str,
        /// The field asked for.
        field: String,
    },
    /// A query filter that cannot apply to its field: a value of another type than the
    /// field's, or a test its type does not have (`contains` on a field that is not a
    /// set, `starts_with` on one that is not a string, `is_null` on one that is not
    /// optional).
    #[error("query on `{entity}.{field}`: {reason}")]
    InvalidQuery {
        /// The entity.
        entity: &'static str,
        /// The field's wire name.
        field: String,
        /// What does not fit, naming the field's type and the value's.
        reason: String,
    },
    /// The value cannot be stored or sent.
    #[error(transparent)]
    Invalid(#[from] InvalidValue),
    /// The change cannot be expressed as a patch.
    #[error(transparent)]
    Diff(#[from] DiffError),
    /// A stored record does not fit the entity.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// Stored data that the store cannot read back (a bug, or an edit outside syncgen).
    #[error("local database holds unreadable sync data: {0}")]
    Corrupt(String),
}

/// How durable a commit is (SQLite's `synchronous` pragma in WAL mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Every commit is flushed to disk before the write returns: survives power loss.
    #[default]
    Full,
    /// Commits survive an app crash but the last ones may be lost to a power cut.
    Normal,
}

/// Offsets between the device's clock and the server's smaller than this (2 s) are
/// ignored: the server's `Date` header has one-second resolution, and a request takes time.
pub const CLOCK_OFFSET_RESOLUTION_MS: i64 = 2_000;

/// A source of wall-clock milliseconds.
pub type WallClock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// A source of idempotency keys.
pub type KeySource = Arc<dyn Fn() -> Uuid + Send + Sync>;

/// Configures and opens a [`LocalStore`].
pub struct StoreBuilder {
    path: PathBuf,
    entities: Vec<&'static Entity>,
    fns: Vec<crate::erased::ErasedEntity>,
    migrations: Option<Migrations>,
    wall_clock: Option<WallClock>,
    key_source: Option<KeySource>,
    durability: Durability,
    ack_log: AckLog,
}

impl std::fmt::Debug for StoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreBuilder")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// A receiver of [`StoreEvent`]s: `false` once it is gone.
type Subscriber = Box<dyn Fn(&StoreEvent) -> bool + Send>;

struct Inner {
    conn: Mutex<Connection>,
    clock: HlcClock,
    tables: BTreeMap<String, Table>,
    path: PathBuf,
    wall_clock: Option<WallClock>,
    /// Server time minus device time, in milliseconds, as last learned from a response
    /// (0 until then, and when within [`CLOCK_OFFSET_RESOLUTION_MS`]).
    clock_offset_ms: std::sync::atomic::AtomicI64,
    key_source: Option<KeySource>,
    /// How many acknowledged changes are kept to send again after a restore.
    ack_log: AckLog,
    /// The registered model's fingerprint, computed once at open.
    fingerprint: String,
    /// This opening of the store: the session of the dots it draws (16 hex digits,
    /// random; see [`crate::protocol::Dot`]), and the last number drawn.
    dot_session: String,
    dot_seq: std::sync::atomic::AtomicU64,
    /// The engine's state, as it last said ([`LocalStore::set_engine_state`]).
    engine_state: Mutex<EngineState>,
    /// A snapshot's progress ([`LocalStore::set_pull_progress`]).
    pull_progress: Mutex<Option<PullProgress>>,
    /// Whether the server said it speaks dots (protocol 1.3.0 or later), as last learned
    /// from a response and kept in `sync_meta` under `server-protocol`.
    server_speaks_dots: std::sync::atomic::AtomicBool,
    /// Whether the server speaks 1.3.1 or later (it takes `replaces`).
    server_takes_replaces: std::sync::atomic::AtomicBool,
    /// Whether the server speaks 1.3.2 or later (it takes a dot's `prev` and `dot_gaps`).
    server_takes_gaps: std::sync::atomic::AtomicBool,
    /// Whether the server speaks 1.3.3 or later (its records say when a life began:
    /// PROTOCOL.md SUM-4).
    server_marks_lives: std::sync::atomic::AtomicBool,
    /// Whether the server speaks 1.4.0 or later: it applies a transaction's mutations
    /// all or none (PROTOCOL.md TXN-1).
    server_applies_transactions: std::sync::atomic::AtomicBool,
    /// Per record, the number of the last dot this session drew for it: the next dot's
    /// `prev` (PROTOCOL.md SUM-3). One entry per record this session gave a dot.
    last_dots: Mutex<std::collections::HashMap<(String, Uuid), u64>>,
    /// The transaction new outbox items join while [`LocalStore::transaction`] runs.
    txn_group: Mutex<Option<String>>,
    /// Each returns `false` once its receiver is gone (it is dropped then).
    subscribers: Mutex<Vec<Subscriber>>,
    status_watchers: Mutex<Vec<mpsc::Sender<SyncStatus>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Best effort: the clock also resumes from the newest row stamp on open.
        let last = match &self.wall_clock {
            Some(w) => self.clock.now_at(w()),
            None => self.clock.now(),
        };
        if let Ok(conn) = self.conn.lock() {
            let _ = meta_set(&conn, "hlc", &last.to_string());
        }
    }
}

/// The local store. Cheap to clone; every clone is the same store, usable from any thread.
#[derive(Clone)]
pub struct LocalStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for LocalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

/// What happened to a record, as told to subscribers after the commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreEvent {
    /// A record was written locally or by a sync.
    Changed {
        /// The entity's wire name.
        entity: String,
        /// The record's id.
        id: Uuid,
        /// What kind of change, as the device's copy of the record saw it.
        change: ChangeKind,
        /// Who made it.
        origin: ChangeOrigin,
    },
}

/// The kind of a [`StoreEvent::Changed`]: whether the record was live before and after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// Not live before (never held, or deleted), live after.
    Created,
    /// Live before and after.
    Updated,
    /// Live before, deleted (or dropped) after.
    Deleted,
}

impl ChangeKind {
    /// The kind of a change from whether the record was live before and after it; `None`
    /// if it was live neither time (a tombstone the device learned of, say).
    pub(crate) fn of(before: bool, after: bool) -> Option<Self> {
        match (before, after) {
            (false, true) => Some(ChangeKind::Created),
            (true, true) => Some(ChangeKind::Updated),
            (true, false) => Some(ChangeKind::Deleted),
            (false, false) => None,
        }
    }
}

/// Where a [`StoreEvent::Changed`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeOrigin {
    /// The app on this device: a create, update or delete, or a conflict resolved.
    Local,
    /// The server: a pull or snapshot, or the server's answer to a push (its record
    /// merged in, a delete that won).
    Remote,
}

/// A subscription to [`StoreEvent`]s; events arrive after their transaction committed.
#[derive(Debug)]
pub struct Subscription<T> {
    rx: mpsc::Receiver<T>,
}

impl<T> Subscription<T> {
    /// Waits for the next event.
    pub fn recv(&self) -> Option<T> {
        self.rx.recv().ok()
    }

    /// Waits for the next event, at most `timeout`.
    pub fn recv_timeout(&self, timeout: std::time::Duration) -> Option<T> {
        self.rx.recv_timeout(timeout).ok()
    }

    /// The next event if one is waiting.
    pub fn try_recv(&self) -> Option<T> {
        self.rx.try_recv().ok()
    }
}

/// What a UI shows about syncing.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SyncStatus {
    /// Outbox items not yet acknowledged by the server (pending, sending or failed).
    pub pending: u64,
    /// Items waiting for a retry after a failed attempt.
    pub failed: Vec<OutboxItem>,
    /// Items that will not be retried automatically (rejected by the server, or out of
    /// attempts); retry them with [`LocalStore::retry_dead`].
    pub dead: Vec<OutboxItem>,
    /// Records with an unresolved conflict: `(entity, id)`.
    pub conflicted: Vec<(String, Uuid)>,
    /// When a sync last completed, if ever.
    pub last_sync_at: Option<DateTime<Utc>>,
    /// When the oldest change still waiting for the server was made: its age is how far
    /// behind the server is.
    pub oldest_pending_at: Option<DateTime<Utc>>,
    /// Attempts beyond the first made for the items still queued (how much retrying is
    /// going on).
    pub retries: u64,
    /// What the sync engine is doing, as it last said ([`EngineState::NotStarted`] until
    /// an engine runs with this store).
    pub engine: EngineState,
    /// While a snapshot is pulled (a first sync, or a new snapshot after a 410): how far
    /// it got, for a progress bar. `None` otherwise.
    pub progress: Option<PullProgress>,
    /// [`SyncStatus::pending`] by entity (wire name); entities with none are left out.
    pub pending_by_entity: BTreeMap<String, u64>,
    /// The records with changes not yet acknowledged (`(entity, id)`, each once, in
    /// queue order): the rows a UI badges as not yet synced. Dead items' records are in
    /// [`SyncStatus::dead`].
    pub pending_records: Vec<(String, Uuid)>,
}

/// How far a snapshot got ([`SyncStatus::progress`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PullProgress {
    /// Records pulled and applied since the snapshot began (in this run, if it resumed
    /// one an earlier run began).
    pub pulled: u64,
    /// About how many the whole snapshot holds, as the server estimated it on its first
    /// page; `None` if the server did not say (an older server, or a snapshot resumed
    /// from an earlier run).
    pub expected: Option<u64>,
}

/// What the sync engine is doing ([`SyncStatus::engine`]), as its last run left it. Set
/// by the [`SyncEngine`](crate::engine::SyncEngine) of the store; kept in memory.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EngineState {
    /// No engine has run with this store since it was opened.
    #[default]
    NotStarted,
    /// A run is under way.
    Syncing,
    /// The last run completed: everything it could send was answered, and the pulls
    /// caught up.
    Idle,
    /// The server could not be reached (no network, the server down): `reason`.
    Offline {
        /// What the transport said.
        reason: String,
    },
    /// The server refused the token, also after a refresh: the user must sign in again.
    AuthFailed {
        /// The server's problem, if it gave one.
        reason: String,
    },
    /// The server does not serve this app's model (426): the server is behind the app,
    /// or the app is older than the server still serves (see `reason`). Changes wait.
    ModelNotServed {
        /// The server's problem.
        reason: String,
    },
    /// The server failed or was busy: items wait for their retry, the next one due at
    /// `until` (the store's wall clock; `None` if unknown).
    BackingOff {
        /// When the next retry is due.
        until: Option<DateTime<Utc>>,
        /// The last failure.
        reason: String,
    },
}

/// The state of an outbox item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutboxStatus {
    /// Waiting to be sent.
    Pending,
    /// Handed to the network.
    Sending,
    /// An attempt failed; it will be retried.
    Failed,
    /// Not retried automatically.
    Dead,
}

impl OutboxStatus {
    fn parse(s: &str) -> Result<Self, StoreError> {
        Ok(match s {
            "pending" => OutboxStatus::Pending,
            "sending" => OutboxStatus::Sending,
            "failed" => OutboxStatus::Failed,
            "dead" => OutboxStatus::Dead,
            other => return Err(StoreError::Corrupt(format!("outbox status `{other}`"))),
        })
    }
}

/// One row of the outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxItem {
    /// Position in the queue.
    pub id: i64,
    /// The entity's wire name.
    pub entity_type: String,
    /// The record's id.
    pub entity_id: Uuid,
    /// What to do.
    pub op: MutationOp,
    /// `{"record", "clocks"}` for a create, `{"patch"}` for an update, `{"hlc"}` for a delete.
    pub payload: Json,
    /// Sent with every attempt; the server replays its stored result for a repeat.
    pub idempotency_key: String,
    /// The server version the mutation was made against (`None` for a new record).
    pub base_version: Option<i64>,
    /// When it was queued (the device's wall clock).
    pub created_at: DateTime<Utc>,
    /// Attempts so far.
    pub attempt_count: i64,
    /// When the next attempt is due, for display (the schedule itself runs on the
    /// engine's monotonic clock).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Its state.
    pub status: OutboxStatus,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
}

/// The sync metadata of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMeta {
    /// Where the record stands with the server.
    pub sync_status: RecordStatus,
    /// The stamp of the last local edit.
    pub updated_at: Hlc,
    /// The server's version of the record, once acknowledged.
    pub version: Option<i64>,
    /// A tombstone.
    pub deleted: bool,
}

/// Where one record stands with the server (its `sync_status` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordStatus {
    /// As the server last acknowledged it.
    Clean,
    /// Local changes wait in the outbox.
    Pending,
    /// Synced, and being confirmed against a new snapshot of the server (after a change
    /// token expired or the server's database was replaced).
    Syncing,
    /// A change of the record failed and waits for a retry, or is dead.
    Failed,
    /// `manual` fields hold an unresolved conflict ([`LocalStore::conflicts`]).
    Conflicted,
}

impl RecordStatus {
    /// The column's spelling: `clean`, `pending`, `syncing`, `failed` or `conflicted`.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordStatus::Clean => "clean",
            RecordStatus::Pending => "pending",
            RecordStatus::Syncing => "syncing",
            RecordStatus::Failed => "failed",
            RecordStatus::Conflicted => "conflicted",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        Ok(match s {
            "clean" => RecordStatus::Clean,
            "pending" => RecordStatus::Pending,
            "syncing" => RecordStatus::Syncing,
            "failed" => RecordStatus::Failed,
            "conflicted" => RecordStatus::Conflicted,
            other => return Err(StoreError::Corrupt(format!("sync_status `{other}`"))),
        })
    }
}

/// A simple query: filters on synced fields (by wire name, all of them must hold), an
/// order and a limit. Values are given as Rust values and checked against the field's
/// type when the query runs ([`LocalStore::query`]).
///
/// ```
/// use sync_runtime::store::Query;
///
/// let q = Query::new()
///     .eq("status", "open")
///     .contains("tags", "urgent")
///     .is_not_null("due")
///     .is_in("priority", [1, 2])
///     .starts_with("title", "Re: ")
///     .order_by_desc("likes")
///     .limit(20);
/// # let _ = q;
/// ```
#[derive(Debug, Clone, Default)]
pub struct Query {
    filters: Vec<Filter>,
    order: Option<(String, bool)>,
    limit: Option<u32>,
}

/// One condition of a [`Query`]; a value that did not serialise keeps serde's message.
#[derive(Debug, Clone)]
pub(crate) enum Filter {
    /// `field <op> value` (`=` and `<>` with `null` test for NULL).
    Compare {
        field: String,
        op: &'static str,
        value: Result<Json, String>,
    },
    /// The `union` set `field` holds `item`.
    Contains {
        field: String,
        item: Result<Json, String>,
    },
    /// `field` is NULL (`null: true`) or not.
    Null { field: String, null: bool },
    /// `field` is one of `values`.
    In {
        field: String,
        values: Result<Vec<Json>, String>,
    },
    /// The string `field` begins with `prefix` (case-sensitive, by characters).
    Prefix { field: String, prefix: String },
}

impl Query {
    /// Every live record.
    pub fn new() -> Self {
        Self::default()
    }

    fn compare(mut self, field: &str, op: &'static str, value: impl Serialize) -> Self {
        self.filters.push(Filter::Compare {
            field: field.to_string(),
            op,
            value: serde_json::to_value(value).map_err(|e| e.to_string()),
        });
        self
    }

    /// `field = value` (`value` `None` matches NULL).
    pub fn eq(self, field: &str, value: impl Serialize) -> Self {
        self.compare(field, "=", value)
    }
    /// `field <> value` (`value` `None` matches every non-NULL value).
    pub fn ne(self, field: &str, value: impl Serialize) -> Self {
        self.compare(field, "<>", value)
    }
    /// `field < value`.
    pub fn lt(self, field: &str, value: impl Serialize) -> Self {
        self.compare(field, "<", value)
    }
    /// `field <= value`.
    pub fn le(self, field: &str, value: impl Serialize) -> Self {
        self.compare(field, "<=", value)
    }
    /// `field > value`.
    pub fn gt(self, field: &str, value: impl Serialize) -> Self {
        self.compare(field, ">", value)
    }
    /// `field >= value`.
    pub fn ge(self, field: &str, value: impl Serialize) -> Self {
        self.compare(field, ">=", value)
    }
    /// The set `field` (a `union` field) holds `item`, a value of the set's item type.
    pub fn contains(mut self, field: &str, item: impl Serialize) -> Self {
        self.filters.push(Filter::Contains {
            field: field.to_string(),
            item: serde_json::to_value(item).map_err(|e| e.to_string()),
        });
        self
    }
    /// The optional `field` is `None`.
    pub fn is_null(mut self, field: &str) -> Self {
        self.filters.push(Filter::Null {
            field: field.to_string(),
            null: true,
        });
        self
    }
    /// The optional `field` is `Some`.
    pub fn is_not_null(mut self, field: &str) -> Self {
        self.filters.push(Filter::Null {
            field: field.to_string(),
            null: false,
        });
        self
    }
    /// `field` is one of `values` (none: no record matches; a `None` among them matches
    /// NULL).
    pub fn is_in<V: Serialize>(mut self, field: &str, values: impl IntoIterator<Item = V>) -> Self {
        self.filters.push(Filter::In {
            field: field.to_string(),
            values: values
                .into_iter()
                .map(|v| serde_json::to_value(v).map_err(|e| e.to_string()))
                .collect(),
        });
        self
    }
    /// The string `field` begins with `prefix` (case-sensitive; `""` matches every
    /// record).
    pub fn starts_with(mut self, field: &str, prefix: &str) -> Self {
        self.filters.push(Filter::Prefix {
            field: field.to_string(),
            prefix: prefix.to_string(),
        });
        self
    }
    /// Orders by a field, ascending.
    pub fn order_by(mut self, field: &str) -> Self {
        self.order = Some((field.to_string(), false));
        self
    }
    /// Orders by a field, descending.
    pub fn order_by_desc(mut self, field: &str) -> Self {
        self.order = Some((field.to_string(), true));
        self
    }
    /// At most `n` records.
    pub fn limit(mut self, n: u32) -> Self {
        self.limit = Some(n);
        self
    }

    pub(crate) fn filters(&self) -> &[Filter] {
        &self.filters
    }

    pub(crate) fn order(&self) -> Option<&(String, bool)> {
        self.order.as_ref()
    }

    pub(crate) fn max(&self) -> Option<u32> {
        self.limit
    }
}

#[doc(hidden)]
/// The client migration of a one-entity model `Note { id, body }`, for doc examples.
pub fn __doc_migration() -> &'static str {
    include_str!("doc_note_migration.sql")
}
