//! A TCP relay on loopback that a test can cut and heal: the fault injector for network
//! partitions. A member advertises the relay's address as its peer URL, so everything its
//! peers send it passes through the relay; cutting the relay drops every connection through
//! it and refuses new ones until it is healed.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct Relay {
    addr: SocketAddr,
    state: Arc<RelayState>,
}

struct RelayState {
    cut: AtomicBool,
    stopped: AtomicBool,
    /// Both ends of every connection passing through now.
    open: Mutex<Vec<TcpStream>>,
}

impl Relay {
    /// Starts relaying connections to a free loopback port on to `target`.
    pub fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind relay");
        let addr = listener.local_addr().expect("relay addr");
        let state = Arc::new(RelayState {
            cut: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            open: Mutex::new(Vec::new()),
        });
        let st = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.stopped.load(Ordering::Acquire) {
                    return;
                }
                let Ok(client) = conn else { continue };
                if st.cut.load(Ordering::Acquire) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect_timeout(&target, Duration::from_secs(1)) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                {
                    let mut open = st.open.lock().unwrap();
                    open.push(client.try_clone().expect("clone"));
                    open.push(server.try_clone().expect("clone"));
                }
                pipe(
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                );
                pipe(server, client);
            }
        });
        Relay { addr, state }
    }

    /// The port peers should connect to.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Drops every connection through the relay and refuses new ones.
    pub fn cut(&self) {
        self.state.cut.store(true, Ordering::Release);
        for s in self.state.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Lets connections through again.
    pub fn heal(&self) {
        self.state.cut.store(false, Ordering::Release);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.state.stopped.store(true, Ordering::Release);
        self.cut();
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(100));
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}
