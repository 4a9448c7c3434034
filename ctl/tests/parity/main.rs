//! ketchctl against etcdctl 3.4: one script of commands (every output format, error paths,
//! environment variables, dead endpoints, authentication) runs once with `etcdctl` against a
//! fresh etcd 3.4 and once with `ketchctl` against another fresh etcd started the same way
//! (same ports, so the same cluster and member ids, revisions and Raft indexes). Every
//! command's stdout, stderr and exit code must match after masking what differs between any
//! two runs (see `normalize`).
//!
//! Skipped, with a message, when `etcd` or `etcdctl` is not installed.

mod harness;
mod normalize;

use std::path::{Path, PathBuf};
use std::time::Duration;

use std::collections::HashMap;

use harness::{free_port, run, which, Background, Certs, Etcd, Outcome};

/// One command of the script.
#[derive(Clone)]
struct Step {
    args: Vec<String>,
    stdin: Option<Vec<u8>>,
    env: Vec<(String, String)>,
    /// Prepend `--endpoints <live endpoint>`.
    endpoints: bool,
    /// Run with etcdctl in both passes to prepare state (user/auth commands ketchctl lacks).
    setup: bool,
    /// Output carries measured durations.
    timing: bool,
    /// Fails to connect before a short deadline. grpc-go words the deadline as the context's
    /// (`desc = context deadline exceeded`) or with the balancer's latest error (`desc = latest
    /// balancer error: ...`) depending on whether a connection attempt had already failed when
    /// it passed, which a loaded machine decides; either wording is accepted.
    connect_race: bool,
    /// Run in the background, or wait on a background run (see [`Bg`]).
    bg: Bg,
    /// Remember the next revision as `{MARK}` before running.
    mark: bool,
    /// Output carries a lease's remaining TTL, which depends on when it ran.
    remaining: bool,
    /// JSON output carries keys that embed lease ids (base64 in JSON): mask the keys.
    lease_keys: bool,
}

/// Long-running commands: started in one step, waited on (and interrupted) in a later one,
/// where their output is compared. Slots are named.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Bg {
    No,
    /// Start the command in the background under this name.
    Spawn(&'static str),
    /// Wait until the named command printed this (nothing compared here).
    Await(&'static str, &'static str),
    /// Wait until the named command printed this (if given), interrupt it with SIGINT if
    /// asked, and compare its whole output and exit status.
    Join(&'static str, Option<&'static str>, bool),
}

fn words(s: &str) -> Vec<String> {
    s.split_whitespace()
        .map(|w| {
            if w == "''" {
                String::new()
            } else {
                w.to_string()
            }
        })
        .collect()
}

/// A command against the live endpoint; `''` stands for an empty argument.
fn cmd(s: &str) -> Step {
    Step {
        args: words(s),
        stdin: None,
        env: Vec::new(),
        endpoints: true,
        setup: false,
        timing: false,
        connect_race: false,
        bg: Bg::No,
        mark: false,
        remaining: false,
        lease_keys: false,
    }
}

/// A command without `--endpoints` added.
fn raw(s: &str) -> Step {
    Step {
        endpoints: false,
        ..cmd(s)
    }
}

impl Step {
    fn args(mut self, extra: &[&str]) -> Self {
        self.args.extend(extra.iter().map(|s| s.to_string()));
        self
    }
    fn stdin(mut self, input: &[u8]) -> Self {
        self.stdin = Some(input.to_vec());
        self
    }
    fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }
    fn setup(mut self) -> Self {
        self.setup = true;
        self
    }
    fn timing(mut self) -> Self {
        self.timing = true;
        self
    }
    fn connect_race(mut self) -> Self {
        self.connect_race = true;
        self
    }
    fn spawn(mut self, slot: &'static str) -> Self {
        self.bg = Bg::Spawn(slot);
        self
    }
    fn mark(mut self) -> Self {
        self.mark = true;
        self
    }
    fn remaining(mut self) -> Self {
        self.remaining = true;
        self
    }
    fn lease_keys(mut self) -> Self {
        self.lease_keys = true;
        self
    }
}

/// Wait for a background command's output.
fn await_bg(slot: &'static str, marker: &'static str) -> Step {
    Step {
        bg: Bg::Await(slot, marker),
        ..raw("")
    }
}

/// Wait for a background command's output, interrupt it (Ctrl-C) and compare what it did.
fn interrupt(slot: &'static str, marker: &'static str) -> Step {
    Step {
        bg: Bg::Join(slot, Some(marker), true),
        ..raw("")
    }
}

/// Wait for a background command to finish by itself and compare what it did.
fn join(slot: &'static str, marker: &'static str) -> Step {
    Step {
        bg: Bg::Join(slot, Some(marker), false),
        ..raw("")
    }
}

const FORMATS: [&str; 5] = ["simple", "json", "fields", "protobuf", "table"];

