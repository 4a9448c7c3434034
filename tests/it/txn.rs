//! `etcdctl txn` from piped stdin: compares on value, version, create and mod revision,
//! then/else branches, request validation, compared with etcd.

use ketch_tests::{compare, ctl, txn_input, Step};

fn txn(compares: &[&str], success: &[&str], failure: &[&str]) -> Step {
    ctl(["txn"]).stdin(txn_input(compares, success, failure))
}

fn txn_w(format: &str, compares: &[&str], success: &[&str], failure: &[&str]) -> Step {
    ctl(["txn", "-w", format]).stdin(txn_input(compares, success, failure))
}

fn seed() -> Vec<Step> {
    vec![
        ctl(["put", "a", "1"]).ok(),
        ctl(["put", "b", "x"]).ok(),
        ctl(["put", "a", "2"]).ok(),
    ]
}

fn with_seed(steps: impl IntoIterator<Item = Step>) -> Vec<Step> {
    let mut all = seed();
    all.extend(steps);
    all
}

#[test]
fn txn_value_compares_choose_the_branch() {
    compare(&with_seed([
        txn(&[r#"value("a") = "2""#], &["put r then"], &["put r else"])
            .ok()
            .stdout("SUCCESS\n\nOK\n"),
        txn(&[r#"value("a") = "1""#], &["put r then"], &["put r else"])
            .ok()
            .stdout("FAILURE\n\nOK\n"),
        txn(&[r#"value("a") != "1""#], &["get r"], &[]).ok(),
        txn(
            &[r#"value("a") > "1""#, r#"value("b") < "y""#],
            &["get a"],
            &["get b"],
        )
        .ok(),
        txn(&[r#"value("a") < "1""#], &["get a"], &["get b"]).ok(),
        txn(&[r#"value("missing") = "1""#], &["put m 1"], &["put m 2"]).ok(),
        ctl(["get", "", "--prefix", "-w", "json"]).ok(),
    ]));
}

#[test]
fn txn_version_create_and_mod_compares() {
    compare(&with_seed([
        txn(&[r#"version("a") = "2""#], &["put v yes"], &["put v no"]).ok(),
        txn(
            &[r#"version("missing") = "0""#],
            &["put w yes"],
            &["put w no"],
        )
        .ok(),
        txn(&[r#"create("a") = "2""#], &["get a"], &["get b"]).ok(),
        txn(&[r#"create("b") > "2""#], &["get a"], &["get b"]).ok(),
        txn(&[r#"mod("a") = "4""#], &["put c 1"], &["put c 2"]).ok(),
        txn(&[r#"mod("a") < "4""#], &["put c 3"], &["put c 4"]).ok(),
        txn(&[r#"mod("b") != "3""#], &["put d 1"], &[]).ok(),
        txn(
            &[r#"create("missing") = "0""#, r#"mod("missing") = "0""#],
            &["get d"],
            &[],
        )
        .ok(),
        ctl(["get", "", "--prefix", "-w", "json"]).ok(),
    ]));
}

#[test]
fn txn_branches_can_get_put_and_delete() {
    compare(&with_seed([
        txn(
            &[r#"value("a") = "2""#],
            &["get a", "put c 1", "del b", "get z --prefix"],
            &["put never 1"],
        )
        .ok(),
        txn(
            &[],
            &["put p1 1", "put p2 2", "put \"sp ace\" \"v a l\""],
            &[],
        )
        .ok(),
        txn(
            &[],
            &["get p --prefix", "del p --prefix", "get \"sp ace\""],
            &[],
        )
        .ok(),
        txn(&[], &["get a --rev=2"], &[]).ok(),
        txn(&[], &[], &[]).ok(),
        txn(&[r#"value("a") = "nope""#], &[], &[])
            .ok()
            .stdout("FAILURE\n"),
        ctl(["get", "", "--prefix", "-w", "json"]).ok(),
    ]));
}

#[test]
fn txn_output_formats() {
    let cmp = [r#"value("a") = "2""#];
    let then = ["put c 1", "get a", "del b"];
    let els = ["get b"];
    compare(&with_seed([
        txn_w("json", &cmp, &then, &els).ok(),
        txn_w("fields", &cmp, &["put d 1", "get a"], &els).ok(),
        txn_w("simple", &[r#"value("a") = "x""#], &then, &els).ok(),
        txn_w(
            "json",
            &[r#"value("a") = "x""#],
            &then,
            &["get b", "del nothing"],
        )
        .ok(),
        txn_w("table", &cmp, &then, &els).fails_with("table not supported as output format"),
    ]));
}

#[test]
fn txn_failing_branch_has_no_effect_and_is_one_revision() {
    compare(&with_seed([
        txn(&[r#"value("a") = "2""#], &["put a 3", "put n 1"], &[]).ok(),
        ctl(["get", "a", "-w", "json"]).ok(),
        txn(&[r#"value("a") = "2""#], &["put a 9"], &[]).ok(),
        ctl(["get", "a", "-w", "json"]).ok(),
        txn(&[r#"value("a") = "2""#], &["put a 9"], &["get a"]).ok(),
    ]));
}

#[test]
fn txn_with_a_duplicate_key_is_rejected() {
    compare(&with_seed([
        txn(&[], &["put x 1", "put x 2"], &[])
            .fails_with("etcdserver: duplicate key given in txn request"),
        txn(&[], &["put y 1", "del y"], &[]).fails_with("duplicate key"),
        txn(&[], &["put k1 1", "del k --prefix"], &[]).fails_with("duplicate key"),
        txn(&[], &["get x", "get x"], &[]).ok(),
        txn(&[], &["put x 1"], &["put x 2"]).ok(),
        ctl(["get", "", "--prefix", "-w", "json"]).ok(),
    ]));
}

#[test]
fn txn_with_more_than_128_operations_is_rejected() {
    let puts: Vec<String> = (0..129).map(|i| format!("put k{i:03} v")).collect();
    let refs: Vec<&str> = puts.iter().map(String::as_str).collect();
    compare(&[
        txn(&[], &refs, &[]).fails_with("etcdserver: too many operations in txn request"),
        txn(&[], &refs[..128], &[]).ok(),
        ctl(["get", "k", "--prefix", "--keys-only", "-w", "json"]).ok(),
        txn(&[r#"value("x") = "1""#], &refs[..100], &refs[100..129]).ok(),
        ctl(["get", "k", "--prefix", "--keys-only", "-w", "json"]).ok(),
    ]);
}

#[test]
fn txn_input_errors_are_reported_by_etcdctl() {
    compare(&with_seed([
        ctl(["txn"])
            .stdin("value(\"a\" = \n\n\n\n")
            .fails_with("malformed comparison"),
        ctl(["txn"])
            .stdin("\nfrobnicate a\n\n\n")
            .fails_with("invalid txn request"),
        ctl(["txn"]).stdin("\nput a 1\n\n").fails(),
        ctl(["get", "a", "-w", "json"]).ok(),
    ]));
}

#[test]
fn txn_read_at_a_future_revision_is_an_error() {
    compare(&with_seed([
        txn(&[], &["get a --rev=100"], &[])
            .fails_with("etcdserver: mvcc: required revision is a future revision"),
        ctl(["get", "a", "-w", "json"]).ok(),
    ]));
}
