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
//! assert_eq!(store.get::<Note>(note.id)?.unwrap().body, "hello world");
//! // Create then update, not yet sent: one outbox item, a create of the latest record.
//! assert_eq!(store.outbox()?.len(), 1);
//! # Ok(()) }
//! ```
//!
//! # Outbox
//!
//! Entities with `outbox = "coalesce"` (the default) compose pending mutations of one
//! record: update + update = one update whose patch is the composition (sums add, `lww`
//! keeps the latest edit, `union` composes adds and removes, `manual` keeps the first
//! base); create + update = create of the latest record; update + delete = delete;
//! create + delete = nothing to send. Only an item that was never attempted is
//! rewritten: once an item has been handed to the network (`sending`, or `failed` after
//! an attempt), its idempotency key and body are frozen and later edits queue behind it.
//! Delete then create of the same id queues a delete and a create, so the server ends
//! with the new record and nothing of the old one. `outbox = "history"` entities keep
//! every mutation, in order.
//!
//! # Base copies
//!
//! Three-way merges need the last server-acknowledged copy of each record (the *base*).
//! A clean row is that copy, so the `sync_base_<table>` table holds one only for records
//! the device has changed locally: the first local write to a clean, acknowledged row
//! copies it there in the same transaction, and every path that moves the base keeps the
//! copy up to date while it exists. A pulled record the device never touched is written
//! once, to its row (see `BENCHMARKS.md`: this halved the work of applying a page).

mod columns;
mod migrations;
mod sync;

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
pub use migrations::{MigrationFile, Migrations};
pub(crate) use sync::ItemOutcome;
pub(crate) use sync::Restart;
pub use sync::{Conflict, SyncState};

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
}

impl std::fmt::Debug for StoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreBuilder")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl StoreBuilder {
    /// Registers an entity type. Register every entity of the model: the store checks
    /// that together they are the model the database was migrated for.
    pub fn entity<T: Syncable>(mut self) -> Self {
        self.entities.push(T::model());
        self.fns.push(crate::erased::ErasedEntity::of::<T>());
        self
    }

    /// The client migrations generated by `sync-cli` (required).
    pub fn migrations(mut self, migrations: Migrations) -> Self {
        self.migrations = Some(migrations);
        self
    }

    /// Where the clock reads wall time (milliseconds since the epoch); the system clock by
    /// default. Deterministic simulations give each replica a simulated clock.
    pub fn wall_clock(mut self, f: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        self.wall_clock = Some(Arc::new(f));
        self
    }

    /// Where idempotency keys come from; random v4 UUIDs by default. Deterministic
    /// simulations draw them from their seeded generator.
    pub fn key_source(mut self, f: impl Fn() -> Uuid + Send + Sync + 'static) -> Self {
        self.key_source = Some(Arc::new(f));
        self
    }

    /// How durable each commit is (default [`Durability::Full`]).
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Opens (creating if needed) the database, applies pending migrations and checks that
    /// the database's schema is the registered model's.
    ///
    /// # Errors
    /// [`StoreError::Migrations`] if no migrations were given
    /// ([`StoreBuilder::migrations`]); [`StoreError::NewerDatabase`] if the database has a
    /// migration numbered above the app's last one; [`StoreError::MigrationFailed`] if a
    /// migration's SQL fails (that migration is rolled back, earlier ones stay applied);
    /// [`StoreError::FingerprintMismatch`] if the registered entities are not the model
    /// the last migration recorded (for example an entity is missing from the builder);
    /// [`StoreError::Corrupt`] if the stored node id or clock cannot be parsed;
    /// [`StoreError::Sqlite`] if the file cannot be opened or configured, or a query
    /// fails (also when the migrations never created `sync_migrations`).
    pub fn open(self) -> Result<LocalStore, StoreError> {
        let migrations = self.migrations.ok_or_else(|| {
            StoreError::Migrations(
                "no migrations given; call `.migrations(Migrations::embedded(...))`".into(),
            )
        })?;
        let mut conn = Connection::open(&self.path)?;
        configure(&conn, self.durability)?;
        let db_fp = migrations::apply(&migrations, &mut conn)?;
        let model = Model {
            entities: self.entities.iter().map(|e| (*e).clone()).collect(),
        };
        let compiled = sync_model::fingerprint(&model).0;
        if db_fp != compiled {
            return Err(StoreError::FingerprintMismatch {
                path: self.path.clone(),
                database: db_fp,
                compiled,
                entities: self
                    .entities
                    .iter()
                    .map(|e| e.rust_name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        let node = match meta_get(&conn, "node_id")? {
            Some(hex) => NodeId(
                u64::from_str_radix(&hex, 16)
                    .map_err(|_| StoreError::Corrupt(format!("node id `{hex}`")))?,
            ),
            None => {
                let node = NodeId::random();
                meta_set(&conn, "node_id", &format!("{:016x}", node.0))?;
                node
            }
        };
        // The clock resumes after every stamp the database holds: the one saved when the
        // store was last dropped, and the newest edit of every table (which also covers a
        // process that was killed before it could save its clock).
        let mut last = match meta_get(&conn, "hlc")? {
            Some(s) => s
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("clock `{s}`")))?,
            None => Hlc::ZERO,
        };
        for e in &self.entities {
            let newest: Option<String> = conn.query_row(
                &format!("SELECT MAX({}) FROM {}", q("sync_updated_at"), q(&e.table)),
                [],
                |r| r.get(0),
            )?;
            if let Some(h) = newest.and_then(|s| s.parse::<Hlc>().ok()) {
                last = last.max(h);
            }
        }
        Ok(LocalStore {
            inner: Arc::new(Inner {
                conn: Mutex::new(conn),
                clock: HlcClock::resume(node, last),
                tables: self
                    .entities
                    .iter()
                    .zip(&self.fns)
                    .map(|(e, f)| (e.name.clone(), Table::new(e, *f)))
                    .collect(),
                path: self.path,
                wall_clock: self.wall_clock,
                clock_offset_ms: std::sync::atomic::AtomicI64::new(0),
                key_source: self.key_source,
                subscribers: Mutex::new(Vec::new()),
                status_watchers: Mutex::new(Vec::new()),
            }),
        })
    }
}

fn configure(conn: &Connection, durability: Durability) -> Result<(), StoreError> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(
        None,
        "synchronous",
        match durability {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        },
    )?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.set_prepared_statement_cache_capacity(256);
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    Ok(())
}

