//! `watch`: a key, a range or a prefix, from a revision, printing each response as it comes;
//! with `-- cmd args...` a command runs for every event, and `-i` reads `watch ...` and
//! `progress` lines from stdin. Also the watch stream `lock` and `elect` wait with.

use std::io::{BufRead, Write};
use std::os::unix::ffi::OsStringExt;

use ketch_api::etcdserverpb::watch_client::WatchClient;
use ketch_api::etcdserverpb::watch_request::RequestUnion;
use ketch_api::etcdserverpb::{
    WatchCreateRequest, WatchProgressRequest, WatchRequest, WatchResponse,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::cli::flags::FlagSet;
use crate::cli::parse::{self, Invocation};
use crate::cli::spec::watch_command;
use crate::client::{Client, RpcError};
use crate::error::{CtlError, CtlResult, EXIT_BAD_ARGS, EXIT_ERROR, EXIT_INTERRUPTED};
use crate::global;
use crate::gofmt;
use crate::kv::prefix_end;
use crate::printer::Printer;

const BAD_ARGS_NUM: &str = "bad number of arguments";
const BAD_ARGS_CONFLICT_ENV: &str = "bad number of arguments (found conflicting environment key)";
const BAD_ARGS_SEPARATOR: &str = "bad number of arguments (found separator --, but no commands)";
const BAD_ARGS_INTERACTIVE: &str = "args[0] must be 'watch' for interactive calls";

/// One watch (clientv3's watcher channel): responses after the creation notice. A stream
/// that breaks is reopened from the revision after the last one delivered, as clientv3
/// resumes; an error the server returns ends the watch.
pub struct Watcher<'c> {
    client: &'c Client,
    create: WatchCreateRequest,
    require_leader: bool,
    stream: tonic::Streaming<WatchResponse>,
    requests: mpsc::Sender<WatchRequest>,
    /// Set once the watch has ended.
    ended: bool,
}

impl<'c> Watcher<'c> {
    /// Open a stream and create `create` on it (with clientv3's `WithRequireLeader` when
    /// `require_leader`).
    pub async fn open(
        client: &'c Client,
        create: WatchCreateRequest,
        require_leader: bool,
    ) -> Result<Watcher<'c>, RpcError> {
        let (stream, requests) = Self::connect(client, &create, require_leader).await?;
        Ok(Watcher {
            client,
            create,
            require_leader,
            stream,
            requests,
            ended: false,
        })
    }

    async fn connect(
        client: &Client,
        create: &WatchCreateRequest,
        require_leader: bool,
    ) -> Result<(tonic::Streaming<WatchResponse>, mpsc::Sender<WatchRequest>), RpcError> {
        let (tx, rx) = mpsc::channel(4);
        // Queued before the call: the server sends its headers with its first answer.
        let _ = tx
            .send(WatchRequest {
                request_union: Some(RequestUnion::CreateRequest(create.clone())),
            })
            .await;
        let (channel, request) = client
            .stream_request(ReceiverStream::new(rx), require_leader)
            .await?;
        let stream = WatchClient::new(channel)
            .max_decoding_message_size(usize::MAX)
            .watch(request)
            .await
            .map_err(|s| RpcError::from_status(&s))?
            .into_inner();
        Ok((stream, tx))
    }

    /// The next response for the user; `None` once the watch has ended. A canceled response
    /// (from the server, or made up for an error that ends the watch) comes once before the
    /// end.
    pub async fn next(&mut self) -> Option<WatchResponse> {
        loop {
            if self.ended {
                return None;
            }
            let failure = match self.stream.message().await {
                Ok(Some(resp)) => {
                    if resp.canceled {
                        self.ended = true;
                        return Some(resp);
                    }
                    if resp.created && resp.events.is_empty() {
                        if self.create.start_revision == 0 {
                            self.create.start_revision = resp.header.map_or(0, |h| h.revision) + 1;
                        }
                        continue;
                    }
                    if let Some(last) = resp.events.last().and_then(|e| e.kv.as_ref()) {
                        self.create.start_revision = last.mod_revision + 1;
                    }
                    return Some(resp);
                }
                Ok(None) => tonic::Status::unknown("EOF"),
                Err(status) => status,
            };
            if !matches!(
                failure.code(),
                tonic::Code::Unavailable | tonic::Code::Internal
            ) {
                self.ended = true;
                return Some(WatchResponse {
                    canceled: true,
                    cancel_reason: RpcError::from_status(&failure).to_string(),
                    ..Default::default()
                });
            }
            // Resume on a new stream once the server can be reached again.
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                if let Ok((stream, requests)) =
                    Self::connect(self.client, &self.create, self.require_leader).await
                {
                    self.stream = stream;
                    self.requests = requests;
                    break;
                }
            }
        }
    }
}

