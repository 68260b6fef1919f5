//! Generated `merge3` of a 10-field entity over 100k records, beside the floor: a plain
//! hand-written compare-and-select over the same fields (what merge code cannot beat).
//!
//! `cargo bench -p sync-bench --bench merge`

#![allow(missing_docs)]

use std::collections::BTreeSet;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use sync_runtime::prelude::*;

/// Ten fields: six lww, two sums, a union and a manual field.
#[derive(Syncable, Clone, Debug, PartialEq)]
pub struct Doc {
    #[sync(id)]
    pub id: Uuid,
    pub a: String,
    pub b: String,
    pub c: i64,
    pub d: bool,
    pub e: f64,
    pub f: Option<String>,
    #[sync(merge = "sum")]
    pub g: i64,
    #[sync(merge = "sum")]
    pub h: i64,
    #[sync(merge = "union")]
    pub i: BTreeSet<String>,
    #[sync(merge = "manual")]
    pub j: i64,
}

fn doc(n: u64) -> Doc {
    Doc {
        id: Uuid::from_u128(u128::from(n)),
        a: format!("title {n}"),
        b: "body".into(),
        c: n as i64,
        d: n.is_multiple_of(2),
        e: 1.5,
        f: None,
        g: 10,
        h: 20,
        i: ["x".to_string()].into(),
        j: 5,
    }
}

/// The floor: select each field from the side that changed it, by hand.
#[allow(clippy::too_many_arguments)]
fn floor(base: &Doc, local: &Doc, remote: &Doc, lc: u64, rc: u64) -> Doc {
    macro_rules! lww {
        ($f:ident) => {
            if remote.$f == base.$f || (local.$f != base.$f && lc >= rc) {
                local.$f.clone()
            } else {
                remote.$f.clone()
            }
        };
    }
    Doc {
        id: local.id,
        a: lww!(a),
        b: lww!(b),
        c: lww!(c),
        d: lww!(d),
        e: lww!(e),
        f: lww!(f),
        g: local.g + remote.g - base.g,
        h: local.h + remote.h - base.h,
        i: if remote.i == base.i {
            local.i.clone()
        } else {
            remote.i.clone()
        },
        j: if local.j == base.j { remote.j } else { local.j },
    }
}

fn bench(c: &mut Criterion) {
    let n = 100_000u64;
    let bases: Vec<Doc> = (0..n).map(doc).collect();
    let locals: Vec<Doc> = bases
        .iter()
        .map(|b| Doc {
            a: format!("{} (local)", b.a),
            g: b.g + 1,
            ..b.clone()
        })
        .collect();
    let remotes: Vec<Doc> = bases
        .iter()
        .map(|b| Doc {
            c: b.c + 1,
            h: b.h + 2,
            ..b.clone()
        })
        .collect();
    let lc = DocClocks::all(Hlc::new(2, 0, NodeId(1)));
    let rc = DocClocks::all(Hlc::new(1, 0, NodeId(2)));
    let mut group = c.benchmark_group("merge3_100k_records_10_fields");
    group.sample_size(10);
    group.bench_function("floor_compare_and_select", |bch| {
        bch.iter(|| {
            let mut sum = 0i64;
            for k in 0..n as usize {
                sum += black_box(floor(&bases[k], &locals[k], &remotes[k], 2, 1)).g;
            }
            sum
        })
    });
    group.bench_function("generated_merge3", |bch| {
        bch.iter(|| {
            let mut sum = 0i64;
            for k in 0..n as usize {
                sum += black_box(Doc::merge3(&bases[k], &locals[k], &lc, &remotes[k], &rc))
                    .value
                    .g;
            }
            sum
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
