//! Differential testing: the same etcdctl script against a fresh ketch and a fresh real etcd,
//! with outputs compared after [`crate::normalize`]. Both clusters start empty, so revisions
//! must match exactly.
//!
//! ```no_run
//! use ketch_tests::{compare, ctl};
//! compare(&[
//!     ctl(["put", "a", "1"]).ok(),
//!     ctl(["get", "a", "-w", "json"]).ok(),
//!     ctl(["get", "a", "--rev", "99"]).fails_with("required revision is a future revision"),
//! ]);
//! ```

use crate::bins::Kind;
use crate::diff::line_diff;
use crate::etcdctl::{shell_words, CtlOutput};
use crate::normalize::{normalize, Normalized, Ports};
use crate::server::Server;

/// One etcdctl invocation of a script, with what the test expects of it.
#[derive(Debug, Clone)]
pub struct Step {
    pub args: Vec<String>,
    pub stdin: Option<Vec<u8>>,
    expects: Vec<Expect>,
}

#[derive(Debug, Clone)]
enum Expect {
    Success,
    Failure,
    StdoutIs(String),
    StdoutContains(String),
    StderrContains(String),
}

/// A step running `etcdctl <args>`.
pub fn ctl<I, S>(args: I) -> Step
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    Step {
        args: args.into_iter().map(Into::into).collect(),
        stdin: None,
        expects: Vec::new(),
    }
}

impl Step {
    /// Feeds `input` to etcdctl's stdin.
    pub fn stdin(mut self, input: impl Into<Vec<u8>>) -> Step {
        self.stdin = Some(input.into());
        self
    }

    /// Expect exit code 0.
    pub fn ok(mut self) -> Step {
        self.expects.push(Expect::Success);
        self
    }

    /// Expect a non-zero exit.
    pub fn fails(mut self) -> Step {
        self.expects.push(Expect::Failure);
        self
    }

    /// Expect a non-zero exit with `text` in stderr.
    pub fn fails_with(mut self, text: &str) -> Step {
        self.expects.push(Expect::Failure);
        self.expects.push(Expect::StderrContains(text.to_string()));
        self
    }

    /// Expect exactly this stdout.
    pub fn stdout(mut self, text: &str) -> Step {
        self.expects.push(Expect::StdoutIs(text.to_string()));
        self
    }

    pub fn stdout_contains(mut self, text: &str) -> Step {
        self.expects.push(Expect::StdoutContains(text.to_string()));
        self
    }

    pub fn stderr_contains(mut self, text: &str) -> Step {
        self.expects.push(Expect::StderrContains(text.to_string()));
        self
    }

    fn describe(&self) -> String {
        let mut s = format!("etcdctl {}", shell_words(&self.args));
        if let Some(input) = &self.stdin {
            let shown = String::from_utf8_lossy(&input[..input.len().min(300)]).into_owned();
            s.push_str(&format!("  <<< stdin ({} bytes): {shown:?}", input.len()));
        }
        s
    }

    /// Violated expectations, as messages.
    fn check(&self, out: &CtlOutput) -> Vec<String> {
        let stdout = out.stdout_str();
        let stderr = out.stderr_str();
        self.expects
            .iter()
            .filter_map(|e| match e {
                Expect::Success if !out.success() => Some("expected exit 0".to_string()),
                Expect::Failure if out.success() => Some("expected a failure".to_string()),
                Expect::StdoutIs(t) if stdout != *t => Some(format!("expected stdout {t:?}")),
                Expect::StdoutContains(t) if !stdout.contains(t) => {
                    Some(format!("expected stdout to contain {t:?}"))
                }
                Expect::StderrContains(t) if !stderr.contains(t) => {
                    Some(format!("expected stderr to contain {t:?}"))
                }
                _ => None,
            })
            .collect()
    }
}

/// Runs every step in order against one server.
pub fn run_script(server: &Server, steps: &[Step]) -> Vec<CtlOutput> {
    let ctl = server.etcdctl();
    steps
        .iter()
        .map(|s| ctl.run_with_stdin(&s.args, s.stdin.as_deref()))
        .collect()
}

/// Both sides' raw outputs, for further assertions.
#[derive(Debug)]
pub struct Comparison {
    pub ketch: Vec<CtlOutput>,
    pub etcd: Vec<CtlOutput>,
}

