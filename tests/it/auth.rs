//! etcd's auth driven by the real etcdctl and compared with etcd 3.4: user and role commands
//! in every output format with their refusals, auth enable/disable, `--user name:password` and
//! `--user name` with the password on stdin, and a permission matrix — for read, write,
//! readwrite and no permission, each request type allowed or refused with etcd's error. Also
//! the CN of a verified client certificate standing in for the user.

use std::time::Duration;

use ketch_tests::{
    compare, compare_scenario, ctl, txn_input, BackgroundCtl, CtlOutput, Kind, Server, Step,
    TestCerts,
};

const ROOT: &str = "--user=root:rootpw";
const WAIT: Duration = Duration::from_secs(20);

/// Every output format. etcdctl 3.4 prints user and role results as simple text and JSON;
/// some commands have a fields form, none a table (it says "not supported as output format"):
/// whatever etcd does, ketch must do the same.
fn formats(args: &[&str]) -> Vec<Step> {
    ["simple", "json", "fields", "table"]
        .iter()
        .map(|f| {
            let mut a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            a.push(format!("--write-out={f}"));
            match *f {
                "simple" | "json" => ctl(a).ok(),
                "table" => ctl(a).fails_with("not supported as output format"),
                _ => ctl(a),
            }
        })
        .collect()
}

#[test]
fn user_and_role_commands_print_as_etcd_in_every_format_and_refuse_as_etcd() {
    let mut steps = vec![
        ctl(["user", "add", "alice:apw"])
            .ok()
            .stdout("User alice created\n"),
        ctl(["user", "add", "bob", "--interactive=false"])
            .stdin("bpw\n")
            .ok(),
        ctl(["user", "add", "alice:x"]).fails_with("etcdserver: user name already exists"),
        ctl(["user", "get", "nobody"]).fails_with("etcdserver: user name not found"),
        ctl(["role", "add", "r1"]).ok().stdout("Role r1 created\n"),
        ctl(["role", "add", "r1"]).fails_with("etcdserver: role name already exists"),
        ctl(["role", "add", "r2"]).ok(),
        ctl(["role", "get", "nope"]).fails_with("etcdserver: role name not found"),
        ctl(["role", "grant-permission", "r1", "read", "k"]).ok(),
        ctl(["role", "grant-permission", "r1", "write", "p/", "--prefix"]).ok(),
        ctl(["role", "grant-permission", "r1", "readwrite", "a", "c"]).ok(),
        ctl(["role", "grant-permission", "r1", "read", "f", "--from-key"]).ok(),
        // the same key and range again: the type is updated in place
        ctl(["role", "grant-permission", "r1", "readwrite", "k"]).ok(),
        ctl(["role", "grant-permission", "nope", "read", "k"])
            .fails_with("etcdserver: role name not found"),
        ctl(["user", "grant-role", "alice", "r1"]).ok(),
        ctl(["user", "grant-role", "alice", "r2"]).ok(),
        ctl(["user", "grant-role", "alice", "r1"]).ok(),
        ctl(["user", "grant-role", "alice", "nope"]).fails_with("etcdserver: role name not found"),
        ctl(["user", "grant-role", "nobody", "r1"]).fails_with("etcdserver: user name not found"),
    ];
    steps.extend(formats(&["user", "list"]));
    steps.extend(formats(&["user", "get", "alice"]));
    steps.extend(formats(&["user", "get", "alice", "--detail"]));
    steps.extend(formats(&["role", "list"]));
    steps.extend(formats(&["role", "get", "r1"]));
    steps.extend(formats(&["role", "get", "r2"]));
    steps.extend([
        ctl(["user", "revoke-role", "alice", "nope"])
            .fails_with("etcdserver: role is not granted to the user"),
        ctl(["user", "revoke-role", "nobody", "r1"]).fails_with("etcdserver: user name not found"),
        ctl(["role", "revoke-permission", "r1", "k"]).ok(),
        ctl(["role", "revoke-permission", "r1", "k"])
            .fails_with("etcdserver: permission is not granted to the role"),
        ctl(["role", "revoke-permission", "r1", "p/", "--prefix"]).ok(),
        ctl(["role", "revoke-permission", "nope", "k"])
            .fails_with("etcdserver: role name not found"),
        ctl(["role", "get", "r1", "-w", "json"]).ok(),
        ctl(["user", "revoke-role", "alice", "r1"]).ok(),
        ctl(["user", "get", "alice"]).ok(),
        ctl(["user", "passwd", "alice", "--interactive=false"])
            .stdin("new\n")
            .ok(),
        // deleting a role takes it from its users
        ctl(["role", "delete", "r2"]).ok(),
        ctl(["user", "get", "alice", "-w", "json"]).ok(),
        ctl(["role", "delete", "r2"]).fails_with("etcdserver: role name not found"),
        ctl(["user", "delete", "bob"]).ok(),
        ctl(["user", "delete", "bob"]).fails_with("etcdserver: user name not found"),
        ctl(["user", "list"]).ok(),
    ]);
    steps.push(ctl(["user", "delete", "alice", "-w", "json"]).ok());
    compare(&steps);
}

