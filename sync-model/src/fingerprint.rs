//! A stable hash of a model, for version negotiation between clients and servers.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::{Entity, Model};

/// The schema fingerprint: `sha256:` and the first 128 bits of the SHA-256 of the model's
/// canonical JSON, hex-encoded.
///
/// Same model, same fingerprint, on every machine and in every version of syncgen that
/// serialises the model the same way; any change to an entity, a field, a type, a name, a
/// merge strategy or an option changes it. Doc comments are left out: editing a comment does
/// not change what a client and a server must agree on.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Fingerprint(pub String);

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn strip_docs(entity: &Entity) -> Entity {
    let mut e = entity.clone();
    e.docs.clear();
    for f in &mut e.fields {
        f.docs.clear();
    }
    e
}

fn hash(value: &impl Serialize) -> Fingerprint {
    // serde_json writes struct fields in declaration order and maps in key order
    // (serde_json's default `Map` is a BTreeMap), so the bytes are canonical.
    let bytes = serde_json::to_vec(value).expect("the model always serialises");
    let digest = Sha256::digest(&bytes);
    Fingerprint(format!("sha256:{}", hex::encode(&digest[..16])))
}

/// The fingerprint of a whole model.
///
/// Entities are hashed in wire-name order, so moving a struct to another file (or
/// registering types with a store in another order) does not change it; the order of
/// fields inside an entity does count.
pub fn fingerprint(model: &Model) -> Fingerprint {
    let mut entities: Vec<Entity> = model.entities.iter().map(strip_docs).collect();
    entities.sort_by(|a, b| a.name.cmp(&b.name));
    hash(&entities)
}

/// The fingerprint of one entity.
pub fn fingerprint_entity(entity: &Entity) -> Fingerprint {
    hash(&strip_docs(entity))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_source;

    const SRC: &str = r#"
        /// A task.
        #[derive(Syncable)]
        pub struct Task {
            #[sync(id)]
            pub id: Uuid,
            /// The title.
            pub title: String,
            #[sync(merge = "sum")]
            pub likes: i64,
        }
    "#;

    #[test]
    fn same_model_same_hash() {
        let a = fingerprint(&parse_source(SRC).unwrap());
        let b = fingerprint(&parse_source(SRC).unwrap());
        assert_eq!(a, b);
        assert!(a.0.starts_with("sha256:") && a.0.len() == 39, "{a}");
    }

    #[test]
    fn entity_order_does_not_change_the_hash() {
        let two = format!("{SRC}\n#[derive(Syncable)] struct Tag {{ #[sync(id)] id: Uuid }}");
        let swapped = format!("#[derive(Syncable)] struct Tag {{ #[sync(id)] id: Uuid }}\n{SRC}");
        assert_eq!(
            fingerprint(&parse_source(&two).unwrap()),
            fingerprint(&parse_source(&swapped).unwrap())
        );
    }

    #[test]
    fn docs_do_not_change_the_hash() {
        let a = fingerprint(&parse_source(SRC).unwrap());
        let b = fingerprint(&parse_source(&SRC.replace("The title.", "Another comment.")).unwrap());
        assert_eq!(a, b);
    }

    #[test]
    fn any_change_changes_the_hash() {
        let base = fingerprint(&parse_source(SRC).unwrap());
        let variants = [
            SRC.replace("merge = \"sum\"", "merge = \"lww\""),
            SRC.replace("pub title: String", "pub title: Option<String>"),
            SRC.replace(
                "pub title: String",
                "#[sync(rename = \"name\")] pub title: String",
            ),
            SRC.replace(
                "pub title: String",
                "#[sync(column = \"t\")] pub title: String",
            ),
            SRC.replace("pub title: String", "#[sync(immutable)] pub title: String"),
            SRC.replace("pub likes: i64", "pub likes: i32"),
            SRC.replace(
                "pub struct Task",
                "#[sync(outbox = \"history\")] pub struct Task",
            ),
            SRC.replace(
                "pub struct Task",
                "#[sync(table = \"todo\")] pub struct Task",
            ),
            SRC.replace("pub struct Task {", "pub struct Task { pub extra: bool,"),
        ];
        let mut seen = std::collections::HashSet::new();
        seen.insert(base.clone());
        for v in &variants {
            let fp = fingerprint(&parse_source(v).unwrap());
            assert!(
                seen.insert(fp),
                "variant did not change the fingerprint:\n{v}"
            );
        }
    }
}