fn help_and_parsing() -> Vec<Step> {
    let mut s: Vec<Step> = [
        "",
        "--help",
        "help",
        "help get",
        "help member list",
        "help bogus",
        "get --help",
        "put -h",
        "del --help",
        "txn --help",
        "compaction --help",
        "member",
        "member --help",
        "member bogus",
        "member list --help",
        "endpoint",
        "endpoint health --help",
        "endpoint status --help",
        "endpoint hashkv --help",
        "version",
        "version extra",
        "version --help",
        "lease",
        "completion",
        "bogus",
        "gett",
        "m",
        "pu x",
        "--bogus get foo",
        "get --bogus foo",
        "get -x",
        "get -w",
        "get --limit",
        "get ---x",
        "get --limit x foo",
        "get --rev=abc foo",
        "get --prefix=maybe foo",
        "--dial-timeout xx get foo",
        "--command-timeout 1 get foo",
        "-w",
    ]
    .iter()
    .map(|c| raw(c))
    .collect();
    s.push(raw("get --limit=-x foo"));
    s.extend(
        [
            "--help get",
            "h get",
            "help completion",
            "help member bogus",
            "help help",
        ]
        .map(raw),
    );
    s.extend(
        [
            "get -- --prefix",
            "-w json -w fields get foo",
            "get --help=false foo",
            "member list --cluster",
            "endpoint hashkv --rev=x",
            "endpoint health --rev 1",
            "version --debug",
        ]
        .map(cmd),
    );
    // The endpoint list is trimmed for the client, not for per-endpoint status calls.
    s.push(
        raw("--command-timeout 1s endpoint status")
            .args(&["--endpoints", "{EP}, {EP}"])
            .connect_race(),
    );
    s.push(raw("get foo").args(&["--endpoints", "{EP}, {EP}"]));
    s.push(raw("get foo").args(&["--endpoints", ""]));
    s
}

fn puts() -> Vec<Step> {
    let mut s = vec![
        cmd("put foo bar"),
        cmd("put foo bar2 --prev-kv"),
        cmd("put foo2").stdin(b"hello\n"),
        cmd("put foo3"),
        cmd("put"),
        cmd("put k --ignore-value v"),
        cmd("put k v --lease zz"),
        cmd("put k v --lease 0x1"),
        cmd("put -- -k -v"),
        cmd("put '' x"),
        cmd("put foo bar -w table"),
        cmd("put missing --ignore-value"),
        cmd("put foo --ignore-value --prev-kv"),
        cmd("put foo bar --ignore-lease"),
        cmd("put foo bar --lease 1234abcd"),
        cmd("put bin").stdin(b"\x00\x01\xff\xfe\n"),
        cmd("put").args(&["odd key", "a\"b\\c<>&\t\u{2028}héllo\n"]),
        cmd("put a 1"),
        cmd("put b 2"),
        cmd("put c 3"),
        cmd("put k1 v1"),
    ];
    for w in ["json", "fields", "protobuf"] {
        s.push(cmd(&format!("put fmt{w} v -w {w}")));
        s.push(cmd(&format!("put fmt{w} v2 --prev-kv -w {w}")));
    }
    s
}

fn gets() -> Vec<Step> {
    let mut s = Vec::new();
    for w in FORMATS {
        for c in [
            "get foo",
            "get --prefix ''",
            "get nothing",
            "get a c",
            "get foo --hex",
            "get 'odd key'",
        ] {
            s.push(cmd(&format!("{c} -w {w}")));
        }
    }
    s.extend(
        [
            "get --prefix f",
            "get '' --from-key",
            "get b --from-key",
            "get --limit 2 --prefix ''",
            "get --limit 0x2 --prefix ''",
            "get --rev 2 foo",
            "get --rev 1000 foo",
            "get --sort-by=VALUE --order=DESCEND --prefix ''",
            "get --sort-by=create --prefix ''",
            "get --sort-by key --order ascend --prefix ''",
            "get --order=DESCEND --prefix ''",
            "get --sort-by=version --prefix ''",
            "get --sort-by=modify --order=descend --limit 3 --prefix ''",
            "get --keys-only --prefix ''",
            "get --keys-only --prefix '' -w json",
            "get --print-value-only foo",
            "get --print-value-only --prefix f",
            "get --print-value-only foo -w json",
            "get --consistency s foo",
            "get --consistency x foo",
            "get --sort-by=foo foo",
            "get --order=x foo",
            "get",
            "get foo bar --prefix",
            "get foo --prefix --from-key",
            "-w bogus get foo",
            "get a b c",
            "get bin --hex",
            "get bin -w fields",
            "--hex get bin -w json",
        ]
        .iter()
        .map(|c| cmd(c)),
    );
    s
}

fn dels() -> Vec<Step> {
    let mut s: Vec<Step> = [
        "del",
        "del a b c",
        "del foo --from-key --prefix",
        "del x y --prefix",
        "del nokey",
        "del fmtjson --prev-kv -w json",
        "del fmtfields --prev-kv -w fields",
        "del fmtprotobuf --prev-kv -w protobuf",
        "del k1 --prev-kv",
        "put p1 1",
        "put p2 2",
        "del p --prefix --prev-kv",
        "put r1 1",
        "del r1 r2",
        "put z1 1",
        "put z2 2",
        "del z --from-key --prev-kv -w json",
        "del nokey -w table",
    ]
    .iter()
    .map(|c| cmd(c))
    .collect();
    s.push(cmd("put a 1"));
    s
}