fn meta_get(conn: &Connection, key: &str) -> Result<Option<String>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT \"value\" FROM \"sync_meta\" WHERE \"key\" = ?1",
            [key],
            |r| r.get(0),
        )
        .optional()?)
}

fn meta_set(conn: &Connection, key: &str, value: &str) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO \"sync_meta\" (\"key\", \"value\") VALUES (?1, ?2) ON CONFLICT (\"key\") DO UPDATE SET \"value\" = excluded.\"value\"",
    )?
    .execute(params![key, value])?;
    Ok(())
}

/// An entity with the SQL the store runs on its table, built once.
struct Table {
    entity: &'static Entity,
    /// The entity's generated code, type-erased, for the sync engine.
    erased: crate::erased::ErasedEntity,
    /// `SELECT <columns> FROM t WHERE id = ?1`.
    select_by_id: String,
    /// `SELECT <columns> FROM t WHERE sync_deleted = 0`.
    select_live: String,
    /// Insert-or-replace of every synced column plus metadata.
    upsert: String,
    /// `"column" = ?` for each synced field, by wire name.
    set_field: BTreeMap<String, String>,
    /// `, sync_clocks = ?, sync_updated_at = ?, sync_status = 'pending' WHERE id = ?`.
    update_tail: String,
    /// `UPDATE "t" SET `.
    update_head: String,
    /// The statements of the pull path (base copy, row with metadata), built once.
    pull: sync::PullSql,
}

impl Table {
    fn new(entity: &'static Entity, erased: crate::erased::ErasedEntity) -> Self {
        let t = q(&entity.table);
        let id = q(&entity.id_field().column);
        let mut list: Vec<String> = entity.synced_fields().map(|f| q(&f.column)).collect();
        list.extend(
            ["sync_clocks", "sync_deleted", "sync_version", "sync_status"]
                .iter()
                .map(|c| q(c)),
        );
        let list = list.join(", ");
        let mut cols: Vec<String> = entity.synced_fields().map(|f| q(&f.column)).collect();
        cols.extend(
            [
                "sync_clocks",
                "sync_updated_at",
                "sync_status",
                "sync_deleted",
            ]
            .iter()
            .map(|c| q(c)),
        );
        let placeholders = vec!["?"; cols.len()].join(", ");
        let updates: Vec<String> = cols
            .iter()
            .filter(|c| **c != id)
            .map(|c| format!("{c} = excluded.{c}"))
            .collect();
        Table {
            entity,
            erased,
            select_by_id: format!("SELECT {list} FROM {t} WHERE {id} = ?1"),
            select_live: format!("SELECT {list} FROM {t} WHERE {} = 0", q("sync_deleted")),
            upsert: format!(
                "INSERT INTO {t} ({}) VALUES ({placeholders}) ON CONFLICT ({id}) DO UPDATE SET {}",
                cols.join(", "),
                updates.join(", ")
            ),
            set_field: entity
                .synced_fields()
                .map(|f| (f.name.clone(), format!("{} = ?, ", q(&f.column))))
                .collect(),
            // A record with an open conflict stays `conflicted` through later local edits.
            update_tail: format!(
                "{} = ?, {} = ?, {s} = CASE WHEN {s} = 'conflicted' THEN 'conflicted' ELSE 'pending' END WHERE {id} = ?",
                q("sync_clocks"),
                q("sync_updated_at"),
                s = q("sync_status")
            ),
            update_head: format!("UPDATE {t} SET "),
            pull: sync::PullSql::new(entity),
        }
    }
}

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
    subscribers: Mutex<Vec<mpsc::Sender<StoreEvent>>>,
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
        /// What kind of change.
        change: ChangeKind,
    },
}

/// The kind of a [`StoreEvent::Changed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// Created locally.
    Created,
    /// Updated locally.
    Updated,
    /// Deleted locally.
    Deleted,
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
}

/// The outbox's own spelling of an operation ([`MutationOp::as_str`]), read back.
fn parse_op(s: &str) -> Result<MutationOp, StoreError> {
    MutationOp::parse(s).ok_or_else(|| StoreError::Corrupt(format!("outbox op `{s}`")))
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

/// A time column (the canonical text of [`crate::time`]) read back.
fn time_col(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Option<DateTime<Utc>>> {
    let Some(text) = r.get::<_, Option<String>>(i)? else {
        return Ok(None);
    };
    crate::time::parse(&text).map(Some).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Text,
            format!("`{text}` is not an RFC 3339 time").into(),
        )
    })
}

