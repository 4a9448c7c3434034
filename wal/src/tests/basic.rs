use std::fs;

use super::*;
use crate::{Wal, WalError};

const META: &[u8] = b"member=1 cluster=7";

/// The Raft loop hands the WAL to a blocking thread.
#[allow(dead_code)]
fn wal_is_send() {
    fn send<T: Send>() {}
    send::<Wal>();
    send::<WalError>();
}

#[test]
fn new_wal_recovers_empty_state() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a/b/wal");
    assert!(!Wal::exists(&dir));
    let wal = Wal::create(&dir, META, opts(64 << 10)).unwrap();
    assert_eq!(wal.last_index(), 0);
    assert_eq!(wal.dir(), dir);
    drop(wal);
    assert!(Wal::exists(&dir));
    assert_eq!(
        segment_files(&dir)[0].file_name().unwrap(),
        "0000000000000000-0000000000000001.wal"
    );

    let (wal, rec) = Wal::open(&dir, opts(64 << 10)).unwrap();
    assert_eq!(rec.metadata, META);
    assert_eq!(rec.hard_state, HardState::default());
    assert_eq!(rec.snapshot, None);
    assert!(rec.entries.is_empty());
    assert_eq!(wal.last_index(), 0);
}

#[test]
fn entries_and_hard_state_survive_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut wal = Wal::create(dir, META, opts(64 << 10)).unwrap();
    wal.save(None, &entries(1..=3, 1)).unwrap();
    wal.save(Some(&hard_state(1, 1, 2)), &entries(4..=4, 1))
        .unwrap();
    wal.save(Some(&hard_state(1, 1, 4)), &[]).unwrap();
    wal.save(None, &[]).unwrap(); // nothing to do
    assert_eq!(wal.last_index(), 4);
    drop(wal);

    let (mut wal, rec) = Wal::open(dir, opts(64 << 10)).unwrap();
    assert_eq!(rec.metadata, META);
    assert_eq!(rec.hard_state, hard_state(1, 1, 4));
    assert_eq!(rec.entries, entries(1..=4, 1));
    assert_eq!(wal.last_index(), 4);

    // Keeps appending after the recovered records.
    wal.save(Some(&hard_state(2, 3, 5)), &entries(5..=6, 2))
        .unwrap();
    drop(wal);
    let (wal, rec) = Wal::open(dir, opts(64 << 10)).unwrap();
    let mut want = entries(1..=4, 1);
    want.extend(entries(5..=6, 2));
    assert_eq!(rec.entries, want);
    assert_eq!(rec.hard_state, hard_state(2, 3, 5));
    assert_eq!(wal.last_index(), 6);
    assert_eq!(wal.segment_count(), 1);
}

#[test]
fn a_commit_saved_lazily_is_recovered_and_a_new_term_or_vote_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut wal = Wal::create(dir, META, opts(64 << 10)).unwrap();
    wal.save(Some(&hard_state(2, 1, 0)), &entries(1..=3, 2))
        .unwrap();
    wal.save_commit_lazily(&hard_state(2, 1, 3)).unwrap();
    for refused in [hard_state(3, 1, 3), hard_state(2, 2, 3)] {
        assert!(matches!(
            wal.save_commit_lazily(&refused),
            Err(WalError::UnsyncedHardState)
        ));
    }
    // a later synced write lands after the lazy record
    wal.save(None, &entries(4..=4, 2)).unwrap();
    wal.save_commit_lazily(&hard_state(2, 1, 4)).unwrap();
    drop(wal); // the process ends: the page cache keeps what was written unsynced
    let (wal, rec) = Wal::open(dir, opts(64 << 10)).unwrap();
    assert_eq!(rec.hard_state, hard_state(2, 1, 4));
    assert_eq!(rec.entries, entries(1..=4, 2));
    assert_eq!(wal.last_index(), 4);
}

#[test]
fn conflicting_save_replaces_the_tail_now_and_after_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut wal = Wal::create(dir, META, opts(64 << 10)).unwrap();
    wal.save(Some(&hard_state(1, 1, 3)), &entries(1..=10, 1))
        .unwrap();
    wal.save(Some(&hard_state(2, 2, 4)), &entries(5..=7, 2))
        .unwrap();
    assert_eq!(wal.last_index(), 7);
    // The log now ends at 7: 8 continues it, 9 would leave a gap.
    assert!(matches!(
        wal.save(None, &entries(9..=9, 2)),
        Err(WalError::BadEntryIndex {
            index: 9,
            last_index: 7,
            ..
        })
    ));
    drop(wal);

    let (wal, rec) = Wal::open(dir, opts(64 << 10)).unwrap();
    let mut want = entries(1..=4, 1);
    want.extend(entries(5..=7, 2));
    assert_eq!(rec.entries, want);
    assert_eq!(rec.hard_state, hard_state(2, 2, 4));
    assert_eq!(wal.last_index(), 7);
}

