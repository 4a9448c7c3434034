//! `etcdctl compact` and reads of compacted and future revisions, compared with etcd.

use std::time::{Duration, Instant};

use ketch_tests::{compare, ctl, Kind, Server, Step};

fn history() -> Vec<Step> {
    vec![
        ctl(["put", "a", "1"]).ok(), // rev 2
        ctl(["put", "a", "2"]).ok(), // rev 3
        ctl(["put", "b", "1"]).ok(), // rev 4
        ctl(["del", "b"]).ok(),      // rev 5
        ctl(["put", "a", "3"]).ok(), // rev 6
        ctl(["put", "c", "1"]).ok(), // rev 7
    ]
}

fn with_history(steps: impl IntoIterator<Item = Step>) -> Vec<Step> {
    let mut all = history();
    all.extend(steps);
    all
}

#[test]
fn compact_then_reading_a_compacted_revision_is_an_error() {
    compare(&with_history([
        ctl(["compact", "4"]).ok().stdout("compacted revision 4\n"),
        ctl(["get", "a", "--rev", "3"])
            .fails_with("Error: etcdserver: mvcc: required revision has been compacted"),
        ctl(["get", "a", "--rev", "1", "-w", "json"]).fails(),
        ctl(["get", "", "--prefix", "--rev", "4"]).ok(),
        ctl(["get", "", "--prefix", "--rev", "5", "-w", "json"]).ok(),
        ctl(["get", "a", "--rev", "0"]).ok(),
        ctl(["get", "", "--prefix", "-w", "json"]).ok(),
    ]));
}

#[test]
fn compact_keeps_current_keys_versions_and_create_revisions() {
    compare(&with_history([
        ctl(["compact", "7"]).ok(),
        ctl(["get", "", "--prefix", "-w", "json"]).ok(),
        ctl(["put", "a", "4", "-w", "json"]).ok(),
        ctl(["get", "a", "-w", "json"])
            .ok()
            .stdout_contains("\"version\":4"),
        ctl(["get", "", "--prefix", "--rev", "7", "-w", "json"]).ok(),
        ctl(["put", "b", "again"]).ok(),
        ctl(["get", "b", "-w", "json"]).ok(),
    ]));
}

#[test]
fn compact_physical() {
    compare(&with_history([
        ctl(["compact", "5", "--physical"])
            .ok()
            .stdout("compacted revision 5\n"),
        ctl(["get", "a", "--rev", "4"]).fails_with("required revision has been compacted"),
        ctl(["get", "", "--prefix", "--rev", "5"]).ok(),
        ctl(["compact", "6", "--physical=true", "-w", "json"]).ok(),
    ]));
}

#[test]
fn compact_at_or_below_the_compacted_revision_or_in_the_future_fails() {
    compare(&with_history([
        ctl(["compact", "4"]).ok(),
        ctl(["compact", "4"])
            .fails_with("Error: etcdserver: mvcc: required revision has been compacted"),
        ctl(["compact", "2"]).fails_with("required revision has been compacted"),
        ctl(["compact", "8"])
            .fails_with("Error: etcdserver: mvcc: required revision is a future revision"),
        ctl(["compact", "100", "--physical"]).fails_with("future revision"),
        ctl(["compact", "7"]).ok(),
        ctl(["compact", "0"]).fails(),
        ctl(["compact", "-1"]).fails(),
        ctl(["compact", "abc"]).fails(),
        ctl(["compact"]).fails(),
    ]));
}

#[test]
fn compacted_and_future_revisions_in_txn_reads() {
    let stdin = |op: &str| format!("\n{op}\n\n\n");
    compare(&with_history([
        ctl(["compact", "5"]).ok(),
        ctl(["txn"])
            .stdin(stdin("get a --rev=3"))
            .fails_with("required revision has been compacted"),
        ctl(["txn"])
            .stdin(stdin("get a --rev=99"))
            .fails_with("required revision is a future revision"),
        ctl(["txn", "-w", "json"])
            .stdin(stdin("get a --rev=5"))
            .ok(),
    ]));
}

#[test]
fn compact_of_an_empty_store() {
    compare(&[
        ctl(["compact", "1"]).ok(),
        ctl(["compact", "1"]).fails_with("required revision has been compacted"),
        ctl(["compact", "2"]).fails_with("future revision"),
        ctl(["put", "a", "1"]).ok(),
        ctl(["compact", "2"]).ok(),
        ctl(["get", "a", "--rev", "1"]).fails_with("required revision has been compacted"),
    ]);
}

/// Which revision periodic auto-compaction picks depends on timing, so this is not a script
/// comparison: the same checks run on etcd (to keep the test honest), then on ketch.
#[test]
fn periodic_auto_compaction_compacts_old_revisions() {
    for kind in [Kind::Etcd, Kind::Ketch] {
        let server = Server::builder(kind)
            .arg("--auto-compaction-mode=periodic")
            .arg("--auto-compaction-retention=1s")
            .start();
        let ctl = server.etcdctl();
        for i in 1..=5 {
            ctl.run(&["put", "a", &i.to_string()]).assert_success();
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = ctl.run(&["get", "a", "--rev", "2"]);
            if !out.success() {
                out.assert_failure_contains(
                    "etcdserver: mvcc: required revision has been compacted",
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{}: revision 2 still readable 20 s after the writes with a 1 s retention",
                kind.label()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let now = ctl.run(&["get", "a", "-w=json"]).assert_success().json();
        let kv = &now["kvs"][0];
        assert_eq!(
            (&kv["version"], &kv["mod_revision"], &kv["create_revision"]),
            (&5.into(), &6.into(), &2.into()),
            "{}: the current value survives auto-compaction: {now}",
            kind.label()
        );
    }
}
