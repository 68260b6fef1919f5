//! The model's history, and how a client of an earlier model is served in its own shape.
//!
//! Every migration after the first records the changes it made to the wire shape
//! ([`WireChange`]: entities and fields added, dropped or renamed), written by
//! `sync-cli generate` into its header. Folding the changes made since a client's model
//! gives a [`Lens`]: one description, as data, of the difference between the client's
//! shape and the server's, read in both directions (the idea of bidirectional lenses):
//!
//! - inbound, a mutation's `record`, `clocks` and `patch` members are renamed from the
//!   client's names to the server's, and members of fields the server dropped are left
//!   out (fields the client does not know are not touched: its creates take their
//!   defaults, its patches leave them as they are, so it never nulls them);
//! - outbound, a record (in a push result, a change or a snapshot page) loses the fields
//!   the client does not know, takes the client's names, and gains the fields the
//!   server dropped with the value the client reads for them; a conflict's field names
//!   and a rejection's pointer take the client's names; records of entities the client
//!   does not know are left out of changes and snapshots.
//!
//! Idempotency keys outlive model versions: a mutation retried after the server (or the
//! device) upgraded arrives in another shape. Its body hash and its stored result are
//! therefore kept in the *origin* shape, the names of the oldest model the server knows
//! ([`History::canonical`], [`History::in_origin_names`], [`History::in_current_names`]), so that
//! the same mutation hashes the same in every version and a replayed result is read in
//! the names of today's model. (A model in which a field was renamed and another field
//! later took its old name has no such shape: the hash and the stored results then use
//! the server's current names, and a retry across that rename is treated as a new body.)

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value as Json};
use sync_runtime::migrations::{Migrations, MigrationsError, WireChange};
use sync_runtime::protocol::{Mutation, MutationResult, ServerRecord};

/// The translation between one earlier model's wire shape and the server's.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Lens {
    /// Per entity: the server's name of a field renamed since -> the client's name.
    to_client: BTreeMap<String, BTreeMap<String, String>>,
    /// Per entity: the client's name -> the server's (the inverse of `to_client`).
    from_client: BTreeMap<String, BTreeMap<String, String>>,
    /// Per entity: fields added since, which the client does not know, with the value
    /// a record takes where it has none.
    unknown: BTreeMap<String, BTreeMap<String, Json>>,
    /// Per entity: fields the client has that the server dropped, with the value the
    /// client reads for them.
    gone: BTreeMap<String, BTreeMap<String, Json>>,
    /// Entities added since.
    unknown_entities: BTreeSet<String>,
    /// The server's name of an entity renamed since -> the client's name.
    entity_to_client: BTreeMap<String, String>,
    /// The client's name -> the server's (the inverse of `entity_to_client`).
    entity_from_client: BTreeMap<String, String>,
}

/// Moves `m[from]` to `m[to]`, if there is one.
fn move_key<V>(m: &mut BTreeMap<String, V>, from: &str, to: &str) {
    if let Some(v) = m.remove(from) {
        m.insert(to.to_string(), v);
    }
}

