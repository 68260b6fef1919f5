//! Three-way merge of text by blocks: the merge of the coming `text` strategy (issue
//! "Text that merges by paragraph").
//!
//! A text is cut into blocks, paragraphs (the default) or lines, losslessly: the blocks
//! joined are the text. Each side's changes from the base are diffed block by block
//! (`similar`'s Myers diff over the block sequences) into hunks, each a run of base
//! blocks replaced by a run of the side's blocks. Hunks of the two sides that change
//! the same base blocks (overlapping runs, an insertion inside the other's run, or two
//! insertions at one place) form a group; hunks that only meet at a boundary do not. A
//! group changed on one side only takes that side's change, a group both sides changed
//! to the same blocks takes it once, two different insertions at one place are both
//! kept, and a group changed differently is a conflict. Everything else of both sides
//! applies.
//!
//! Why `similar`: it diffs any slice of hashable items (our blocks, without interning
//! them first as `imara-diff` needs), is maintained (3.x, 2025), Apache-2.0, and already
//! in the workspace; `imara-diff` is faster on large line diffs, which block sequences of
//! notes (hundreds of blocks) never are; `diffy` merges whole texts by lines only and
//! marks conflicts in the text rather than returning them.

use similar::{Algorithm, DiffOp, capture_diff_slices};

/// How a text is cut into blocks, the unit of the merge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Blocks {
    /// Paragraphs separated by blank lines (a line break followed by one or more lines
    /// holding only spaces or tabs). Each separator is a block of its own, so edits of
    /// two neighbouring paragraphs never touch the same block.
    #[default]
    Paragraphs,
    /// Lines, each with its line break.
    Lines,
}

/// Cuts `text` into blocks; the blocks joined are `text`.
pub fn blocks(text: &str, by: Blocks) -> Vec<&str> {
    match by {
        Blocks::Lines => text.split_inclusive('\n').collect(),
        Blocks::Paragraphs => {
            let mut out = Vec::new();
            let bytes = text.as_bytes();
            let mut start = 0;
            let mut i = 0;
            while i < bytes.len() {
                if bytes[i] == b'\n'
                    && let Some(end) = separator_end(bytes, i)
                {
                    if start < i {
                        out.push(&text[start..i]);
                    }
                    out.push(&text[i..end]);
                    start = end;
                    i = end;
                    continue;
                }
                i += 1;
            }
            if start < text.len() {
                out.push(&text[start..]);
            }
            out
        }
    }
}

/// If a separator (a line break, then one or more blank lines) starts at `at` (a line
/// break), where it ends: after its last line break.
fn separator_end(bytes: &[u8], at: usize) -> Option<usize> {
    let mut end = None;
    let mut i = at + 1;
    loop {
        let mut j = i;
        while j < bytes.len() && (bytes[j] == b' ' || bytes[j] == b'\t') {
            j += 1;
        }
        if j < bytes.len() && bytes[j] == b'\n' {
            end = Some(j + 1);
            i = j + 1;
        } else {
            return end;
        }
    }
}

/// The result of [`merge3`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextMerge {
    /// The merged text: both sides' changes, and in each conflicting group the remote
    /// side's blocks (the remote side stays in place until the conflict is resolved).
    pub merged: String,
    /// The conflict, if a group of blocks was changed differently on the two sides.
    pub conflict: Option<TextConflict>,
}

/// The three texts of a conflict, each the merged text with that side's blocks in every
/// conflicting group: resolving with `local` keeps the local side of each conflicting
/// group and every change merged elsewhere, and so on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextConflict {
    /// With the base's blocks in the conflicting groups.
    pub base: String,
    /// With the local side's blocks there.
    pub local: String,
    /// With the remote side's blocks there (equal to [`TextMerge::merged`]).
    pub remote: String,
}

/// A run of base blocks `start..end` replaced by a side's blocks `new`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Hunk<'a> {
    start: usize,
    end: usize,
    new: Vec<&'a str>,
}