/// A time column that is never NULL.
fn time_col_required(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<DateTime<Utc>> {
    time_col(r, i)?.ok_or(rusqlite::Error::InvalidColumnType(
        i,
        "time".into(),
        rusqlite::types::Type::Null,
    ))
}

/// A simple query: filters on synced fields (by wire name), an order and a limit.
#[derive(Debug, Clone, Default)]
pub struct Query {
    filters: Vec<(String, &'static str, Json)>,
    order: Option<(String, bool)>,
    limit: Option<u32>,
}

impl Query {
    /// Every live record.
    pub fn new() -> Self {
        Self::default()
    }

    fn filter(mut self, field: &str, op: &'static str, value: impl Serialize) -> Self {
        let v = serde_json::to_value(value).unwrap_or(Json::Null);
        self.filters.push((field.to_string(), op, v));
        self
    }

    /// `field = value` (`value` `None` matches NULL).
    pub fn eq(self, field: &str, value: impl Serialize) -> Self {
        self.filter(field, "=", value)
    }
    /// `field <> value`.
    pub fn ne(self, field: &str, value: impl Serialize) -> Self {
        self.filter(field, "<>", value)
    }
    /// `field < value`.
    pub fn lt(self, field: &str, value: impl Serialize) -> Self {
        self.filter(field, "<", value)
    }
    /// `field <= value`.
    pub fn le(self, field: &str, value: impl Serialize) -> Self {
        self.filter(field, "<=", value)
    }
    /// `field > value`.
    pub fn gt(self, field: &str, value: impl Serialize) -> Self {
        self.filter(field, ">", value)
    }
    /// `field >= value`.
    pub fn ge(self, field: &str, value: impl Serialize) -> Self {
        self.filter(field, ">=", value)
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
}

fn q(ident: &str) -> String {
    sync_model::sql::Dialect::Sqlite.quote(ident)
}

/// The outbox payload of a create.
#[derive(Serialize)]
struct CreatePayload<'a, C> {
    record: &'a Record,
    clocks: &'a C,
    /// Kept through coalescing: see `sync::CreatePayloadOwned::resend_base`.
    #[serde(skip_serializing_if = "Option::is_none")]
    resend_base: Option<Json>,
}

/// The outbox payload of an update.
#[derive(Serialize, Deserialize)]
struct UpdatePayload<P> {
    patch: P,
}

/// The outbox payload of a delete.
#[derive(Serialize)]
pub(super) struct DeletePayload {
    pub(super) hlc: Hlc,
}

fn to_json_string<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("sync payloads always serialise")
}

/// A stored row, read back.
pub(super) struct Row {
    record: Record,
    clocks: String,
    deleted: bool,
    version: Option<i64>,
    /// `sync_status = 'clean'`: the row is the server's record, its base copy may be absent.
    clean: bool,
}

impl LocalStore {
    /// Starts configuring a store on the database file at `path`.
    pub fn builder(path: impl AsRef<Path>) -> StoreBuilder {
        StoreBuilder {
            path: path.as_ref().to_path_buf(),
            entities: Vec::new(),
            fns: Vec::new(),
            migrations: None,
            wall_clock: None,
            key_source: None,
            durability: Durability::default(),
        }
    }

    /// A new clock stamp for a local event: the device's wall time corrected by the
    /// offset learned from the server ([`LocalStore::observe_server_time`]).
    pub(crate) fn stamp(&self) -> Hlc {
        let offset = self
            .inner
            .clock_offset_ms
            .load(std::sync::atomic::Ordering::Relaxed);
        self.inner
            .clock
            .now_at(self.device_wall_millis().saturating_add_signed(offset))
    }

    /// The device's wall time in milliseconds since the epoch (the store's wall clock).
    fn device_wall_millis(&self) -> u64 {
        match &self.inner.wall_clock {
            Some(w) => w(),
            None => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
        }
    }

    /// Learns the server's time, `server` (from a response's `Date` header): from now
    /// on, local edits are stamped with the device's wall time plus the offset to the
    /// server's, so a device whose clock runs hours ahead or behind stamps its edits in
    /// the server's time. The offset is kept in memory and learned again from every
    /// response (a device clock corrected meanwhile is followed at once); offsets within
    /// [`CLOCK_OFFSET_RESOLUTION_MS`] (the `Date` header has one-second resolution, plus
    /// latency) count as none. The [`SyncEngine`](crate::engine::SyncEngine) calls this
    /// after every request.
    ///
    /// Returns the offset now in force, in milliseconds (server minus device).
    pub fn observe_server_time(&self, server: chrono::DateTime<chrono::Utc>) -> i64 {
        let device = i64::try_from(self.device_wall_millis()).unwrap_or(i64::MAX);
        let offset = server.timestamp_millis().saturating_sub(device);
        let offset = if offset.abs() < CLOCK_OFFSET_RESOLUTION_MS {
            0
        } else {
            offset
        };
        self.inner
            .clock_offset_ms
            .store(offset, std::sync::atomic::Ordering::Relaxed);
        offset
    }

    /// The offset in force (server time minus device time, milliseconds); see
    /// [`LocalStore::observe_server_time`].
    pub fn clock_offset_ms(&self) -> i64 {
        self.inner
            .clock_offset_ms
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A new idempotency key.
    pub(crate) fn new_key(&self) -> String {
        match &self.inner.key_source {
            Some(k) => k().to_string(),
            None => Uuid::new_v4().to_string(),
        }
    }

    /// This replica's node id (for HLC stamps).
    pub fn node_id(&self) -> NodeId {
        self.inner.clock.node()
    }

    /// The store's clock.
    pub fn clock(&self) -> &HlcClock {
        &self.inner.clock
    }

    /// The fingerprint of the registered model (what a client sends to the server).
    pub fn fingerprint(&self) -> String {
        sync_model::fingerprint(&Model {
            entities: self.entities().cloned().collect(),
        })
        .0
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a half-done transaction behind
        // (rusqlite rolls back on drop), so the connection is still usable.
        self.inner.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn entity<T: Syncable>(&self) -> Result<&'static Entity, StoreError> {
        Ok(self.table::<T>()?.entity)
    }

    fn table<T: Syncable>(&self) -> Result<&Table, StoreError> {
        self.inner
            .tables
            .get(T::ENTITY)
            .ok_or(StoreError::UnknownEntity(T::ENTITY))
    }

    /// The registered entities.
    pub fn entities(&self) -> impl Iterator<Item = &'static Entity> + '_ {
        self.inner.tables.values().map(|t| t.entity)
    }

    /// Creates a record. Creating an id whose record was deleted recreates it: the old
    /// record's fields are gone, and the server is told delete-then-create.
    ///
    /// # Errors
    /// [`StoreError::UnknownEntity`] if `T` was not registered with the builder;
    /// [`StoreError::Invalid`] if the value fails [`Syncable::validate`] or
    /// [`check_record`](crate::check_record); [`StoreError::Record`] if a field does not
    /// serialise to JSON; [`StoreError::AlreadyExists`] if a live record has this id;
    /// [`StoreError::Corrupt`] if the stored row of this id cannot be read back;
    /// [`StoreError::Sqlite`] if the database fails.
    pub fn create<T: Syncable>(&self, value: &T) -> Result<(), StoreError> {
        let table = self.table::<T>()?;
        let entity = table.entity;
        let mut value = value.clone();
        value.normalize();
        value.validate()?;
        let id = value.id();
        let record = value.to_record()?;
        crate::check_record(entity, &record)?;
        self.write(entity, id, ChangeKind::Created, |tx, hlc| {
            let existing = read_row(tx, table, id)?;
            if let Some(row) = &existing
                && !row.deleted
            {
                return Err(StoreError::AlreadyExists {
                    entity: T::ENTITY,
                    id,
                });
            }
            if let Some(row) = &existing
                && row.clean
            {
                sync::keep_base(tx, table, id)?;
            }
            let clocks = T::Clocks::all(hlc);
            write_row(tx, table, &record, &to_json_string(&clocks), hlc, false)?;
            let payload = to_json_string(&CreatePayload {
                record: &record,
                clocks: &clocks,
                resend_base: None,
            });
            // Over the server's tombstone (a clean deleted row): its version, so the
            // server knows this recreate saw the delete. Over a delete of this device's
            // still to be sent: none (the create is stamped after that delete, which is
            // how the server tells it is a recreate).
            let base_version = existing.filter(|r| r.clean).and_then(|r| r.version);
            enqueue(
                tx,
                entity,
                id,
                MutationOp::Create,
                &payload,
                base_version,
                self.new_key(),
            )?;
            Ok(())
        })
    }

    /// Updates a record: the store diffs it against the stored row and queues the patch.
    /// Returns `false` if nothing changed (nothing is written then).
    ///
    /// # Errors
    /// [`StoreError::UnknownEntity`] if `T` was not registered with the builder;
    /// [`StoreError::Invalid`] if the value fails [`Syncable::validate`] or
    /// [`check_record`](crate::check_record); [`StoreError::NotFound`] if no live record
    /// has this id; [`StoreError::Diff`] if the value changes an `immutable` field;
    /// [`StoreError::Record`] if the stored record does not fit `T` or a field does not
    /// serialise; [`StoreError::Corrupt`] if the stored row, its clocks or the record's
    /// last outbox item cannot be read back; [`StoreError::Sqlite`] if the database fails.
    pub fn update<T: Syncable>(&self, value: &T) -> Result<bool, StoreError> {
        let table = self.table::<T>()?;
        let entity = table.entity;
        let mut value = value.clone();
        value.normalize();
        value.validate()?;
        let id = value.id();
        let mut changed = true;
        self.write(entity, id, ChangeKind::Updated, |tx, hlc| {
            let row =
                read_row(tx, table, id)?
                    .filter(|r| !r.deleted)
                    .ok_or(StoreError::NotFound {
                        entity: T::ENTITY,
                        id,
                    })?;
            let old = T::from_record(&row.record)?;
            let patch = T::diff(&old, &value, hlc)?;
            if patch.is_empty() {
                changed = false;
                return Ok(());
            }
            let mut clocks: T::Clocks = serde_json::from_str(&row.clocks)
                .map_err(|e| StoreError::Corrupt(format!("sync_clocks: {e}")))?;
            T::stamp(&mut clocks, &patch);
            if row.clean {
                sync::keep_base(tx, table, id)?;
            }
            let record = value.to_record()?;
            crate::check_record(entity, &record)?;
            let fields = patch.fields();
            update_columns(
                tx,
                table,
                id,
                &record,
                &fields,
                to_json_string(&clocks),
                hlc,
            )?;
            // A `manual` field in conflict edited again: the user's side of the conflict is
            // the new value (a rebuild of the row keeps it, `keep_local` sends it).
            for f in &fields {
                if entity
                    .field(f)
                    .is_some_and(|f| f.merge == sync_model::MergeStrategy::Manual)
                {
                    let v = record.get(*f).cloned().unwrap_or(Json::Null);
                    tx.prepare_cached(
                        "UPDATE \"sync_conflicts\" SET \"local\" = ?1 WHERE \"entity_type\" = ?2 AND \"entity_id\" = ?3 AND \"field\" = ?4",
                    )?
                    .execute(params![v.to_string(), entity.name, id.to_string(), f])?;
                }
            }
            let last = if entity.outbox == OutboxMode::Coalesce {
                last_item(tx, entity, id)?.filter(|l| l.mergeable)
            } else {
                None
            };
            match last {
                Some(l) if l.op == MutationOp::Create => {
                    let resend_base = serde_json::from_str::<Json>(&l.payload)
                        .ok()
                        .and_then(|p| p.get("resend_base").cloned());
                    let payload = to_json_string(&CreatePayload {
                        record: &record,
                        clocks: &clocks,
                        resend_base,
                    });
                    rewrite_item(tx, l.id, MutationOp::Create, &payload)?;
                }
                Some(l) if l.op == MutationOp::Update => {
                    let earlier: UpdatePayload<T::Patch> = serde_json::from_str(&l.payload)
                        .map_err(|e| StoreError::Corrupt(format!("outbox item {}: {e}", l.id)))?;
                    let composed = UpdatePayload {
                        patch: earlier.patch.compose(patch),
                    };
                    rewrite_item(tx, l.id, MutationOp::Update, &to_json_string(&composed))?;
                }
                _ => {
                    let payload = to_json_string(&UpdatePayload { patch });
                    enqueue(
                        tx,
                        entity,
                        id,
                        MutationOp::Update,
                        &payload,
                        row.version,
                        self.new_key(),
                    )?;
                }
            }
            Ok(())
        })?;
        Ok(changed)
    }

    /// Deletes a record (a tombstone until the server has it).
    ///
    /// # Errors
    /// [`StoreError::UnknownEntity`] if `T` was not registered with the builder;
    /// [`StoreError::NotFound`] if no live record has this id (also when it is already
    /// deleted); [`StoreError::Corrupt`] if the stored row or the record's last outbox
    /// item cannot be read back; [`StoreError::Sqlite`] if the database fails.
    pub fn delete<T: Syncable>(&self, id: Uuid) -> Result<(), StoreError> {
        let table = self.table::<T>()?;
        let entity = table.entity;
        self.write(entity, id, ChangeKind::Deleted, |tx, hlc| {
            let row = read_row(tx, table, id)?
                .filter(|r| !r.deleted)
                .ok_or(StoreError::NotFound { entity: T::ENTITY, id })?;
            if row.clean {
                sync::keep_base(tx, table, id)?;
            }
            let last = if entity.outbox == OutboxMode::Coalesce {
                last_item(tx, entity, id)?.filter(|l| l.mergeable)
            } else {
                None
            };
            let payload = to_json_string(&DeletePayload { hlc });
            // Deleting a conflicted record discards the conflict with it.
            tx.execute(
                "DELETE FROM \"sync_conflicts\" WHERE \"entity_type\" = ?1 AND \"entity_id\" = ?2",
                params![entity.name, id.to_string()],
            )?;
            match last {
                Some(l) if l.op == MutationOp::Create && l.base_version.is_some() => {
                    // A create of a record the server knows of (a recreate, or one it lost
                    // in a restore and other devices may send again): the server must
                    // learn of the delete, so both go.
                    mark_deleted(tx, entity, id, hlc)?;
                    enqueue(tx, entity, id, MutationOp::Delete, &payload, None, self.new_key())?;
                }
                Some(l) if l.op == MutationOp::Create => {
                    // Created and deleted before the server heard of it: nothing to send.
                    tx.execute("DELETE FROM \"sync_outbox\" WHERE \"id\" = ?1", [l.id])?;
                    let others: i64 = tx.query_row(
                        "SELECT COUNT(*) FROM \"sync_outbox\" WHERE \"entity_type\" = ?1 AND \"entity_id\" = ?2",
                        params![entity.name, id.to_string()],
                        |r| r.get(0),
                    )?;
                    if others == 0 && row.version.is_none() {
                        tx.execute(&format!("DELETE FROM {} WHERE {} = ?1", q(&entity.table), q(&entity.id_field().column)), [id.to_string()])?;
                    } else {
                        mark_deleted(tx, entity, id, hlc)?;
                    }
                }
                Some(l) if l.op == MutationOp::Update => {
                    mark_deleted(tx, entity, id, hlc)?;
                    rewrite_item(tx, l.id, MutationOp::Delete, &payload)?;
                }
                _ => {
                    mark_deleted(tx, entity, id, hlc)?;
                    enqueue(tx, entity, id, MutationOp::Delete, &payload, row.version, self.new_key())?;
                }
            }
            Ok(())
        })
    }

    /// The live record with this id.
    ///
    /// # Errors
    /// [`StoreError::UnknownEntity`] if `T` was not registered with the builder;
    /// [`StoreError::Corrupt`] if a column holds a value of the wrong SQLite type;
    /// [`StoreError::Record`] if the stored record does not fit `T`;
    /// [`StoreError::Sqlite`] if the database fails. No record is `Ok(None)`, not an error.
    pub fn get<T: Syncable>(&self, id: Uuid) -> Result<Option<T>, StoreError> {
        let table = self.table::<T>()?;
        let conn = self.conn();
        match read_row(&conn, table, id)? {
            Some(row) if !row.deleted => Ok(Some(T::from_record(&row.record)?)),
            _ => Ok(None),
        }
    }

    /// Every live record of a type, in id order.
    ///
    /// # Errors
    /// [`StoreError::UnknownEntity`] if `T` was not registered with the builder;
    /// [`StoreError::Corrupt`] if a column holds a value of the wrong SQLite type;
    /// [`StoreError::Record`] if a stored record does not fit `T`;
    /// [`StoreError::Sqlite`] if the database fails.
    pub fn list<T: Syncable>(&self) -> Result<Vec<T>, StoreError> {
        self.query(&Query::new())
    }

    /// Live records matching a query.
    ///
    /// # Errors
    /// [`StoreError::UnknownEntity`] if `T` was not registered with the builder;
    /// [`StoreError::UnknownField`] if a filter or the ordering names something that is
    /// not a synced field's wire name; [`StoreError::Corrupt`] if a filter value does not
    /// have its field's type (for example a string for a `bool` field), or a column holds
    /// a value of the wrong SQLite type; [`StoreError::Record`] if a stored record does
    /// not fit `T`; [`StoreError::Sqlite`] if the database fails.
    pub fn query<T: Syncable>(&self, query: &Query) -> Result<Vec<T>, StoreError> {
        let entity = self.entity::<T>()?;
        let field = |name: &str| {
            entity.field(name).ok_or_else(|| StoreError::UnknownField {
                entity: T::ENTITY,
                field: name.to_string(),
            })
        };
        let mut sql = self.table::<T>()?.select_live.clone();
        let mut args: Vec<Sql> = Vec::new();
        for (name, op, value) in &query.filters {
            let f = field(name)?;
            if value.is_null() {
                let not = if *op == "<>" { "NOT " } else { "" };
                sql.push_str(&format!(" AND {} IS {not}NULL", q(&f.column)));
            } else {
                sql.push_str(&format!(" AND {} {op} ?", q(&f.column)));
                args.push(columns::to_sql(f, value)?);
            }
        }
        match &query.order {
            Some((name, desc)) => {
                let f = field(name)?;
                sql.push_str(&format!(
                    " ORDER BY {} {}, {}",
                    q(&f.column),
                    if *desc { "DESC" } else { "ASC" },
                    q(&entity.id_field().column)
                ));
            }
            None => sql.push_str(&format!(" ORDER BY {}", q(&entity.id_field().column))),
        }
        if let Some(n) = query.limit {
            sql.push_str(&format!(" LIMIT {n}"));
        }
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&sql)?;
        let mut rows = stmt.query(params_from_iter(args))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let row = row_from_sql(entity, r)?;
            out.push(T::from_record(&row.record)?);
        }
        Ok(out)
    }

    /// The sync metadata of a record (also of a tombstone).
    ///
    /// # Errors
    /// [`StoreError::UnknownEntity`] if `T` was not registered with the builder;
    /// [`StoreError::Corrupt`] if the stored `sync_status` or `sync_updated_at` cannot be
    /// parsed; [`StoreError::Sqlite`] if the database fails. No row is `Ok(None)`.
    pub fn record_meta<T: Syncable>(&self, id: Uuid) -> Result<Option<RecordMeta>, StoreError> {
        let entity = self.entity::<T>()?;
        let conn = self.conn();
        let sql = format!(
            "SELECT {}, {}, {}, {} FROM {} WHERE {} = ?1",
            q("sync_status"),
            q("sync_updated_at"),
            q("sync_version"),
            q("sync_deleted"),
            q(&entity.table),
            q(&entity.id_field().column)
        );
        conn.query_row(&sql, [id.to_string()], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<i64>>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })
        .optional()?
        .map(|(sync_status, updated_at, version, deleted)| {
            Ok(RecordMeta {
                sync_status: RecordStatus::parse(&sync_status)?,
                updated_at: updated_at
                    .parse()
                    .map_err(|_| StoreError::Corrupt(format!("sync_updated_at `{updated_at}`")))?,
                version,
                deleted: deleted != 0,
            })
        })
        .transpose()
    }

    /// Every outbox item, in queue order.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] if an item's entity id, op, payload or status cannot be
    /// read back; [`StoreError::Sqlite`] if the database fails, also when an item's
    /// `created_at` or `next_attempt_at` is not a valid time.
    pub fn outbox(&self) -> Result<Vec<OutboxItem>, StoreError> {
        let conn = self.conn();
        read_outbox(&conn, "1 = 1")
    }

    /// What a UI shows: pending count, failed and dead items, conflicts, last sync.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] if a failed or dead outbox item, or the id of a conflicted
    /// record, cannot be read back; [`StoreError::Sqlite`] if the database fails, also
    /// when a stored time is not valid.
    pub fn status(&self) -> Result<SyncStatus, StoreError> {
        let conn = self.conn();
        status(&conn, self.entities())
    }

    /// Puts every dead item back in the queue (after the user fixed the cause).
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] if the database fails.
    pub fn retry_dead(&self) -> Result<usize, StoreError> {
        let n = {
            let conn = self.conn();
            conn.execute(
                "UPDATE \"sync_outbox\" SET \"status\" = 'pending', \"attempt_count\" = 0, \"next_attempt_at\" = NULL WHERE \"status\" = 'dead'",
                [],
            )?
        };
        self.notify_status();
        Ok(n)
    }

    /// Events after each commit.
    pub fn subscribe(&self) -> Subscription<StoreEvent> {
        let (tx, rx) = mpsc::channel();
        self.inner
            .subscribers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(tx);
        Subscription { rx }
    }

    /// The [`SyncStatus`] after each commit that may change it.
    pub fn watch_status(&self) -> Subscription<SyncStatus> {
        let (tx, rx) = mpsc::channel();
        self.inner
            .status_watchers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(tx);
        Subscription { rx }
    }

    fn notify_status(&self) {
        let mut watchers = self
            .inner
            .status_watchers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if watchers.is_empty() {
            return;
        }
        if let Ok(s) = self.status() {
            watchers.retain(|w| w.send(s.clone()).is_ok());
        }
    }

    fn notify(&self, event: StoreEvent) {
        self.inner
            .subscribers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|s| s.send(event.clone()).is_ok());
        self.notify_status();
    }

    /// Runs `f` in one IMMEDIATE transaction with a fresh HLC stamp, persists the clock,
    /// commits, then tells subscribers.
    fn write(
        &self,
        entity: &'static Entity,
        id: Uuid,
        change: ChangeKind,
        f: impl FnOnce(&rusqlite::Transaction<'_>, Hlc) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        {
            let mut conn = self.conn();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let hlc = self.stamp();
            f(&tx, hlc)?;
            tx.commit()?;
        }
        self.notify(StoreEvent::Changed {
            entity: entity.name.clone(),
            id,
            change,
        });
        Ok(())
    }
}