fn txns() -> Vec<Step> {
    let scripts: &[&[u8]] = &[
        b"ver(\"foo\") > \"0\"\n\nput t1 v1\nget foo\n\nput t2 v2\n\n",
        b"val(\"foo\") = \"nope\"\n\nput t1 v1\n\nput t2 v2 --prev-kv\nget t --prefix\ndel t1 --prev-kv\n\n",
        b"c(\"foo\") != \"0\"\nm(\"foo\") < \"1000\"\nval(\"a\") = \"1\"\n\nget a\n\n\n",
        b"\n\nput \"t\\x41\" \"tab\\there\"\nget \"t\\x41\" --print-value-only\n\n\n",
        b"val(\"foo\") = \"bar\"\n\nput 'x' 'y'\n\n\n",
        b"\n\n\nput 'xyz' b\n\n",
        b"\n\nput 'x' b c d e f\n\n\n",
        b"lease(\"foo\") = \"1\"\n\n\n",
        b"ver(\"foo\") >= \"1\"\n\n\n",
        b"foo(\"foo\") = \"1\"\n\n\n",
        b"ver(\"foo\") = \"x\"\n\n\n",
        b"ver(\"foo\")\n\n\n",
        b"ver(foo) = \"1\"\n\n\n",
        b"m(\"k\")<\"3\"\n\n\n",
        b"ver\n\n\n",
        b"\n\nput --bogus a b\n\n\n",
        b"\n\nget -w json a\n\n\n",
        b"\n\ndel -x a\n\n\n",
        b"\n\nget --limit x a\n\n\n",
        b"\n\nget\n\n\n",
        b"\n\nput a\n\n\n",
        b"\n\nget a --consistency x\n\n\n",
        b"\n\nbogus a\n\n\n",
        b"\n\np t3 v\ng t3\nd t3\n\n\n",
        b"\n\nput \"a\\q\" b\n\n\n",
        b"\n\nget a\n\n",
        b"ver(\"a\") > \"0\"\n\nput a 2\n\nput t4 v\n",
        b"",
    ];
    let mut s = Vec::new();
    for script in scripts {
        s.push(cmd("txn").stdin(script));
    }
    let full = b"val(\"foo\") = \"bar\"\n\nget foo --prefix\nput t5 y --prev-kv\ndel t6 --prev-kv\n\nput t7 1\n\n";
    for w in FORMATS {
        s.push(cmd(&format!("txn -w {w}")).stdin(full));
    }
    s.push(cmd("txn -i").stdin(b"mod(\"foo\") < \"100\"\n\nget foo\n\nput t8 v\n\n"));
    s.push(cmd("txn --interactive").stdin(b"mod(\"foo\") < \"100\"\n\nget foo\n"));
    s.push(cmd("txn extra"));
    s
}

fn compactions() -> Vec<Step> {
    [
        "compaction",
        "compaction x",
        "compaction 1 2",
        "compaction 3",
        "compact 3",
        "get --rev 2 foo",
        "compaction 100000",
        "compaction 5 --physical",
        "compaction -- -5",
        "endpoint hashkv --rev 2",
    ]
    .iter()
    .map(|c| cmd(c))
    .collect()
}

fn cluster_and_endpoints() -> Vec<Step> {
    let mut s = Vec::new();
    for w in FORMATS {
        s.push(cmd(&format!("member list -w {w}")));
        s.push(cmd(&format!("endpoint status -w {w}")));
        s.push(cmd(&format!("endpoint hashkv -w {w}")));
        s.push(cmd(&format!("endpoint health -w {w}")).timing());
    }
    s.push(cmd("endpoint status --cluster"));
    s.push(cmd("endpoint hashkv --cluster -w json"));
    s.push(cmd("endpoint health --cluster -w json").timing());
    s.push(cmd("member list extra"));
    s
}

fn environment() -> Vec<Step> {
    vec![
        raw("get foo")
            .env("ETCDCTL_ENDPOINTS", "{EP}")
            .env("ETCDCTL_WRITE_OUT", "json"),
        cmd("get foo").env("ETCDCTL_FOO", "bar"),
        cmd("get foo").env("ETCDCTL_ENDPOINTS", "{EP}"),
        cmd("get foo").env("ETCDCTL_ENDPOINTS", ""),
        cmd("get foo").env("ETCDCTL_DIAL_TIMEOUT", "abc"),
        cmd("get f").env("ETCDCTL_PREFIX", "true"),
        cmd("get foo").env("ETCDCTL_HEX", "true"),
        cmd("endpoint status").env("ETCDCTL_CLUSTER", "true"),
        raw("endpoint hashkv")
            .env("ETCDCTL_ENDPOINTS", "{EP}")
            .env("ETCDCTL_WRITE_OUT", "fields"),
        raw("endpoint health")
            .env("ETCDCTL_ENDPOINTS", "{EP}")
            .env("ETCDCTL_WRITE_OUT", "json")
            .timing(),
        raw("put e1 v")
            .env("ETCDCTL_ENDPOINTS", "{EP}")
            .env("ETCDCTL_WRITE_OUT", "bogus"),
        cmd("--debug get foo"),
        cmd("--debug endpoint status"),
        cmd("--debug endpoint health").timing(),
        cmd("--cacert= get foo"),
        cmd("--cacert /nonexistent/ca.pem get foo"),
        cmd("--cert /nonexistent/cert.pem get foo"),
        cmd("--cert /nonexistent/cert.pem --key /nonexistent/key.pem get foo"),
        cmd("--key= get foo"),
    ]
}

