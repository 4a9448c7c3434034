//! `etcdctl watch` in all its forms — key, `--prefix`, range, `--rev`, `--prev-kv`, `-i`,
//! `-- cmd` — against ketch and real etcd, outputs compared. A watch without `--rev` only sees
//! what happens after it is established, which etcdctl does not announce: such tests first put
//! a probe value until the watch prints it, and compare only what comes after the last probe
//! (and only in the simple format, which has no revisions).

use std::time::{Duration, Instant};

use ketch_tests::{compare, compare_scenario, ctl, BackgroundCtl, CtlOutput, Server};

const WAIT: Duration = Duration::from_secs(15);
const PROBE: &str = "probe-value";

fn run_ok(s: &Server, args: &[&str]) -> CtlOutput {
    let out = s.etcdctl().run(args);
    out.assert_success();
    out
}

fn watch(s: &Server, args: &[&str]) -> BackgroundCtl {
    BackgroundCtl::spawn(&s.endpoint(), args, &[])
}

/// Starts `etcdctl <args>` (a watch covering `probe_key`) and returns once it prints events.
fn live_watch(s: &Server, args: &[&str], probe_key: &str) -> BackgroundCtl {
    let w = watch(s, args);
    for _ in 0..60 {
        run_ok(s, &["put", probe_key, PROBE]);
        let deadline = Instant::now() + Duration::from_millis(250);
        while Instant::now() < deadline {
            if w.stdout_str().contains(PROBE) {
                return w;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    panic!(
        "etcdctl {args:?} never printed the probe\n--- stdout\n{}--- stderr\n{}",
        w.stdout_str(),
        w.stderr_str()
    );
}

/// The run with stdout cut to what follows the last probe event.
fn after_probe(mut out: CtlOutput) -> CtlOutput {
    let text = out.stdout_str();
    let marker = format!("{PROBE}\n");
    let at = text.rfind(&marker).expect("probe in output") + marker.len();
    out.stdout = text.as_bytes()[at..].to_vec();
    out
}

fn ends_with_value(v: &'static str) -> impl Fn(&str) -> bool {
    move |s: &str| s.ends_with(&format!("\n{v}\n"))
}

fn plain(kind: ketch_tests::Kind) -> ketch_tests::ServerBuilder {
    Server::builder(kind)
}

#[test]
fn watch_a_key_prints_its_puts_and_deletes() {
    compare_scenario(plain, |s| {
        let w = live_watch(s, &["watch", "foo"], "foo");
        run_ok(s, &["put", "foo", "1"]);
        run_ok(s, &["put", "foo2", "not watched"]);
        run_ok(s, &["put", "foo", "2"]);
        run_ok(s, &["del", "foo"]);
        run_ok(s, &["put", "foo", "end"]);
        w.wait_stdout(WAIT, ends_with_value("end"));
        vec![after_probe(w.kill())]
    });
}

#[test]
fn watch_prefix_sees_every_key_under_it_and_a_multi_key_delete() {
    compare_scenario(plain, |s| {
        let w = live_watch(s, &["watch", "--prefix", "foo"], "foo");
        run_ok(s, &["put", "foo/a", "1"]);
        run_ok(s, &["put", "fob", "not watched"]);
        run_ok(s, &["put", "foo/b", "2"]);
        run_ok(s, &["del", "--prefix", "foo"]);
        run_ok(s, &["put", "foo/z", "end"]);
        w.wait_stdout(WAIT, ends_with_value("end"));
        vec![after_probe(w.kill())]
    });
}

#[test]
fn watch_a_range_excludes_its_end() {
    compare_scenario(plain, |s| {
        let w = live_watch(s, &["watch", "a", "c"], "a");
        run_ok(s, &["put", "b", "1"]);
        run_ok(s, &["put", "c", "not watched"]);
        run_ok(s, &["put", "bb", "2"]);
        run_ok(s, &["del", "a", "c"]);
        run_ok(s, &["put", "a", "end"]);
        w.wait_stdout(WAIT, ends_with_value("end"));
        vec![after_probe(w.kill())]
    });
}

fn history(s: &Server) {
    run_ok(s, &["put", "foo", "1"]); // 2
    run_ok(s, &["put", "bar", "x"]); // 3
    run_ok(s, &["put", "foo", "2"]); // 4
    run_ok(s, &["del", "foo"]); // 5
    run_ok(s, &["put", "foo", "3"]); // 6
}

#[test]
fn watch_rev_replays_history_then_follows_live_json() {
    compare_scenario(plain, |s| {
        history(s);
        let w = watch(s, &["watch", "foo", "--rev", "2", "-w", "json"]);
        w.wait_stdout(WAIT, |o| o.contains("\"mod_revision\":6"));
        run_ok(s, &["put", "foo", "live"]); // 7
        run_ok(s, &["put", "bar", "y"]); // 8
        run_ok(s, &["del", "foo"]); // 9
        w.wait_stdout(WAIT, |o| o.contains("\"mod_revision\":9"));
        vec![w.kill()]
    });
}

#[test]
fn watch_rev_with_prev_kv_prints_the_value_before_each_event() {
    compare_scenario(plain, |s| {
        history(s);
        let w = watch(s, &["watch", "foo", "--rev", "3", "--prev-kv"]);
        w.wait_stdout(WAIT, ends_with_value("3"));
        run_ok(s, &["put", "foo", "end"]);
        w.wait_stdout(WAIT, ends_with_value("end"));
        let simple = w.kill();
        let j = watch(
            s,
            &[
                "watch",
                "--prefix",
                "",
                "--rev",
                "2",
                "--prev-kv",
                "-w",
                "json",
            ],
        );
        j.wait_stdout(WAIT, |o| o.contains("\"mod_revision\":7"));
        vec![simple, j.kill()]
    });
}

#[test]
fn watch_interactive_adds_watches_and_asks_for_progress() {
    compare_scenario(plain, |s| {
        history(s);
        let mut w = watch(s, &["watch", "-i"]);
        w.write("watch foo --rev 4\n");
        w.wait_stdout(WAIT, ends_with_value("3"));
        w.write("watch --prefix ba --rev 2 --prev-kv\n");
        w.wait_stdout(WAIT, ends_with_value("x"));
        run_ok(s, &["put", "bar", "y"]); // 7
        w.wait_stdout(WAIT, ends_with_value("y"));
        w.write("progress\n");
        w.wait_stdout(WAIT, |o| o.matches("progress notify: 7").count() == 2);
        w.write("nonsense\n");
        w.write("watch\n");
        w.write("watch foo -- \n");
        w.wait_stdout(WAIT, |_| true);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !w.stderr_str().contains("found separator") && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        vec![w.wait_exit(WAIT)]
    });
}

#[test]
fn watch_exec_form_runs_the_command_for_each_event() {
    let cmd =
        "echo \"$ETCD_WATCH_EVENT_TYPE $ETCD_WATCH_KEY $ETCD_WATCH_VALUE $ETCD_WATCH_REVISION\"";
    compare_scenario(plain, |s| {
        history(s);
        let w = watch(s, &["watch", "foo", "--rev", "4", "--", "sh", "-c", cmd]);
        w.wait_stdout(WAIT, |o| o.contains("\"3\""));
        run_ok(s, &["put", "foo", "end"]);
        w.wait_stdout(WAIT, |o| o.contains("\"end\""));
        vec![w.kill()]
    });
}

#[test]
fn watch_from_a_compacted_revision_is_canceled_by_the_server() {
    compare_scenario(plain, |s| {
        history(s);
        run_ok(s, &["compact", "4"]);
        let compacted = watch(s, &["watch", "foo", "--rev", "2"]).wait_exit(WAIT);
        // the compact revision itself still replays what it kept
        let at = watch(s, &["watch", "foo", "--rev", "4"]);
        at.wait_stdout(WAIT, ends_with_value("3"));
        vec![compacted, at.kill()]
    });
}

#[test]
fn watch_argument_errors() {
    compare(&[
        ctl(["watch"]).fails(),
        ctl(["watch", "a", "b", "--prefix"]).fails_with("mutually exclusive"),
        ctl(["watch", "foo", "--"]).fails_with("found separator"),
        ctl(["watch", "--rev", "x", "foo"]).fails(),
    ]);
}

#[test]
fn watch_key_from_the_environment() {
    compare_scenario(plain, |s| {
        history(s);
        let w = BackgroundCtl::spawn(
            &s.endpoint(),
            &["watch", "--rev", "2"],
            &[("ETCDCTL_WATCH_KEY", "a"), ("ETCDCTL_WATCH_RANGE_END", "c")],
        );
        w.wait_stdout(WAIT, ends_with_value("x"));
        vec![w.kill()]
    });
}

/// The walkthrough in the seeds: `put`, `get --prefix`, then `watch /aaa/a` in another window
/// sees a put and a delete.
#[test]
fn seed_walkthrough_watch_a_key_from_another_window() {
    let c = compare_scenario(plain, |s| {
        let mut runs = vec![
            run_ok(s, &["put", "/aaa/a", "1"]),
            run_ok(s, &["put", "/aaa/b", "2"]),
            run_ok(s, &["get", "/aaa/a"]),
            run_ok(s, &["get", "--prefix", "/aaa"]),
        ];
        let w = live_watch(s, &["watch", "/aaa/a"], "/aaa/a");
        runs.push(run_ok(s, &["put", "/aaa/a", "123"]));
        runs.push(run_ok(s, &["del", "/aaa/a"]));
        w.wait_stdout(WAIT, |o| o.ends_with("DELETE\n/aaa/a\n\n"));
        runs.push(after_probe(w.kill()));
        runs
    });
    // (etcdctl prints a delete's empty value as an empty line; the seed's text leaves it out)
    assert_eq!(
        c.ketch[6].stdout_str(),
        "PUT\n/aaa/a\n123\nDELETE\n/aaa/a\n\n"
    );
}

/// The other seed's list: `watch foo foo100`, `watch --prefix foo`, `watch --rev=2 foo`,
/// `watch --prev-kv foo`.
#[test]
fn seed_watch_forms() {
    compare_scenario(plain, |s| {
        run_ok(s, &["put", "foo", "0"]); // 2
        run_ok(s, &["put", "foo1", "a"]); // 3
        let range = live_watch(s, &["watch", "foo", "foo100"], "foo");
        let prefix = live_watch(s, &["watch", "--prefix", "foo"], "foo");
        let rev = watch(s, &["watch", "--rev=2", "foo"]);
        rev.wait_stdout(WAIT, |o| o.contains("\n0\n"));
        let prev = live_watch(s, &["watch", "--prev-kv", "foo1"], "foo1");
        run_ok(s, &["put", "foo1", "b"]);
        run_ok(s, &["put", "foo2", "c"]);
        run_ok(s, &["put", "foo", "end"]);
        run_ok(s, &["put", "foo1", "end"]);
        for w in [&range, &prefix, &prev] {
            w.wait_stdout(WAIT, ends_with_value("end"));
        }
        rev.wait_stdout(WAIT, ends_with_value("end"));
        let prev_out = prev.kill();
        let mut prev_out_cut = prev_out.clone();
        // after the probe: the first event's prev_kv is the probe itself
        let text = prev_out.stdout_str();
        let first = text
            .find(&format!("foo1\n{PROBE}\nfoo1\nb\n"))
            .expect("probe as prev_kv");
        prev_out_cut.stdout = text.as_bytes()[first..].to_vec();
        // the probes are in the history the `--rev` watch replays, as many as it took
        let mut rev_out = rev.kill();
        rev_out.stdout = rev_out
            .stdout_str()
            .replace(&format!("PUT\nfoo\n{PROBE}\n"), "")
            .into_bytes();
        vec![
            after_probe(range.kill()),
            after_probe(prefix.kill()),
            rev_out,
            prev_out_cut,
        ]
    });
}

#[test]
fn watch_output_formats() {
    compare_scenario(plain, |s| {
        history(s);
        let mut runs = Vec::new();
        // (`-w protobuf` prints binary headers the normaliser cannot take ids and terms out of)
        for format in [&["-w", "fields"][..], &["--hex"][..]] {
            let mut args = vec!["watch", "foo", "--rev", "2", "--prev-kv"];
            args.extend_from_slice(format);
            let w = watch(s, &args);
            // the history of foo (puts at 2, 4 and 6, the delete at 5) comes in one response:
            // once printing starts, give it a moment to finish
            w.wait_stdout(WAIT, |o| o.len() > 100);
            std::thread::sleep(Duration::from_millis(300));
            runs.push(w.kill());
        }
        runs
    });
}