fn row_from_sql(entity: &Entity, r: &rusqlite::Row<'_>) -> Result<Row, StoreError> {
    let mut record = Record::new();
    let mut i = 0;
    for f in entity.synced_fields() {
        record.insert(f.name.clone(), columns::from_sql(f, r.get_ref(i)?)?);
        i += 1;
    }
    let clocks: String = r.get(i)?;
    let deleted: i64 = r.get(i + 1)?;
    let version: Option<i64> = r.get(i + 2)?;
    // `syncing`: clean, and awaiting confirmation by a snapshot (see `reset_token`).
    let clean = r
        .get_ref(i + 3)?
        .as_str()
        .is_ok_and(|s| s == "clean" || s == "syncing");
    Ok(Row {
        record,
        clocks,
        deleted: deleted != 0,
        version,
        clean,
    })
}

fn read_row(conn: &Connection, table: &Table, id: Uuid) -> Result<Option<Row>, StoreError> {
    let entity = table.entity;
    let mut stmt = conn.prepare_cached(&table.select_by_id)?;
    let mut rows = stmt.query([id.to_string()])?;
    match rows.next()? {
        Some(r) => Ok(Some(row_from_sql(entity, r)?)),
        None => Ok(None),
    }
}

/// Inserts or replaces the row's data and marks it pending.
fn write_row(
    conn: &Connection,
    table: &Table,
    record: &Record,
    clocks: &str,
    hlc: Hlc,
    deleted: bool,
) -> Result<(), StoreError> {
    let mut args: Vec<Sql> = Vec::with_capacity(table.entity.fields.len() + 4);
    for f in table.entity.synced_fields() {
        args.push(columns::to_sql(
            f,
            record.get(&f.name).unwrap_or(&Json::Null),
        )?);
    }
    args.push(Sql::Text(clocks.to_owned()));
    args.push(Sql::Text(hlc.to_string()));
    args.push(Sql::Text("pending".into()));
    args.push(Sql::Integer(i64::from(deleted)));
    conn.prepare_cached(&table.upsert)?
        .execute(params_from_iter(args))?;
    Ok(())
}