fn dead_endpoints() -> Vec<Step> {
    let t = "--command-timeout 1s";
    let dead = |c: &str| raw(&format!("--endpoints {{DEAD}} {t} {c}")).connect_race();
    vec![
        dead("get foo"),
        dead("put a b"),
        dead("member list"),
        dead("compaction 1"),
        dead("endpoint status"),
        dead("endpoint hashkv -w json"),
        dead("endpoint health").timing(),
        dead("endpoint health -w json").timing(),
        dead("endpoint health --cluster"),
        // The live endpoint answers.
        raw(&format!("--endpoints {{DEAD}},{{EP}} {t} get foo")),
        raw(&format!("--endpoints {{DEAD}},{{EP}} {t} endpoint status")).connect_race(),
        raw("--endpoints {DEAD} --dial-timeout 300ms --user a:b get foo").connect_race(),
    ]
}

fn authentication() -> Vec<Step> {
    // With auth enabled, Authenticate costs etcd a bcrypt comparison and a Raft proposal (a
    // WAL fsync), bounded by `--dial-timeout`: a loaded machine can stretch that past the
    // default 2s in one pass and not the other, so these steps allow more.
    let user = |c: &str| cmd(&format!("--dial-timeout 10s {c}"));
    vec![
        cmd("--user root:x get foo"),
        cmd("user add root --new-user-password=rootpw").setup(),
        cmd("user add bob --new-user-password=bobpw").setup(),
        cmd("auth enable").setup(),
        cmd("get foo"),
        user("--user root:rootpw get foo"),
        user("--user root:bad get foo"),
        user("--user root --password rootpw put auth1 v"),
        user("--user root --password rootpw txn").stdin(b"\n\nget auth1\n\n"),
        user("--user bob:bobpw get foo"),
        user("--user bob:bobpw endpoint health").timing(),
        user("--user bob:bobpw endpoint status -w json"),
        user("--user root:rootpw endpoint hashkv"),
        user("--user root:rootpw member list"),
        user("--user root get foo").stdin(b"rootpw\n"),
        cmd("--user root:rootpw auth disable").setup(),
    ]
}

/// `lease`: ids differ between runs and are numbered by the normaliser; `{LEASE}` is the
/// last one granted. Leases are granted long enough to outlive the script, so none expires
/// (a Raft entry) while later steps run.
fn leases() -> Vec<Step> {
    let mut s: Vec<Step> = [
        "lease --help",
        "lease grant --help",
        "lease timetolive --help",
        "lease keep-alive --help",
    ]
    .map(raw)
    .to_vec();
    for w in FORMATS {
        s.push(cmd(&format!("lease list -w {w}")));
    }
    s.push(cmd("lease grant 1000"));
    for w in FORMATS {
        s.push(cmd(&format!("lease list -w {w}")));
    }
    s.push(cmd("put lk1 v --lease {LEASE}"));
    // One key: etcd lists a lease's keys in map order.
    for w in FORMATS {
        s.push(cmd(&format!("lease timetolive {{LEASE}} -w {w}")).remaining());
        s.push(cmd(&format!("lease timetolive {{LEASE}} --keys -w {w}")).remaining());
        s.push(cmd(&format!("lease keep-alive --once {{LEASE}} -w {w}")));
    }
    // Keeps it alive until Ctrl-C (its next renewal is a third of the TTL away).
    s.push(cmd("lease keep-alive {LEASE}").spawn("ka"));
    s.push(interrupt("ka", "keepalived with TTL(1000)\n"));
    s.push(cmd("lease keep-alive {LEASE} -w json").spawn("ka"));
    s.push(interrupt("ka", "\"TTL\":1000}\n"));
    s.push(cmd("lease revoke {LEASE}"));
    s.push(cmd("get lk1"));
    for w in ["json", "fields", "protobuf", "table"] {
        s.push(cmd("lease grant 1000"));
        s.push(cmd(&format!("lease revoke {{LEASE}} -w {w}")));
    }
    for w in FORMATS {
        s.push(cmd(&format!("lease timetolive {{LEASE}} -w {w}")));
        s.push(cmd(&format!("lease keep-alive --once {{LEASE}} -w {w}")));
    }
    // An expired or revoked lease ends keep-alive at its first answer.
    s.push(cmd("lease keep-alive {LEASE}"));
    s.push(cmd("lease keep-alive {LEASE} -w json"));
    for w in ["json", "fields", "protobuf", "table", "simple"] {
        s.push(cmd(&format!("lease grant 1000 -w {w}")));
    }
    s.extend(
        [
            "lease grant",
            "lease grant x",
            "lease grant 1 2",
            "lease grant -5",
            "lease revoke",
            "lease revoke zz",
            "lease revoke 1234",
            "lease timetolive",
            "lease timetolive zz",
            "lease timetolive 1234 --keys",
            "lease keep-alive",
            "lease keep-alive zz",
            "lease keep-alive --once 1234",
            "lease list extra",
        ]
        .map(cmd),
    );
    s
}