impl Lens {
    /// The lens from the model before `changes` (in order) to the model after them.
    pub(crate) fn fold<'a>(changes: impl IntoIterator<Item = &'a WireChange>) -> Lens {
        let mut lens = Lens::default();
        for change in changes {
            match change {
                WireChange::AddEntity { entity } => {
                    lens.unknown_entities.insert(entity.clone());
                }
                WireChange::DropEntity { entity } => {
                    lens.unknown_entities.remove(entity);
                    lens.to_client.remove(entity);
                    lens.unknown.remove(entity);
                    lens.gone.remove(entity);
                }
                WireChange::AddField {
                    entity,
                    field,
                    default,
                } => {
                    if lens.unknown_entities.contains(entity) {
                        continue;
                    }
                    // Unknown to the client, even under a name it had: a field dropped
                    // and added again (also a type change, which the generator writes
                    // as a drop and an add) is another field; the client's member of
                    // that name stays the dropped one (`gone`).
                    lens.unknown
                        .entry(entity.clone())
                        .or_default()
                        .insert(field.clone(), default.clone());
                }
                WireChange::DropField {
                    entity,
                    field,
                    default,
                } => {
                    if lens.unknown_entities.contains(entity)
                        || lens
                            .unknown
                            .get_mut(entity)
                            .is_some_and(|u| u.remove(field).is_some())
                    {
                        continue;
                    }
                    let client = lens
                        .to_client
                        .get_mut(entity)
                        .and_then(|m| m.remove(field))
                        .unwrap_or_else(|| field.clone());
                    lens.gone
                        .entry(entity.clone())
                        .or_default()
                        .insert(client, default.clone());
                }
                WireChange::RenameEntity { from, to } => {
                    if lens.unknown_entities.remove(from) {
                        lens.unknown_entities.insert(to.clone());
                        continue;
                    }
                    move_key(&mut lens.to_client, from, to);
                    move_key(&mut lens.unknown, from, to);
                    move_key(&mut lens.gone, from, to);
                    let client = lens
                        .entity_to_client
                        .remove(from)
                        .unwrap_or_else(|| from.clone());
                    if client != *to {
                        lens.entity_to_client.insert(to.clone(), client);
                    }
                }
                WireChange::RenameField { entity, from, to } => {
                    if lens.unknown_entities.contains(entity) {
                        continue;
                    }
                    if let Some(unknown) = lens.unknown.get_mut(entity)
                        && let Some(default) = unknown.remove(from)
                    {
                        unknown.insert(to.clone(), default);
                        continue;
                    }
                    let names = lens.to_client.entry(entity.clone()).or_default();
                    let client = names.remove(from).unwrap_or_else(|| from.clone());
                    if client != *to {
                        names.insert(to.clone(), client);
                    }
                }
            }
        }
        lens.entity_from_client = lens
            .entity_to_client
            .iter()
            .map(|(s, c)| (c.clone(), s.clone()))
            .collect();
        lens.from_client = lens
            .to_client
            .iter()
            .map(|(e, names)| {
                let inverse = names.iter().map(|(s, c)| (c.clone(), s.clone())).collect();
                (e.clone(), inverse)
            })
            .collect();
        lens
    }

    /// The server's name of the entity the client calls `client`.
    pub(crate) fn server_entity<'a>(&'a self, client: &'a str) -> &'a str {
        self.entity_from_client
            .get(client)
            .map_or(client, String::as_str)
    }

    /// A mutation (in the server's names, its hash taken) without the client's members
    /// of fields dropped since its model, also those whose name a later field took.
    pub(crate) fn strip_gone(&self, m: &mut Mutation) {
        if let Some(gone) = self.gone.get(&m.entity_type) {
            retain_members(m, |k| !gone.contains_key(k));
        }
    }

    /// Whether a client of the earlier model knows `entity`.
    pub(crate) fn knows_entity(&self, entity: &str) -> bool {
        !self.unknown_entities.contains(entity)
    }

    /// A mutation in the client's shape, in the server's names. Members of fields
    /// dropped since stay: they go after the body's hash is taken
    /// ([`History::strip_dropped`]), so a retry across the drop hashes the same.
    pub(crate) fn mutation_in(&self, m: &mut Mutation) {
        if let Some(server) = self.entity_from_client.get(&m.entity_type) {
            m.entity_type = server.clone();
        }
        Lens::rename_mutation(m, self.from_client.get(&m.entity_type));
    }

    /// A record of the server, in the client's shape.
    pub(crate) fn record_out(&self, r: &mut ServerRecord) {
        if let Some(client) = self.entity_to_client.get(&r.entity_type)
            && r.deleted
            && r.record.is_empty()
        {
            // A collected delete's slim tombstone: no fields to translate, and clients
            // know it by its empty record.
            r.entity_type = client.clone();
            return;
        }
        if r.deleted && r.record.is_empty() {
            return;
        }
        let e = &r.entity_type;
        let (unknown, rename, gone) =
            (self.unknown.get(e), self.to_client.get(e), self.gone.get(e));
        let strip = |members: &mut Map<String, Json>| {
            if let Some(unknown) = unknown {
                members.retain(|k, _| !unknown.contains_key(k));
            }
            rename_keys(members, rename);
        };
        strip(&mut r.record);
        if let Some(clocks) = r.clocks.as_object_mut() {
            strip(clocks);
        }
        for (field, default) in gone.into_iter().flatten() {
            r.record
                .entry(field.clone())
                .or_insert_with(|| default.clone());
        }
        if let Some(client) = self.entity_to_client.get(&r.entity_type) {
            r.entity_type = client.clone();
        }
    }

    /// A push result, in the client's shape.
    pub(crate) fn result_out(&self, r: &mut MutationResult, entity: &str) {
        match r {
            MutationResult::Applied { server, .. } => self.record_out(server),
            MutationResult::Conflict { server, fields, .. } => {
                self.record_out(server);
                if let Some(unknown) = self.unknown.get(entity) {
                    fields.retain(|f| !unknown.contains_key(f));
                }
                for f in fields {
                    if let Some(c) = self.to_client.get(entity).and_then(|n| n.get(f)) {
                        *f = c.clone();
                    }
                }
            }
            MutationResult::Rejected { problem, .. } => {
                if let Some(pointer) = &mut problem.pointer {
                    *pointer = rename_in_pointer(pointer, self.to_client.get(entity));
                }
            }
        }
    }

    /// Renames only (what [`History::canonical`] needs): `names` applied to a
    /// mutation's members, nothing left out.
    fn rename_mutation(m: &mut Mutation, names: Option<&BTreeMap<String, String>>) {
        if let Some(record) = &mut m.record {
            rename_keys(record, names);
        }
        for value in [&mut m.clocks, &mut m.patch].into_iter().flatten() {
            if let Some(members) = value.as_object_mut() {
                rename_keys(members, names);
            }
        }
    }

    /// Renames only, on a result's record, conflict fields and pointer: `names` are
    /// the field names of `entity` (the server's name for it), `entity_name` the name
    /// the record's entity takes, if another.
    fn rename_result(
        r: &mut MutationResult,
        names: Option<&BTreeMap<String, String>>,
        entity_name: Option<&String>,
    ) {
        let rename_record = |s: &mut ServerRecord| {
            rename_keys(&mut s.record, names);
            if let Some(clocks) = s.clocks.as_object_mut() {
                rename_keys(clocks, names);
            }
            if let Some(e) = entity_name {
                s.entity_type = e.clone();
            }
        };
        match r {
            MutationResult::Applied { server, .. } => rename_record(server),
            MutationResult::Conflict { server, fields, .. } => {
                rename_record(server);
                for f in fields {
                    if let Some(c) = names.and_then(|n| n.get(f)) {
                        *f = c.clone();
                    }
                }
            }
            MutationResult::Rejected { problem, .. } => {
                if let Some(pointer) = &mut problem.pointer {
                    *pointer = rename_in_pointer(pointer, names);
                }
            }
        }
    }
}

