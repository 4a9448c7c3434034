//! Running the member: start it, tell systemd it is ready, wait for SIGINT or SIGTERM, stop it.

use std::future::Future;
use std::io;

use ketch_core::config::MemberConfig;
use ketch_core::Member;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tracing::{error, warn};

use crate::startup;

/// SIGINT and SIGTERM, named as Go names them in etcd's log lines.
struct Signals {
    interrupt: Signal,
    terminate: Signal,
}

impl Signals {
    fn new() -> io::Result<Signals> {
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// The next signal: its Go name and number.
    async fn next(&mut self) -> (&'static str, u8) {
        tokio::select! {
            _ = self.interrupt.recv() => ("interrupt", 2),
            _ = self.terminate.recv() => ("terminated", 15),
        }
    }
}

/// `READY=1` to systemd when started as a `Type=notify` unit (`$NOTIFY_SOCKET` set), as etcd
/// does once it serves; etcd's unit files rely on it.
fn notify_systemd_ready() -> io::Result<()> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(());
    };
    let socket = std::os::unix::net::UnixDatagram::unbound()?;
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str());
    #[cfg(target_os = "linux")]
    if let Some(abstract_name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let address = std::os::unix::net::SocketAddr::from_abstract_name(abstract_name)?;
        socket.send_to_addr(b"READY=1", &address)?;
        return Ok(());
    }
    let _ = bytes;
    socket.send_to(b"READY=1", &path)?;
    Ok(())
}

/// Starts the member and serves until a signal; returns the exit status. A start error is
/// logged as etcd logs it (critical, from etcdmain). A signal during start ends the process
/// with 128 + the signal number, as dying by that signal would; after a clean stop it is 0.
pub async fn serve(config: MemberConfig, settings: &crate::flags::EtcdConfig) -> u8 {
    let started = async {
        let member = Member::start(config).await.map_err(|e| {
            let message = e.to_string();
            startup::fatal("etcdmain", &message);
            startup::initial_cluster_hints(settings, &message);
        })?;
        // Opening the store and replaying the WAL freed a few hundred MB of temporaries (1M
        // keys) on a thread that then goes idle: make sure none of it stays resident
        // (with mimalloc's default purge delay it did: RSS 433 -> ~335 MB after this call).
        crate::release_freed_memory();
        Ok(member)
    };
    run_until_signal(started, Member::removed, Member::stop).await
}

/// Starts the proxy and serves until a signal; returns the exit status as [`serve`] does.
pub async fn serve_proxy(config: ketch_proxy::ProxyConfig) -> u8 {
    let started = async {
        ketch_proxy::Proxy::start(config)
            .await
            .map_err(|e| startup::fatal("etcdmain", &e.to_string()))
    };
    run_until_signal(
        started,
        |_| std::future::pending::<()>(),
        ketch_proxy::Proxy::stop,
    )
    .await
}

/// Starts the L4 gateway and serves until a signal.
pub async fn serve_gateway(config: ketch_proxy::l4::GatewayConfig) -> u8 {
    let started = async {
        ketch_proxy::l4::Gateway::start(config)
            .await
            .map_err(|e| startup::fatal("etcdmain", &e))
    };
    run_until_signal(
        started,
        |_| std::future::pending::<()>(),
        ketch_proxy::l4::Gateway::stop,
    )
    .await
}

/// The life of a started service: `start`, readiness to systemd, the first SIGINT/SIGTERM (or
/// `ended`: the cluster removed this member), `stop`. A second signal while stopping exits
/// without waiting.
async fn run_until_signal<M, Ended, Stop, Stopped>(
    start: impl Future<Output = Result<M, ()>>,
    ended: impl FnOnce(&M) -> Ended,
    stop: Stop,
) -> u8
where
    Ended: Future<Output = ()>,
    Stop: FnOnce(M) -> Stopped,
    Stopped: Future<Output = ()>,
{
    let mut signals = match Signals::new() {
        Ok(signals) => signals,
        Err(e) => {
            startup::fatal("etcdmain", &format!("cannot handle signals: {e}"));
            return 1;
        }
    };
    let member = tokio::select! {
        started = start => match started {
            Ok(member) => member,
            Err(()) => return 1,
        },
        (name, number) = signals.next() => {
            startup::shutting_down(name);
            return 128 + number;
        }
    };
    if let Err(e) = notify_systemd_ready() {
        error!(target: "etcdmain", "failed to notify systemd for readiness: {e}");
    }
    tokio::select! {
        (name, _) = signals.next() => startup::shutting_down(name),
        _ = ended(&member) => {}
    }
    tokio::select! {
        _ = stop(member) => 0,
        (again, number) = signals.next() => {
            warn!(target: "pkg/osutil", "received {again} signal again, exiting without waiting for the member to stop");
            128 + number
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One test sends itself signals; tokio's handlers stay installed for the process, so
    /// SIGTERM cannot kill the test binary once `Signals::new` ran.
    #[test]
    fn signals_stop_the_service_cleanly() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;

        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let stopped = Arc::new(AtomicBool::new(false));
        let flag = stopped.clone();
        let status = runtime.block_on(async move {
            let started = async {
                // Signal ourselves once the service is up; the handler is installed by then.
                tokio::spawn(async {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    let pid = std::process::id().to_string();
                    std::process::Command::new("kill")
                        .args(["-TERM", &pid])
                        .status()
                        .unwrap();
                });
                Ok::<_, ()>("member")
            };
            run_until_signal(
                started,
                |_| std::future::pending(),
                |member| async move {
                    assert_eq!(member, "member");
                    flag.store(true, Ordering::SeqCst);
                },
            )
            .await
        });
        assert_eq!(status, 0);
        assert!(stopped.load(Ordering::SeqCst));

        // A start error ends with status 1 and no stop.
        let status = runtime.block_on(run_until_signal(
            async { Err::<(), ()>(()) },
            |_| std::future::pending(),
            |_| async { panic!("stop after a failed start") },
        ));
        assert_eq!(status, 1);
    }

    #[test]
    fn readiness_reaches_the_notify_socket() {
        let dir = std::env::temp_dir().join(format!("ketch-notify-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let listener = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        // The only test touching NOTIFY_SOCKET; std serializes environment access.
        std::env::set_var("NOTIFY_SOCKET", &path);
        notify_systemd_ready().unwrap();
        std::env::remove_var("NOTIFY_SOCKET");
        let mut buf = [0u8; 16];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