#[test]
fn conflict_written_into_a_later_segment_replaces_entries_of_an_earlier_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut wal = Wal::create(dir, META, opts(1024)).unwrap();
    for i in 1..=20 {
        wal.save(Some(&hard_state(1, 1, i - 1)), &entries(i..=i, 1))
            .unwrap();
    }
    let before = wal.segment_count();
    assert!(before > 3, "{before} segments");
    wal.save(Some(&hard_state(3, 2, 2)), &entries(3..=5, 3))
        .unwrap();
    assert_eq!(wal.last_index(), 5);
    drop(wal);

    let (_, rec) = Wal::open(dir, opts(1024)).unwrap();
    let mut want = entries(1..=2, 1);
    want.extend(entries(3..=5, 3));
    assert_eq!(rec.entries, want);
}

#[test]
fn open_hollow_drops_payloads_up_to_the_index_and_keeps_terms_and_conflicts() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut wal = Wal::create(dir, META, opts(64 << 10)).unwrap();
    wal.save(Some(&hard_state(1, 1, 3)), &entries(1..=6, 1))
        .unwrap();
    // entries 4.. rewritten in term 2: the rewrite of a hollowed index must win too
    wal.save(Some(&hard_state(2, 2, 5)), &entries(4..=7, 2))
        .unwrap();
    drop(wal);

    let (_wal, rec) = Wal::open_hollow(dir, opts(64 << 10), 4).unwrap();
    let mut want = entries(1..=3, 1);
    want.extend(entries(4..=7, 2));
    assert_eq!(rec.entries.len(), want.len());
    for (got, want) in rec.entries.iter().zip(&want) {
        assert_eq!((got.index, got.term), (want.index, want.term));
        if got.index <= 4 {
            assert!(got.data.is_empty() && got.context.is_empty(), "{got:?}");
        } else {
            assert_eq!(got, want);
        }
    }
}

#[test]
fn create_refuses_a_directory_that_holds_a_wal() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // Other files do not count as a WAL.
    fs::write(dir.join("notes.txt"), b"hello").unwrap();
    drop(Wal::create(dir, META, opts(4096)).unwrap());
    match Wal::create(dir, b"other", opts(4096)) {
        Err(WalError::AlreadyExists { dir: d }) => assert_eq!(d, dir),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    let (_, rec) = Wal::open(dir, opts(4096)).unwrap();
    assert_eq!(rec.metadata, META);
}

#[test]
fn open_without_a_wal_is_not_found() {
    let tmp = tempfile::tempdir().unwrap();
    assert!(matches!(
        Wal::open(&tmp.path().join("missing"), opts(4096)),
        Err(WalError::NotFound { .. })
    ));
    assert!(matches!(
        Wal::open(tmp.path(), opts(4096)),
        Err(WalError::NotFound { .. })
    ));
}

#[test]
fn a_second_writer_is_locked_out() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let wal = Wal::create(dir, META, opts(4096)).unwrap();
    assert!(matches!(
        Wal::open(dir, opts(4096)),
        Err(WalError::Locked { .. })
    ));
    assert!(matches!(
        Wal::create(dir, META, opts(4096)),
        Err(WalError::Locked { .. })
    ));
    drop(wal);
    Wal::open(dir, opts(4096)).unwrap();
}

#[test]
fn entries_that_break_the_log_are_refused_and_nothing_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut wal = Wal::create(dir, META, opts(4096)).unwrap();
    let bad = |r: Result<(), WalError>| matches!(r, Err(WalError::BadEntryIndex { .. }));
    assert!(bad(wal.save(None, &entries(2..=3, 1)))); // gap after 0
    wal.save(None, &entries(1..=3, 1)).unwrap();
    let mut holes = entries(4..=4, 1);
    holes.push(entry(6, 1));
    assert!(bad(wal.save(Some(&hard_state(9, 9, 9)), &holes)));
    wal.save_snapshot(&snapshot(2, 1)).unwrap();
    assert!(bad(wal.save(None, &entries(2..=4, 2)))); // at or below the marker
                                                      // An older marker is skipped, not recorded.
    wal.save_snapshot(&snapshot(1, 1)).unwrap();
    wal.save(None, &entries(3..=4, 2)).unwrap();
    drop(wal);

    let (wal, rec) = Wal::open(dir, opts(4096)).unwrap();
    assert_eq!(rec.entries, entries(3..=4, 2));
    assert_eq!(rec.hard_state, HardState::default());
    assert_eq!(rec.snapshot, Some(snapshot(2, 1)));
    assert_eq!(wal.last_index(), 4);
}