/// `watch`. Events a watch replays from history come in one response, events it sees live
/// in one each: the structured formats (which show responses) watch history only.
fn watches() -> Vec<Step> {
    let mut s: Vec<Step> = [
        "watch --help",
        "watch",
        "watch a b --prefix",
        "watch a --",
        "watch --rev x a",
        // Compacted away earlier in the script: canceled by the server.
        "watch --rev 2 foo",
        "watch --rev 2 foo -w json",
        "watch --rev 2 foo -w fields",
        "watch --rev 2 foo -w protobuf",
    ]
    .map(cmd)
    .to_vec();
    s.push(cmd("watch foo").env("ETCDCTL_WATCH_RANGE_END", "z"));
    s.push(cmd("watch foo").env("ETCDCTL_WATCH_KEY", "foo"));
    s.push(cmd("--debug watch --rev 2").env("ETCDCTL_WATCH_KEY", "foo"));
    s.push(cmd("watch --rev 2 foo -- echo x").env("ETCDCTL_WATCH_KEY", "foo"));
    s.push(
        cmd("watch --rev 2 -- echo x")
            .env("ETCDCTL_WATCH_KEY", "foo")
            .env("ETCDCTL_WATCH_RANGE_END", "fop"),
    );
    s.push(cmd("put w/a 1").mark());
    s.extend(["put w/b 2", "del w/a", "put w/end x"].map(cmd));
    for w in ["simple", "json", "fields", "protobuf"] {
        let end = match w {
            "simple" => "w/end\nx\n",
            "json" => "\"value\":\"eA==\"",
            "fields" => "\"Value\" : \"x\"\n\"Lease\" : 0\n",
            _ => "w/end",
        };
        s.push(
            cmd(&format!(
                "watch --prefix w/ --rev {{MARK}} --prev-kv -w {w}"
            ))
            .spawn("w"),
        );
        s.push(interrupt("w", end));
    }
    s.push(cmd("watch --prefix w/ --rev {MARK} -w table"));
    s.push(cmd("watch w/a w/c --rev {MARK} --hex").spawn("w"));
    s.push(interrupt("w", "\\x32\n"));
    // Live events, and ETCDCTL_WATCH_KEY.
    s.push(
        cmd("watch --prev-kv --rev {MARK}")
            .env("ETCDCTL_WATCH_KEY", "w/live")
            .spawn("live")
            .mark(),
    );
    s.extend(["put w/live 1", "put w/live 2", "del w/live"].map(cmd));
    s.push(interrupt("live", "DELETE\nw/live\n2\nw/live\n\n"));
    // A command per event, with the event in its environment.
    let show = "echo $ETCD_WATCH_REVISION $ETCD_WATCH_EVENT_TYPE $ETCD_WATCH_KEY $ETCD_WATCH_VALUE";
    s.push(
        cmd("watch --rev {MARK} w/live --")
            .args(&["sh", "-c", show])
            .spawn("exec"),
    );
    s.push(interrupt("exec", "\"DELETE\" \"w/live\" \"\"\n"));
    s.push(cmd("watch --rev {MARK} w/live -- sh -c").args(&["exit 3"]));
    s.push(cmd("watch --rev {MARK} w/live -- /nonexistent/cmd"));
    // Interactive: bad lines are reported and skipped; the end of input ends it.
    s.push(cmd("watch -i").stdin(b"\nbogus x\nwatch\nwatch a b --prefix\nput a\n"));
    s.push(cmd("watch -i").stdin(b"watch a --bogus\n"));
    s.push(cmd("watch -i").stdin(b"watch a --\n"));
    s.push(cmd("watch -i").stdin(b"progress\nwatch a"));
    s
}

/// `lock` and `elect`: held until Ctrl-C, which unlocks or resigns; the exec form of lock.
fn locks_and_elections() -> Vec<Step> {
    let mut s: Vec<Step> = [
        "lock --help",
        "elect --help",
        "lock",
        "lock --ttl x l",
        "elect",
        "elect e",
        "elect -l e p",
        "elect a b c",
    ]
    .map(cmd)
    .to_vec();
    s.push(cmd("lock --ttl 1000 l1").spawn("l"));
    s.push(interrupt("l", "l1/"));
    s.push(cmd("lock --ttl 1000 l1 -w json").spawn("l"));
    s.push(interrupt("l", "\"count\":1}\n").lease_keys());
    s.push(cmd("get --prefix l1/"));
    let show = "echo $ETCD_LOCK_KEY $ETCD_LOCK_REV";
    s.push(cmd("lock --ttl 1000 l2 --").args(&["sh", "-c", show]));
    s.push(cmd("lock --ttl 1000 l2 -- sh -c").args(&["exit 3"]));
    s.push(cmd("lock --ttl 1000 l2 -- /nonexistent/cmd"));
    s.push(cmd("lock --ttl 1000 l2 -- nonexistent-cmd"));
    // A second locker waits for the first to unlock.
    s.push(cmd("lock --ttl 1000 l3").spawn("a"));
    s.push(await_bg("a", "l3/"));
    s.push(
        cmd("lock --ttl 1000 l3 -- echo")
            .args(&["second holder"])
            .spawn("b"),
    );
    s.push(interrupt("a", "l3/"));
    s.push(join("b", "second holder\n"));
    // A campaign, an observer, Ctrl-C (resign) and a second leader.
    s.push(cmd("elect e1 p1").spawn("e1"));
    s.push(await_bg("e1", "p1\n"));
    s.push(cmd("elect -l e1").spawn("obs"));
    s.push(await_bg("obs", "p1\n"));
    s.push(interrupt("e1", "p1\n"));
    s.push(cmd("elect e1 p2").spawn("e2"));
    s.push(interrupt("obs", "p2\n"));
    s.push(interrupt("e2", "p2\n"));
    s.push(cmd("elect e1 p3 -w json").spawn("e3"));
    s.push(interrupt("e3", "\"count\":1}\n").lease_keys());
    s.push(cmd("get --prefix e1/"));
    s
}

