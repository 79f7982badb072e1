//! [`TcpProxy`]: a fault a test controls between a client and a store.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;

/// A TCP proxy a test can cut and restore, to stage a store outage: while
/// it is down, open connections are closed and new ones are dropped at once.
pub struct TcpProxy {
    /// Where clients connect.
    pub addr: std::net::SocketAddr,
    down: Arc<std::sync::atomic::AtomicBool>,
    generation: Arc<std::sync::atomic::AtomicU64>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    /// Pumps running, of any generation.
    live: Arc<std::sync::atomic::AtomicUsize>,
}

/// Counts a pump as live while it runs.
struct Live(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

fn pump(
    mut from: std::net::TcpStream,
    mut to: std::net::TcpStream,
    generation: Arc<std::sync::atomic::AtomicU64>,
    mine: u64,
    stop: Arc<std::sync::atomic::AtomicBool>,
    _live: Live,
) {
    use std::io::{Read, Write};
    use std::sync::atomic::Ordering;
    let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buf = [0u8; 16 * 1024];
    loop {
        if generation.load(Ordering::Relaxed) != mine || stop.load(Ordering::Relaxed) {
            let _ = from.shutdown(std::net::Shutdown::Both);
            let _ = to.shutdown(std::net::Shutdown::Both);
            return;
        }
        match from.read(&mut buf) {
            Ok(0) => {
                let _ = to.shutdown(std::net::Shutdown::Write);
                return;
            }
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => {
                let _ = to.shutdown(std::net::Shutdown::Both);
                return;
            }
        }
    }
}

impl TcpProxy {
    /// Proxies a free loopback port to `target`.
    pub fn start(target: std::net::SocketAddr) -> Result<Self> {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let down = Arc::new(AtomicBool::new(false));
        let generation = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let live = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (d, g, st, lv) = (
            Arc::clone(&down),
            Arc::clone(&generation),
            Arc::clone(&stop),
            Arc::clone(&live),
        );
        std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        if d.load(Ordering::Relaxed) {
                            drop(client);
                            continue;
                        }
                        let _ = client.set_nonblocking(false);
                        let Ok(server) = std::net::TcpStream::connect(target) else {
                            continue;
                        };
                        let mine = g.load(Ordering::Relaxed);
                        if let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) {
                            let (g1, st1, g2, st2) = (
                                Arc::clone(&g),
                                Arc::clone(&st),
                                Arc::clone(&g),
                                Arc::clone(&st),
                            );
                            lv.fetch_add(2, Ordering::SeqCst);
                            let (l1, l2) = (Live(Arc::clone(&lv)), Live(Arc::clone(&lv)));
                            std::thread::spawn(move || pump(client, s2, g1, mine, st1, l1));
                            std::thread::spawn(move || pump(server, c2, g2, mine, st2, l2));
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(TcpProxy {
            addr,
            down,
            generation,
            stop,
            live,
        })
    }

    /// Cuts every connection and refuses new ones (`true`), or lets them
    /// through again. Going down returns once every connection is closed,
    /// so nothing the test does after it goes through.
    pub fn set_down(&self, down: bool) {
        use std::sync::atomic::Ordering;
        self.down.store(down, Ordering::SeqCst);
        if down {
            self.generation.fetch_add(1, Ordering::SeqCst);
            // Each pump sees the new generation within its 50 ms read timeout.
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while self.live.load(Ordering::SeqCst) > 0 && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}
