//! A torn WAL tail — what a crash in the middle of a write leaves behind — is repaired at start
//! (ketch only): the member starts, keeps every record that was completely written, and keeps
//! serving with revisions that continue from what clients saw.

use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use ketch_tests::{Kind, Server};

const KEYS: usize = 20;

/// The newest WAL segment (segment files sort by sequence number).
fn last_segment(data_dir: &Path) -> PathBuf {
    let wal = data_dir.join("member").join("wal");
    let mut segs: Vec<PathBuf> = fs::read_dir(&wal)
        .unwrap_or_else(|e| panic!("read {}: {e}", wal.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    segs.sort();
    segs.pop().expect("a WAL segment")
}

/// Offset just past the last non-zero byte: where written records end in a preallocated file.
fn written_end(path: &Path) -> u64 {
    let mut buf = Vec::new();
    fs::File::open(path).unwrap().read_to_end(&mut buf).unwrap();
    buf.iter()
        .rposition(|b| *b != 0)
        .map(|p| p as u64 + 1)
        .expect("a non-empty segment")
}

/// Puts KEYS keys through etcdctl, returning each acknowledged revision.
fn put_keys(server: &Server) -> Vec<i64> {
    let ctl = server.etcdctl();
    (0..KEYS)
        .map(|i| {
            let out = ctl.run(&["put", &format!("k{i:02}"), &format!("v{i}"), "-w", "json"]);
            out.assert_success().json()["header"]["revision"]
                .as_i64()
                .expect("revision")
        })
        .collect()
}

/// (value, mod_revision) of key i, or None when absent.
fn read_key(server: &Server, i: usize) -> Option<(String, i64)> {
    let out = server
        .etcdctl()
        .run(&["get", &format!("k{i:02}"), "-w", "json"]);
    let json = out.assert_success().json();
    let kv = json["kvs"].get(0)?;
    let value = kv["value"].as_str().map(decode_b64).expect("value");
    Some((value, kv["mod_revision"].as_i64().expect("mod_revision")))
}

fn decode_b64(s: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.bytes().filter(|c| *c != b'=') {
        bits = (bits << 6) | ALPHABET.iter().position(|a| *a == c).expect("base64") as u32;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    String::from_utf8(out).expect("utf-8 value")
}

/// After repair the member takes writes, at a revision above everything it served before.
fn assert_serves_new_writes(server: &Server, newest_seen: i64) {
    let out = server
        .etcdctl()
        .run(&["put", "after-repair", "x", "-w", "json"]);
    let rev = out.assert_success().json()["header"]["revision"]
        .as_i64()
        .unwrap();
    assert!(
        rev > newest_seen,
        "new write got revision {rev}, not above {newest_seen}"
    );
}

#[test]
fn garbage_after_the_last_record_is_dropped_and_every_write_is_kept() {
    let mut server = Server::start(Kind::Ketch);
    let revs = put_keys(&server);
    server.kill9();
    let seg = last_segment(&server.data_dir());
    let end = written_end(&seg);
    let mut f = OpenOptions::new().write(true).open(&seg).unwrap();
    f.seek(SeekFrom::Start(end.div_ceil(8) * 8)).unwrap();
    f.write_all(&[0xA5; 61]).unwrap();
    f.sync_all().unwrap();
    drop(f);
    server.restart();
    for (i, rev) in revs.iter().enumerate() {
        assert_eq!(
            read_key(&server, i),
            Some((format!("v{i}"), *rev)),
            "key {i} after repair"
        );
    }
    assert_serves_new_writes(&server, *revs.last().unwrap());
    assert!(
        server.current_log().contains("torn") || server.current_log().contains("repair"),
        "the repair is logged:\n{}",
        server.log_tail(30)
    );
}

#[test]
fn a_half_written_last_record_is_dropped_and_earlier_writes_are_kept() {
    let mut server = Server::start(Kind::Ketch);
    let revs = put_keys(&server);
    server.kill9();
    // Tear the last write: its final bytes never reached the disk.
    let seg = last_segment(&server.data_dir());
    let end = written_end(&seg);
    let mut f = OpenOptions::new().write(true).open(&seg).unwrap();
    f.seek(SeekFrom::Start(end - 12)).unwrap();
    f.write_all(&[0; 12]).unwrap();
    f.sync_all().unwrap();
    drop(f);
    server.restart();
    for (i, rev) in revs.iter().enumerate().take(KEYS - 1) {
        assert_eq!(
            read_key(&server, i),
            Some((format!("v{i}"), *rev)),
            "key {i} after repair"
        );
    }
    // The torn write may have held the last put (then it is gone) or only a later hard-state
    // update (then the put is intact) — never anything in between.
    let last = KEYS - 1;
    match read_key(&server, last) {
        None => {}
        Some(kv) => assert_eq!(
            kv,
            (format!("v{last}"), revs[last]),
            "last key after repair"
        ),
    }
    assert_serves_new_writes(&server, revs[KEYS - 2]);
}
