//! Backups: `etcdctl snapshot save` from a running member, `ketch snapshot restore` into a new
//! data dir, and a member started on it serving the data with its revisions.

use std::process::Command;

use ketch_tests::bins::ketch_bin;
use ketch_tests::{Kind, Server};

#[test]
fn a_saved_snapshot_restores_into_a_member_that_serves_its_data() {
    let source = Server::start(Kind::Ketch);
    let ctl = source.etcdctl();
    for i in 0..20 {
        ctl.run(&["put", &format!("k{i:02}"), &format!("v{i}")])
            .assert_success();
    }
    ctl.run(&["del", "k00"]).assert_success();
    let before = ctl.run(&["get", "k", "--prefix", "-w", "json"]);
    before.assert_success();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup.db");
    let saved = ctl.run(&["snapshot", "save", &file.display().to_string()]);
    saved.assert_success();
    assert_eq!(
        saved.stdout_str(),
        format!("Snapshot saved at {}\n", file.display())
    );

    // a fresh member's ports and data dir, restored from the file
    let mut restored = Server::builder(Kind::Ketch).name("restored").start();
    restored.stop();
    std::fs::remove_dir_all(restored.data_dir()).unwrap();
    let out = Command::new(ketch_bin())
        .args(["snapshot", "restore", &file.display().to_string()])
        .arg(format!("--data-dir={}", restored.data_dir().display()))
        .arg("--name=restored")
        .arg(format!(
            "--initial-cluster=restored={}",
            restored.peer_url()
        ))
        .arg(format!(
            "--initial-advertise-peer-urls={}",
            restored.peer_url()
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "restore failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    restored.restart();
    let after = restored
        .etcdctl()
        .run(&["get", "k", "--prefix", "-w", "json"]);
    after.assert_success();
    let kvs = |o: &ketch_tests::CtlOutput| o.json()["kvs"].clone();
    assert_eq!(
        kvs(&after),
        kvs(&before),
        "the same keys, values and revisions"
    );
    assert_eq!(
        after.json()["header"]["revision"],
        before.json()["header"]["revision"]
    );
    // it is a cluster of its own, and takes writes after the restored revision
    restored
        .etcdctl()
        .run(&["put", "new", "x"])
        .assert_success();
    let list = restored.etcdctl().run(&["member", "list"]);
    assert!(
        list.stdout_str().contains(", restored, "),
        "{}",
        list.transcript()
    );

    // a damaged file is refused, and so is a data dir that exists
    let mut raw = std::fs::read(&file).unwrap();
    let n = raw.len();
    raw[n - 1] ^= 1;
    let bad = dir.path().join("bad.db");
    std::fs::write(&bad, raw).unwrap();
    let refused = Command::new(ketch_bin())
        .args([
            "snapshot",
            "restore",
            &bad.display().to_string(),
            &format!("--data-dir={}", dir.path().join("x").display()),
        ])
        .output()
        .unwrap();
    assert!(
        !refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains("corrupt")
    );
    let exists = Command::new(ketch_bin())
        .args([
            "snapshot",
            "restore",
            &file.display().to_string(),
            &format!("--data-dir={}", dir.path().display()),
        ])
        .output()
        .unwrap();
    assert!(!exists.status.success() && String::from_utf8_lossy(&exists.stderr).contains("exists"));
}