/// Keeps the members of a mutation's `record`, `clocks` and `patch` whose field name
/// `keep` accepts.
fn retain_members(m: &mut Mutation, keep: impl Fn(&str) -> bool) {
    if let Some(record) = &mut m.record {
        record.retain(|k, _| keep(k));
    }
    for value in [&mut m.clocks, &mut m.patch].into_iter().flatten() {
        if let Some(members) = value.as_object_mut() {
            members.retain(|k, _| keep(k));
        }
    }
}

fn rename_keys(members: &mut Map<String, Json>, names: Option<&BTreeMap<String, String>>) {
    let Some(names) = names else { return };
    if !members.keys().any(|k| names.contains_key(k)) {
        return;
    }
    let old = std::mem::take(members);
    for (k, v) in old {
        let k = names.get(&k).cloned().unwrap_or(k);
        members.insert(k, v);
    }
}

/// `/record/<field>...`, `/patch/<field>...` or `/clocks/<field>...` with the field's
/// name translated; any other pointer as it is.
fn rename_in_pointer(pointer: &str, names: Option<&BTreeMap<String, String>>) -> String {
    let Some(names) = names else {
        return pointer.to_string();
    };
    let mut tokens: Vec<String> = pointer.split('/').map(str::to_string).collect();
    if tokens.len() >= 3 && matches!(tokens[1].as_str(), "record" | "patch" | "clocks") {
        let field = tokens[2].replace("~1", "/").replace("~0", "~");
        if let Some(c) = names.get(&field) {
            tokens[2] = c.replace('~', "~0").replace('/', "~1");
        }
    }
    tokens.join("/")
}

