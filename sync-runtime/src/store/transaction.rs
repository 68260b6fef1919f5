//! Several writes committed together: [`LocalStore::transaction`].

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use super::*;

thread_local! {
    /// The store (its `Inner`'s address) whose transaction this thread is running, so
    /// that a write through the store itself inside the closure is reported instead of
    /// waiting forever for the connection the transaction holds.
    static IN_TRANSACTION: Cell<usize> = const { Cell::new(0) };
}

/// Each record a transaction wrote: its last dot of this session before the
/// transaction, to put back if the transaction is undone.
type DotsBefore = RefCell<HashMap<(String, Uuid), Option<u64>>>;

/// Several creates, updates and deletes, of any registered entities, committed as one:
/// the handle [`LocalStore::transaction`] passes to its closure.
///
/// Each write is checked and applied at once (an error names the write, and the
/// closure decides whether to go on or give up), but nothing is visible to other
/// threads, nor told to subscribers, nor durable until the closure returns `Ok` and the
/// transaction commits. Reads through the handle ([`Transaction::get`]) see the
/// transaction's own writes.
pub struct Transaction<'s> {
    store: &'s LocalStore,
    conn: &'s Connection,
    events: Vec<StoreEvent>,
    /// Held by the guard that ends the transaction, so a panic puts them back too.
    dots_before: &'s DotsBefore,
}

impl std::fmt::Debug for Transaction<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction")
            .field("writes", &self.events.len())
            .finish_non_exhaustive()
    }
}

impl Transaction<'_> {
    /// Creates a record, as [`LocalStore::create`] does.
    ///
    /// # Errors
    /// As [`LocalStore::create`]. The transaction stays usable: the failed write left
    /// nothing behind.
    pub fn create<T: Syncable>(&mut self, value: &T) -> Result<(), StoreError> {
        let (value, record) = self.store.checked_create(value)?;
        let hlc = self.store.stamp();
        self.savepoint(T::ENTITY, value.id(), |s, conn| {
            s.create_in(conn, hlc, &value, &record)
        })?;
        self.events
            .push(local_change::<T>(value.id(), ChangeKind::Created));
        Ok(())
    }

    /// Updates a record, as [`LocalStore::update`] does: `false` if nothing changed.
    ///
    /// # Errors
    /// As [`LocalStore::update`]. The transaction stays usable: the failed write left
    /// nothing behind.
    pub fn update<T: Syncable>(&mut self, value: &T) -> Result<bool, StoreError> {
        let value = self.store.checked_update(value)?;
        let hlc = self.store.stamp();
        let changed = self.savepoint(T::ENTITY, value.id(), |s, conn| {
            s.update_in(conn, hlc, &value)
        })?;
        if changed {
            self.events
                .push(local_change::<T>(value.id(), ChangeKind::Updated));
        }
        Ok(changed)
    }

    /// Deletes a record, as [`LocalStore::delete`] does.
    ///
    /// # Errors
    /// As [`LocalStore::delete`]. The transaction stays usable: the failed write left
    /// nothing behind.
    pub fn delete<T: Syncable>(&mut self, id: Uuid) -> Result<(), StoreError> {
        self.store.table::<T>()?;
        let hlc = self.store.stamp();
        self.savepoint(T::ENTITY, id, |s, conn| s.delete_in::<T>(conn, hlc, id))?;
        self.events.push(local_change::<T>(id, ChangeKind::Deleted));
        Ok(())
    }

    /// The live record with this id, as the transaction has it so far.
    ///
    /// # Errors
    /// As [`LocalStore::get`].
    pub fn get<T: Syncable>(&self, id: Uuid) -> Result<Option<T>, StoreError> {
        let table = self.store.table::<T>()?;
        match read_row(self.conn, table, id)? {
            Some(row) if !row.deleted => Ok(Some(T::from_record(&row.record)?)),
            _ => Ok(None),
        }
    }

    /// Runs one write of record `(entity, id)` inside a savepoint: a write that fails
    /// leaves nothing behind (its dot, if it drew one, is put back), and the
    /// transaction goes on.
    fn savepoint<R>(
        &mut self,
        entity: &str,
        id: Uuid,
        write: impl FnOnce(&LocalStore, &Connection) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let key = (entity.to_string(), id);
        let before = self.store.last_dot(&key);
        self.dots_before
            .borrow_mut()
            .entry(key.clone())
            .or_insert(before);
        self.conn.execute_batch("SAVEPOINT sync_write")?;
        match write(self.store, self.conn) {
            Ok(r) => {
                self.conn.execute_batch("RELEASE sync_write")?;
                Ok(r)
            }
            Err(e) => {
                self.store.set_last_dot(key, before);
                self.conn
                    .execute_batch("ROLLBACK TO sync_write; RELEASE sync_write")?;
                Err(e)
            }
        }
    }
}

