//! The protocol, written once for every database: push, changes, snapshot.
//!
//! [`push`] applies mutations, with [`idempotency`] for keys and stored results; [`feed`]
//! serves changes and snapshots; [`gc`] collects what the retention windows allow;
//! [`records`] reads and writes records, their change rows and the account's counter.
//!
//! # Change tokens never skip a late commit
//!
//! Every change to an account's data takes the next number of that account's counter
//! (`sync_accounts.last_seq`) and writes it to `sync_changes` in the same transaction.
//! The counter row is locked for the whole transaction (`SELECT ... FOR UPDATE` in
//! PostgreSQL; SQLite has one writer at a time), so the transactions of one account commit
//! in the order of their numbers: no change with a smaller number can become visible
//! after a larger one. A pull that read up to N has therefore seen every change <= N, and
//! the next pull from N misses nothing, however many servers share the database.
//!
//! # Snapshots are pinned
//!
//! The first snapshot page fixes a token T (the account's counter). Pages hold the
//! records (tombstones included, until collected) whose last change is <= T; a record changed after T is left out and comes from
//! `GET /changes?since=T` instead. So every change is delivered exactly once: in a page
//! if it is <= T, by `changes` if it is > T.

use serde_json::Value as Json;
use sha2::{Digest, Sha256};
use sync_model::Entity;
use sync_runtime::protocol::{
    Dot, DotGaps, Dots, Mutation, MutationOp, MutationResult, Problem, ServerRecord,
    TRANSACTION_ABORTED,
};
use uuid::Uuid;

use sync_runtime::erased::PatchOutcome;
use sync_runtime::time;

use crate::db::{Arg, DbError, Tx, decode, encode};
use crate::registry;
use crate::{ServerError, State};

mod feed;
mod gc;
mod idempotency;
mod push;
mod records;
pub(crate) mod shape;
mod sql;

pub(crate) use feed::*;
pub(crate) use gc::*;
pub(crate) use idempotency::*;
pub(crate) use push::*;
pub(crate) use records::*;
pub(crate) use shape::ClientModel;
pub(crate) use sql::*;

pub(crate) fn rejected(
    key: &str,
    status: u16,
    kind: &str,
    title: &str,
    detail: impl Into<String>,
) -> MutationResult {
    MutationResult::Rejected {
        idempotency_key: key.to_string(),
        problem: Problem::new(kind, title, status, detail),
    }
}

/// The entity of the one `Syncable` struct in `src`, for unit tests.
#[cfg(test)]
pub(crate) fn entity_of(src: &str) -> Entity {
    sync_model::parse_source(src)
        .expect("a model")
        .entities
        .remove(0)
}