/// The name each entity and field had when it first appeared in the history (the
/// origin model's names for what it had; a later addition's first name), for the
/// entities and fields renamed since: `(entity -> birth name, entity -> field -> birth
/// name)`, keyed by today's names. Idempotency hashes and stored results use these
/// names, so that a mutation and its result read the same in every version.
#[allow(clippy::type_complexity)]
fn birth_names<'a>(
    changes: impl IntoIterator<Item = &'a WireChange>,
) -> (
    BTreeMap<String, String>,
    BTreeMap<String, BTreeMap<String, String>>,
) {
    let mut entities: BTreeMap<String, String> = BTreeMap::new();
    let mut fields: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for change in changes {
        match change {
            WireChange::AddEntity { entity } | WireChange::DropEntity { entity } => {
                entities.remove(entity);
                fields.remove(entity);
            }
            WireChange::RenameEntity { from, to } => {
                let birth = entities.remove(from).unwrap_or_else(|| from.clone());
                entities.insert(to.clone(), birth);
                move_key(&mut fields, from, to);
            }
            WireChange::AddField { entity, field, .. } => {
                if let Some(f) = fields.get_mut(entity) {
                    f.remove(field);
                }
            }
            // A dropped field keeps its mapping: a retry sent before the drop under a
            // later name still hashes under the first (its members go after the hash).
            WireChange::DropField { .. } => {}
            WireChange::RenameField { entity, from, to } => {
                let f = fields.entry(entity.clone()).or_default();
                let birth = f.remove(from).unwrap_or_else(|| from.clone());
                f.insert(to.clone(), birth);
            }
        }
    }
    entities.retain(|now, birth| now != birth);
    for f in fields.values_mut() {
        f.retain(|now, birth| now != birth);
    }
    fields.retain(|_, f| !f.is_empty());
    (entities, fields)
}

/// Per entity (today's name): every field added in the history, under every name it
/// had (also once dropped), with its default. A member holding that default is left
/// out of the idempotency hash ([`History::canonical`]): a device's migration gives
/// pending creates the defaults of added fields, and a create sent before it, its
/// response lost, is retried with them.
fn added_defaults<'a>(
    changes: impl IntoIterator<Item = &'a WireChange>,
) -> BTreeMap<String, BTreeMap<String, Json>> {
    let mut out: BTreeMap<String, BTreeMap<String, Json>> = BTreeMap::new();
    for change in changes {
        match change {
            WireChange::AddField {
                entity,
                field,
                default,
            } => {
                out.entry(entity.clone())
                    .or_default()
                    .insert(field.clone(), default.clone());
            }
            WireChange::RenameField { entity, from, to } => {
                if let Some(f) = out.get_mut(entity)
                    && let Some(d) = f.get(from).cloned()
                {
                    f.insert(to.clone(), d);
                }
            }
            WireChange::RenameEntity { from, to } => move_key(&mut out, from, to),
            WireChange::DropEntity { entity } => {
                out.remove(entity);
            }
            WireChange::AddEntity { .. } | WireChange::DropField { .. } => {}
        }
    }
    out
}

/// Per entity (today's name), every name a dropped field had in the history.
fn dropped_names<'a>(
    changes: impl IntoIterator<Item = &'a WireChange>,
) -> BTreeMap<String, BTreeSet<String>> {
    // Per entity: today's name of each field -> the names it had before.
    let mut former: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    let mut dropped: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for change in changes {
        match change {
            WireChange::RenameEntity { from, to } => {
                move_key(&mut former, from, to);
                move_key(&mut dropped, from, to);
            }
            WireChange::DropEntity { entity } => {
                former.remove(entity);
                dropped.remove(entity);
            }
            WireChange::RenameField { entity, from, to } => {
                let f = former.entry(entity.clone()).or_default();
                let mut names = f.remove(from).unwrap_or_default();
                names.insert(from.clone());
                f.insert(to.clone(), names);
            }
            WireChange::DropField { entity, field, .. } => {
                let names = former
                    .get_mut(entity)
                    .and_then(|f| f.remove(field))
                    .unwrap_or_default();
                let d = dropped.entry(entity.clone()).or_default();
                d.insert(field.clone());
                d.extend(names);
            }
            WireChange::AddEntity { .. } | WireChange::AddField { .. } => {}
        }
    }
    dropped
}

