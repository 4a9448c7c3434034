//! ketch-bench: etcd's `tools/benchmark` scenarios against any etcd-compatible endpoint, and
//! `compare-report`, which turns the result files of `bench/compare.sh` into a Ketch/etcd
//! ratio table and an SVG of the latency distributions.
//!
//! Exit status: 0 measured, 1 error, 2 usage, 3 skipped (the server lacks the service),
//! 4 measured but the watch verification failed.

mod client;
mod compare;
mod disk;
mod flags;
mod kv;
mod lease;
mod report;
mod runner;
mod watch;

use std::process::ExitCode;

use serde_json::{json, Value};

use crate::client::Target;
use crate::flags::Flags;
use crate::report::Summary;

const USAGE: &str = "\
ketch-bench: etcd benchmark's scenarios against any etcd-compatible endpoint

Usage: ketch-bench [global flags] <scenario> [flags]

Global flags:
  --endpoints=127.0.0.1:2379   comma-separated gRPC endpoints (host:port or URLs)
  --conns=1                    gRPC connections, spread over the endpoints
  --clients=1                  concurrent clients, sharing the connections round-robin
  --cacert --cert --key        TLS: CA bundle, client certificate and key (PEM)
  --json                       print the result as one JSON object instead of text
  --target-name=NAME           label carried into --json output

Scenarios:
  put              --total=10000 --key-size=8 --val-size=8 --key-space-size=1 --sequential-keys
  range <key> [end] --total=10000 --consistency=l|s --count-only --limit=0
  txn-put          --total=10000 --key-size=8 --val-size=8 --key-space-size=1 --txn-ops=1
  watch            --streams=10 --watch-per-stream=100 --watched-key-total=1 --put-total=1000
                   --put-rate=0 (0: full speed) --put-clients=1 --key-size=32 --val-size=32
  watch-latency    --put-total=1000 --put-rate=100 --key-size=32 --val-size=32 (one watcher per client)
  lease-keepalive  --total=10000
  mixed            --total=10000 --read-ratio=0.9 --consistency=l|s --key-size=8 --val-size=8
                   --key-space-size=1000 (random keys, all put once before the clock starts)
  fsync            --dir=. --total=1000 --size=512 (the disk's floor: write + fdatasync)
  compare-report <results-dir> [--svg=FILE]   the table and plot of bench/compare.sh

Exit status: 0 measured, 1 error, 2 usage, 3 skipped (server lacks the service),
4 watch verification failed.
";

/// What a scenario produced: a measurement, or a reason it could not run.
pub struct Outcome {
    pub scenario: &'static str,
    pub summary: Option<Summary>,
    pub skipped: Option<String>,
    pub notes: Vec<String>,
    /// Secondary measurements (watcher creation, the puts behind a watch run).
    pub sections: Vec<(String, Summary)>,
    pub extra: Value,
    pub failed: bool,
}

impl Outcome {
    pub fn measured(scenario: &'static str, summary: Summary) -> Outcome {
        Outcome {
            scenario,
            summary: Some(summary),
            skipped: None,
            notes: Vec::new(),
            sections: Vec::new(),
            extra: Value::Null,
            failed: false,
        }
    }

    pub fn skipped(scenario: &'static str, reason: String) -> Outcome {
        Outcome {
            scenario,
            summary: None,
            skipped: Some(reason),
            notes: Vec::new(),
            sections: Vec::new(),
            extra: Value::Null,
            failed: false,
        }
    }

    fn print(&self, flags: &Flags, target: &Target) {
        if flags.bool("json") {
            let doc = json!({
                "scenario": self.scenario,
                "target": flags.opt("target-name"),
                "endpoints": target.endpoints,
                "conns": target.conns,
                "clients": target.clients,
                "args": std::env::args().skip(1).collect::<Vec<_>>(),
                "skipped": self.skipped,
                "summary": self.summary.as_ref().map(Summary::json),
                "sections": self.sections.iter().map(|(t, s)| (t.clone(), s.json())).collect::<serde_json::Map<_, _>>(),
                "notes": self.notes,
                "extra": self.extra,
                "failed": self.failed,
            });
            println!("{doc}");
            return;
        }
        if let Some(reason) = &self.skipped {
            println!("SKIP {}: {reason}", self.scenario);
            return;
        }
        for note in &self.notes {
            println!("{note}");
        }
        if let Some(s) = &self.summary {
            print!("{}", s.text());
        }
        for (title, s) in &self.sections {
            println!("\n--- {title} ---");
            print!("{}", s.text());
        }
    }

    fn exit_code(&self) -> ExitCode {
        match (&self.skipped, self.failed) {
            (Some(_), _) => ExitCode::from(3),
            (None, true) => ExitCode::from(4),
            // Every request failed: nothing was measured, and a script must not read it as a result.
            (None, false)
                if self
                    .summary
                    .as_ref()
                    .is_some_and(|s| s.count == 0 && !s.errors.is_empty()) =>
            {
                ExitCode::from(1)
            }
            (None, false) => ExitCode::SUCCESS,
        }
    }
}

fn main() -> ExitCode {
    let flags = match Flags::parse(std::env::args().skip(1)) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("Error: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let Some(scenario) = flags.positionals.first().cloned() else {
        eprint!("{USAGE}");
        return ExitCode::from(if flags.bool("help") { 0 } else { 2 });
    };
    if flags.bool("help") {
        print!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    if scenario == "compare-report" {
        return match compare::run(&flags) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("Error: {e}");
                ExitCode::from(1)
            }
        };
    }
    let target = match Target::from_flags(&flags) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("Error: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(async {
        match scenario.as_str() {
            "put" => kv::put(&target, &flags).await,
            "range" => kv::range(&target, &flags).await,
            "txn-put" => kv::txn_put(&target, &flags).await,
            "watch" => watch::watch(&target, &flags).await,
            "watch-latency" => watch::watch_latency(&target, &flags).await,
            "lease-keepalive" => lease::keepalive(&target, &flags).await,
            "mixed" => kv::mixed(&target, &flags).await,
            "fsync" => disk::fsync(&flags),
            other => Err(format!("unknown scenario {other:?}\n\n{USAGE}")),
        }
    });
    match result {
        Ok(outcome) => {
            outcome.print(&flags, &target);
            outcome.exit_code()
        }
        Err(e) => {
            if flags.bool("json") {
                println!(
                    "{}",
                    json!({ "scenario": scenario, "target": flags.opt("target-name"), "error": e })
                );
            }
            eprintln!("Error: {e}");
            ExitCode::from(1)
        }
    }
}