fn local_change<T: Syncable>(id: Uuid, change: ChangeKind) -> StoreEvent {
    StoreEvent::Changed {
        entity: T::ENTITY.to_string(),
        id,
        change,
        origin: ChangeOrigin::Local,
    }
}

/// Ends a transaction however it ends (a panic in the closure too): puts the thread's
/// mark back as it was, clears the group new outbox items join, and unless the
/// transaction committed, puts back the dots its writes drew.
struct Guard<'s> {
    store: &'s LocalStore,
    /// The thread's mark before this transaction (another store's transaction).
    previous: usize,
    dots_before: DotsBefore,
    committed: bool,
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        IN_TRANSACTION.with(|c| c.set(self.previous));
        *self
            .store
            .inner
            .txn_group
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = None;
        if !self.committed {
            for (key, before) in self.dots_before.get_mut().drain() {
                self.store.set_last_dot(key, before);
            }
        }
    }
}

impl LocalStore {
    /// Runs `f` as one transaction: its creates, updates and deletes, of any registered
    /// entities, with their outbox items, are committed together when `f` returns `Ok`,
    /// and none of them when it returns `Err` (or panics, or the process dies before the
    /// commit). Subscribers hear of the writes after the commit, in order.
    ///
    /// The items the transaction queues are marked as one transaction, and the engine
    /// sends them in one push, never split across pushes: a batch ends before a
    /// transaction it cannot hold whole, and a transaction larger than
    /// [`EngineConfig::batch_size`](crate::engine::EngineConfig::batch_size) goes in a
    /// push that holds it whole (with what it needs first, and what was queued between
    /// its items). While one of its items must wait (it backs off after a failure, is
    /// dead, or waits for another record's create), all of them wait (discarding a dead
    /// item, [`LocalStore::discard_dead`], lets the rest go). A server of protocol 1.4.0
    /// or later applies them all or none (PROTOCOL.md TXN-1): if one is answered
    /// `conflict` or refused, the others are not applied, and they go again whole with
    /// the conflicted item's merge, or wait dead with a refused one. Once the server
    /// applied the transaction, the mark is gone: what is sent again after that goes on
    /// its own. A push the server refuses as too large
    /// (413, at a batch of one: `sync-server` takes at most 500 mutations and 4 MiB) is
    /// sent in parts rather than given up. Coalescing still applies: a later edit folded
    /// into a pending update of the transaction travels with it, and when a transaction's
    /// edit folds into a pending update of an earlier transaction, the two join (both go
    /// in one push).
    ///
    /// What the server does with the push is its own: the reference server applies each
    /// mutation of a push on its own merits (a rejected one does not undo the others),
    /// so the transaction is atomic on the device and on the wire, not yet in the
    /// server's apply (issue "The app developer's side", item 1).
    ///
    /// Inside `f`, write through the [`Transaction`] handle, not through the store:
    /// the transaction holds the store's connection until it ends, and a call on the
    /// store from the same thread panics with a message saying so (it could never
    /// proceed). Other threads' calls wait until the transaction ends.
    ///
    /// ```
    /// # use sync_runtime::prelude::*;
    /// # use sync_runtime::store::{LocalStore, Migrations, StoreError};
    /// # #[derive(Syncable, Clone, Debug, PartialEq)]
    /// # pub struct Note { #[sync(id)] pub id: Uuid, pub body: String }
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let gen_dir = dir.path().join("gen");
    /// # std::fs::create_dir_all(gen_dir.join("m"))?;
    /// # std::fs::write(gen_dir.join("m/0001_init.sql"), sync_runtime::store::__doc_migration())?;
    /// # let store = LocalStore::builder(dir.path().join("app.db"))
    /// #     .entity::<Note>()
    /// #     .migrations(Migrations::from_dir(gen_dir.join("m"))?)
    /// #     .open()?;
    /// let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    /// store.transaction(|tx| {
    ///     tx.create(&Note { id: a, body: "one".into() })?;
    ///     tx.create(&Note { id: b, body: "two".into() })?;
    ///     Ok::<_, StoreError>(())
    /// })?;
    /// assert_eq!(store.outbox()?.len(), 2);
    ///
    /// // An error from the closure undoes every write of it. (Its error type is any
    /// // that a `StoreError` converts into.)
    /// let r = store.transaction(|tx| {
    ///     tx.delete::<Note>(a)?;
    ///     tx.update(&Note { id: b, body: "changed".into() })?;
    ///     Err::<(), Box<dyn std::error::Error>>("the user cancelled".into())
    /// });
    /// assert!(r.is_err());
    /// assert_eq!(store.get::<Note>(b)?.unwrap().body, "two");
    /// assert!(store.get::<Note>(a)?.is_some());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `f`'s error, with nothing written; [`StoreError::Sqlite`] (converted into `E`) if
    /// the transaction cannot begin or commit (nothing is written then either).
    ///
    /// # Panics
    /// If `f` calls this store's own methods (not the handle's) on the same thread,
    /// which would otherwise wait forever for the connection.
    pub fn transaction<R, E>(
        &self,
        f: impl FnOnce(&mut Transaction<'_>) -> Result<R, E>,
    ) -> Result<R, E>
    where
        E: From<StoreError>,
    {
        let (r, events) = {
            let mut conn = self.conn();
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(StoreError::from)?;
            let group = self.new_key();
            *self
                .inner
                .txn_group
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(group);
            let previous = IN_TRANSACTION.with(|c| c.replace(Arc::as_ptr(&self.inner) as usize));
            let mut guard = Guard {
                store: self,
                previous,
                dots_before: RefCell::new(HashMap::new()),
                committed: false,
            };
            let mut handle = Transaction {
                store: self,
                conn: &tx,
                events: Vec::new(),
                dots_before: &guard.dots_before,
            };
            let result = f(&mut handle);
            let events = std::mem::take(&mut handle.events);
            let r = result?;
            tx.commit().map_err(StoreError::from)?;
            guard.committed = true;
            (r, events)
        };
        for event in events {
            self.notify(event);
        }
        Ok(r)
    }

    /// The transaction group new outbox items join, while [`LocalStore::transaction`]
    /// runs (only its thread writes then: it holds the connection).
    pub(crate) fn open_transaction(&self) -> Option<String> {
        self.inner
            .txn_group
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Panics if this thread is inside a transaction of this store: the caller would
    /// wait forever for the connection the transaction holds.
    pub(crate) fn check_not_in_transaction(&self) {
        let me = Arc::as_ptr(&self.inner) as usize;
        if IN_TRANSACTION.with(|c| c.get()) == me {
            panic!(
                "a LocalStore method was called inside LocalStore::transaction on the same thread; \
                 the transaction holds the store's connection, so the call could never proceed: \
                 write and read through the transaction's handle (`tx.create`, `tx.update`, \
                 `tx.delete`, `tx.get`) instead"
            );
        }
    }

    /// The number of the last dot this session drew for record `key` (entity, id).
    fn last_dot(&self, key: &(String, Uuid)) -> Option<u64> {
        self.inner
            .last_dots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .copied()
    }

    /// Puts back what [`LocalStore::last_dot`] said.
    fn set_last_dot(&self, key: (String, Uuid), last: Option<u64>) {
        let mut dots = self
            .inner
            .last_dots
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match last {
            Some(n) => dots.insert(key, n),
            None => dots.remove(&key),
        };
    }
}
