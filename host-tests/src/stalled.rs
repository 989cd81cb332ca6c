//! A server that accepts connections and never answers: a stand-in for a control plane
//! that has stopped responding (overload tests).

use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Listens on `127.0.0.1:<ephemeral>`, accepts every connection, reads (and discards)
/// whatever arrives and never writes a byte. Dropping it closes every connection and
/// stops its thread.
pub struct StalledServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl StalledServer {
    /// Binds and starts accepting.
    pub fn start() -> io::Result<StalledServer> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let thread = {
            let stop = Arc::clone(&stop);
            let accepted = Arc::clone(&accepted);
            std::thread::Builder::new()
                .name("stalled".into())
                .spawn(move || serve(listener, &stop, &accepted))?
        };
        Ok(StalledServer {
            addr,
            stop,
            accepted,
            thread: Some(thread),
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

fn serve(listener: TcpListener, stop: &AtomicBool, accepted: &AtomicUsize) {
    let mut conns: Vec<TcpStream> = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                accepted.fetch_add(1, Ordering::SeqCst);
                if stream.set_nonblocking(true).is_ok() {
                    conns.push(stream);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => {}
        }
        // Keep the peers' writes flowing into nothing; drop closed connections.
        conns.retain_mut(|s| match s.read(&mut buf) {
            Ok(0) => false,
            Ok(_) => true,
            Err(e) => e.kind() == io::ErrorKind::WouldBlock,
        });
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Drop for StalledServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
