//! Torn tails are repaired silently; anything else damaged is `Corrupt`.

use std::ffi::OsString;
use std::fs;
use std::path::Path;

use super::*;
use crate::{Wal, WalError};

const SEGMENT: u64 = 16 << 10;

/// A one-segment WAL whose last write is entries 6..=8 (term 2) and a hard state.
struct Pristine {
    data: Vec<u8>,
    file_name: OsString,
    /// Records of the last write: three entries, then the hard state.
    last_write: Vec<Layout>,
}

fn pristine() -> Pristine {
    let tmp = tempfile::tempdir().unwrap();
    let mut wal = Wal::create(tmp.path(), b"m", opts(SEGMENT)).unwrap();
    wal.save(Some(&hard_state(1, 1, 0)), &entries(1..=3, 1))
        .unwrap();
    wal.save(Some(&hard_state(1, 1, 3)), &entries(4..=5, 1))
        .unwrap();
    wal.save(Some(&hard_state(2, 1, 5)), &entries(6..=8, 2))
        .unwrap();
    drop(wal);
    let path = &segment_files(tmp.path())[0];
    let data = fs::read(path).unwrap();
    let records = layout(&data);
    let last_start = records.iter().rposition(|r| r.batch_start).unwrap();
    let last_write = records[last_start..].to_vec();
    assert_eq!(last_write.len(), 4);
    Pristine {
        data,
        file_name: path.file_name().unwrap().to_owned(),
        last_write,
    }
}

/// What recovery must return when the first `intact` records of the last write survived.
fn expected(intact: usize) -> (Vec<Entry>, HardState) {
    let mut want = entries(1..=5, 1);
    want.extend(entries(6..=5 + intact.min(3) as u64, 2));
    let hs = if intact == 4 {
        hard_state(2, 1, 5)
    } else {
        hard_state(1, 1, 3)
    };
    (want, hs)
}

fn write_segment(dir: &Path, p: &Pristine, data: &[u8]) {
    fs::write(dir.join(&p.file_name), data).unwrap();
}

/// Opens `data` as the only segment and checks the result; with `then_save`, also checks
/// that the repaired WAL takes a new save and recovers it.
fn check_recovers(p: &Pristine, data: &[u8], what: &str, then_save: bool) {
    let intact = p
        .last_write
        .iter()
        .take_while(|r| data.get(r.start..r.payload_end) == Some(&p.data[r.start..r.payload_end]))
        .count();
    let (want, want_hs) = expected(intact);

    let tmp = tempfile::tempdir().unwrap();
    write_segment(tmp.path(), p, data);
    let (mut wal, rec) =
        Wal::open(tmp.path(), opts(SEGMENT)).unwrap_or_else(|e| panic!("{what}: open failed: {e}"));
    assert_eq!(rec.entries, want, "{what}");
    assert_eq!(rec.hard_state, want_hs, "{what}");
    assert_eq!(wal.last_index(), want.len() as u64, "{what}");

    // Everything after the last valid record is zero again.
    let on_disk = fs::read(&wal.live_path).unwrap();
    assert!(
        record::is_zero(&on_disk[wal.write_offset as usize..]),
        "{what}: tail not cleared"
    );

    if then_save {
        let next = entry(want.len() as u64 + 1, 3);
        wal.save(Some(&hard_state(3, 2, 1)), std::slice::from_ref(&next))
            .unwrap();
        drop(wal);
        let (_, rec) = Wal::open(tmp.path(), opts(SEGMENT))
            .unwrap_or_else(|e| panic!("{what}: reopen after repair failed: {e}"));
        let mut want = want;
        want.push(next);
        assert_eq!(rec.entries, want, "{what}: after repair and save");
        assert_eq!(rec.hard_state, hard_state(3, 2, 1), "{what}");
    }
}

#[test]
fn torn_last_write_at_any_cut_point_recovers_the_whole_records_before_it() {
    let p = pristine();
    let start = p.last_write[0].start;
    let end = p.last_write.last().unwrap().next;
    let mut rng = Rng::new(7);
    for cut in start..=end {
        // Every cut point is opened; every fifth also takes a save after the repair.
        let then_save = cut % 5 == 0;

        // The file ends at the cut (a filesystem without preallocation).
        check_recovers(
            &p,
            &p.data[..cut],
            &format!("truncated at {cut}"),
            then_save,
        );

        // The rest of the write never reached the disk: preallocated zeros.
        let mut zeroed = p.data.clone();
        zeroed[cut..end].fill(0);
        check_recovers(&p, &zeroed, &format!("zeroed from {cut}"), then_save);

        // Garbage from the cut, sometimes past the end of the write.
        let mut garbage = p.data.clone();
        let garbage_end = end + rng.range(0, 64) as usize;
        let noise = rng.bytes(garbage_end - cut);
        garbage[cut..garbage_end].copy_from_slice(&noise);
        check_recovers(&p, &garbage, &format!("garbage from {cut}"), then_save);
    }
}