/// Writes the changed columns of a live row and marks it pending.
fn update_columns(
    conn: &Connection,
    table: &Table,
    id: Uuid,
    record: &Record,
    changed: &[&str],
    clocks: String,
    hlc: Hlc,
) -> Result<(), StoreError> {
    let mut sql = String::with_capacity(
        table.update_head.len() + table.update_tail.len() + 24 * changed.len(),
    );
    sql.push_str(&table.update_head);
    let mut args: Vec<Sql> = Vec::with_capacity(changed.len() + 3);
    for name in changed {
        let (f, set) = table
            .entity
            .field(name)
            .zip(table.set_field.get(*name))
            .ok_or_else(|| StoreError::Corrupt(format!("patch field `{name}`")))?;
        sql.push_str(set);
        args.push(columns::to_sql(
            f,
            record.get(*name).unwrap_or(&Json::Null),
        )?);
    }
    sql.push_str(&table.update_tail);
    args.push(Sql::Text(clocks));
    args.push(Sql::Text(hlc.to_string()));
    args.push(Sql::Text(id.to_string()));
    conn.prepare_cached(&sql)?.execute(params_from_iter(args))?;
    Ok(())
}

fn mark_deleted(conn: &Connection, entity: &Entity, id: Uuid, hlc: Hlc) -> Result<(), StoreError> {
    conn.execute(
        &format!(
            "UPDATE {} SET {} = 1, {} = 'pending', {} = ?1 WHERE {} = ?2",
            q(&entity.table),
            q("sync_deleted"),
            q("sync_status"),
            q("sync_updated_at"),
            q(&entity.id_field().column)
        ),
        params![hlc.to_string(), id.to_string()],
    )?;
    Ok(())
}