fn script() -> Vec<Step> {
    [
        help_and_parsing(),
        puts(),
        gets(),
        dels(),
        txns(),
        compactions(),
        cluster_and_endpoints(),
        environment(),
        dead_endpoints(),
        authentication(),
        leases(),
        watches(),
        locks_and_elections(),
    ]
    .concat()
}

/// Commands against a member that requires TLS with client certificates. `{TLS}` stands for
/// `--cacert`/`--cert`/`--key`, `{CA}`, `{CERT}` and `{KEY}` for the files, `{PORT}` for the
/// client port.
fn tls_script() -> Vec<Step> {
    let mut s = Vec::new();
    for w in FORMATS {
        s.push(raw(&format!(
            "--endpoints https://127.0.0.1:{{PORT}} {{TLS}} put k v -w {w}"
        )));
        s.push(raw(&format!(
            "--endpoints https://127.0.0.1:{{PORT}} {{TLS}} get k -w {w}"
        )));
        s.push(raw(&format!(
            "--endpoints https://127.0.0.1:{{PORT}} {{TLS}} member list -w {w}"
        )));
        s.push(raw(&format!(
            "--endpoints https://127.0.0.1:{{PORT}} {{TLS}} endpoint status -w {w}"
        )));
        s.push(raw(&format!(
            "--endpoints https://127.0.0.1:{{PORT}} {{TLS}} endpoint hashkv -w {w}"
        )));
        s.push(
            raw(&format!(
                "--endpoints https://127.0.0.1:{{PORT}} {{TLS}} endpoint health -w {w}"
            ))
            .timing(),
        );
    }
    s.extend([
        raw("--endpoints https://127.0.0.1:{PORT} {TLS} endpoint status --cluster"),
        raw("--endpoints https://127.0.0.1:{PORT} {TLS} endpoint health --cluster").timing(),
        raw("--endpoints https://127.0.0.1:{PORT} {TLS} txn").stdin(b"val(\"k\") = \"v\"\n\nput k2 v2\n\n\n"),
        raw("--endpoints https://127.0.0.1:{PORT} {TLS} compaction 2"),
        raw("--endpoints https://localhost:{PORT} {TLS} get k"),
        raw("--endpoints 127.0.0.1:{PORT} {TLS} get k"),
        raw("--endpoints https://127.0.0.1:{PORT} --insecure-skip-tls-verify --cert {CERT} --key {KEY} get k"),
        raw("--endpoints 127.0.0.1:{PORT} --insecure-transport=false --insecure-skip-tls-verify --cert {CERT} --key {KEY} get k"),
        raw("--endpoints https://127.0.0.1:{PORT} --cacert {CA} --cert {CERT} get k"),
        raw("--endpoints https://127.0.0.1:{PORT} --cacert {KEY} --cert {CERT} --key {KEY} get k"),
        // Handshakes that fail (the server refuses the missing client certificate, we refuse
        // its unknown authority, plain text to a TLS port) until the deadline.
        raw("--endpoints https://127.0.0.1:{PORT} --cacert {CA} --command-timeout 1s get k").connect_race(),
        raw("--endpoints https://127.0.0.1:{PORT} --cert {CERT} --key {KEY} --command-timeout 1s get k").connect_race(),
        raw("--endpoints https://127.0.0.1:{PORT} --cert {CERT} --key {KEY} --command-timeout 1s endpoint hashkv").connect_race(),
        raw("--endpoints 127.0.0.1:{PORT} --command-timeout 1s get k").connect_race(),
    ]);
    s
}

/// Expand `{EP}`/`{DEAD}` (and the TLS placeholders) and prepend `--endpoints` where the step
/// asks for it.
fn expand(
    step: &Step,
    ep: &str,
    dead: &str,
    certs: Option<&Certs>,
) -> (Vec<String>, Vec<(String, String)>) {
    let port = ep.rsplit(':').next().unwrap_or_default();
    let sub = |s: &str| {
        let mut s = s
            .replace("{EP}", ep)
            .replace("{DEAD}", dead)
            .replace("{PORT}", port);
        if let Some(c) = certs {
            s = s
                .replace("{CA}", &c.path("ca.pem"))
                .replace("{CERT}", &c.path("client.pem"))
                .replace("{KEY}", &c.path("client.key"));
        }
        s
    };
    let mut args = Vec::new();
    if step.endpoints {
        args.push("--endpoints".to_string());
        args.push(ep.to_string());
    }
    for a in &step.args {
        if a == "{TLS}" {
            args.extend(
                ["--cacert", "{CA}", "--cert", "{CERT}", "--key", "{KEY}"]
                    .iter()
                    .map(|t| sub(t)),
            );
        } else {
            args.push(sub(a));
        }
    }
    let env = step.env.iter().map(|(k, v)| (k.clone(), sub(v))).collect();
    (args, env)
}

/// Where the script runs.
struct Setup<'a> {
    etcd: &'a Path,
    etcdctl: &'a Path,
    /// Client, peer and a dead port.
    ports: (u16, u16, u16),
    certs: Option<&'a Certs>,
}

