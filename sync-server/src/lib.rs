//! syncgen's reference server: `POST /push`, `GET /changes` and `GET /snapshot` over
//! axum, on a SQLite file (embedded, zero set-up) or PostgreSQL.
//!
//! ```no_run
//! # use sync_runtime::prelude::*;
//! # #[derive(Syncable, Clone, Debug, PartialEq)]
//! # pub struct Task { #[sync(id)] pub id: Uuid, pub title: String }
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use sync_server::{Migrations, Server, StaticTokens};
//!
//! let server = Server::builder()
//!     .entity::<Task>()
//!     .token_verifier(StaticTokens::new([("secret-token", "account-1")]))
//!     .open_sqlite("server.db", Migrations::from_dir("generated/migrations/server/sqlite")?)
//!     .await?;
//! let app = axum::Router::new().nest("/sync", server.router());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```
//!
//! The server applies the CLI's server migrations at start (and refuses a database
//! migrated for another model), uses the generated merge code of the registered types,
//! and keeps nothing that decides correctness in memory: idempotency keys, keys in flight
//! and change tokens all live in the database, so several servers can share one
//! PostgreSQL database behind a load balancer (see *Change tokens* below for how a
//! late commit is never skipped).
//!
//! # Change tokens
//!
//! Every change to an account's data takes the next number of that account's counter
//! (`sync_accounts.last_seq`) and is written to `sync_changes` in the same transaction.
//! The counter row is locked for the whole transaction (`SELECT ... FOR UPDATE` in
//! PostgreSQL; SQLite has a single writer), so the transactions of one account commit in
//! the order of their numbers: a change with a smaller number can never become visible
//! after a larger one, and a pull that has read up to N has seen every change <= N.
//! Snapshots are pinned to the counter's value when they start: pages hold the records
//! (tombstones included) whose last change is <= that token, and `GET /changes?since=token` delivers the rest,
//! so nothing is lost or delivered twice.
//!
//! # What the server accepts
//!
//! Exactly what the generated OpenAPI document allows. A push body is decoded by
//! [`sync_runtime::protocol::decode_push_request`] (a repeated member name, an unknown
//! member, a bad idempotency key or `null` for an unused member refuse the whole push
//! with 422 and a JSON Pointer); the record, patch and clocks of each mutation are then
//! checked against the entity's schemas, and a misfit rejects that mutation alone. A
//! client of an earlier model (by its fingerprint) may omit the fields added since. See
//! `PROTOCOL.md` for the protocol's versions.
//!
//! # Idempotency
//!
//! Each mutation carries an idempotency key (the IETF Idempotency-Key draft's rules, per
//! mutation): the same key with the same body replays the stored result; with a different
//! body it is rejected with a 422 problem. A push is processed in one transaction that
//! locks the account first, so a concurrent request with the same keys (a retry sent to
//! another server) waits for the first and then replays its results. A key still marked
//! in flight (a row written by an earlier server version, which claimed keys in a
//! transaction of their own) answers 409 until it is older than a minute, when it is
//! taken over. Keys are kept for
//! [`ServerBuilder::idempotency_retention`] (24 hours by default) and purged by
//! [`Server::collect_garbage`].
//!
//! # Retention windows
//!
//! What the server forgets, and what a device away longer than the window sees, however
//! long it was away:
//! - **Tombstones and the change log** are collected by [`Server::collect_garbage`] (the
//!   change at the new horizon stays, so tokens issued for it remain checkable, and so
//!   does the change-log row of every delete: a *slim tombstone*, ids, version and
//!   commit time without the record). A change token older than the horizon is 410
//!   `token-expired`: the device takes a new snapshot, and asks about every record it
//!   holds as synced that neither the snapshot nor the changes after it deliver (an
//!   update with an empty patch, which changes nothing). An update or delete of a record
//!   this server no longer holds and has a slim tombstone of is answered with a
//!   *collected tombstone* (`deleted`, empty `record`): delete wins, as it does while the
//!   tombstone exists, and the device drops the record and its pending edits. One it has
//!   no slim tombstone of it never held, or lost in a restore: 422 `unknown-record`, and
//!   the device creates it again. A record created again after its collection starts
//!   above every collected version (at the horizon plus one), so a device still holding
//!   the old tombstone takes the new record. Slim tombstones are kept forever (one small
//!   row per deleted record).
//! - **Idempotency keys** are kept with their stored result for
//!   [`ServerBuilder::idempotency_retention`] (24 hours by default). After that,
//!   garbage collection compacts them: the result goes, the key, its request hash and
//!   the outcome's kind stay, forever. A mutation re-sent after that however long is
//!   answered with its outcome and the record as it is now, and counts once. The cost is
//!   a small row per mutation ever received; bounding it needs devices to confirm what
//!   they will never re-send (a per-device low-water mark), which is not built yet.
//!
//! # Restored or replaced databases
//!
//! Change tokens are `t2.<seq>.<tag>` and snapshot cursors carry the same tag: a hash of
//! the account, the sequence number and the commit time of that change. A token ahead of
//! the account's counter, or whose tag does not match the change this database holds
//! under that number (a database restored from a backup and written to again, a
//! replaced database, another account's token), is 410 `token-unknown`.
//!
//! A page ends at a change, but the records it holds are read in their latest state: a
//! record that moved past the page's end is left for a later page. A restore that loses
//! that move puts the record back behind the token, where the feed would never show it
//! again (simulation seed 34341). So when the reads that made a token saw a later change
//! than the one it continues after, the token names that change too and its tag binds
//! its commit time: `t3.<seq>.<seen>.<tag>` (snapshot cursors `s3.`, likewise). A
//! database that lost change `seen` refuses the token. One account's changes commit in
//! token order (the counter row stays locked until commit), so a database holding
//! change `seen` holds every change before it. The device
//! then takes a new snapshot, and reconciles what it holds (the fault simulation
//! restores the server from a backup mid-run to hold these to account):
//! - Records it holds as synced that the server lost are asked about once the device
//!   caught up, and created again (`unknown-record`); their `sum` fields count once
//!   however many devices send them (each create carries the copy it started from).
//!   A record keeps its *dots*: per store session, the highest numbered mutation its
//!   sums hold (PROTOCOL.md SUM-2). A device sends the dots it was last given with a
//!   record it creates again, so an increment whose first delivery the restore lost is
//!   found in them when it is retried (as an update, or as a create of the lost record)
//!   and not added a second time. Records carry dots only to clients that send
//!   `sync-protocol` 1.3.0 or later; earlier clients see records as before.
//! - A record's versions stay above every version a device reports having seen (the
//!   `base_version` of its mutations), and a version is identified by its number and its
//!   commit time: a device that holds version 4 of a record and is sent another
//!   version 4 (or a lower number) knows the server was restored, takes the server's
//!   record and starts over as after `token-unknown`, even if its token survived.
//! - A token survives a restore when the device pulled nothing after the backup. What
//!   it pushed after the backup is then lost on the server while its token is valid:
//!   the device notes every write the server acknowledges and, when the pulls catch up
//!   without showing one, asks about the record.
//! - Deletes: a delete of a record the server lost is sent as a create followed by the
//!   delete, so the server keeps the tombstone. The tombstone keeps the delete's stamp;
//!   a create over it is a recreate only from a device that saw it (it names the
//!   tombstone's version) or, naming none, when stamped after the delete. A create
//!   carrying `replaces` (an edit sent again after the server lost its record) names a
//!   version of the lost history, which the restored server may have given again: only
//!   its stamp counts. A create that
//!   names an older version, or was made before the delete (a retry whose first delivery
//!   the restore lost), is answered with the tombstone: delete wins. Once the tombstone
//!   is collected, its slim tombstone answers the same, the delete's commit time plus
//!   [`Config::max_clock_skew`] standing for its stamp (no clock of the tombstone was
//!   later): a create stamped within that bound of the delete, naming no version, is
//!   taken as made before it. A create that
//!   finds the record holding its own stamps (its first delivery was lost in the
//!   restore and another device sent the record again) is answered as applied.
//! - Edits acknowledged between the backup and the restore to records the server still
//!   holds: the device that made each one sends it again (same key, same body) after
//!   the restart that reveals the restore (`sync_runtime::store::AckLog`). The server
//!   answers a key it holds from its stored outcome (keys are compacted, never deleted)
//!   and applies the others as late mutations. A change whose stamps this server
//!   bounded (a device clock running ahead) is sent again with the stamps it gave it,
//!   under a new key, when its dot shows the restored record lacks it. What a restore
//!   still loses: changes older than the devices' log window or made in an older model,
//!   changes stamped ahead of the server's clock that change no `sum` field (nothing
//!   tells whether the restored server holds them), and changes of devices that never
//!   sync again. Edits made after the restore are never lost.
//!
//! A compacted idempotency key answered with a rejection is evaluated again (nothing of
//! it was applied, and its reason, such as an unknown record, may no longer hold).
//! Legacy `t1.` tokens are checked against the counter and the horizon only. Deletes
//! collected by a server older than the slim tombstones left none: a late edit of such a
//! record is answered `unknown-record`, and the record is created again.
//!
//! # Clocks
//!
//! `lww` fields carry hybrid-logical-clock stamps made on devices, whose clocks can be
//! wrong by hours. Two rules bound what such a device can do:
//! - Every response carries the server's time in its `Date` header, from the server's
//!   clock ([`ServerBuilder::clock`]); the client's engine learns the offset of the
//!   device's clock from it after every request, and stamps later edits in the server's
//!   time (`LocalStore::observe_server_time`, within 2 s).
//! - A stamp that lies further in the server's future than [`Config::max_clock_skew`]
//!   (60 s by default), in a create's clocks or a patch's `lww` operation, is brought
//!   back to the server's time plus that bound before it is stored. So an edit made on a
//!   device whose clock runs ahead, before it ever talked to the server, wins over later
//!   edits of other devices for at most that long.
//!
//! A device whose clock runs behind and that has never talked to the server stamps its
//! edits in the past; they lose against edits made since (the server cannot tell them
//! from genuinely old offline edits). Its first response corrects the clock.
//!
//! # What the protocol accepts
//!
//! Values are checked by the protocol, not by the database: a string holding U+0000
//! (PostgreSQL cannot store it, SQLite can) or a timestamp outside the years 0001-9999
//! is refused with a 422 problem for that mutation, naming the field, on every backend
//! (`sync_runtime::check_record`); the other mutations of the push are applied.
//!
//! # Twin creates
//!
//! A create of an id that is live on the server (the same per-user record created on two
//! devices) is answered `conflict` with the server's record, even if the two records are
//! equal: the client merges the two creates field by field as two concurrent updates
//! from an empty base (`lww` by stamp, sums add, sets unite, a `manual` field with two
//! values is a conflict for the user) and pushes the result as an update.
//!
//! # Old clients
//!
//! A client sends the fingerprint of the model it was built with in the
//! `sync-model-fingerprint` header. Any fingerprint the server's database was ever
//! migrated through is served, in that model's shape: the migrations record each
//! version's wire changes (fields and entities added, dropped, renamed), and the server
//! translates a client's mutations to its own names and its own records to the client's
//! (fields the client does not know left out, renamed fields under the client's names,
//! records of entities it does not know left out of changes and snapshots). Fields the
//! older client does not know are left as they are by its patches and get their
//! defaults in its creates. Idempotency hashes and stored results are kept in the names
//! of the oldest model, so a retry across an upgrade replays. An unknown fingerprint, or
//! one older than [`Config::oldest_model`], gets a 426 problem.