#[test]
fn snapshot_ahead_of_the_log_moves_last_index() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut wal = Wal::create(dir, META, opts(4096)).unwrap();
    wal.save(None, &entries(1..=5, 1)).unwrap();
    // A snapshot from the leader, far ahead of our log.
    wal.save_snapshot(&snapshot(100, 4)).unwrap();
    assert_eq!(wal.last_index(), 100);
    wal.save(Some(&hard_state(4, 1, 101)), &entries(101..=102, 4))
        .unwrap();
    drop(wal);

    let (wal, rec) = Wal::open(dir, opts(4096)).unwrap();
    assert_eq!(rec.snapshot, Some(snapshot(100, 4)));
    assert_eq!(rec.entries, entries(101..=102, 4));
    assert_eq!(wal.last_index(), 102);
}

#[test]
fn segments_roll_over_and_recover_across_many_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let size = 2048;
    let mut wal = Wal::create(dir, META, opts(size)).unwrap();
    for i in 1..=300 {
        wal.save(Some(&hard_state(1, 1, i - 1)), &entries(i..=i, 1))
            .unwrap();
    }
    let n = wal.segment_count();
    assert!(n >= 20, "only {n} segments");
    drop(wal);

    let files = segment_files(dir);
    assert_eq!(files.len(), n);
    for (i, f) in files.iter().enumerate() {
        let name = crate::segment::SegmentName::parse(f.file_name().unwrap().to_str().unwrap());
        assert_eq!(name.unwrap().seq, i as u64);
        assert!(
            fs::metadata(f).unwrap().len() <= size,
            "{f:?} is larger than a segment"
        );
    }

    let (mut wal, rec) = Wal::open(dir, opts(size)).unwrap();
    assert_eq!(rec.entries, entries(1..=300, 1));
    assert_eq!(rec.hard_state, hard_state(1, 1, 299));
    // A write larger than a segment gets a segment of its own.
    wal.save(None, &entries(301..=340, 1)).unwrap();
    wal.save(None, &entries(341..=341, 1)).unwrap();
    assert_eq!(wal.segment_count(), n + 2);
    drop(wal);
    let (_, rec) = Wal::open(dir, opts(size)).unwrap();
    assert_eq!(rec.entries, entries(1..=341, 1));
}

#[test]
fn release_to_removes_old_segments_only_behind_the_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let size = 2048;
    let mut wal = Wal::create(dir, META, opts(size)).unwrap();
    for i in 1..=100 {
        wal.save(Some(&hard_state(1, 1, i)), &entries(i..=i, 1))
            .unwrap();
    }
    let all = wal.segment_count();
    // Without a snapshot marker every entry is still needed.
    assert_eq!(wal.release_to(90).unwrap(), 0);

    wal.save_snapshot(&snapshot(60, 1)).unwrap();
    // release_to(index) past the marker is capped at the marker.
    let removed = wal.release_to(1000).unwrap();
    assert!(removed > 0, "nothing removed");
    assert_eq!(wal.segment_count(), all - removed);
    assert_eq!(segment_files(dir).len(), all - removed);
    // Nothing more goes without a newer marker.
    assert_eq!(wal.release_to(1000).unwrap(), 0);
    drop(wal);

    let (mut wal, rec) = Wal::open(dir, opts(size)).unwrap();
    assert_eq!(rec.snapshot, Some(snapshot(60, 1)));
    assert_eq!(rec.entries, entries(61..=100, 1));
    assert_eq!(rec.hard_state, hard_state(1, 1, 100));
    assert_eq!(rec.metadata, META);
    assert_eq!(wal.last_index(), 100);

    // The oldest remaining file holds entries at or above 60 only if it is needed.
    let first = crate::segment::SegmentName::parse(
        segment_files(dir)[0].file_name().unwrap().to_str().unwrap(),
    )
    .unwrap();
    assert!(first.first_index <= 61, "{first:?}");

    // A marker past everything lets all but the live segment go.
    wal.save_snapshot(&snapshot(100, 1)).unwrap();
    wal.release_to(101).unwrap();
    assert_eq!(wal.segment_count(), 1);
    drop(wal);
    let (_, rec) = Wal::open(dir, opts(size)).unwrap();
    assert_eq!(rec.snapshot, Some(snapshot(100, 1)));
    assert!(rec.entries.is_empty());
    assert_eq!(rec.hard_state, hard_state(1, 1, 100));
}