/// Run the whole script with `tool` against a fresh etcd on the given ports.
fn run_script(setup: &Setup, tool: &Path, steps: &[Step]) -> Vec<Outcome> {
    let (client_port, peer_port, dead_port) = setup.ports;
    let server = Etcd::start(
        setup.etcd,
        setup.etcdctl,
        client_port,
        peer_port,
        setup.certs,
    );
    let ep = format!("127.0.0.1:{}", server.client_port);
    let dead = format!("127.0.0.1:{dead_port}");
    let granted = regex::bytes::Regex::new(r"lease ([0-9a-f]{16}) granted").expect("regex");
    let mut last_lease = String::new();
    let mut mark = String::new();
    let mut slots: HashMap<&'static str, Background> = HashMap::new();
    let limit = Duration::from_secs(30);
    let mut outcomes = Vec::new();
    for step in steps {
        if step.mark {
            mark = (current_revision(setup.etcdctl, &ep) + 1).to_string();
        }
        let (mut args, mut env) = expand(step, &ep, &dead, setup.certs);
        let sub = |s: &mut String| *s = s.replace("{LEASE}", &last_lease).replace("{MARK}", &mark);
        args.iter_mut().for_each(sub);
        env.iter_mut().for_each(|(_, v)| sub(v));
        let program = if step.setup { setup.etcdctl } else { tool };
        let outcome = match step.bg {
            Bg::No => run(program, &args, step.stdin.as_deref(), &env, limit),
            Bg::Spawn(slot) => {
                slots.insert(slot, Background::spawn(program, &args, &env));
                Outcome::default()
            }
            Bg::Await(slot, marker) => {
                slots[slot].wait_for(marker.as_bytes(), limit);
                Outcome::default()
            }
            Bg::Join(slot, marker, signal) => {
                let bg = slots.remove(slot).expect("a spawned slot");
                if let Some(m) = marker {
                    bg.wait_for(m.as_bytes(), limit);
                }
                if signal {
                    bg.interrupt();
                }
                bg.finish(limit)
            }
        };
        if let Some(c) = granted.captures(&outcome.stdout) {
            last_lease = String::from_utf8_lossy(&c[1]).into_owned();
        }
        outcomes.push(outcome);
    }
    outcomes
}

/// The store's revision, asked with etcdctl.
fn current_revision(etcdctl: &Path, ep: &str) -> i64 {
    let args: Vec<String> = ["--endpoints", ep, "get", "revision-probe", "-w", "json"]
        .map(String::from)
        .to_vec();
    let out = run(etcdctl, &args, None, &[], Duration::from_secs(30));
    let text = String::from_utf8_lossy(&out.stdout);
    text.split("\"revision\":")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("no revision in {text:?}"))
}

/// Output for a failure report: text, shortened.
fn show(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut s: String = text.chars().take(1500).collect();
    if text.chars().count() > 1500 {
        s.push_str("...");
    }
    s
}

/// Run `steps` with etcdctl, then with ketchctl, each against a fresh member, and list the
/// commands whose (normalised) output differs.
fn compare(setup: &Setup, steps: &[Step]) -> (usize, Vec<String>) {
    let ketchctl = PathBuf::from(env!("CARGO_BIN_EXE_ketchctl"));
    let expected = run_script(setup, setup.etcdctl, steps);
    let actual = run_script(setup, &ketchctl, steps);
    let norm = normalize::Normalizer::new();
    let normalized = |outcomes: &[Outcome]| {
        let all: Vec<_> = steps
            .iter()
            .zip(outcomes)
            .map(|(step, o)| {
                // `endpoint status` reports the backend's size, which depends on commit batching.
                let sizes = step
                    .args
                    .windows(2)
                    .any(|w| w[0] == "endpoint" && w[1] == "status");
                let mut n = norm.apply(o, step.timing, sizes);
                if step.remaining {
                    n.0 = norm.mask_remaining_ttl(&n.0);
                }
                if step.lease_keys {
                    n.0 = norm.mask_json_keys(&n.0);
                }
                n
            })
            .collect();
        norm.mask_lease_ids(all)
    };
    let (expected, actual) = (normalized(&expected), normalized(&actual));
    let mut failures = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        if step.setup {
            continue;
        }
        let (want, got) = (expected[i].clone(), actual[i].clone());
        let same = want == got
            || (step.connect_race
                && want.0 == got.0
                && want.2 == got.2
                && norm.same_but_deadline_wording(&want.1, &got.1));
        if !same {
            let mut report = format!("step {i}: {:?} (env {:?})\n", step.args, step.env);
            if want.0 != got.0 {
                report += &format!(
                    "  stdout etcdctl:  {:?}\n  stdout ketchctl: {:?}\n",
                    show(&want.0),
                    show(&got.0)
                );
            }
            if want.1 != got.1 {
                report += &format!(
                    "  stderr etcdctl:  {:?}\n  stderr ketchctl: {:?}\n",
                    show(&want.1),
                    show(&got.1)
                );
            }
            if want.2 != got.2 {
                report += &format!("  exit etcdctl: {}  ketchctl: {}\n", want.2, got.2);
            }
            failures.push(report);
        }
    }
    (steps.iter().filter(|s| !s.setup).count(), failures)
}