mod db;
mod history;
mod http;
mod jwt;
mod logic;
mod registry;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use sync_runtime::Syncable;
use sync_runtime::protocol::Problem;

pub use db::DbError;
pub use jwt::{JwtKeyError, JwtVerifier};
pub use sync_runtime::migrations::{MigrationFile, Migrations, MigrationsError};

/// Resolves a bearer token to the account (the principal) it may act for.
///
/// Every query the server runs is scoped to that account: no request can read or write
/// another account's rows. Implementations: [`StaticTokens`] (a fixed table) and
/// [`JwtVerifier`] (JSON Web Tokens from an identity provider).
pub trait TokenVerifier: Send + Sync + 'static {
    /// The account of `token`, or `None` if the token is not valid (401).
    fn verify(&self, token: &str) -> Option<String>;
}

/// A fixed token -> account table (tests, demos, single-tenant deployments).
#[derive(Debug, Clone, Default)]
pub struct StaticTokens(BTreeMap<String, String>);

impl StaticTokens {
    /// A table from `(token, account)` pairs.
    pub fn new<T: Into<String>, A: Into<String>>(pairs: impl IntoIterator<Item = (T, A)>) -> Self {
        StaticTokens(
            pairs
                .into_iter()
                .map(|(t, a)| (t.into(), a.into()))
                .collect(),
        )
    }
}

