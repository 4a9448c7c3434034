//! `etcdctl defrag`: the same answer as etcd's, a backend file that shrinks after deletes and a
//! compaction, writes that keep going while it runs, and nothing lost to a kill -9 after it.

use std::time::Duration;

use ketch_tests::{Kind, Server};

/// Fills, empties and compacts a member, so that its backend is mostly free pages.
fn churn(s: &Server) {
    let ctl = s.etcdctl();
    let value = "v".repeat(20_000);
    for i in 0..60 {
        ctl.run_stdin(&["put", &format!("churn/{i:03}")], value.as_bytes())
            .assert_success();
    }
    ctl.run(&["put", "stays", "here"]).assert_success();
    ctl.run(&["del", "churn/", "--prefix"]).assert_success();
    let rev = ctl.run(&["get", "stays", "-w", "json"]).stdout_str();
    let rev = json_number(&rev, "\"revision\":");
    ctl.run(&["compaction", "--physical", &rev.to_string()])
        .assert_success();
}

fn json_number(json: &str, field: &str) -> u64 {
    let at = json
        .find(field)
        .unwrap_or_else(|| panic!("no {field} in {json}"))
        + field.len();
    json[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap()
}

fn db_size(s: &Server) -> u64 {
    json_number(
        &s.etcdctl()
            .run(&["endpoint", "status", "-w", "json"])
            .stdout_str(),
        "\"dbSize\":",
    )
}

#[test]
fn defrag_answers_like_etcd_and_shrinks_the_backend() {
    let mut servers = Server::start_all(vec![
        Server::builder(Kind::Ketch),
        Server::builder(Kind::Etcd),
    ]);
    let etcd = servers.pop().unwrap();
    let mut ketch = servers.pop().unwrap();
    let outputs: Vec<String> = [&ketch, &etcd]
        .iter()
        .map(|s| {
            churn(s);
            let out = s.etcdctl().run(&["defrag"]);
            format!(
                "[exit {}] {}{}",
                out.success(),
                out.stdout_str(),
                out.stderr_str()
            )
            .replace(&s.client_addr().to_string(), "<ep>")
        })
        .collect();
    assert_eq!(outputs[0], outputs[1]);
    assert_eq!(
        outputs[0],
        "[exit true] Finished defragmenting etcd member[<ep>]\n"
    );

    // the file shrinks again after more churn, and writes go on while it runs
    churn(&ketch);
    let before = db_size(&ketch);
    let writer = {
        let ctl = ketch.etcdctl();
        std::thread::spawn(move || {
            (0..40).all(|i| ctl.run(&["put", &format!("during/{i}"), "x"]).success())
        })
    };
    std::thread::sleep(Duration::from_millis(50));
    ketch.etcdctl().run(&["defrag"]).assert_success();
    assert!(
        writer.join().unwrap(),
        "a put failed during the defragmentation"
    );
    let after = db_size(&ketch);
    assert!(
        after + 800_000 < before,
        "backend {before} -> {after} bytes"
    );

    // every acknowledged write survives a kill -9 right after
    ketch.etcdctl().run(&["put", "last", "1"]).assert_success();
    ketch.kill9();
    ketch.restart();
    let ctl = ketch.etcdctl();
    assert_eq!(
        ctl.run(&["get", "stays", "--print-value-only"])
            .stdout_str(),
        "here\n"
    );
    assert_eq!(
        ctl.run(&["get", "last", "--print-value-only"]).stdout_str(),
        "1\n"
    );
    let during = ctl
        .run(&["get", "during/", "--prefix", "-w", "json"])
        .stdout_str();
    assert_eq!(json_number(&during, "\"count\":"), 40, "{during}");
    assert_eq!(
        ctl.run(&["get", "churn/", "--prefix", "--keys-only"])
            .stdout_str(),
        ""
    );
}
