//! Live queries: a query's result set, again after every commit that changes it.

use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_channel::mpsc as async_mpsc;
use futures_core::Stream;

use super::*;

/// What a live query shares between its blocking and async forms: the query and the
/// last result set it gave.
struct Live<T> {
    store: LocalStore,
    query: Query,
    /// The records of the last result set given (`None` before the first).
    last: Option<Vec<Record>>,
    _t: PhantomData<fn() -> T>,
}

impl<T: Syncable> Live<T> {
    fn new(store: &LocalStore, query: Query) -> Result<Self, StoreError> {
        // Fail now for an unregistered entity or a query that cannot run.
        store.query_records::<T>(&query)?;
        Ok(Live {
            store: store.clone(),
            query,
            last: None,
            _t: PhantomData,
        })
    }

    /// The result set if it differs from the last one given.
    fn changed(&mut self) -> Option<Result<Vec<T>, StoreError>> {
        let records = match self.store.query_records::<T>(&self.query) {
            Ok(r) => r,
            Err(e) => return Some(Err(e)),
        };
        if self.last.as_ref() == Some(&records) {
            return None;
        }
        let values = records
            .iter()
            .map(|r| Ok(T::from_record(r)?))
            .collect::<Result<Vec<T>, StoreError>>();
        self.last = Some(records);
        Some(values)
    }
}

/// Whether an event may change a live query over `T`.
fn touches<T: Syncable>(e: &StoreEvent) -> bool {
    match e {
        StoreEvent::Changed { entity, .. } => entity == T::ENTITY,
    }
}

/// A live query as a blocking iterator ([`LocalStore::watch`]): the current result set
/// first, then a new one after each commit (local, or from a sync) that changed it. A
/// commit that touched the entity but left the result set as it was gives nothing.
/// Each item is the whole result set, in the query's order.
///
/// [`Iterator::next`] blocks until there is a new result set; [`Watch::next_timeout`]
/// and [`Watch::try_next`] wait less. The iterator does not end while the store is
/// open (the watch holds a handle of it).
pub struct Watch<T> {
    live: Live<T>,
    events: Subscription<StoreEvent>,
}

impl<T> std::fmt::Debug for Watch<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("query", &self.live.query)
            .finish_non_exhaustive()
    }
}

impl<T: Syncable> Watch<T> {
    /// The next result set, waiting at most `timeout` for a commit that changes it.
    pub fn next_timeout(
        &mut self,
        timeout: std::time::Duration,
    ) -> Option<Result<Vec<T>, StoreError>> {
        let until = std::time::Instant::now() + timeout;
        loop {
            if let Some(r) = self.pending() {
                return Some(r);
            }
            let left = until.checked_duration_since(std::time::Instant::now())?;
            let e = self.events.recv_timeout(left)?;
            if touches::<T>(&e) {
                self.drain();
                if let Some(r) = self.live.changed() {
                    return Some(r);
                }
            }
        }
    }

    /// A new result set if a commit since the last one changed it; never waits.
    pub fn try_next(&mut self) -> Option<Result<Vec<T>, StoreError>> {
        self.pending().or_else(|| {
            let mut touched = false;
            while let Some(e) = self.events.try_recv() {
                touched |= touches::<T>(&e);
            }
            touched.then(|| self.live.changed()).flatten()
        })
    }

    /// The first result set, if not given yet.
    fn pending(&mut self) -> Option<Result<Vec<T>, StoreError>> {
        if self.live.last.is_none() {
            return self.live.changed();
        }
        None
    }

    /// Takes the events already waiting: one query answers them all.
    fn drain(&mut self) {
        while self.events.try_recv().is_some() {}
    }
}

impl<T: Syncable> Iterator for Watch<T> {
    type Item = Result<Vec<T>, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(r) = self.pending() {
            return Some(r);
        }
        loop {
            let e = self.events.recv()?;
            if touches::<T>(&e) {
                self.drain();
                if let Some(r) = self.live.changed() {
                    return Some(r);
                }
            }
        }
    }
}

/// A live query as an async [`Stream`] ([`LocalStore::watch_stream`]): the same items as
/// [`Watch`]. Each query runs on the polling task (a local SQLite read); the stream
/// does not end while the store is open.
pub struct WatchStream<T> {
    live: Live<T>,
    events: async_mpsc::UnboundedReceiver<StoreEvent>,
}

impl<T> std::fmt::Debug for WatchStream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchStream")
            .field("query", &self.live.query)
            .finish_non_exhaustive()
    }
}

impl<T: Syncable> Stream for WatchStream<T> {
    type Item = Result<Vec<T>, StoreError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.live.last.is_none()
            && let Some(r) = this.live.changed()
        {
            return Poll::Ready(Some(r));
        }
        loop {
            // Every event waiting, then one query for all of them.
            let mut touched = false;
            loop {
                match Pin::new(&mut this.events).poll_next(cx) {
                    Poll::Ready(Some(e)) => touched |= touches::<T>(&e),
                    Poll::Ready(None) => return Poll::Ready(None),
                    Poll::Pending => break,
                }
            }
            if !touched {
                return Poll::Pending;
            }
            if let Some(r) = this.live.changed() {
                return Poll::Ready(Some(r));
            }
        }
    }
}

impl LocalStore {
    /// A live query over `T`, as a blocking iterator: the current result set of `query`
    /// ([`LocalStore::query`]), then a new one after each commit that changed it, local
    /// or pulled. For a UI thread that waits on it, or a loop with
    /// [`Watch::next_timeout`].
    ///
    /// ```
    /// # use sync_runtime::prelude::*;
    /// # use sync_runtime::store::Migrations;
    /// # #[derive(Syncable, Clone, Debug, PartialEq)]
    /// # pub struct Note { #[sync(id)] pub id: Uuid, pub body: String }
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # std::fs::create_dir_all(dir.path().join("m"))?;
    /// # std::fs::write(dir.path().join("m/0001_init.sql"), sync_runtime::store::__doc_migration())?;
    /// # let store = LocalStore::builder(dir.path().join("app.db"))
    /// #     .entity::<Note>()
    /// #     .migrations(Migrations::from_dir(dir.path().join("m"))?)
    /// #     .open()?;
    /// let mut notes = store.watch::<Note>(Query::new().order_by("body"))?;
    /// assert!(notes.next().unwrap()?.is_empty()); // the current result set
    /// store.create(&Note { id: Uuid::now_v7(), body: "hello".into() })?;
    /// assert_eq!(notes.next().unwrap()?[0].body, "hello"); // after the commit
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// As [`LocalStore::query`], checked once now (and given as items later, if a query
    /// fails then).
    pub fn watch<T: Syncable>(&self, query: Query) -> Result<Watch<T>, StoreError> {
        let events = self.subscribe();
        Ok(Watch {
            live: Live::new(self, query)?,
            events,
        })
    }

    /// [`LocalStore::watch`] as an async [`Stream`] (`futures_core::Stream`; with
    /// `StreamExt::next` from the `futures` or `tokio-stream` crates).
    ///
    /// # Errors
    /// As [`LocalStore::watch`].
    pub fn watch_stream<T: Syncable>(&self, query: Query) -> Result<WatchStream<T>, StoreError> {
        let (tx, rx) = async_mpsc::unbounded();
        self.on_event(move |e| tx.unbounded_send(e.clone()).is_ok());
        Ok(WatchStream {
            live: Live::new(self, query)?,
            events: rx,
        })
    }
}