impl TokenVerifier for StaticTokens {
    fn verify(&self, token: &str) -> Option<String> {
        self.0.get(token).cloned()
    }
}

/// Limits on what one request may ask.
#[derive(Debug, Clone)]
pub struct Config {
    /// Largest request body, in bytes (default
    /// [`DEFAULT_MAX_PUSH_BODY_BYTES`](sync_runtime::protocol::DEFAULT_MAX_PUSH_BODY_BYTES),
    /// 4 MiB); larger is 413.
    pub max_body_bytes: usize,
    /// Most mutations in one push (default and ceiling
    /// [`MAX_PUSH_MUTATIONS`](sync_runtime::protocol::MAX_PUSH_MUTATIONS), 500, the
    /// document's `maxItems`; a larger value acts as it); more is 413.
    pub max_batch: usize,
    /// Largest page of `changes` and `snapshot` (default 1000); a larger `limit` is capped.
    pub max_page: u32,
    /// How long idempotency keys and their results are kept (default 24 hours).
    pub idempotency_retention: chrono::Duration,
    /// How far in the server's future a hybrid-logical-clock stamp may lie (default 60
    /// seconds). A stamp beyond it (a device clock running ahead) is brought back to the
    /// server's time plus this bound before it is stored, so an edit from such a device
    /// wins over later edits of others for at most this long. See *Clocks* in the crate
    /// docs. A collected tombstone keeps only its delete's commit time, so a create
    /// naming no version and stamped within this bound after that time is taken as
    /// concurrent with the delete, which wins (PROTOCOL.md CREATE-4).
    pub max_clock_skew: chrono::Duration,
    /// The fingerprint of the oldest model the server serves (default `None`: every
    /// model its migrations record). A client of an earlier model gets 426
    /// `upgrade-required` saying it is no longer served, and keeps its changes until
    /// the app is updated. Must be one of the fingerprints the migrations record
    /// (`sync-schema.json` lists them), or the server does not start.
    pub oldest_model: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_body_bytes: sync_runtime::protocol::DEFAULT_MAX_PUSH_BODY_BYTES,
            max_batch: sync_runtime::protocol::MAX_PUSH_MUTATIONS,
            max_page: 1000,
            idempotency_retention: chrono::Duration::hours(24),
            max_clock_skew: chrono::Duration::seconds(60),
            oldest_model: None,
        }
    }
}