struct LastItem {
    id: i64,
    op: MutationOp,
    payload: String,
    /// Never attempted and still pending: its body may be rewritten.
    mergeable: bool,
    /// The version the item was made against (a create has one when it recreates a
    /// record over a tombstone, or sends again one the server lost).
    base_version: Option<i64>,
}

fn last_item(conn: &Connection, entity: &Entity, id: Uuid) -> Result<Option<LastItem>, StoreError> {
    // No ORDER BY: with SQLite's STAT4 build, `ORDER BY id DESC LIMIT 1` over this index
    // makes the statement re-prepare on every execution (measured: 20% of an update).
    // A coalescing entity has very few items per record, so the last is picked here.
    let mut stmt = conn.prepare_cached(
        "SELECT \"id\", \"op\", \"payload\", \"status\", \"attempt_count\", \"base_version\" FROM \"sync_outbox\" WHERE \"entity_type\" = ?1 AND \"entity_id\" = ?2",
    )?;
    let mut rows = stmt.query(params![entity.name, id.to_string()])?;
    type Found = (i64, String, String, String, i64, Option<i64>);
    let mut last: Option<Found> = None;
    while let Some(r) = rows.next()? {
        let item_id: i64 = r.get(0)?;
        if last.as_ref().is_none_or(|l| l.0 < item_id) {
            last = Some((
                item_id,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ));
        }
    }
    last.map(|(id, op, payload, status, attempts, base_version)| {
        Ok(LastItem {
            id,
            op: parse_op(&op)?,
            payload,
            mergeable: status == "pending" && attempts == 0,
            base_version,
        })
    })
    .transpose()
}

