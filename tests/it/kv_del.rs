//! `etcdctl del`: single keys, prefixes, from-key, ranges, --prev-kv, compared with etcd.

use ketch_tests::{compare, ctl, Step};

fn seed() -> Vec<Step> {
    ["a", "b", "b1", "b2", "c", "d"]
        .into_iter()
        .map(|k| ctl(["put", k, &format!("v-{k}")]).ok())
        .collect()
}

fn with_seed(steps: impl IntoIterator<Item = Step>) -> Vec<Step> {
    let mut all = seed();
    all.extend(steps);
    all
}

#[test]
fn del_single_key_prints_the_count_and_is_a_revision() {
    compare(&with_seed([
        ctl(["del", "a"]).ok().stdout("1\n"),
        ctl(["del", "a"]).ok().stdout("0\n"),
        ctl(["del", "never", "-w", "json"]).ok(),
        ctl(["get", "", "--prefix", "-w", "json"]).ok(),
        ctl(["put", "a", "again", "-w", "json"]).ok(),
        ctl(["get", "a", "-w", "json"]).ok(),
    ]));
}

#[test]
fn del_prefix() {
    compare(&with_seed([
        ctl(["del", "b", "--prefix"]).ok().stdout("3\n"),
        ctl(["get", "", "--prefix", "--keys-only"]).ok(),
        ctl(["del", "b", "--prefix", "-w", "json"]).ok(),
        ctl(["del", "", "--prefix"]).ok().stdout("3\n"),
        ctl(["get", "", "--prefix", "-w", "json"]).ok(),
    ]));
}

#[test]
fn del_from_key() {
    compare(&with_seed([
        ctl(["del", "b2", "--from-key"]).ok().stdout("3\n"),
        ctl(["get", "", "--from-key", "--keys-only"]).ok(),
        ctl(["del", "", "--from-key", "-w", "json"]).ok(),
        ctl(["get", "", "--from-key"]).ok().stdout(""),
    ]));
}

#[test]
fn del_range_is_half_open() {
    compare(&with_seed([
        ctl(["del", "b", "c"]).ok().stdout("3\n"),
        ctl(["get", "", "--prefix", "--keys-only"]).ok(),
        ctl(["del", "d", "a"]).ok(),
        ctl(["del", "a", "a"]).ok(),
        ctl(["get", "", "--prefix", "-w", "json"]).ok(),
    ]));
}

#[test]
fn del_prev_kv_prints_the_deleted_pairs() {
    compare(&with_seed([
        ctl(["del", "a", "--prev-kv"]).ok().stdout("1\na\nv-a\n"),
        ctl(["del", "b", "--prefix", "--prev-kv"]).ok(),
        ctl(["del", "c", "--prev-kv", "-w", "json"]).ok(),
        ctl(["del", "d", "--prev-kv", "-w", "fields"]).ok(),
        ctl(["del", "gone", "--prev-kv"]).ok().stdout("0\n"),
    ]));
}

#[test]
fn del_history_stays_readable_at_old_revisions() {
    compare(&with_seed([
        ctl(["del", "b", "--prefix"]).ok(),
        ctl(["get", "b", "--prefix", "--rev", "7", "-w", "json"]).ok(),
        ctl(["get", "b", "--prefix", "--rev", "8"]).ok().stdout(""),
        ctl(["put", "b", "new"]).ok(),
        ctl(["get", "b", "-w", "json"]).ok(),
    ]));
}

#[test]
fn del_with_an_empty_key_is_rejected() {
    compare(&with_seed([
        ctl(["del", ""]).fails_with("etcdserver: key is not provided"),
        ctl(["del"]).fails(),
        ctl(["get", "", "--prefix", "--keys-only", "-w", "json"]).ok(),
    ]));
}