/// Errors of the server's own operations (start-up, garbage collection) and of requests.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The database was migrated for another model.
    #[error(
        "the server database was migrated for model fingerprint {database}, but the registered entities have fingerprint {compiled}; regenerate the server migrations with `sync-cli generate` and register every entity of the model"
    )]
    FingerprintMismatch {
        /// The last migration's fingerprint.
        database: String,
        /// The registered entities' fingerprint.
        compiled: String,
    },
    /// The registered entities are not the model the migrations were generated for;
    /// found before any migration was applied, so the database is untouched.
    #[error(
        "the server was not started: the registered entities are not the model its migrations were generated for; nothing was applied:\n{}",
        .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n")
    )]
    RegistrationMismatch(Vec<String>),
    /// A change token older than the tombstone horizon.
    #[error("change token expired")]
    TokenExpired,
    /// A change token or snapshot cursor this database did not issue to this account.
    #[error("change token unknown to this database")]
    TokenUnknown,
    /// A stored or sent record does not fit its entity.
    #[error("invalid record: {0}")]
    BadRecord(String),
    /// Configuration error.
    #[error("{0}")]
    Config(String),
}

impl From<MigrationsError> for ServerError {
    fn from(e: MigrationsError) -> Self {
        ServerError::Config(format!("server migrations: {e}"))
    }
}

impl From<rusqlite::Error> for ServerError {
    fn from(e: rusqlite::Error) -> Self {
        ServerError::Db(DbError::Sqlite(e))
    }
}

impl From<sqlx::Error> for ServerError {
    fn from(e: sqlx::Error) -> Self {
        ServerError::Db(DbError::Postgres(e))
    }
}