fn assert_identical(name: &str, (compared, failures): (usize, Vec<String>)) {
    assert!(
        failures.is_empty(),
        "{name}: {} of {compared} commands differ from etcdctl:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("{name}: {compared} commands identical to etcdctl");
}

fn tools() -> Option<(PathBuf, PathBuf)> {
    match (which("etcd"), which("etcdctl")) {
        (Some(etcd), Some(etcdctl)) => Some((etcd, etcdctl)),
        _ => None,
    }
}

#[test]
fn ketchctl_matches_etcdctl_byte_for_byte() {
    let Some((etcd, etcdctl)) = tools() else {
        eprintln!("skipping ketchctl_matches_etcdctl_byte_for_byte: `etcd` and `etcdctl` (3.4) must be on PATH");
        return;
    };
    let setup = Setup {
        etcd: &etcd,
        etcdctl: &etcdctl,
        ports: (free_port(), free_port(), free_port()),
        certs: None,
    };
    assert_identical("plain", compare(&setup, &script()));
}

#[test]
fn ketchctl_matches_etcdctl_over_tls() {
    let Some((etcd, etcdctl)) = tools() else {
        eprintln!("skipping ketchctl_matches_etcdctl_over_tls: `etcd` and `etcdctl` (3.4) must be on PATH");
        return;
    };
    let Some(certs) = Certs::generate() else {
        eprintln!(
            "skipping ketchctl_matches_etcdctl_over_tls: `openssl` is needed to make certificates"
        );
        return;
    };
    let setup = Setup {
        etcd: &etcd,
        etcdctl: &etcdctl,
        ports: (free_port(), free_port(), free_port()),
        certs: Some(&certs),
    };
    assert_identical("tls", compare(&setup, &tls_script()));
}

/// The keys under `prefix`, asked with etcdctl.
fn keys_under(etcdctl: &Path, ep: &str, prefix: &str) -> Vec<String> {
    let args: Vec<String> = ["--endpoints", ep, "get", "--prefix", prefix, "--keys-only"]
        .map(String::from)
        .to_vec();
    let out = run(etcdctl, &args, None, &[], Duration::from_secs(30));
    assert_eq!(out.code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

/// Poll until `prefix` holds `n` keys (a locker has queued, or let go).
fn wait_for_keys(etcdctl: &Path, ep: &str, prefix: &str, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let keys = keys_under(etcdctl, ep, prefix);
        if keys.len() == n {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{prefix}: {keys:?}, expected {n} keys"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// ketchctl's and etcdctl's `lock` on one name against one server: whichever holds it, the
/// other queues behind it and gets it only after Ctrl-C unlocks; a queued locker interrupted
/// gives up its place.
#[test]
fn ketchctl_and_etcdctl_locks_exclude_each_other() {
    let Some((etcd, etcdctl)) = tools() else {
        eprintln!("skipping ketchctl_and_etcdctl_locks_exclude_each_other: `etcd` and `etcdctl` (3.4) must be on PATH");
        return;
    };
    let ketchctl = PathBuf::from(env!("CARGO_BIN_EXE_ketchctl"));
    let server = Etcd::start(&etcd, &etcdctl, free_port(), free_port(), None);
    let ep = format!("127.0.0.1:{}", server.client_port);
    let limit = Duration::from_secs(30);
    let args = |extra: &[&str]| -> Vec<String> {
        ["--endpoints", ep.as_str(), "lock", "--ttl", "30"]
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect()
    };
    for (i, (first, second)) in [(&etcdctl, &ketchctl), (&ketchctl, &etcdctl)]
        .into_iter()
        .enumerate()
    {
        let name = format!("mx{i}");
        let prefix = format!("{name}/");
        let holder = Background::spawn(first, &args(&[&name]), &[]);
        holder.wait_for(prefix.as_bytes(), limit);
        let waiter = Background::spawn(second, &args(&[&name, "--", "echo", "second"]), &[]);
        // Queued behind the holder, and not running its command.
        wait_for_keys(&etcdctl, &ep, &prefix, 2);
        assert_eq!(
            waiter.stdout_now(),
            b"",
            "{} ran while {} held the lock",
            second.display(),
            first.display()
        );
        // A third locker queued behind both, interrupted, leaves the line.
        let quitter = Background::spawn(second, &args(&[&name]), &[]);
        wait_for_keys(&etcdctl, &ep, &prefix, 3);
        quitter.interrupt();
        let q = quitter.finish(limit);
        assert_eq!(
            (q.code, String::from_utf8_lossy(&q.stderr).into_owned()),
            (1, "Error: context canceled\n".to_string())
        );
        wait_for_keys(&etcdctl, &ep, &prefix, 2);
        assert_eq!(waiter.stdout_now(), b"");
        // Ctrl-C unlocks: the waiter gets the lock, runs its command and unlocks.
        holder.interrupt();
        let h = holder.finish(limit);
        assert_eq!(h.code, 0, "{}", String::from_utf8_lossy(&h.stderr));
        let w = waiter.finish(limit);
        assert_eq!(
            (w.code, w.stdout.as_slice()),
            (0, &b"second\n"[..]),
            "{}",
            String::from_utf8_lossy(&w.stderr)
        );
        wait_for_keys(&etcdctl, &ep, &prefix, 0);
    }
}
