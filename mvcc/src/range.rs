//! Range and txn-compare evaluation, shared by readers (over a committed snapshot) and the
//! writer (over its own uncommitted batch).
//!
//! etcd 3.4's rules (`etcdserver/apply.go`), which this reproduces result for result:
//! - `count` is the number of keys in the range at the read revision, before the min/max
//!   revision filters and before `limit`.
//! - With no sort order and no filters, etcd reads `limit + 1` keys in key order; with a sort
//!   order or a filter it reads them all. It then drops keys outside the filters, sorts, cuts to
//!   `limit` and sets `more` when it cut something. A sort target other than KEY with order NONE
//!   sorts ascending — over the `limit + 1` keys only.
//! - `count_only` answers with the count alone (`more` false).
//!
//! What this does differently is only how: revisions, versions and leases come from the index,
//! so filters and every sort but VALUE run without the backend, and the backend is read for
//! exactly the values returned. Ties in a sort keep key order (etcd's sort is not stable; for
//! fewer than 13 keys it happens to be, and gives this same order).

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::RwLock;

use bytes::Bytes;
use ketch_api::etcdserverpb::{compare, range_request, Compare, RangeRequest};
use ketch_api::mvccpb::KeyValue;
use redb::ReadableTable;

use crate::codec;
use crate::error::{Failure, StoreError};
use crate::index::{Index, Scan, Span, Visit};
use crate::key_index::KeyMeta;
use crate::revision::Revision;

/// Row access for a table of the `key` layout, committed or in a write transaction.
pub(crate) trait Rows {
    /// Calls `f` with the value stored in the put row at `rev`, borrowed from its page.
    fn with_row_value<R>(&self, rev: Revision, f: impl FnOnce(&[u8]) -> R) -> Result<R, Failure>;

    /// The value of the put row at `rev`, copied once into a buffer of its own.
    fn row_value(&self, rev: Revision) -> Result<Bytes, Failure> {
        self.with_row_value(rev, Bytes::copy_from_slice)
    }
}

impl<T: ReadableTable<&'static [u8], &'static [u8]>> Rows for T {
    fn with_row_value<R>(&self, rev: Revision, f: impl FnOnce(&[u8]) -> R) -> Result<R, Failure> {
        let key = rev.key(false);
        let guard = self.get(key.as_slice())?.ok_or_else(|| {
            StoreError::Corrupt(format!(
                "index names revision {rev:?} but the backend has no row for it"
            ))
        })?;
        let row = codec::decode_row(guard.value()).ok_or_else(|| {
            StoreError::Corrupt(format!("row at revision {rev:?} is not a KeyValue"))
        })?;
        Ok(f(row.value))
    }
}

/// The key-value pair at the index position `meta`, with its value read unless `keys_only`.
pub(crate) fn key_value(
    rows: &impl Rows,
    key: Bytes,
    meta: &KeyMeta,
    keys_only: bool,
) -> Result<KeyValue, Failure> {
    let value = if keys_only {
        Bytes::new()
    } else {
        rows.row_value(meta.rev)?
    };
    Ok(KeyValue {
        key,
        create_revision: meta.create,
        mod_revision: meta.rev.main,
        version: meta.version,
        value,
        lease: meta.lease,
    })
}

/// The part of a `RangeResponse` a range computes; the header is the caller's.
#[derive(Debug, Default)]
pub(crate) struct RangeOut {
    pub picked: Picked,
    pub count: i64,
    pub more: bool,
}

/// The key-values a range answers with, in answer order.
#[derive(Debug)]
pub(crate) enum Picked {
    /// Keys and index positions; values not read yet (see [`materialize`]).
    Metas(Vec<(Bytes, KeyMeta)>),
    /// Complete key-values (a sort by value had to read them).
    Kvs(Vec<KeyValue>),
}

impl Default for Picked {
    fn default() -> Self {
        Picked::Kvs(Vec::new())
    }
}

/// The key-values of `picked`, values read from `rows` (each copied once out of its page).
pub(crate) fn materialize(
    rows: &impl Rows,
    picked: Picked,
    keys_only: bool,
) -> Result<Vec<KeyValue>, Failure> {
    match picked {
        Picked::Kvs(kvs) => Ok(kvs),
        Picked::Metas(metas) => metas
            .into_iter()
            .map(|(k, m)| key_value(rows, k, &m, keys_only))
            .collect(),
    }
}

struct Filters {
    min_mod: i64,
    max_mod: i64,
    min_create: i64,
    max_create: i64,
}

impl Filters {
    fn of(req: &RangeRequest) -> Filters {
        Filters {
            min_mod: req.min_mod_revision,
            max_mod: req.max_mod_revision,
            min_create: req.min_create_revision,
            max_create: req.max_create_revision,
        }
    }