/// Shared state of a running server.
pub(crate) struct State {
    pub(crate) db: db::Db,
    /// Every statement the protocol runs, built for `db`'s dialect at start-up.
    pub(crate) sql: logic::Statements,
    pub(crate) entities: BTreeMap<String, sync_runtime::erased::ErasedEntity>,
    /// Entity wire names in registration order (snapshot order).
    pub(crate) entity_order: Vec<String>,
    pub(crate) verifier: Arc<dyn TokenVerifier>,
    pub(crate) config: Config,
    pub(crate) fingerprints: BTreeSet<String>,
    pub(crate) current_fingerprint: String,
    /// The model versions the migrations record, and how each is served.
    pub(crate) history: history::History,
    pub(crate) clock: ServerClock,
}

impl State {
    /// The server's wall time.
    pub(crate) fn now(&self) -> chrono::DateTime<chrono::Utc> {
        (self.clock)()
    }

    /// The server's wall time in the stored form (RFC 3339, microseconds, `Z`).
    pub(crate) fn now_text(&self) -> String {
        sync_runtime::time::format(self.now())
    }

    /// The greatest HLC milliseconds a stamp may carry now: the server's time plus
    /// [`Config::max_clock_skew`].
    pub(crate) fn max_stamp_millis(&self) -> u64 {
        let bound = self.now() + self.config.max_clock_skew;
        u64::try_from(bound.timestamp_millis()).unwrap_or(0)
    }
}

/// Where the server reads its wall time: the system clock unless
/// [`ServerBuilder::clock`] sets another (tests move it).
pub type ServerClock = Arc<dyn Fn() -> chrono::DateTime<chrono::Utc> + Send + Sync>;

/// Configures a [`Server`].
pub struct ServerBuilder {
    entities: Vec<sync_runtime::erased::ErasedEntity>,
    verifier: Option<Arc<dyn TokenVerifier>>,
    config: Config,
    clock: ServerClock,
}

impl Server {
    /// Starts configuring a server.
    pub fn builder() -> ServerBuilder {
        ServerBuilder {
            entities: Vec::new(),
            verifier: None,
            config: Config::default(),
            clock: Arc::new(chrono::Utc::now),
        }
    }
}

impl ServerBuilder {
    /// Serves an entity type. Register every entity of the model.
    pub fn entity<T: Syncable>(mut self) -> Self {
        self.entities
            .push(sync_runtime::erased::ErasedEntity::of::<T>());
        self
    }

    /// How bearer tokens map to accounts (required).
    pub fn token_verifier(mut self, verifier: impl TokenVerifier) -> Self {
        self.verifier = Some(Arc::new(verifier));
        self
    }

    /// Request limits.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// How long idempotency keys are kept (default 24 hours).
    pub fn idempotency_retention(mut self, retention: chrono::Duration) -> Self {
        self.config.idempotency_retention = retention;
        self
    }

    /// Where the server reads its wall time (default: the system clock). Every stored
    /// time (`server_updated_at`, the change log's commit times, idempotency expiry), the
    /// `Date` header of every response and the bound on clock stamps follow it.
    pub fn clock(
        mut self,
        clock: impl Fn() -> chrono::DateTime<chrono::Utc> + Send + Sync + 'static,
    ) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Opens (creating if needed) a SQLite database file and applies the CLI's
    /// `migrations/server/sqlite` migrations.
    ///
    /// # Errors
    /// [`ServerError::Config`] if no token verifier or no entity was registered (checked
    /// once the file is open); [`ServerError::RegistrationMismatch`], before anything is
    /// applied, if the registered entities are not the model the last migration was
    /// generated for (naming the missing or extra entities);
    /// [`ServerError::FingerprintMismatch`] if the database's last migration's
    /// fingerprint is not the registered entities' after applying them; [`ServerError::Db`] with [`DbError::Invalid`] if the database is at
    /// a migration newer than `migrations` knows, or a migration's SQL fails (that
    /// migration is rolled back), and with [`DbError::Sqlite`] if the file cannot be
    /// opened or configured, or a query fails.
    pub async fn open_sqlite(
        self,
        path: impl AsRef<Path>,
        migrations: Migrations,
    ) -> Result<Server, ServerError> {
        let db = db::Db::open_sqlite(path.as_ref())?;
        self.finish(db, migrations).await
    }