/// Every model version a server knows, by fingerprint, with the lens to each.
#[derive(Clone, Debug, Default)]
pub(crate) struct History {
    /// The fingerprints the migrations record, oldest first.
    order: Vec<String>,
    /// Per fingerprint of an earlier model: the lens between its shape and the server's.
    lenses: BTreeMap<String, Lens>,
    /// The server's names -> the birth names (the oldest model's, or a later
    /// addition's first name), per entity; empty when renames collide (see the module's
    /// documentation).
    to_origin: BTreeMap<String, BTreeMap<String, String>>,
    /// The inverse of `to_origin`.
    from_origin: BTreeMap<String, BTreeMap<String, String>>,
    /// The server's entity names -> their birth names (entities renamed since).
    entity_to_origin: BTreeMap<String, String>,
    /// The inverse of `entity_to_origin`.
    entity_from_origin: BTreeMap<String, String>,
    /// Per entity (today's name): every field added after the oldest model, under
    /// every name it had (dropped ones too), with its default.
    added_since_origin: BTreeMap<String, BTreeMap<String, Json>>,
    /// Per entity: the fields of the server's model (wire names).
    fields: BTreeMap<String, BTreeSet<String>>,
    /// Per entity (today's name): every name a field dropped from it had, while no
    /// field of today's model has that name.
    dropped: BTreeMap<String, BTreeSet<String>>,
}

impl History {
    /// The history the migrations record: a lens for every model version but the last.
    ///
    /// # Errors
    /// [`MigrationsError`] if a migration's wire-change line cannot be read.
    pub(crate) fn new(
        migrations: &Migrations,
        entities: &[&sync_model::Entity],
    ) -> Result<History, MigrationsError> {
        let files = migrations.files();
        let changes: Vec<Vec<WireChange>> = files
            .iter()
            .map(|f| f.wire_changes())
            .collect::<Result<_, _>>()?;
        let mut history = History {
            fields: entities
                .iter()
                .map(|e| {
                    let fields = e.synced_fields().map(|f| f.name.clone()).collect();
                    (e.name.clone(), fields)
                })
                .collect(),
            ..History::default()
        };
        for (i, f) in files.iter().enumerate() {
            let Some(fp) = f.fingerprint() else { continue };
            history.order.push(fp.to_string());
            if i + 1 == files.len() {
                continue;
            }
            let lens = Lens::fold(changes[i + 1..].iter().flatten());
            history.lenses.insert(fp.to_string(), lens);
        }
        history.added_since_origin = added_defaults(changes.iter().skip(1).flatten());
        history.dropped = dropped_names(changes.iter().skip(1).flatten());
        for (e, names) in &mut history.dropped {
            let now = history.fields.get(e);
            names.retain(|n| now.is_none_or(|f| !f.contains(n)));
        }
        let (entities, fields) = birth_names(changes.iter().skip(1).flatten());
        let inverse = |m: &BTreeMap<String, String>| -> BTreeMap<String, String> {
            m.iter().map(|(a, b)| (b.clone(), a.clone())).collect()
        };
        // Two things born under one name (a field renamed, another added under its old
        // name) cannot share it: those keep their current names (see the module's docs).
        let mut entities = entities;
        let renamed: BTreeSet<String> = entities.keys().cloned().collect();
        entities.retain(|_, birth| !history.fields.contains_key(birth) || renamed.contains(birth));
        let mut fields = fields;
        for (e, f) in &mut fields {
            let now = history.fields.get(e).cloned().unwrap_or_default();
            let renamed: BTreeSet<String> = f.keys().cloned().collect();
            f.retain(|_, birth| !now.contains(birth) || renamed.contains(birth));
        }
        history.entity_from_origin = inverse(&entities);
        history.from_origin = fields
            .iter()
            .map(|(e, f)| (e.clone(), inverse(f)))
            .collect();
        history.entity_to_origin = entities;
        history.to_origin = fields;
        Ok(history)
    }

    /// Where the model with fingerprint `fp` stands in the history (0: the oldest).
    pub(crate) fn position(&self, fp: &str) -> Option<usize> {
        self.order.iter().position(|f| f == fp)
    }