#[test]
fn auth_enable_and_disable_refuse_as_etcd() {
    compare(&[
        ctl(["auth", "enable"]).fails_with("etcdserver: root user does not exist"),
        ctl(["user", "add", "root:rootpw"]).ok(),
        ctl(["user", "add", "alice:apw"]).ok(),
        // etcdctl grants root the root role itself when the server asks for it
        ctl(["auth", "enable"])
            .ok()
            .stdout("Authentication Enabled\n"),
        ctl(["user", "get", "root"]).fails_with("etcdserver: user name is empty"),
        ctl([ROOT, "user", "get", "root"])
            .ok()
            .stdout("User: root\nRoles: root\n"),
        ctl([ROOT, "auth", "enable"]).ok(),
        ctl(["auth", "enable"]).fails_with("etcdserver: user name is empty"),
        ctl(["--user=alice:apw", "auth", "disable"]).fails_with("etcdserver: permission denied"),
        ctl(["--user=alice:apw", "user", "list"]).fails_with("etcdserver: permission denied"),
        ctl(["--user=alice:apw", "role", "list"]).fails_with("etcdserver: permission denied"),
        ctl(["--user=alice:apw", "user", "add", "eve:x"])
            .fails_with("etcdserver: permission denied"),
        // a user may read itself
        ctl(["--user=alice:apw", "user", "get", "alice"]).ok(),
        ctl(["--user=alice:apw", "user", "get", "root"])
            .fails_with("etcdserver: permission denied"),
        ctl([ROOT, "user", "delete", "root"]).fails_with("etcdserver: invalid auth management"),
        ctl([ROOT, "role", "delete", "root"]).fails_with("etcdserver: invalid auth management"),
        ctl([ROOT, "user", "revoke-role", "root", "root"])
            .fails_with("etcdserver: invalid auth management"),
        ctl(["--user=root:wrong", "get", "a"])
            .fails_with("etcdserver: authentication failed, invalid user ID or password"),
        ctl(["--user=nobody:x", "get", "a"])
            .fails_with("etcdserver: authentication failed, invalid user ID or password"),
        ctl(["put", "a", "1"]).fails_with("etcdserver: user name is empty"),
        ctl([ROOT, "put", "a", "1"]).ok(),
        ctl(["auth", "disable"]).fails_with("etcdserver: user name is empty"),
        ctl([ROOT, "auth", "disable"])
            .ok()
            .stdout("Authentication Disabled\n"),
        ctl(["auth", "disable"]).ok(),
        // with auth disabled, etcdctl goes on without a token
        ctl(["--user=root:wrong", "get", "a"]).ok(),
        ctl(["put", "a", "2"]).ok(),
        // with auth disabled, root can go
        ctl(["user", "delete", "root"]).ok(),
        // the root role outlives the root user
        ctl(["role", "delete", "root"]).ok(),
    ]);
}

#[test]
fn user_flag_takes_the_password_from_stdin_when_not_given() {
    compare(&[
        ctl(["user", "add", "root:rootpw"]).ok(),
        ctl(["auth", "enable"]).ok(),
        ctl(["--user=root", "put", "a", "1"]).stdin("rootpw\n").ok(),
        ctl(["--user=root", "get", "a"]).stdin("rootpw\n").ok(),
        ctl(["--user=root", "get", "a"])
            .stdin("bad\n")
            .fails_with("authentication failed"),
        // a password change makes the old one fail
        ctl([ROOT, "user", "passwd", "root", "--interactive=false"])
            .stdin("newpw\n")
            .ok(),
        ctl([ROOT, "get", "a"]).fails_with("authentication failed"),
        ctl(["--user=root:newpw", "get", "a", "-w", "json"]).ok(),
    ]);
}

