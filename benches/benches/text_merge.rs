//! Merging a 100 KB note with ten concurrent paragraph edits on each side (issue "Text
//! that merges by paragraph"): `sync_runtime::text::merge3` by paragraphs, beside two
//! peers doing the same merge in the same run: `diffy`'s three-way merge of the same
//! three texts (by lines; each paragraph is one line here), and `automerge` text, where
//! each side's document applied its ten edits as splices and one merges the other's
//! changes. Only the merge is timed: criterion's `iter_batched` makes the inputs (for
//! automerge, the two forked documents) outside the measurement.
//!
//! `cargo bench -p sync-bench --bench text_merge` (target: the merge under 1 ms).

#![allow(missing_docs)]

use std::hint::black_box;

use automerge::transaction::Transactable;
use automerge::{ActorId, AutoCommit, ObjType, ROOT, ReadDoc};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use sync_runtime::text::{Blocks, merge3};

const PARAGRAPHS: usize = 500;

/// About 100 KB: 500 paragraphs of about 200 ASCII characters, separated by blank lines.
fn paragraphs() -> Vec<String> {
    (0..PARAGRAPHS)
        .map(|i| {
            format!(
                "Paragraph {i:03}: the field notes of the day, written offline on a phone and \
                 edited later on a laptop; each paragraph holds one observation, its place, \
                 its time and what was done about it, number {i:03}."
            )
        })
        .collect()
}

/// The paragraphs with one word replaced in each of `which`.
fn edited(base: &[String], which: impl Iterator<Item = usize>, word: &str) -> Vec<String> {
    let mut out = base.to_vec();
    for i in which {
        out[i] = out[i].replacen("observation", word, 1);
    }
    out
}

fn local_edits() -> impl Iterator<Item = usize> {
    (0..10).map(|k| k * 50 + 3)
}

fn remote_edits() -> impl Iterator<Item = usize> {
    (0..10).map(|k| k * 50 + 27)
}

/// An automerge document holding `text` in its `note` text object, with `actor`.
fn automerge_doc(text: &str) -> (AutoCommit, automerge::ObjId) {
    let mut doc = AutoCommit::new().with_actor(ActorId::from(&[1u8][..]));
    let note = doc.put_object(ROOT, "note", ObjType::Text).unwrap();
    doc.splice_text(&note, 0, 0, text).unwrap();
    doc.commit();
    (doc, note)
}

/// `doc` with each edit of `which` applied as a splice of the one word (positions in
/// the joined text, ASCII only).
fn automerge_edit(
    doc: &mut AutoCommit,
    note: &automerge::ObjId,
    base: &[String],
    which: impl Iterator<Item = usize>,
    word: &str,
) {
    // From the end, so that the positions of the edits still to come do not move.
    let mut which: Vec<usize> = which.collect();
    which.sort_unstable_by(|a, b| b.cmp(a));
    for i in which {
        let start: usize = base[..i].iter().map(|p| p.len() + 2).sum();
        let at = start + base[i].find("observation").unwrap();
        doc.splice_text(note, at, "observation".len() as isize, word)
            .unwrap();
    }
    doc.commit();
}

fn bench(c: &mut Criterion) {
    let base_p = paragraphs();
    let local_p = edited(&base_p, local_edits(), "note-from-here");
    let remote_p = edited(&base_p, remote_edits(), "note-from-there");
    let (base, local, remote) = (
        base_p.join("\n\n"),
        local_p.join("\n\n"),
        remote_p.join("\n\n"),
    );
    let expected = edited(&local_p, remote_edits(), "note-from-there").join("\n\n");
    // Every side gives the same merged text.
    let ours = merge3(&base, &local, &remote, Blocks::Paragraphs);
    assert!(ours.merged == expected, "merge3 merges both sides' edits");
    assert!(ours.conflict.is_none());
    let by_lines = base.replace("\n\n", "\n");
    assert!(
        diffy::merge(
            &by_lines,
            &local.replace("\n\n", "\n"),
            &remote.replace("\n\n", "\n")
        )
        .unwrap()
            == expected.replace("\n\n", "\n"),
        "diffy merges both sides' edits"
    );
    let (mut doc, note) = automerge_doc(&base);
    let mut here = doc.fork().with_actor(ActorId::from(&[2u8][..]));
    let mut there = doc.fork().with_actor(ActorId::from(&[3u8][..]));
    automerge_edit(&mut here, &note, &base_p, local_edits(), "note-from-here");
    automerge_edit(
        &mut there,
        &note,
        &base_p,
        remote_edits(),
        "note-from-there",
    );
    {
        let (mut h, mut t) = (here.clone(), there.clone());
        h.merge(&mut t).unwrap();
        assert!(
            h.text(&note).unwrap() == expected,
            "automerge merges both sides' edits"
        );
    }

    let mut g = c.benchmark_group("text merge, 100 KB, 10 + 10 paragraph edits");
    g.bench_function("syncgen merge3 (paragraphs)", |b| {
        b.iter(|| black_box(merge3(&base, &local, &remote, Blocks::Paragraphs)))
    });
    let (bl, ll, rl) = (
        by_lines.clone(),
        local.replace("\n\n", "\n"),
        remote.replace("\n\n", "\n"),
    );
    g.bench_function("diffy merge (lines)", |b| {
        b.iter(|| black_box(diffy::merge(&bl, &ll, &rl)))
    });
    g.bench_function("automerge text merge", |b| {
        b.iter_batched(
            || (here.clone(), there.clone()),
            |(mut h, mut t)| black_box(h.merge(&mut t).unwrap()),
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