fn enqueue(
    conn: &Connection,
    entity: &Entity,
    id: Uuid,
    op: MutationOp,
    payload: &str,
    base_version: Option<i64>,
    key: String,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO \"sync_outbox\" (\"entity_type\", \"entity_id\", \"op\", \"payload\", \"idempotency_key\", \"base_version\", \"created_at\") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        entity.name,
        id.to_string(),
        op.as_str(),
        payload,
        key,
        base_version,
        crate::time::now()
    ])?;
    Ok(())
}

fn rewrite_item(
    conn: &Connection,
    item: i64,
    op: MutationOp,
    payload: &str,
) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE \"sync_outbox\" SET \"op\" = ?1, \"payload\" = ?2 WHERE \"id\" = ?3 AND \"status\" = 'pending' AND \"attempt_count\" = 0")?
        .execute(params![op.as_str(), payload, item])?;
    Ok(())
}

fn read_outbox(conn: &Connection, filter: &str) -> Result<Vec<OutboxItem>, StoreError> {
    let sql = format!(
        "SELECT \"id\", \"entity_type\", \"entity_id\", \"op\", \"payload\", \"idempotency_key\", \"base_version\", \"created_at\", \"attempt_count\", \"next_attempt_at\", \"status\", \"last_error\" FROM \"sync_outbox\" WHERE {filter} ORDER BY \"id\""
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let payload: String = r.get(4)?;
        let entity_id: String = r.get(2)?;
        let op: String = r.get(3)?;
        let status: String = r.get(10)?;
        out.push(OutboxItem {
            id: r.get(0)?,
            entity_type: r.get(1)?,
            entity_id: entity_id
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("outbox entity id `{entity_id}`")))?,
            op: parse_op(&op)?,
            payload: serde_json::from_str(&payload)
                .map_err(|e| StoreError::Corrupt(format!("outbox payload: {e}")))?,
            idempotency_key: r.get(5)?,
            base_version: r.get(6)?,
            created_at: time_col_required(r, 7)?,
            attempt_count: r.get(8)?,
            next_attempt_at: time_col(r, 9)?,
            status: OutboxStatus::parse(&status)?,
            last_error: r.get(11)?,
        });
    }
    Ok(out)
}