/// Sets up users `ro`, `wo`, `rw` (read, write, readwrite on key `k`) and `none`.
fn matrix_setup(ctl: &ketch_tests::Etcdctl) -> Vec<CtlOutput> {
    let mut out = Vec::new();
    let mut run = |args: &[&str]| out.push(ctl.run(args));
    run(&["user", "add", "root:rootpw"]);
    for (user, role, perm) in [
        ("ro", "r-read", "read"),
        ("wo", "r-write", "write"),
        ("rw", "r-rw", "readwrite"),
    ] {
        run(&["user", "add", &format!("{user}:pw")]);
        run(&["role", "add", role]);
        run(&["role", "grant-permission", role, perm, "k"]);
        run(&["user", "grant-role", user, role]);
    }
    run(&["user", "add", "none:pw"]);
    run(&["auth", "enable"]);
    run(&[ROOT, "put", "k", "v1"]);
    run(&[ROOT, "put", "other", "o"]);
    for o in &out {
        assert!(o.success(), "matrix setup failed:\n{}", o.transcript());
    }
    out
}

/// The lease id etcdctl printed on `lease grant`, which differs between servers.
fn lease_id(out: &CtlOutput) -> String {
    let text = out.stdout_str();
    text.split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("no lease id in {text:?}"))
        .to_string()
}

fn hide(mut out: CtlOutput, id: &str) -> CtlOutput {
    let swap = |b: &[u8]| {
        String::from_utf8_lossy(b)
            .replace(id, "<lease>")
            .into_bytes()
    };
    out.stdout = swap(&out.stdout);
    out.stderr = swap(&out.stderr);
    out.args = out.args.iter().map(|a| a.replace(id, "<lease>")).collect();
    out
}

#[test]
fn permission_matrix_per_request_type_matches_etcd() {
    compare_scenario(Server::builder, |s| {
        let ctl = s.etcdctl();
        let mut runs = matrix_setup(&ctl);
        for (user, reads) in [("ro", true), ("wo", false), ("rw", true), ("none", false)] {
            let as_user = format!("--user={user}:pw");
            let u = as_user.as_str();
            runs.push(ctl.run(&[u, "get", "k"]));
            runs.push(ctl.run(&[u, "get", "k", "--serializable", "-w", "json"]));
            // a point permission does not cover a range
            runs.push(ctl.run(&[u, "get", "k", "--prefix"]));
            runs.push(ctl.run(&[u, "get", "other"]));
            runs.push(ctl.run(&[u, "put", "k", &format!("by-{user}")]));
            runs.push(ctl.run(&[u, "put", "k", "again", "--prev-kv"]));
            runs.push(ctl.run(&[u, "put", "other", "x"]));
            // a txn needs read on every compare and the permission of every op
            let txn = txn_input(&["value(\"k\") = \"v1\""], &["put k t"], &["get k"]);
            runs.push(ctl.run_stdin(&[u, "txn"], txn));
            let read_only = txn_input(&["version(\"k\") > \"0\""], &["get k"], &[]);
            runs.push(ctl.run_stdin(&[u, "txn", "-w", "json"], read_only));
            runs.push(ctl.run(&[u, "del", "k"]));
            runs.push(ctl.run(&[ROOT, "put", "k", "v1"]));
            // watch: refused as a canceled watch; allowed, it sees the key's history
            let mut watch_args = s
                .client_tls()
                .map(|t| t.etcdctl_flags())
                .unwrap_or_default();
            watch_args.extend([u, "watch", "k", "--rev=1"].map(String::from));
            let watch = BackgroundCtl::spawn(&s.client_url(), &watch_args, &[]);
            if reads {
                watch.wait_stdout(WAIT, |o| o.matches("PUT").count() >= 2);
                runs.push(watch.kill());
            } else {
                runs.push(watch.wait_exit(WAIT));
            }
            // lease revoke needs write on every key attached
            let granted = ctl.run(&[ROOT, "lease", "grant", "600"]);
            let id = lease_id(&granted);
            runs.push(hide(
                ctl.run(&[ROOT, "put", "leased", "x", &format!("--lease={id}")]),
                &id,
            ));
            runs.push(hide(
                ctl.run(&[ROOT, "put", "k", "v1", &format!("--lease={id}")]),
                &id,
            ));
            runs.push(hide(ctl.run(&[u, "lease", "revoke", &id]), &id));
            runs.push(hide(ctl.run(&[ROOT, "lease", "revoke", &id]), &id));
            runs.push(ctl.run(&[ROOT, "put", "k", "v1"]));
            // etcd 3.4 checks no permission on compaction
            runs.push(ctl.run(&[u, "compact", "1"]));
            // member changes and maintenance need root
            runs.push(ctl.run(&[u, "member", "remove", "1234"]));
            runs.push(ctl.run(&[u, "endpoint", "hashkv"]));
            runs.push(ctl.run(&[u, "defrag"]));
        }
        // no user at all
        runs.push(ctl.run(&["get", "k"]));
        runs.push(ctl.run(&["put", "k", "v"]));
        runs.push(ctl.run(&["member", "remove", "1234"]));
        runs.push(ctl.run(&["endpoint", "hashkv"]));
        runs.push(ctl.run(&[ROOT, "member", "remove", "1234"]));
        let watch = BackgroundCtl::spawn(&s.client_url(), &["watch", "k"], &[]);
        runs.push(watch.wait_exit(WAIT));
        runs
    });
}