/// `side`'s changes from `base`, as hunks in base order (never overlapping).
fn hunks<'a>(base: &[&'a str], side: &[&'a str]) -> Vec<Hunk<'a>> {
    let mut out: Vec<Hunk<'a>> = Vec::new();
    for op in capture_diff_slices(Algorithm::Myers, base, side) {
        if let DiffOp::Equal { .. } = op {
            continue;
        }
        let (old, new) = (op.old_range(), op.new_range());
        match out.last_mut() {
            // Consecutive changes (a delete then an insert) are one hunk.
            Some(last) if last.end == old.start => {
                last.end = old.end;
                last.new.extend_from_slice(&side[new]);
            }
            _ => out.push(Hunk {
                start: old.start,
                end: old.end,
                new: side[new].to_vec(),
            }),
        }
    }
    out
}

/// Whether a local and a remote hunk change the same base blocks: their ranges overlap,
/// an insertion lies strictly inside the other's range, or both insert at one place.
fn related(a: &Hunk<'_>, b: &Hunk<'_>) -> bool {
    let (ae, be) = (a.start == a.end, b.start == b.end);
    match (ae, be) {
        (true, true) => a.start == b.start,
        (true, false) => b.start < a.start && a.start < b.end,
        (false, true) => a.start < b.start && b.start < a.end,
        (false, false) => a.start.max(b.start) < a.end.min(b.end),
    }
}

/// `base[start..end]` with `side`'s hunks (all inside that span) applied.
fn render<'a>(base: &[&'a str], start: usize, end: usize, side: &[&Hunk<'a>]) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut at = start;
    for h in side {
        out.extend_from_slice(&base[at..h.start]);
        out.extend_from_slice(&h.new);
        at = h.end;
    }
    out.extend_from_slice(&base[at..end]);
    out
}