/// clientv3's `WatchResponse.Err()` for a canceled response.
pub fn cancel_error(r: &WatchResponse) -> String {
    if r.compact_revision != 0 {
        "etcdserver: mvcc: required revision has been compacted".to_string()
    } else if !r.cancel_reason.is_empty() {
        r.cancel_reason.clone()
    } else {
        "etcdserver: mvcc: required revision is a future revision".to_string()
    }
}

/// The watch's key (and range end), and the command to run per event.
type WatchArgs = (Vec<Vec<u8>>, Vec<Vec<u8>>);

/// `--prefix`, `--rev` and `--prev-kv`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct WatchOpts {
    prefix: bool,
    rev: i64,
    prev_kv: bool,
}

fn opts_from(flags: &FlagSet) -> WatchOpts {
    WatchOpts {
        prefix: flags.bool("prefix"),
        rev: flags.int("rev"),
        prev_kv: flags.bool("prev-kv"),
    }
}

/// The watch command's own flags, as `NewWatchCommand().Flags()` has them before running.
fn fresh_flags() -> FlagSet {
    let cmd = watch_command();
    let mut fs = FlagSet::default();
    for spec in &cmd.flags {
        fs.add(spec, true);
    }
    fs
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// etcdctl's `parseWatchArgs`: the watch's key (and range end) and the command to run per
/// event. `os_args` are the process's arguments (where `--` is still visible),
/// `command_args` what flag parsing left (or the interactive line's words). In interactive
/// mode the line's flags replace `opts`.
fn parse_watch_args(
    os_args: &[Vec<u8>],
    command_args: &[Vec<u8>],
    env_key: &[u8],
    env_range: &[u8],
    interactive: bool,
    opts: &mut WatchOpts,
) -> Result<WatchArgs, String> {
    let mut raw: &[Vec<u8>] = os_args;
    if let Some(i) = raw.iter().position(|a| a == b"watch") {
        raw = &raw[i + 1..];
    }
    let mut watch_args: Vec<Vec<u8>> = command_args.to_vec();
    if interactive {
        if watch_args.first().map(Vec::as_slice) != Some(b"watch") {
            *opts = WatchOpts::default();
            return Err(BAD_ARGS_INTERACTIVE.into());
        }
        watch_args.remove(0);
    }
    if !interactive {
        let exec_idx = raw.iter().position(|a| a == b"--");
        if let Some(i) = exec_idx {
            if i == raw.len() - 1 {
                return Err(BAD_ARGS_SEPARATOR.into());
            }
        }
        if exec_idx.is_none() && raw.is_empty() && env_key.is_empty() {
            return Err(BAD_ARGS_NUM.into());
        }
        if let (Some(exec_idx), false) = (exec_idx, env_key.is_empty()) {
            let mut ridx = raw.len() as isize - 1;
            for w in watch_args.iter().rev() {
                if ridx >= 0 && *w == raw[ridx as usize] {
                    ridx -= 1;
                    continue;
                }
                if ridx == exec_idx as isize {
                    return Err(BAD_ARGS_CONFLICT_ENV.into());
                }
            }
        }
        if exec_idx.is_none() && !watch_args.is_empty() && !env_key.is_empty() {
            return Err(BAD_ARGS_CONFLICT_ENV.into());
        }
    } else {
        let exec_idx = watch_args.iter().position(|a| a == b"--");
        if exec_idx.is_some_and(|i| i == watch_args.len() - 1) {
            *opts = WatchOpts::default();
            return Err(BAD_ARGS_SEPARATOR.into());
        }
        let mut fs = fresh_flags();
        let p_args = match parse::parse_flags(&watch_args, &mut fs) {
            Ok(a) => a,
            Err(e) => {
                *opts = WatchOpts::default();
                return Err(e);
            }
        };
        if exec_idx.is_none() && env_key.is_empty() && p_args.is_empty() {
            *opts = WatchOpts::default();
            return Err(BAD_ARGS_NUM.into());
        }
        if exec_idx.is_none() && !p_args.is_empty() && !env_key.is_empty() {
            *opts = WatchOpts::default();
            return Err(BAD_ARGS_CONFLICT_ENV.into());
        }
    }
    let with_sep: Vec<Vec<u8>> = if interactive {
        watch_args.clone()
    } else {
        raw.to_vec()
    };
    let sep = with_sep.iter().position(|a| a == b"--");
    let exec_args = sep.map(|i| with_sep[i + 1..].to_vec()).unwrap_or_default();
    if interactive {
        let mut fs = fresh_flags();
        watch_args = parse::parse_flags(&with_sep, &mut fs)?;
        *opts = opts_from(&fs);
    }
    if !env_key.is_empty() {
        let mut ranges = vec![env_key.to_vec()];
        if !env_range.is_empty() {
            ranges.push(env_range.to_vec());
        }
        ranges.extend(watch_args);
        watch_args = ranges;
    }
    let Some(sep) = sep else {
        return Ok((watch_args, Vec::new()));
    };
    // Flag parsing kept the command's words: cut at the last occurrence of its first word.
    let first = &with_sep[sep + 1];
    let end = watch_args.iter().rposition(|w| w == first).unwrap_or(0);
    watch_args.truncate(end);
    Ok((watch_args, exec_args))
}

/// etcdctl's `getWatchChan` checks, as a create request.
fn create_request(args: &[Vec<u8>], opts: WatchOpts) -> Result<WatchCreateRequest, String> {
    let Some(key) = args.first() else {
        return Err(BAD_ARGS_NUM.into());
    };
    let mut range_end = Vec::new();
    if args.len() == 2 {
        if opts.prefix {
            return Err("`range_end` and `--prefix` are mutually exclusive".into());
        }
        range_end = args[1].clone();
    }
    let mut key = key.clone();
    if opts.prefix {
        if key.is_empty() {
            key = vec![0];
            range_end = vec![0];
        } else {
            range_end = prefix_end(&key);
        }
    }
    Ok(WatchCreateRequest {
        key: key.into(),
        range_end: range_end.into(),
        start_revision: opts.rev,
        prev_kv: opts.prev_kv,
        ..Default::default()
    })
}

/// etcdctl's `printWatchCh`: print every response (and run the command per event) until the
/// watch ends.
async fn print_watch(
    mut w: Watcher<'_>,
    printer: &dyn Printer,
    exec_args: &[Vec<u8>],
) -> CtlResult {
    while let Some(resp) = w.next().await {
        let mut out = std::io::stdout().lock();
        if resp.canceled {
            let _ = writeln!(
                std::io::stderr(),
                "watch was canceled ({})",
                cancel_error(&resp)
            );
        }
        let progress =
            resp.events.is_empty() && !resp.canceled && !resp.created && resp.compact_revision == 0;
        if progress {
            writeln!(
                out,
                "progress notify: {}",
                resp.header.unwrap_or_default().revision
            )?;
        }
        printer.watch(&mut out, &resp)?;
        out.flush()?;
        drop(out);
        if !exec_args.is_empty() {
            for ev in &resp.events {
                run_for_event(exec_args, &resp, ev)?;
            }
        }
        if resp.canceled {
            break;
        }
    }
    Ok(())
}

fn run_for_event(
    exec_args: &[Vec<u8>],
    resp: &WatchResponse,
    ev: &ketch_api::mvccpb::Event,
) -> CtlResult {
    use std::os::unix::ffi::OsStrExt;
    let os = |b: &[u8]| std::ffi::OsStr::from_bytes(b).to_os_string();
    let kv = ev.kv.clone().unwrap_or_default();
    let kind = if ev.r#type == 1 { "DELETE" } else { "PUT" };
    let status = std::process::Command::new(os(&exec_args[0]))
        .args(exec_args[1..].iter().map(|a| os(a)))
        .env(
            "ETCD_WATCH_REVISION",
            resp.header.unwrap_or_default().revision.to_string(),
        )
        .env("ETCD_WATCH_EVENT_TYPE", format!("\"{kind}\""))
        .env("ETCD_WATCH_KEY", os(gofmt::quote(&kv.key).as_bytes()))
        .env("ETCD_WATCH_VALUE", os(gofmt::quote(&kv.value).as_bytes()))
        // os/exec gives a command without Stdin /dev/null.
        .stdin(std::process::Stdio::null())
        .status();
    let err = match status {
        Ok(s) if s.success() => return Ok(()),
        Ok(s) => match s.code() {
            Some(c) => format!("exit status {c}"),
            None => format!("signal: {}", signal_name(&s)),
        },
        Err(e) => exec_error(&exec_args[0], &e),
    };
    let words: Vec<String> = exec_args.iter().map(|a| gofmt::quote(a)).collect();
    let _ = writeln!(
        std::io::stderr(),
        "command [{}] error ({err})",
        words.join(" ")
    );
    Err(CtlError::silent(EXIT_ERROR))
}

fn signal_name(s: &std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match s.signal() {
        Some(2) => "interrupt".into(),
        Some(9) => "killed".into(),
        Some(15) => "terminated".into(),
        Some(n) => format!("signal {n}"),
        None => "unknown".into(),
    }
}

/// How Go's os/exec words a command that could not start.
pub fn exec_error(program: &[u8], e: &std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::NotFound && !program.contains(&b'/') {
        format!(
            "exec: {}: executable file not found in $PATH",
            gofmt::quote(program)
        )
    } else {
        format!("fork/exec {}: {}", lossy(program), go_errno_text(e))
    }
}

fn go_errno_text(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

pub async fn run(inv: &mut Invocation<'_>) -> CtlResult {
    let env_key = std::env::var_os("ETCDCTL_WATCH_KEY")
        .map(OsStringExt::into_vec)
        .unwrap_or_default();
    let env_range = std::env::var_os("ETCDCTL_WATCH_RANGE_END")
        .map(OsStringExt::into_vec)
        .unwrap_or_default();
    if env_key.is_empty() && !env_range.is_empty() {
        return Err(CtlError::bad_args(format!(
            "ETCDCTL_WATCH_KEY is empty but got ETCDCTL_WATCH_RANGE_END={}",
            gofmt::quote(&env_range)
        )));
    }
    let os_args: Vec<Vec<u8>> = std::env::args_os().map(OsStringExt::into_vec).collect();
    // etcdctl adds these to the inherited flags so the environment check takes the two
    // variables as known.
    for name in ["watch-key", "watch-range-end"] {
        let spec = crate::cli::spec::FlagSpec {
            name,
            shorthand: None,
            kind: crate::cli::spec::FlagKind::String,
            default: "",
            usage: std::borrow::Cow::Borrowed(""),
        };
        inv.flags.add(&spec, false);
    }
    if inv.flags.bool("interactive") {
        return interactive(inv, &os_args, &env_key, &env_range).await;
    }
    let mut opts = opts_from(&inv.flags);
    let (watch_args, exec_args) =
        parse_watch_args(&os_args, &inv.args, &env_key, &env_range, false, &mut opts)
            .map_err(CtlError::bad_args)?;
    let (client, printer) = global::must_client(&mut inv.flags).await?;
    let create = create_request(&watch_args, opts).map_err(CtlError::bad_args)?;
    if let Ok(w) = Watcher::open(&client, create, true).await {
        print_watch(w, printer.as_ref(), &exec_args).await?;
    }
    Err(CtlError::new(
        EXIT_INTERRUPTED,
        "watch is canceled by the server",
    ))
}

async fn interactive(
    inv: &mut Invocation<'_>,
    os_args: &[Vec<u8>],
    env_key: &[u8],
    env_range: &[u8],
) -> CtlResult {
    let (client, printer) = global::must_client(&mut inv.flags).await?;
    // Watches print from their own tasks until the process exits: the client lives as long.
    let client: &'static Client = Box::leak(Box::new(client));
    let printer: std::rc::Rc<dyn Printer> = std::rc::Rc::from(printer);
    // Each watch prints from its own task, on this thread.
    tokio::task::LocalSet::new()
        .run_until(interactive_loop(
            client, printer, os_args, env_key, env_range,
        ))
        .await
}

async fn interactive_loop(
    client: &'static Client,
    printer: std::rc::Rc<dyn Printer>,
    os_args: &[Vec<u8>],
    env_key: &[u8],
    env_range: &[u8],
) -> CtlResult {
    let (line_tx, mut line_rx) = mpsc::channel::<std::io::Result<Vec<u8>>>(1);
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut lock = stdin.lock();
        loop {
            let mut line = Vec::new();
            let r = lock.read_until(b'\n', &mut line);
            let r = match r {
                Ok(_) if line.last() == Some(&b'\n') => Ok(line),
                Ok(_) => Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "EOF",
                )),
                Err(e) => Err(e),
            };
            let end = r.is_err();
            if line_tx.blocking_send(r).is_err() || end {
                return;
            }
        }
    });
    let mut progress: Vec<mpsc::Sender<WatchRequest>> = Vec::new();
    let progress_request = || WatchRequest {
        request_union: Some(RequestUnion::ProgressRequest(WatchProgressRequest {})),
    };
    let (fail_tx, mut fail_rx) = mpsc::channel::<CtlError>(1);
    loop {
        let line = tokio::select! {
            l = line_rx.recv() => l,
            Some(e) = fail_rx.recv() => return Err(e),
        };
        let mut line = match line {
            Some(Ok(l)) => l,
            Some(Err(e)) => {
                return Err(CtlError::invalid_input(format!(
                    "Error reading watch request line: {}",
                    if e.kind() == std::io::ErrorKind::UnexpectedEof {
                        "EOF".to_string()
                    } else {
                        e.to_string()
                    }
                )))
            }
            None => {
                return Err(CtlError::invalid_input(
                    "Error reading watch request line: EOF",
                ))
            }
        };
        line.pop();
        let text = lossy(&line);
        let args = crate::txn::argify(&line)?;
        let Some(first) = args.first() else {
            let _ = writeln!(
                std::io::stderr(),
                "Invalid command: {text} (watch and progress supported)"
            );
            continue;
        };
        match first.as_slice() {
            b"watch" => {
                if args.len() < 2 && env_key.is_empty() {
                    let _ = writeln!(
                        std::io::stderr(),
                        "Invalid command {text} (command type or key is not provided)"
                    );
                    continue;
                }
                let mut opts = WatchOpts::default();
                let (watch_args, exec_args) =
                    parse_watch_args(os_args, &args, env_key, env_range, true, &mut opts)
                        .map_err(|e| CtlError::new(EXIT_BAD_ARGS, e))?;
                let create = match create_request(&watch_args, opts) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = writeln!(std::io::stderr(), "Invalid command {text} ({e})");
                        continue;
                    }
                };
                let Ok(w) = Watcher::open(client, create, true).await else {
                    continue;
                };
                progress.push(w.requests.clone());
                let printer = printer.clone();
                let fail = fail_tx.clone();
                tokio::task::spawn_local(async move {
                    if let Err(e) = print_watch(w, printer.as_ref(), &exec_args).await {
                        let _ = fail.send(e).await;
                    }
                });
            }
            b"progress" => {
                for tx in &progress {
                    let _ = tx.send(progress_request()).await;
                }
            }
            _ => {
                let _ = writeln!(
                    std::io::stderr(),
                    "Invalid command {text} (only support watch)"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &[&str]) -> Vec<Vec<u8>> {
        s.iter().map(|w| w.as_bytes().to_vec()).collect()
    }

    #[test]
    fn exec_form_splits_at_the_separator() {
        let mut o = WatchOpts::default();
        let (w, e) = parse_watch_args(
            &a(&["etcdctl", "watch", "foo", "--rev", "1", "--", "echo", "hi"]),
            &a(&["foo", "echo", "hi"]),
            b"",
            b"",
            false,
            &mut o,
        )
        .unwrap();
        assert_eq!((w, e), (a(&["foo"]), a(&["echo", "hi"])));
    }

    #[test]
    fn argument_errors_follow_etcdctl() {
        let mut o = WatchOpts::default();
        let err = |os: &[&str], args: &[&str], key: &str, o: &mut WatchOpts| {
            parse_watch_args(&a(os), &a(args), key.as_bytes(), b"", false, o).unwrap_err()
        };
        assert_eq!(err(&["e", "watch"], &[], "", &mut o), BAD_ARGS_NUM);
        assert_eq!(
            err(&["e", "watch", "foo", "--"], &["foo"], "", &mut o),
            BAD_ARGS_SEPARATOR
        );
        assert_eq!(
            err(&["e", "watch", "foo"], &["foo"], "k", &mut o),
            BAD_ARGS_CONFLICT_ENV
        );
        let (w, _) = parse_watch_args(&a(&["e", "watch"]), &[], b"k", b"z", false, &mut o).unwrap();
        assert_eq!(w, a(&["k", "z"]));
    }

    #[test]
    fn interactive_lines_carry_their_own_flags() {
        let mut o = WatchOpts {
            prefix: true,
            ..Default::default()
        };
        let (w, e) = parse_watch_args(
            &a(&["e", "watch", "-i"]),
            &a(&["watch", "foo", "--rev", "3", "--prev-kv"]),
            b"",
            b"",
            true,
            &mut o,
        )
        .unwrap();
        assert_eq!((w, e), (a(&["foo"]), vec![]));
        assert_eq!(
            o,
            WatchOpts {
                prefix: false,
                rev: 3,
                prev_kv: true
            }
        );
        assert_eq!(
            parse_watch_args(&[], &a(&["put", "x"]), b"", b"", true, &mut o).unwrap_err(),
            BAD_ARGS_INTERACTIVE
        );
    }

    #[test]
    fn errors_read_like_go() {
        let not_found = std::io::Error::from(std::io::ErrorKind::NotFound);
        assert_eq!(
            exec_error(b"nope", &not_found),
            "exec: \"nope\": executable file not found in $PATH"
        );
        assert_eq!(
            exec_error(b"/no/such", &not_found),
            "fork/exec /no/such: no such file or directory"
        );
        let compacted = WatchResponse {
            canceled: true,
            compact_revision: 5,
            ..Default::default()
        };
        assert_eq!(
            cancel_error(&compacted),
            "etcdserver: mvcc: required revision has been compacted"
        );
    }

    #[test]
    fn prefix_and_range_end() {
        let o = WatchOpts {
            prefix: true,
            ..Default::default()
        };
        let c = create_request(&a(&["foo"]), o).unwrap();
        assert_eq!(&c.range_end[..], b"fop");
        assert!(create_request(&a(&["a", "b"]), o).is_err());
        let c = create_request(&a(&["a", "b"]), WatchOpts::default()).unwrap();
        assert_eq!(&c.range_end[..], b"b");
    }
}