    /// The lens to the shape of the model with fingerprint `fp`: `None` for the server's
    /// own model, or one it has no record of (the caller answers 426 for those).
    pub(crate) fn lens(&self, fp: &str) -> Option<&Lens> {
        self.lenses.get(fp).filter(|l| **l != Lens::default())
    }

    /// A mutation in the server's shape, in the origin shape: what its idempotency hash
    /// is computed on, so that a retry hashes the same across upgrades. Renamed fields
    /// take their origin names, and a create's members of fields added since the origin
    /// are left out while they hold the field's default: a device's migration gives
    /// its pending creates those defaults (a create sent before the upgrade, its response
    /// lost, is retried with them).
    pub(crate) fn canonical(&self, m: &Mutation) -> Mutation {
        let mut canonical = m.clone();
        // Dots are not part of the hash: a client may learn that the server speaks
        // them between a mutation's first delivery and its retry (PROTOCOL.md SUM-2).
        canonical.dot = None;
        canonical.dots = None;
        canonical.dot_gaps = None;
        // Nor is the transaction: a client may learn that the server takes it between a
        // first delivery and its retry, or send a transaction again in parts without it
        // (PROTOCOL.md TXN-1).
        canonical.transaction = None;
        if let (Some(record), Some(added)) = (
            &mut canonical.record,
            self.added_since_origin.get(&m.entity_type),
        ) {
            record.retain(|k, v| added.get(k) != Some(v));
        }
        Lens::rename_mutation(&mut canonical, self.to_origin.get(&m.entity_type));
        if let Some(origin) = self.entity_to_origin.get(&m.entity_type) {
            canonical.entity_type = origin.clone();
        }
        canonical
    }

    /// Whether `entity` lost fields in the history ([`History::strip_dropped`]).
    pub(crate) fn has_dropped(&self, entity: &str) -> bool {
        self.dropped.get(entity).is_some_and(|d| !d.is_empty())
    }

    /// A mutation (in the server's names, its hash taken) without the members of fields
    /// the server dropped, which an old client still has (PROTOCOL.md MODEL-2): its
    /// retry of a mutation first sent before the drop hashes as the first delivery did.
    pub(crate) fn strip_dropped(&self, m: &mut Mutation) {
        if let Some(dropped) = self.dropped.get(&m.entity_type) {
            retain_members(m, |k| !dropped.contains(k));
        }
    }

    /// A result in the server's shape, in the origin shape (as stored under its key).
    pub(crate) fn in_origin_names(&self, r: &MutationResult, entity: &str) -> MutationResult {
        let mut r = r.clone();
        Lens::rename_result(
            &mut r,
            self.to_origin.get(entity),
            self.entity_to_origin.get(entity),
        );
        r
    }