    fn any(&self) -> bool {
        self.min_mod != 0 || self.max_mod != 0 || self.min_create != 0 || self.max_create != 0
    }

    fn pass(&self, m: &KeyMeta) -> bool {
        (self.max_mod == 0 || m.rev.main <= self.max_mod)
            && (self.min_mod == 0 || m.rev.main >= self.min_mod)
            && (self.max_create == 0 || m.create <= self.max_create)
            && (self.min_create == 0 || m.create >= self.min_create)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dir {
    Asc,
    Desc,
}

/// Evaluates `req` at revision `at` (already checked against the compact and current
/// revisions). `guard` makes the index scan notice a compaction that overtakes it.
pub(crate) fn range(
    index: &RwLock<Index>,
    guard: bool,
    rows: &impl Rows,
    req: &RangeRequest,
    at: i64,
) -> Result<RangeOut, Failure> {
    let span = Span::new(&req.key, &req.range_end);
    if req.count_only {
        let count = Scan::new(index, span, at, guard).count_rest()?;
        return Ok(RangeOut {
            picked: Picked::Kvs(Vec::new()),
            count,
            more: false,
        });
    }

    use range_request::{SortOrder, SortTarget};
    let filters = Filters::of(req);
    let target = SortTarget::try_from(req.sort_target).unwrap_or(SortTarget::Key);
    let dir = match SortOrder::try_from(req.sort_order) {
        Ok(SortOrder::Ascend) => Some(Dir::Asc),
        Ok(SortOrder::Descend) => Some(Dir::Desc),
        Ok(SortOrder::None) if target != SortTarget::Key => Some(Dir::Asc),
        _ => None,
    };
    let fetch_all = req.sort_order != SortOrder::None as i32 || filters.any();
    let limit = usize::try_from(req.limit).unwrap_or(0);

    if target == SortTarget::Key {
        return range_in_key_order(
            index,
            guard,
            at,
            span,
            &filters,
            dir == Some(Dir::Desc),
            limit,
        );
    }

    // Sorting by something else: gather the candidates' index data, sort, then read values.
    let cap = if !fetch_all && limit > 0 {
        limit + 1
    } else {
        usize::MAX
    };
    let mut count = 0i64;
    let mut cands: Vec<(Bytes, KeyMeta)> = Vec::new();
    Scan::new(index, span, at, guard).for_each(|k, m| {
        count += 1;
        if cands.len() < cap && filters.pass(m) {
            cands.push((k.clone(), *m));
        }
        Visit::Continue
    })?;
    let dir = dir.unwrap_or(Dir::Asc);
    let more = limit > 0 && cands.len() > limit;

    if target == SortTarget::Value {
        let kvs = sort_by_value(rows, cands, dir, limit, req.keys_only)?;
        return Ok(RangeOut {
            picked: Picked::Kvs(kvs),
            count,
            more,
        });
    }

    let field = |m: &KeyMeta| match target {
        SortTarget::Version => m.version,
        SortTarget::Create => m.create,
        _ => m.rev.main,
    };
    match dir {
        Dir::Asc => cands.sort_by_key(|c| field(&c.1)),
        Dir::Desc => cands.sort_by_key(|c| std::cmp::Reverse(field(&c.1))),
    }
    if limit > 0 {
        cands.truncate(limit);
    }
    Ok(RangeOut {
        picked: Picked::Metas(cands),
        count,
        more,
    })
}

/// Key order (either way): stream the index a chunk at a time, keeping the positions of the
/// keys that make the answer; values are read later, by whoever builds the answer.
#[allow(clippy::too_many_arguments)]
fn range_in_key_order(
    index: &RwLock<Index>,
    guard: bool,
    at: i64,
    span: Span<'_>,
    filters: &Filters,
    reverse: bool,
    limit: usize,
) -> Result<RangeOut, Failure> {
    let take = if limit > 0 { limit } else { usize::MAX };
    let mut count = 0i64;
    let mut passed = 0usize;
    let mut picked: Vec<(Bytes, KeyMeta)> = Vec::new();
    let mut scan = Scan::new(index, span, at, guard).reverse(reverse);
    loop {
        let more_chunks = scan.next_chunk(|k, m| {
            count += 1;
            if filters.pass(m) {
                passed += 1;
                if passed <= take {
                    picked.push((k.clone(), *m));
                } else {
                    // one past the limit settles `more`; the rest only counts
                    return Visit::Stop;
                }
            }
            Visit::Continue
        })?;
        if !more_chunks {
            break;
        }
    }
    let more = passed > take;
    if more {
        count += scan.count_rest()?;
    }
    Ok(RangeOut {
        picked: Picked::Metas(picked),
        count,
        more,
    })
}

/// A candidate of a VALUE sort; `Ord` puts the better one first (smaller in `Asc`, larger in
/// `Desc`, key order among equals).
struct Ranked {
    value: Bytes,
    seq: usize,
    desc: bool,
}

impl Ord for Ranked {
    fn cmp(&self, other: &Ranked) -> Ordering {
        let by_value = if self.desc {
            other.value.cmp(&self.value)
        } else {
            self.value.cmp(&other.value)
        };
        by_value.then(self.seq.cmp(&other.seq))
    }
}
impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Ranked) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for Ranked {
    fn eq(&self, other: &Ranked) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Ranked {}

/// Sorts by value. With a limit, keeps only the best `limit` values in memory at once.
fn sort_by_value(
    rows: &impl Rows,
    cands: Vec<(Bytes, KeyMeta)>,
    dir: Dir,
    limit: usize,
    keys_only: bool,
) -> Result<Vec<KeyValue>, Failure> {
    let desc = dir == Dir::Desc;
    let bound = if limit > 0 { limit } else { usize::MAX };
    let mut heap: BinaryHeap<Ranked> = BinaryHeap::new();
    for (seq, (_, m)) in cands.iter().enumerate() {
        let value = rows.row_value(m.rev)?;
        heap.push(Ranked { value, seq, desc });
        if heap.len() > bound {
            heap.pop();
        }
    }
    let ranked = heap.into_sorted_vec();
    let mut kvs = Vec::with_capacity(ranked.len());
    for r in ranked {
        let (key, m) = &cands[r.seq];
        kvs.push(KeyValue {
            key: key.clone(),
            create_revision: m.create,
            mod_revision: m.rev.main,
            version: m.version,
            value: if keys_only { Bytes::new() } else { r.value },
            lease: m.lease,
        });
    }
    Ok(kvs)
}

/// Whether compare `c` holds at revision `at`: every key in its range must satisfy it; a range
/// with no keys compares as one key with all fields zero, except that a VALUE compare on no
/// keys fails (a missing value cannot be told from an empty one).
pub(crate) fn compare_holds(
    index: &RwLock<Index>,
    rows: &impl Rows,
    c: &Compare,
    at: i64,
) -> Result<bool, Failure> {
    use compare::{CompareResult, CompareTarget, TargetUnion};
    let alive = index
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .alive(Span::new(&c.key, &c.range_end), at);
    let is_value = c.target == CompareTarget::Value as i32;
    if alive.is_empty() && is_value {
        return Ok(false);
    }
    let want_int = |kind: CompareTarget| -> i64 {
        match (&c.target_union, kind) {
            (Some(TargetUnion::Version(v)), CompareTarget::Version)
            | (Some(TargetUnion::CreateRevision(v)), CompareTarget::Create)
            | (Some(TargetUnion::ModRevision(v)), CompareTarget::Mod)
            | (Some(TargetUnion::Lease(v)), CompareTarget::Lease) => *v,
            _ => 0,
        }
    };
    let want_value: &[u8] = match &c.target_union {
        Some(TargetUnion::Value(v)) => v,
        _ => &[],
    };
    let outcome = |ord: Ordering| -> bool {
        match CompareResult::try_from(c.result) {
            Ok(CompareResult::Equal) => ord == Ordering::Equal,
            Ok(CompareResult::NotEqual) => ord != Ordering::Equal,
            Ok(CompareResult::Greater) => ord == Ordering::Greater,
            Ok(CompareResult::Less) => ord == Ordering::Less,
            Err(_) => true,
        }
    };
    let int_ord = |m: Option<&KeyMeta>| -> Ordering {
        let (version, create, modr, lease) =
            m.map_or((0, 0, 0, 0), |m| (m.version, m.create, m.rev.main, m.lease));
        match CompareTarget::try_from(c.target) {
            Ok(CompareTarget::Version) => version.cmp(&want_int(CompareTarget::Version)),
            Ok(CompareTarget::Create) => create.cmp(&want_int(CompareTarget::Create)),
            Ok(CompareTarget::Mod) => modr.cmp(&want_int(CompareTarget::Mod)),
            Ok(CompareTarget::Lease) => lease.cmp(&want_int(CompareTarget::Lease)),
            _ => Ordering::Equal,
        }
    };
    if alive.is_empty() {
        return Ok(outcome(int_ord(None)));
    }
    for (_, m) in &alive {
        let ord = if is_value {
            rows.with_row_value(m.rev, |v| v.cmp(want_value))?
        } else {
            int_ord(Some(m))
        };
        if !outcome(ord) {
            return Ok(false);
        }
    }
    Ok(true)
}