#[test]
fn purge_keeps_at_most_max_files_of_those_released() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let size = 2048;
    let mut wal = Wal::create(dir, META, opts(size)).unwrap();
    for i in 1..=100 {
        wal.save(None, &entries(i..=i, 1)).unwrap();
    }
    let all = wal.segment_count();
    assert!(all > 6);
    // Nothing is released yet: purge cannot go below what is needed.
    assert_eq!(wal.purge(2, 100).unwrap(), 0);
    wal.save_snapshot(&snapshot(100, 1)).unwrap();
    assert_eq!(wal.purge(0, 100).unwrap(), 0); // 0 = no limit
    assert_eq!(wal.purge(5, 100).unwrap(), all - 5);
    assert_eq!(wal.segment_count(), 5);
    assert_eq!(segment_files(dir).len(), 5);
    // Released index 1 allows nothing.
    assert_eq!(wal.purge(1, 1).unwrap(), 0);
    assert_eq!(wal.purge(1, 101).unwrap(), 4);
    drop(wal);
    let (wal, rec) = Wal::open(dir, opts(size)).unwrap();
    assert!(rec.entries.is_empty());
    assert_eq!(wal.last_index(), 100);
}

#[test]
fn unfinished_segment_is_removed_on_open() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut wal = Wal::create(dir, META, opts(4096)).unwrap();
    wal.save(None, &entries(1..=2, 1)).unwrap();
    drop(wal);
    let tmp_name = dir.join("0000000000000001-0000000000000003.wal.tmp");
    fs::write(&tmp_name, b"half a header").unwrap();
    let (_, rec) = Wal::open(dir, opts(4096)).unwrap();
    assert_eq!(rec.entries, entries(1..=2, 1));
    assert!(!tmp_name.exists());
}

#[test]
fn segment_sealed_just_before_a_crash_becomes_live_again() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut wal = Wal::create(dir, META, opts(8192)).unwrap();
    wal.save(None, &entries(1..=3, 1)).unwrap();
    let end = wal.write_offset;
    drop(wal);
    // What cut() leaves if the process stops before the next segment exists.
    let file = &segment_files(dir)[0];
    fs::OpenOptions::new()
        .write(true)
        .open(file)
        .unwrap()
        .set_len(end)
        .unwrap();

    let (mut wal, rec) = Wal::open(dir, opts(8192)).unwrap();
    assert_eq!(rec.entries, entries(1..=3, 1));
    assert_eq!(
        fs::metadata(file).unwrap().len(),
        8192,
        "space reserved again"
    );
    wal.save(None, &entries(4..=4, 1)).unwrap();
    drop(wal);
    let (_, rec) = Wal::open(dir, opts(8192)).unwrap();
    assert_eq!(rec.entries, entries(1..=4, 1));
}

#[test]
fn a_missing_middle_segment_is_corrupt() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut wal = Wal::create(dir, META, opts(1024)).unwrap();
    for i in 1..=30 {
        wal.save(None, &entries(i..=i, 1)).unwrap();
    }
    drop(wal);
    let files = segment_files(dir);
    assert!(files.len() >= 4);
    fs::remove_file(&files[2]).unwrap();
    match Wal::open(dir, opts(1024)) {
        Err(WalError::Corrupt {
            file, offset: 0, ..
        }) => assert_eq!(file, files[3]),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn oldest_segments_removed_by_hand_show_as_missing_entries() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut wal = Wal::create(dir, META, opts(1024)).unwrap();
    for i in 1..=30 {
        wal.save(None, &entries(i..=i, 1)).unwrap();
    }
    drop(wal);
    let files = segment_files(dir);
    fs::remove_file(&files[0]).unwrap();
    fs::remove_file(&files[1]).unwrap();
    assert!(matches!(
        Wal::open(dir, opts(1024)),
        Err(WalError::MissingEntries { from: 1, .. })
    ));
}

#[test]
fn zero_filled_segments_work_the_same() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let o = WalOptions {
        segment_size: 4096,
        preallocation: Preallocation::ZeroFill,
    };
    let mut wal = Wal::create(dir, META, o.clone()).unwrap();
    for i in 1..=40 {
        wal.save(Some(&hard_state(1, 1, i)), &entries(i..=i, 1))
            .unwrap();
    }
    assert!(wal.segment_count() > 1);
    drop(wal);
    for f in segment_files(dir) {
        assert!(fs::metadata(&f).unwrap().len() <= 4096);
    }
    let (_, rec) = Wal::open(dir, o).unwrap();
    assert_eq!(rec.entries, entries(1..=40, 1));
}