    /// A stored result (in the origin shape, stored under the model of its time), in
    /// the server's shape: renamed fields under today's names, fields dropped since
    /// left out, and fields added since with the default their migration gave every
    /// row (the record's value at that version).
    pub(crate) fn in_current_names(&self, mut r: MutationResult, entity: &str) -> MutationResult {
        Lens::rename_result(
            &mut r,
            self.from_origin.get(entity),
            Some(&entity.to_string()),
        );
        if let MutationResult::Applied { server, .. } | MutationResult::Conflict { server, .. } =
            &mut r
        {
            if let Some(fields) = self.fields.get(&server.entity_type) {
                server.record.retain(|k, _| fields.contains(k));
                if let Some(clocks) = server.clocks.as_object_mut() {
                    clocks.retain(|k, _| fields.contains(k));
                }
            }
            let now = self
                .fields
                .get(&server.entity_type)
                // A collected delete's slim tombstone keeps its empty record.
                .filter(|_| !(server.deleted && server.record.is_empty()));
            for (field, default) in self
                .added_since_origin
                .get(&server.entity_type)
                .into_iter()
                .flatten()
                .filter(|(f, _)| now.is_some_and(|n| n.contains(*f)))
            {
                server
                    .record
                    .entry(field.clone())
                    .or_insert_with(|| default.clone());
            }
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rename(entity: &str, from: &str, to: &str) -> WireChange {
        WireChange::RenameField {
            entity: entity.into(),
            from: from.into(),
            to: to.into(),
        }
    }

    fn add(entity: &str, field: &str) -> WireChange {
        WireChange::AddField {
            entity: entity.into(),
            field: field.into(),
            default: json!(0),
        }
    }

    fn drop_field(entity: &str, field: &str, default: Json) -> WireChange {
        WireChange::DropField {
            entity: entity.into(),
            field: field.into(),
            default,
        }
    }

    fn server_record(record: Json, clocks: Json) -> ServerRecord {
        ServerRecord {
            entity_type: "task".into(),
            entity_id: uuid::Uuid::nil(),
            version: 1,
            server_updated_at: "2026-01-01T00:00:00.000000Z".into(),
            deleted: false,
            record: record.as_object().unwrap().clone(),
            clocks,
            dots: None,
            dot_gaps: None,
            life_since: None,
        }
    }

    #[test]
    fn renames_compose_and_fields_added_after_are_unknown() {
        // v1 -> v2: status renamed to state, priority added; v2 -> v3: state renamed to
        // phase, priority renamed to rank, notes dropped.
        let lens = Lens::fold(&[
            rename("task", "status", "state"),
            add("task", "priority"),
            rename("task", "state", "phase"),
            rename("task", "priority", "rank"),
            drop_field("task", "notes", json!("")),
        ]);
        let mut r = server_record(
            json!({"id": "x", "phase": "doing", "rank": 3, "title": "t"}),
            json!({"phase": "h1", "title": "h2"}),
        );
        lens.record_out(&mut r);
        assert_eq!(
            Json::Object(r.record.clone()),
            json!({"id": "x", "status": "doing", "title": "t", "notes": ""})
        );
        assert_eq!(r.clocks, json!({"status": "h1", "title": "h2"}));

        let mut m: Mutation = serde_json::from_value(json!({
            "idempotency_key": "k", "entity_type": "task", "entity_id": uuid::Uuid::nil(),
            "op": "update", "base_version": 1,
            "patch": {"status": {"set": "done", "hlc": "h"}, "notes": {"set": "n"}, "title": {"set": "u"}}
        }))
        .unwrap();
        lens.mutation_in(&mut m);
        assert_eq!(
            m.patch.unwrap(),
            json!({"phase": {"set": "done", "hlc": "h"}, "notes": {"set": "n"}, "title": {"set": "u"}}),
            "a dropped field's member stays until the body's hash is taken"
        );
    }

    #[test]
    fn a_dropped_field_is_known_by_every_name_it_had() {
        let dropped = dropped_names(&[
            rename("task", "notes", "remarks"),
            WireChange::RenameEntity {
                from: "task".into(),
                to: "todo".into(),
            },
            drop_field("todo", "remarks", json!(null)),
            drop_field("todo", "due", json!(null)),
        ]);
        assert_eq!(
            dropped["todo"],
            BTreeSet::from([
                "due".to_string(),
                "notes".to_string(),
                "remarks".to_string()
            ])
        );
    }

    #[test]
    fn a_later_model_entity_is_unknown_and_a_dropped_and_readded_name_is_another_field() {
        let lens = Lens::fold(&[
            WireChange::AddEntity {
                entity: "label".into(),
            },
            add("label", "color"),
            drop_field("task", "due", json!(null)),
            add("task", "due"),
        ]);
        assert!(!lens.knows_entity("label"));
        assert!(lens.knows_entity("task"));
        // The server's `due` is another field (a type change is written the same way):
        // the client reads its own, dropped, as the recorded default, and its members
        // of it go.
        let mut r = server_record(json!({"id": "x", "due": "2026"}), json!({}));
        lens.record_out(&mut r);
        assert_eq!(r.record["due"], Json::Null);
        let mut m: Mutation = serde_json::from_value(json!({
            "idempotency_key": "k", "entity_type": "task", "entity_id": uuid::Uuid::nil(),
            "op": "update", "base_version": 1, "patch": {"due": {"set": "old", "hlc": "h"}}
        }))
        .unwrap();
        lens.mutation_in(&mut m);
        lens.strip_gone(&mut m);
        assert_eq!(m.patch.unwrap(), json!({}));
    }

    #[test]
    fn a_collected_deletes_slim_tombstone_stays_empty() {
        // Clients know a collected delete by its empty record: no default, no dropped
        // field's value may fill it.
        let lens = Lens::fold(&[
            add("task", "priority"),
            drop_field("task", "notes", json!("")),
            WireChange::RenameEntity {
                from: "task".into(),
                to: "todo".into(),
            },
        ]);
        let mut r = ServerRecord {
            entity_type: "todo".into(),
            deleted: true,
            ..server_record(json!({}), json!({}))
        };
        lens.record_out(&mut r);
        assert!(r.record.is_empty(), "{:?}", r.record);
        assert_eq!(r.entity_type, "task");
    }

    #[test]
    fn pointers_and_conflict_fields_take_the_clients_names() {
        let lens = Lens::fold(&[rename("task", "price_cents", "price")]);
        let mut r = MutationResult::Conflict {
            idempotency_key: "k".into(),
            server: server_record(json!({"id": "x", "price": 5}), json!({})),
            fields: vec!["price".into()],
        };
        lens.result_out(&mut r, "task");
        let MutationResult::Conflict { server, fields, .. } = r else {
            unreachable!()
        };
        assert_eq!(fields, ["price_cents"]);
        assert_eq!(server.record["price_cents"], 5);
        assert_eq!(
            rename_in_pointer("/patch/price", lens.to_client.get("task")),
            "/patch/price_cents"
        );
        assert_eq!(rename_in_pointer("/op", lens.to_client.get("task")), "/op");
    }

    #[test]
    fn an_entity_renamed_keeps_its_field_translations_and_takes_the_clients_name() {
        // v1 -> v2: task.status renamed to state; v2 -> v3: the entity task renamed to
        // todo, then todo.state renamed to phase.
        let lens = Lens::fold(&[
            rename("task", "status", "state"),
            WireChange::RenameEntity {
                from: "task".into(),
                to: "todo".into(),
            },
            rename("todo", "state", "phase"),
        ]);
        let mut m: Mutation = serde_json::from_value(json!({
            "idempotency_key": "k", "entity_type": "task", "entity_id": uuid::Uuid::nil(),
            "op": "update", "base_version": 1, "patch": {"status": {"set": "done", "hlc": "h"}}
        }))
        .unwrap();
        lens.mutation_in(&mut m);
        assert_eq!(m.entity_type, "todo");
        assert_eq!(
            m.patch.unwrap(),
            json!({"phase": {"set": "done", "hlc": "h"}})
        );
        let mut r = ServerRecord {
            entity_type: "todo".into(),
            ..server_record(json!({"id": "x", "phase": "doing"}), json!({}))
        };
        lens.record_out(&mut r);
        assert_eq!(r.entity_type, "task");
        assert_eq!(r.record["status"], "doing");
        // An entity added, then renamed: still unknown under its new name.
        let lens = Lens::fold(&[
            WireChange::AddEntity {
                entity: "label".into(),
            },
            WireChange::RenameEntity {
                from: "label".into(),
                to: "tag".into(),
            },
        ]);
        assert!(!lens.knows_entity("tag"));
    }

    #[test]
    fn birth_names_follow_renames_from_a_things_first_name() {
        // A field added in v2 as `note`, renamed in v3 to `remark`; an entity added as
        // `label`, renamed to `tag`; an origin field renamed twice.
        let (entities, fields) = birth_names(&[
            add("item", "note"),
            WireChange::AddEntity {
                entity: "label".into(),
            },
            rename("item", "name", "title"),
            rename("item", "note", "remark"),
            WireChange::RenameEntity {
                from: "label".into(),
                to: "tag".into(),
            },
            rename("item", "title", "heading"),
        ]);
        assert_eq!(entities, BTreeMap::from([("tag".into(), "label".into())]));
        assert_eq!(
            fields["item"],
            BTreeMap::from([
                ("heading".to_string(), "name".to_string()),
                ("remark".to_string(), "note".to_string())
            ])
        );
        // Renamed, and another field added under the old name: two born as `status`.
        let (_, fields) = birth_names(&[rename("task", "status", "state"), add("task", "status")]);
        assert_eq!(
            fields["task"],
            BTreeMap::from([("state".to_string(), "status".to_string())]),
            "the new `status` keeps its name, so two are born `status`: History::new, which knows today's fields, finds the collision"
        );
    }
}