/// Runs `steps` against a fresh ketch and a fresh real etcd and panics, with a diff per
/// disagreeing step, unless the normalised outputs are equal. The steps' expectations are
/// checked on etcd first: if etcd itself does not meet them, the test is wrong, and the
/// panic says so.
#[track_caller]
pub fn compare(steps: &[Step]) -> Comparison {
    // Spawn both from this thread (servers die with the thread that spawned them), then wait
    // for both; they boot concurrently.
    let mut servers = Server::start_all(vec![
        Server::builder(Kind::Ketch),
        Server::builder(Kind::Etcd),
    ]);
    let etcd_server = servers.pop().expect("etcd");
    let ketch_server = servers.pop().expect("ketch");
    let (ketch, etcd) = std::thread::scope(|s| {
        let k = s.spawn(|| run_script(&ketch_server, steps));
        let e = s.spawn(|| run_script(&etcd_server, steps));
        (join(k), join(e))
    });

    let mut problems = String::new();
    for (i, (step, out)) in steps.iter().zip(&etcd).enumerate() {
        let violated = step.check(out);
        if !violated.is_empty() {
            problems.push_str(&format!(
                "step {}: {}\n  {}\n{}\n",
                i + 1,
                step.describe(),
                violated.join("; "),
                indent(&out.transcript())
            ));
        }
    }
    if !problems.is_empty() {
        panic!(
            "the test's expectations do not hold on the reference etcd itself — fix the test:\n\
             {problems}"
        );
    }

    let ports = |s: &Server| Ports {
        client: s.client_port(),
        peer: s.peer_port(),
    };
    let (kp, ep) = (ports(&ketch_server), ports(&etcd_server));
    let mut report = String::new();
    let mut differing = 0;
    for (i, step) in steps.iter().enumerate() {
        let k: Normalized = normalize(&ketch[i], kp);
        let e: Normalized = normalize(&etcd[i], ep);
        if k != e {
            differing += 1;
            report.push_str(&format!(
                "\n==== step {} of {}: {}\n{}",
                i + 1,
                steps.len(),
                step.describe(),
                line_diff(&e.transcript(), &k.transcript())
            ));
        }
    }
    if differing > 0 {
        panic!(
            "{} and etcd disagree on {differing} of {} steps \
             (diff lines: '-' etcd, '+' {}, ' ' both; after normalising ids, terms, ports, \
             timings):{report}",
            Kind::Ketch.label(),
            steps.len(),
            Kind::Ketch.label(),
        );
    }
    // Expectations on ketch follow from equality, except where normalisation hid something.
    for (i, (step, out)) in steps.iter().zip(&ketch).enumerate() {
        let violated = step.check(out);
        assert!(
            violated.is_empty(),
            "step {} on {}: {}: {}\n{}",
            i + 1,
            Kind::Ketch.label(),
            step.describe(),
            violated.join("; "),
            out.transcript()
        );
    }
    Comparison { ketch, etcd }
}

fn join<T>(h: std::thread::ScopedJoinHandle<'_, T>) -> T {
    h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs `scenario` against a fresh ketch and a fresh real etcd (each built by `builder`, in
/// parallel) and panics, with a diff per disagreeing run, unless the normalised outputs it
/// returns are equal. For scripts that need more than one etcdctl at a time (a `watch` left
/// running while other commands write).
#[track_caller]
pub fn compare_scenario<B, F>(builder: B, scenario: F) -> Comparison
where
    B: Fn(Kind) -> crate::server::ServerBuilder,
    F: Fn(&Server) -> Vec<CtlOutput> + Sync,
{
    let mut servers = Server::start_all(vec![builder(Kind::Ketch), builder(Kind::Etcd)]);
    let etcd_server = servers.pop().expect("etcd");
    let ketch_server = servers.pop().expect("ketch");
    let (ketch, etcd) = std::thread::scope(|s| {
        let k = s.spawn(|| scenario(&ketch_server));
        let e = s.spawn(|| scenario(&etcd_server));
        (join(k), join(e))
    });
    assert_eq!(
        ketch.len(),
        etcd.len(),
        "the scenario returned different numbers of runs"
    );
    let ports = |s: &Server| Ports {
        client: s.client_port(),
        peer: s.peer_port(),
    };
    let (kp, ep) = (ports(&ketch_server), ports(&etcd_server));
    let mut report = String::new();
    for (i, (k, e)) in ketch.iter().zip(&etcd).enumerate() {
        let (k, e) = (normalize(k, kp), normalize(e, ep));
        if k != e {
            report.push_str(&format!(
                "\n==== run {} of {}\n{}",
                i + 1,
                ketch.len(),
                line_diff(&e.transcript(), &k.transcript())
            ));
        }
    }
    if !report.is_empty() {
        panic!(
            "{} and etcd disagree (diff lines: '-' etcd, '+' {}, ' ' both):{report}",
            Kind::Ketch.label(),
            Kind::Ketch.label()
        );
    }
    Comparison { ketch, etcd }
}