#[test]
fn sectors_of_the_last_write_landing_out_of_order_are_a_torn_write() {
    let p = pristine();
    // The second entry of the last write is lost; the third and the hard state survived.
    let hole = p.last_write[1];
    let mut data = p.data.clone();
    data[hole.start..hole.next].fill(0);
    check_recovers(&p, &data, "hole in the last write", true);

    let mut data = p.data.clone();
    data[hole.start + 30] ^= 0x40;
    check_recovers(&p, &data, "bit flip in the last write", true);
}

#[test]
fn garbage_after_the_last_record_is_cleared() {
    let p = pristine();
    let end = p.last_write.last().unwrap().next;
    let mut rng = Rng::new(11);
    let mut data = p.data.clone();
    let noise = rng.bytes(300);
    data[end + 100..end + 400].copy_from_slice(&noise);
    check_recovers(&p, &data, "garbage after the end", true);
}

fn expect_corrupt(p: &Pristine, data: &[u8], at: usize, what: &str) {
    let tmp = tempfile::tempdir().unwrap();
    write_segment(tmp.path(), p, data);
    match Wal::open(tmp.path(), opts(SEGMENT)) {
        Err(WalError::Corrupt { offset, .. }) => assert_eq!(offset, at as u64, "{what}"),
        other => panic!("{what}: expected Corrupt, got {other:?}"),
    }
    // Nothing was "repaired".
    assert_eq!(
        fs::read(tmp.path().join(&p.file_name)).unwrap(),
        data,
        "{what}"
    );
}

#[test]
fn damage_followed_by_a_later_write_is_corrupt() {
    let p = pristine();
    let records = layout(&p.data);
    // Records 1..=4 are the first write (3 entries + hard state), 5..=7 the second.
    for (i, r) in records.iter().enumerate().take(8).skip(1) {
        let mut flipped = p.data.clone();
        flipped[r.payload_end - 1] ^= 0x01;
        expect_corrupt(&p, &flipped, r.start, &format!("bit flip in record {i}"));

        let mut zeroed = p.data.clone();
        zeroed[r.start..r.next].fill(0);
        expect_corrupt(&p, &zeroed, r.start, &format!("record {i} zeroed"));
    }
    // A damaged header is never a torn write: it was synced before the file got its name.
    let mut data = p.data.clone();
    data[10] ^= 0x01;
    expect_corrupt(&p, &data, 0, "segment header");
}

#[test]
fn damage_in_a_sealed_segment_is_corrupt() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut wal = Wal::create(dir, b"m", opts(1024)).unwrap();
    for i in 1..=20 {
        wal.save(Some(&hard_state(1, 1, i)), &entries(i..=i, 1))
            .unwrap();
    }
    drop(wal);
    let files = segment_files(dir);
    assert!(files.len() >= 3);
    let sealed = &files[1];
    let pristine = fs::read(sealed).unwrap();
    let last = *layout(&pristine).last().unwrap();

    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut flipped = pristine.clone();
    flipped[last.payload_end - 1] ^= 0x80;
    cases.push(("bit flip in the last record", flipped));
    cases.push(("cut short", pristine[..last.payload_end - 3].to_vec()));
    let mut zeroed = pristine.clone();
    zeroed[last.start..].fill(0);
    cases.push(("last record zeroed", zeroed));
    for (what, data) in cases {
        fs::write(sealed, &data).unwrap();
        match Wal::open(dir, opts(1024)) {
            Err(WalError::Corrupt { file, offset, .. }) => {
                assert_eq!(&file, sealed, "{what}");
                assert_eq!(offset, last.start as u64, "{what}");
            }
            other => panic!("{what}: expected Corrupt, got {other:?}"),
        }
    }
    // Whole records lost at the end of a sealed segment show in the next one's header.
    fs::write(sealed, &pristine[..last.start]).unwrap();
    match Wal::open(dir, opts(1024)) {
        Err(WalError::Corrupt {
            file, offset: 0, ..
        }) => assert_eq!(file, files[2]),
        other => panic!("lost last record: expected Corrupt, got {other:?}"),
    }

    fs::write(sealed, &pristine).unwrap();
    let (_, rec) = Wal::open(dir, opts(1024)).unwrap();
    assert_eq!(rec.entries, entries(1..=20, 1));
}