fn status<'a>(
    conn: &Connection,
    entities: impl Iterator<Item = &'a Entity>,
) -> Result<SyncStatus, StoreError> {
    let pending: i64 = conn.query_row(
        "SELECT COUNT(*) FROM \"sync_outbox\" WHERE \"status\" IN ('pending', 'sending', 'failed')",
        [],
        |r| r.get(0),
    )?;
    let mut conflicted = Vec::new();
    for e in entities {
        let sql = format!(
            "SELECT {} FROM {} WHERE {} = 'conflicted' ORDER BY 1",
            q(&e.id_field().column),
            q(&e.table),
            q("sync_status")
        );
        let mut stmt = conn.prepare_cached(&sql)?;
        let ids = stmt.query_map([], |r| r.get::<_, String>(0))?;
        for id in ids {
            let id = id?;
            conflicted.push((
                e.name.clone(),
                id.parse()
                    .map_err(|_| StoreError::Corrupt(format!("id `{id}`")))?,
            ));
        }
    }
    Ok(SyncStatus {
        pending: pending as u64,
        failed: read_outbox(conn, "\"status\" = 'failed'")?,
        dead: read_outbox(conn, "\"status\" = 'dead'")?,
        conflicted,
        last_sync_at: conn.query_row(
            "SELECT MAX(\"last_sync_at\") FROM \"sync_state\"",
            [],
            |r| time_col(r, 0),
        )?,
        oldest_pending_at: conn.query_row(
            "SELECT MIN(\"created_at\") FROM \"sync_outbox\" WHERE \"status\" IN ('pending', 'sending', 'failed')",
            [],
            |r| time_col(r, 0),
        )?,
        retries: conn.query_row(
            "SELECT COALESCE(SUM(MAX(\"attempt_count\" - 1, 0)), 0) FROM \"sync_outbox\" WHERE \"status\" IN ('pending', 'sending', 'failed')",
            [],
            |r| r.get::<_, i64>(0),
        )? as u64,
    })
}

#[doc(hidden)]
/// The client migration of a one-entity model `Note { id, body }`, for doc examples.
pub fn __doc_migration() -> &'static str {
    include_str!("doc_note_migration.sql")
}