    /// Connects to PostgreSQL (`postgres://...`) and applies the CLI's
    /// `migrations/server/postgres` migrations (one server at a time).
    ///
    /// # Errors
    /// [`ServerError::Config`] if no token verifier or no entity was registered (checked
    /// once connected); [`ServerError::RegistrationMismatch`], before anything is
    /// applied, if the registered entities are not the model the last migration was
    /// generated for (naming the missing or extra entities);
    /// [`ServerError::FingerprintMismatch`] if the database's last migration's
    /// fingerprint is not the registered entities' after applying them;
    /// [`ServerError::Db`] with [`DbError::Invalid`] if the database is at a migration
    /// newer than `migrations` knows, or a migration's SQL fails (that migration is rolled
    /// back), and with [`DbError::Postgres`] if `url` does not parse, the connection
    /// fails, or a query fails.
    pub async fn connect_postgres(
        self,
        url: &str,
        migrations: Migrations,
    ) -> Result<Server, ServerError> {
        let db = db::Db::connect_postgres(url, 16).await?;
        self.finish(db, migrations).await
    }

    async fn finish(self, db: db::Db, migrations: Migrations) -> Result<Server, ServerError> {
        let verifier = self.verifier.ok_or_else(|| {
            ServerError::Config("no token verifier: call `.token_verifier(...)`".into())
        })?;
        if self.entities.is_empty() {
            return Err(ServerError::Config(
                "no entities: call `.entity::<T>()` for every entity of the model".into(),
            ));
        }
        let registered: Vec<&sync_model::Entity> =
            self.entities.iter().map(|e| e.model()).collect();
        migrations
            .check_registration(&registered)
            .map_err(ServerError::RegistrationMismatch)?;
        let history = history::History::new(&migrations, &registered)
            .map_err(|e| ServerError::Db(DbError::Invalid(e.to_string())))?;
        if let Some(oldest) = &self.config.oldest_model
            && history.position(oldest).is_none()
        {
            return Err(ServerError::Config(format!(
                "`oldest_model` {oldest} is not a model the migrations record; use a fingerprint from sync-schema.json's `migrations`"
            )));
        }
        let fingerprints = db.migrate(&migrations).await?;
        let model = sync_model::Model {
            entities: self.entities.iter().map(|e| e.model().clone()).collect(),
        };
        let compiled = sync_model::fingerprint(&model).0;
        let database = fingerprints.last().cloned().unwrap_or_default();
        if database != compiled {
            return Err(ServerError::FingerprintMismatch { database, compiled });
        }
        let entity_order = self
            .entities
            .iter()
            .map(|e| e.model().name.clone())
            .collect();
        let sql = logic::Statements::new(db.dialect(), &model.entities);
        Ok(Server {
            state: Arc::new(State {
                db,
                sql,
                entities: self
                    .entities
                    .into_iter()
                    .map(|e| (e.model().name.clone(), e))
                    .collect(),
                entity_order,
                verifier,
                config: self.config,
                fingerprints: fingerprints.into_iter().collect(),
                current_fingerprint: compiled,
                history,
                clock: self.clock,
            }),
        })
    }
}

/// A configured server: an axum [`Router`](axum::Router) and maintenance operations.
#[derive(Clone)]
pub struct Server {
    state: Arc<State>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("entities", &self.state.entity_order)
            .field("fingerprint", &self.state.current_fingerprint)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// The protocol's routes (`/push`, `/changes`, `/snapshot`, `/health`), ready to be
    /// served or nested in an application's router.
    pub fn router(&self) -> axum::Router {
        http::router(self.state.clone())
    }

    /// The fingerprint of the model this server serves.
    pub fn fingerprint(&self) -> &str {
        &self.state.current_fingerprint
    }

    /// Removes tombstones and change-log entries committed before `before`, and expired
    /// idempotency keys. Change tokens from before the collected changes become expired:
    /// clients holding them get 410 and take a new snapshot. Returns the tombstones removed.
    ///
    /// # Errors
    /// [`ServerError::Db`] with [`DbError::Sqlite`] or [`DbError::Postgres`] if the
    /// database fails; the work is one transaction, so nothing is removed then.
    pub async fn collect_garbage(
        &self,
        before: chrono::DateTime<chrono::Utc>,
    ) -> Result<u64, ServerError> {
        logic::collect_garbage(&self.state, before).await
    }
}

pub(crate) fn problem(kind: &str, title: &str, status: u16, detail: impl Into<String>) -> Problem {
    Problem::new(kind, title, status, detail)
}