#[test]
fn lock_and_election_run_as_the_user() {
    compare_scenario(Server::builder, |s| {
        let ctl = s.etcdctl();
        let mut runs = matrix_setup(&ctl);
        runs.push(ctl.run(&["--user=ro:pw", "lock", "k"]));
        runs.push(ctl.run(&["--user=none:pw", "elect", "k", "p"]));
        runs
    });
}

#[test]
fn the_common_name_of_a_client_certificate_is_the_user() {
    let certs = TestCerts::generate();
    compare_scenario(
        |kind: Kind| {
            let mut b = Server::builder(kind).client_tls(certs.client(Some("client")));
            for flag in certs.client_auth_flags() {
                b = b.arg(flag);
            }
            b
        },
        |s| {
            // the harness's client certificate has CN root
            let ctl = s.etcdctl();
            let mut runs = Vec::new();
            for args in [
                &["user", "add", "root:rootpw"][..],
                &["user", "add", "alice:apw"],
                &["user", "grant-role", "root", "root"],
                &["auth", "enable"],
                // no token: the certificate's CN is the user
                &["put", "a", "1"],
                &["get", "a"],
                &["user", "list"],
                // a token wins over the certificate
                &["--user=alice:apw", "put", "a", "2"],
                &["--user=alice:apw", "get", "a"],
                &["auth", "disable"],
            ] {
                runs.push(ctl.run(args));
            }
            runs
        },
    );
}

/// `--auth-token jwt,...`: signed tokens, checked by the member without remembering them.
#[test]
fn jwt_tokens_authenticate_like_simple_ones() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("jwt.pem");
    let made = std::process::Command::new("openssl")
        .args(["genrsa", "-out", &key.display().to_string(), "2048"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !made {
        eprintln!("skipping: openssl is needed to make the signing key");
        return;
    }
    let s = Server::builder(Kind::Ketch)
        .arg(format!(
            "--auth-token=jwt,priv-key={},sign-method=RS256,ttl=10m",
            key.display()
        ))
        .start();
    let ctl = s.etcdctl();
    ctl.run(&["user", "add", "root:rootpw"]).assert_success();
    ctl.run(&["auth", "enable"]).assert_success();
    ctl.run(&["--user", "root:rootpw", "put", "a", "1"])
        .assert_success();
    let got = ctl.run(&["--user", "root:rootpw", "get", "a", "--print-value-only"]);
    assert_eq!(got.stdout_str(), "1\n", "{}", got.transcript());
    assert!(ctl
        .run(&["--user", "root:bad", "get", "a"])
        .stderr_str()
        .contains("authentication failed"));
    assert!(ctl
        .run(&["get", "a"])
        .stderr_str()
        .contains("user name is empty"));
}
