//! ketchctl: a drop-in replacement for etcdctl's v3 API (`ETCDCTL_API=3`). Same commands,
//! flags, `ETCDCTL_*` variables, output formats, error texts and exit codes, so scripts written
//! against etcdctl 3.4 keep working byte for byte.
//!
//! The layers: [`cli`] turns argv into a command (cobra and pflag's rules), [`global`] turns the
//! global flags into a [`client::Client`] and a [`printer::Printer`], and one module per
//! command group runs the command: [`kv`], [`txn`], [`cluster`], [`endpoint`], [`lease`],
//! [`watch`], and [`concurrency`] (`lock`, `elect`).

mod cli;
mod client;
mod cluster;
mod concurrency;
mod endpoint;
mod error;
mod global;
mod gofmt;
mod kv;
mod lease;
mod logline;
mod printer;
mod txn;
mod watch;

use std::io::Write;
use std::os::unix::ffi::OsStringExt;

use cli::parse::{self, Invocation, ParseError, Parsed};
use cli::spec::{self, Action, ROOT_NAME};
use cli::usage;
use error::{CtlError, CtlResult, EXIT_ERROR};

fn main() {
    let code = run();
    let _ = std::io::stdout().flush();
    std::process::exit(code);
}

fn run() -> i32 {
    // etcdctl picks its API from ETCDCTL_API before anything else; ketchctl has only v3.
    if let Some(api) = std::env::var_os("ETCDCTL_API") {
        let api = api.to_string_lossy();
        if !api.is_empty() && api != "3" {
            let _ = writeln!(std::io::stderr(), "unsupported API version {api}");
            return EXIT_ERROR;
        }
    }
    let args: Vec<Vec<u8>> = std::env::args_os()
        .skip(1)
        .map(OsStringExt::into_vec)
        .collect();
    let root = spec::root();
    match parse::parse(&root, &args) {
        Ok(Parsed::Run(mut inv)) => {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return report(&CtlError::error(e.to_string())),
            };
            match runtime.block_on(dispatch(&root, &mut inv)) {
                Ok(()) => 0,
                Err(e) => report(&e),
            }
        }
        Ok(Parsed::Help(inv)) => {
            print_usage(&inv);
            0
        }
        Err(ParseError::UnknownCommand { message, .. }) => {
            // cobra reports it, then etcdctl reports the error cobra returned.
            let _ = write!(
                std::io::stderr(),
                "Error: {message}\nRun '{ROOT_NAME} --help' for usage.\n"
            );
            report(&CtlError::error(message))
        }
        Err(ParseError::Flag {
            invocation,
            message,
        }) => {
            // cobra: the error, the usage (which etcdctl's usage function writes to stdout),
            // an empty line; then etcdctl's own report.
            let _ = writeln!(std::io::stderr(), "Error: {message}");
            print_usage(&invocation);
            let _ = writeln!(std::io::stderr());
            report(&CtlError::error(message))
        }
    }
}

/// Print the error etcdctl would print and return its exit code.
fn report(e: &CtlError) -> i32 {
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().write_all(e.stderr_text().as_bytes());
    e.code
}

fn print_usage(inv: &Invocation) {
    let text = usage::etcdctl_usage(&inv.path, &inv.flags);
    let _ = std::io::stdout().write_all(text.as_bytes());
}

async fn dispatch(root: &spec::Command, inv: &mut Invocation<'_>) -> CtlResult {
    match inv.command().action {
        Some(Action::Get) => kv::get(inv).await,
        Some(Action::Put) => kv::put(inv).await,
        Some(Action::Del) => kv::del(inv).await,
        Some(Action::Compaction) => kv::compaction(inv).await,
        Some(Action::Txn) => txn::run(inv).await,
        Some(Action::MemberList) => cluster::member_list(inv).await,
        Some(Action::EndpointHealth) => endpoint::health(inv).await,
        Some(Action::EndpointStatus) => endpoint::status(inv).await,
        Some(Action::EndpointHashKv) => endpoint::hashkv(inv).await,
        Some(Action::LeaseGrant) => lease::grant(inv).await,
        Some(Action::LeaseRevoke) => lease::revoke(inv).await,
        Some(Action::LeaseTimeToLive) => lease::time_to_live(inv).await,
        Some(Action::LeaseList) => lease::list(inv).await,
        Some(Action::LeaseKeepAlive) => lease::keep_alive(inv).await,
        Some(Action::Lock) => concurrency::lock(inv).await,
        Some(Action::Elect) => concurrency::elect(inv).await,
        Some(Action::Watch) => watch::run(inv).await,
        Some(Action::Version) => version(),
        Some(Action::Help) => help(root, &inv.args),
        Some(Action::NotImplemented) | None => {
            let path: Vec<&str> = inv.path[1..].iter().map(|c| c.name()).collect();
            Err(CtlError::error(format!(
                "ketchctl does not implement \"{}\" yet",
                path.join(" ")
            )))
        }
    }
}

fn version() -> CtlResult {
    let (version, api) = usage::versions();
    writeln!(
        std::io::stdout().lock(),
        "etcdctl version: {version}\nAPI version: {api}"
    )?;
    Ok(())
}

/// cobra's `help [command]`: the command's usage, or the root's after "Unknown help topic".
fn help(root: &spec::Command, topic: &[Vec<u8>]) -> CtlResult {
    match parse::find(root, topic) {
        Ok((path, _)) => {
            let flags = parse::command_flags(&path);
            std::io::stdout().write_all(usage::etcdctl_usage(&path, &flags).as_bytes())?;
        }
        Err(_) => {
            let words: Vec<String> = topic.iter().map(|t| go_backquote(t)).collect();
            writeln!(
                std::io::stderr(),
                "Unknown help topic [{}]",
                words.join(" ")
            )?;
            // The root never ran, so cobra has not given it a --help flag to list.
            let path = vec![root];
            std::io::stdout()
                .write_all(usage::etcdctl_usage(&path, &parse::lookup_flags(&path)).as_bytes())?;
        }
    }
    Ok(())
}

/// Go's `%#q`: back-quoted when possible, else double-quoted.
fn go_backquote(s: &[u8]) -> String {
    match std::str::from_utf8(s) {
        Ok(t)
            if !t.contains('`')
                && !t
                    .chars()
                    .any(|c| (c.is_control() && c != '\t') || c == '\u{feff}') =>
        {
            format!("`{t}`")
        }
        _ => gofmt::quote(s),
    }
}