/// Merges `local` and `remote`, two edits of `base`, block by block (see the module
/// docs). Deterministic, and symmetric in its two sides: swapping them gives the same
/// merged text when there is no conflict, and swaps `local` and `remote` in the
/// conflict when there is one. Two insertions at one place with different blocks are
/// both kept, the one whose text sorts first first; the same insertion on both sides is
/// kept once.
pub fn merge3(base: &str, local: &str, remote: &str, by: Blocks) -> TextMerge {
    let b = blocks(base, by);
    let l = blocks(local, by);
    let r = blocks(remote, by);
    let lh = hunks(&b, &l);
    let rh = hunks(&b, &r);
    // Groups: connected components of related hunks across the sides (union-find over
    // local hunks 0..n and remote hunks n..).
    let n = lh.len();
    let mut parent: Vec<usize> = (0..n + rh.len()).collect();
    fn find(p: &mut [usize], mut x: usize) -> usize {
        while p[x] != x {
            p[x] = p[p[x]];
            x = p[x];
        }
        x
    }
    for (i, a) in lh.iter().enumerate() {
        for (j, c) in rh.iter().enumerate() {
            if related(a, c) {
                let (x, y) = (find(&mut parent, i), find(&mut parent, n + j));
                parent[x] = y;
            }
        }
    }
    let mut groups: std::collections::BTreeMap<usize, (Vec<&Hunk<'_>>, Vec<&Hunk<'_>>)> =
        std::collections::BTreeMap::new();
    for (i, h) in lh.iter().enumerate() {
        groups.entry(find(&mut parent, i)).or_default().0.push(h);
    }
    for (j, h) in rh.iter().enumerate() {
        groups
            .entry(find(&mut parent, n + j))
            .or_default()
            .1
            .push(h);
    }
    let mut groups: Vec<(usize, usize, Vec<&Hunk<'_>>, Vec<&Hunk<'_>>)> = groups
        .into_values()
        .map(|(ls, rs)| {
            let start = ls.iter().chain(&rs).map(|h| h.start).min().unwrap_or(0);
            let end = ls.iter().chain(&rs).map(|h| h.end).max().unwrap_or(0);
            (start, end, ls, rs)
        })
        .collect();
    // In base order; at one position an insertion goes before a change of the blocks
    // that start there.
    groups.sort_by_key(|g| (g.0, g.1));
    let (mut merged, mut as_local, mut as_base) = (String::new(), String::new(), String::new());
    let mut conflicted = false;
    let mut at = 0;
    let push_all = |s: &mut [&mut String], parts: &[&str]| {
        for p in parts {
            for out in s.iter_mut() {
                out.push_str(p);
            }
        }
    };
    for (start, end, ls, rs) in &groups {
        push_all(
            &mut [&mut merged, &mut as_local, &mut as_base],
            &b[at..*start],
        );
        let lo = render(&b, *start, *end, ls);
        let ro = render(&b, *start, *end, rs);
        if ls.is_empty() || rs.is_empty() || lo == ro {
            let one = if ls.is_empty() { &ro } else { &lo };
            push_all(&mut [&mut merged, &mut as_local, &mut as_base], one);
        } else if start == end {
            // Two different insertions at one place: both, in the order of their text,
            // kept apart by a separator if neither brings one.
            let (lt, rt) = (lo.concat(), ro.concat());
            let (first, second) = if lt <= rt { (lt, rt) } else { (rt, lt) };
            let glue = match by {
                Blocks::Paragraphs if !first.ends_with('\n') && !second.starts_with('\n') => "\n\n",
                Blocks::Lines if !first.ends_with('\n') => "\n",
                _ => "",
            };
            for out in [&mut merged, &mut as_local, &mut as_base] {
                out.push_str(&first);
                out.push_str(glue);
                out.push_str(&second);
            }
        } else {
            conflicted = true;
            push_all(&mut [&mut merged], &ro);
            push_all(&mut [&mut as_local], &lo);
            push_all(&mut [&mut as_base], &b[*start..*end]);
        }
        at = *end;
    }
    push_all(&mut [&mut merged, &mut as_local, &mut as_base], &b[at..]);
    TextMerge {
        conflict: conflicted.then(|| TextConflict {
            base: as_base,
            local: as_local,
            remote: merged.clone(),
        }),
        merged,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn blocks_are_lossless_and_keep_separators_apart() {
        let t = "one\ntwo\n\nthree\n \n\t\nfour\n";
        let p = blocks(t, Blocks::Paragraphs);
        assert_eq!(p, ["one\ntwo", "\n\n", "three", "\n \n\t\n", "four\n"]);
        assert_eq!(p.concat(), t);
        assert_eq!(blocks(t, Blocks::Lines).concat(), t);
        assert_eq!(blocks("", Blocks::Paragraphs), Vec::<&str>::new());
        assert_eq!(blocks("\n\n", Blocks::Paragraphs), ["\n\n"]);
    }

    const BASE: &str = "Intro.\n\nMiddle.\n\nEnd.";

    #[test]
    fn edits_of_different_paragraphs_both_apply() {
        let m = merge3(
            BASE,
            "Intro, edited here.\n\nMiddle.\n\nEnd.",
            "Intro.\n\nMiddle.\n\nEnd, edited there.",
            Blocks::Paragraphs,
        );
        assert_eq!(
            m.merged,
            "Intro, edited here.\n\nMiddle.\n\nEnd, edited there."
        );
        assert_eq!(m.conflict, None);
    }

    #[test]
    fn neighbouring_paragraphs_and_an_append_do_not_conflict() {
        let m = merge3(
            BASE,
            "Intro.\n\nMiddle, here.\n\nEnd.",
            "Intro.\n\nMiddle.\n\nEnd, there.\n\nAppendix.",
            Blocks::Paragraphs,
        );
        assert_eq!(
            m.merged,
            "Intro.\n\nMiddle, here.\n\nEnd, there.\n\nAppendix."
        );
        assert_eq!(m.conflict, None);
        // An edit of the last paragraph and a paragraph appended after it.
        let m = merge3(
            BASE,
            "Intro.\n\nMiddle.\n\nEnd.\n\nP.S.",
            "Intro.\n\nMiddle.\n\nThe end.",
            Blocks::Paragraphs,
        );
        assert_eq!(m.merged, "Intro.\n\nMiddle.\n\nThe end.\n\nP.S.");
    }

    #[test]
    fn inserts_and_deletes_on_different_blocks_both_apply() {
        let m = merge3(
            BASE,
            "Intro.\n\nNew.\n\nMiddle.\n\nEnd.",
            "Intro.\n\nEnd.",
            Blocks::Paragraphs,
        );
        assert_eq!(m.merged, "Intro.\n\nNew.\n\nEnd.");
        assert_eq!(m.conflict, None);
    }

    #[test]
    fn the_same_change_on_both_sides_applies_once() {
        let same = "Intro.\n\nMiddle, fixed.\n\nEnd.";
        let m = merge3(BASE, same, same, Blocks::Paragraphs);
        assert_eq!(m.merged, same);
        assert_eq!(m.conflict, None);
        let appended = "Intro.\n\nMiddle.\n\nEnd.\n\nSame P.S.";
        assert_eq!(
            merge3(BASE, appended, appended, Blocks::Paragraphs).merged,
            appended
        );
    }

    #[test]
    fn two_appends_are_both_kept_in_a_fixed_order() {
        let a = "Intro.\n\nMiddle.\n\nEnd.\n\nFrom A.";
        let b = "Intro.\n\nMiddle.\n\nEnd.\n\nFrom B.";
        let ab = merge3(BASE, a, b, Blocks::Paragraphs);
        let ba = merge3(BASE, b, a, Blocks::Paragraphs);
        assert_eq!(ab, ba);
        assert_eq!(ab.conflict, None);
        assert!(ab.merged.contains("From A.") && ab.merged.contains("From B."));
    }

    #[test]
    fn one_paragraph_changed_differently_is_one_conflict_and_the_rest_merges() {
        let local = "Intro, local.\n\nMiddle as local.\n\nEnd.";
        let remote = "Intro.\n\nMiddle as remote.\n\nEnd, remote.";
        let m = merge3(BASE, local, remote, Blocks::Paragraphs);
        let c = m.conflict.expect("the middle paragraph");
        assert_eq!(
            m.merged,
            "Intro, local.\n\nMiddle as remote.\n\nEnd, remote."
        );
        assert_eq!(c.remote, m.merged);
        assert_eq!(c.local, "Intro, local.\n\nMiddle as local.\n\nEnd, remote.");
        assert_eq!(c.base, "Intro, local.\n\nMiddle.\n\nEnd, remote.");
    }

    #[test]
    fn by_lines_other_lines_merge_and_one_line_changed_twice_conflicts() {
        let base = "a\nb\nc\nd\n";
        let m = merge3(base, "A\nb\nc\nd\n", "a\nB\nc\nD\n", Blocks::Lines);
        assert_eq!(m.merged, "A\nB\nc\nD\n");
        assert_eq!(m.conflict, None);
        let m = merge3(base, "a\nb1\nc\nd\n", "a\nb2\nc\nd\n", Blocks::Lines);
        let c = m.conflict.expect("line b");
        assert_eq!(
            (c.local.as_str(), c.remote.as_str()),
            ("a\nb1\nc\nd\n", "a\nb2\nc\nd\n")
        );
        // Two lines added at the end, one without its line break.
        let m = merge3("a\n", "a\nx", "a\ny\n", Blocks::Lines);
        assert_eq!(m.merged, "a\nx\ny\n");
    }

    /// Texts of a few paragraphs drawn from a small vocabulary, so that edits collide.
    fn text() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop::sample::select(vec!["alpha", "beta", "gamma", "delta", "a\nb", ""]),
            0..6,
        )
        .prop_map(|ps| ps.join("\n\n"))
    }

    proptest! {
        #[test]
        fn merge_laws(b in text(), l in text(), r in text(), lines in any::<bool>()) {
            let by = if lines { Blocks::Lines } else { Blocks::Paragraphs };
            // A side that did not change takes the other.
            prop_assert_eq!(merge3(&b, &b, &r, by), TextMerge { merged: r.clone(), conflict: None });
            prop_assert_eq!(merge3(&b, &l, &b, by), TextMerge { merged: l.clone(), conflict: None });
            // The same text on both sides.
            prop_assert_eq!(merge3(&b, &l, &l, by), TextMerge { merged: l.clone(), conflict: None });
            // Symmetric up to which side stays in place during a conflict.
            let lr = merge3(&b, &l, &r, by);
            let rl = merge3(&b, &r, &l, by);
            match (&lr.conflict, &rl.conflict) {
                (None, None) => prop_assert_eq!(&lr.merged, &rl.merged),
                (Some(x), Some(y)) => {
                    prop_assert_eq!(&x.local, &y.remote);
                    prop_assert_eq!(&x.remote, &y.local);
                    prop_assert_eq!(&x.base, &y.base);
                    prop_assert_eq!(&lr.merged, &x.remote);
                }
                _ => prop_assert!(false, "a conflict on one order only: {lr:?} {rl:?}"),
            }
            // Every block either side added is in the merge (nothing silently dropped):
            // in the merged text, or in the conflict's local text for the local side.
            let kept_local = lr.conflict.as_ref().map_or(&lr.merged, |c| &c.local);
            for block in blocks(&l, by) {
                if !blocks(&b, by).contains(&block) {
                    prop_assert!(kept_local.contains(block), "{block:?} of {l:?} lost: {lr:?}");
                }
            }
            for block in blocks(&r, by) {
                if !blocks(&b, by).contains(&block) {
                    prop_assert!(lr.merged.contains(block), "{block:?} of {r:?} lost: {lr:?}");
                }
            }
        }
    }
}
