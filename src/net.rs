//! The network thread: a single-threaded tokio runtime that owns every connection
//! to the source, so that the backend's main thread never blocks on the network.
//!
//! The main thread hands it futures (`spawn`) and learns about their results through
//! channels; an eventfd wakes the main thread, which waits on it together with its
//! latch (`Pg::wait`), so SIGTERM and postmaster death are seen within a naptime.

use crate::error::WorkerError;
use crate::pg::Pg;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::Arc;

type Job = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Wakes the main thread. Cheap to clone; safe from any thread.
#[derive(Clone)]
pub struct Waker {
    fd: Arc<EventFd>,
}

/// The eventfd, and whether it was written since the main thread last read it.
/// The flag saves a syscall on both sides: a wake-up while one is still pending
/// (the main thread busy with what came before) writes nothing, and a main
/// thread with nothing pending reads nothing. On this machine a syscall pair
/// per hand-off was a measurable part of applying a one-row transaction.
struct EventFd {
    fd: i32,
    /// Written since the main thread last read it.
    rung: AtomicBool,
}

impl Drop for EventFd {
    fn drop(&mut self) {
        // SAFETY: we own the descriptor.
        unsafe { libc::close(self.fd) };
    }
}

impl EventFd {
    fn new() -> std::io::Result<EventFd> {
        // SAFETY: plain syscall.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(EventFd {
            fd,
            rung: AtomicBool::new(false),
        })
    }

    /// Any thread, after publishing what the main thread should see (a
    /// channel send): either this writes the eventfd, or the main thread's
    /// next look at its channels comes after the publication (see `clear`).
    fn ring(&self) {
        // pairs with the fence in `clear`: the send before it and the flag
        // after it are not reordered
        fence(Ordering::SeqCst);
        if self.rung.swap(true, Ordering::AcqRel) {
            // written and not yet read: the main thread has a wake-up coming,
            // or clears the flag before looking at its channels
            return;
        }
        race_window();
        let one: u64 = 1;
        // SAFETY: writing 8 bytes to our eventfd; EAGAIN (counter full) is harmless.
        unsafe { libc::write(self.fd, &one as *const u64 as *const libc::c_void, 8) };
    }

    /// The main thread only, before looking at its channels (and sleeping
    /// only if they were all empty then).
    fn clear(&self) {
        // Only this thread clears the flag. A ring racing with the clearing
        // finds the flag still set and writes nothing; the fence then makes
        // what it sent visible to the look that follows. (One that raised the
        // flag just before may write just after the read: `woke` takes that.)
        if self.rung.load(Ordering::Acquire) {
            self.read();
            race_window();
            self.rung.store(false, Ordering::Release);
        }
        fence(Ordering::SeqCst);
    }

    /// The main thread, after a wait that found the eventfd readable.
    fn woke(&self) {
        if !self.rung.load(Ordering::Acquire) {
            // a write that landed after `clear` took the flag down: take it
            // here, or the eventfd stays readable and every wait returns at
            // once (with the flag up, `clear` reads it)
            self.read();
        }
    }

    fn read(&self) {
        let mut buf: u64 = 0;
        // SAFETY: reading 8 bytes from our non-blocking eventfd.
        unsafe { libc::read(self.fd, &mut buf as *mut u64 as *mut libc::c_void, 8) };
    }
}

/// In tests, widens the windows between the steps of `ring` and `clear`,
/// which the hand-off test must be able to hit.
#[inline(always)]
fn race_window() {
    // a sleep, not a yield: with a core each, a yield returns at once
    #[cfg(test)]
    std::thread::sleep(std::time::Duration::from_micros(1));
}

impl Waker {
    /// Call after publishing what the main thread should see (a channel send).
    pub fn wake(&self) {
        self.fd.ring();
    }
}

pub struct Net {
    jobs: Option<tokio::sync::mpsc::UnboundedSender<Job>>,
    waker: Waker,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The answer of a future started with `Net::begin`, if it has come.
pub fn answer<T>(rx: &mut tokio::sync::oneshot::Receiver<T>) -> Option<Result<T, WorkerError>> {
    match rx.try_recv() {
        Ok(v) => Some(Ok(v)),
        Err(tokio::sync::oneshot::error::TryRecvError::Empty) => None,
        Err(tokio::sync::oneshot::error::TryRecvError::Closed) => Some(Err(WorkerError::Internal(
            "a network task ended without an answer".into(),
        ))),
    }
}

impl Net {
    /// Starts the runtime thread with every signal blocked, so PostgreSQL's signal
    /// handling stays on the main thread.
    pub fn start() -> Result<Net, WorkerError> {
        let fd =
            EventFd::new().map_err(|e| WorkerError::Internal(format!("eventfd failed: {e}")))?;
        let waker = Waker { fd: Arc::new(fd) };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Job>();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| WorkerError::Internal(format!("cannot build the network runtime: {e}")))?;
        // Block all signals while spawning: the new thread inherits the mask.
        let thread = with_signals_blocked(|| {
            std::thread::Builder::new()
                .name("synchdb-net".into())
                .spawn(move || {
                    rt.block_on(async move {
                        while let Some(job) = rx.recv().await {
                            tokio::spawn(job);
                        }
                    });
                    // dropping the runtime cancels whatever is still running
                })
        })
        .map_err(|e| WorkerError::Internal(format!("cannot start the network thread: {e}")))?;
        Ok(Net {
            jobs: Some(tx),
            waker,
            thread: Some(thread),
        })
    }

    pub fn waker(&self) -> Waker {
        self.waker.clone()
    }

    /// Runs `fut` on the network thread.
    pub fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) -> Result<(), WorkerError> {
        self.jobs
            .as_ref()
            .and_then(|j| j.send(Box::pin(fut)).ok())
            .ok_or_else(|| WorkerError::Internal("the network thread has stopped".into()))
    }

    /// Runs `fut` on the network thread without waiting: its result arrives in
    /// the receiver, and the main thread's wait wakes up then.
    pub fn begin<T: Send + 'static>(
        &self,
        fut: impl Future<Output = T> + Send + 'static,
    ) -> Result<tokio::sync::oneshot::Receiver<T>, WorkerError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let waker = self.waker();
        self.spawn(async move {
            let v = fut.await;
            let _ = tx.send(v);
            waker.wake();
        })?;
        Ok(rx)
    }

    /// Runs `fut` on the network thread and waits for its result, staying responsive
    /// to stop requests.
    pub fn call<T: Send + 'static>(
        &self,
        pg: &Pg,
        fut: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, WorkerError> {
        let mut rx = self.begin(fut)?;
        self.wait_for(pg, || answer(&mut rx))?
    }

    /// Clears pending wake-ups. Call before looking at the channels the
    /// network thread sends on, and sleep only if they were all empty then.
    pub fn drain(&self) {
        self.waker.fd.clear();
    }

    /// Waits (latch + eventfd) until `poll` yields, or the worker must stop.
    pub fn wait_for<T>(
        &self,
        pg: &Pg,
        mut poll: impl FnMut() -> Option<T>,
    ) -> Result<T, WorkerError> {
        let naptime = pg.guc_int("synchdb.naptime", 100);
        loop {
            self.drain();
            if let Some(v) = poll() {
                return Ok(v);
            }
            self.sleep(pg, naptime)?;
        }
    }

    /// One wait on latch and eventfd; Err(Stopped) when SIGTERM arrived.
    pub fn sleep(&self, pg: &Pg, timeout_ms: i64) -> Result<(), WorkerError> {
        if pg.should_exit() {
            return Err(WorkerError::Stopped);
        }
        let r = pg.wait(self.waker.fd.fd, timeout_ms);
        if r.as_ref()
            .is_ok_and(|rc| rc & crate::ffi::SDB_WAIT_SOCKET != 0)
        {
            self.waker.fd.woke();
        }
        if pg.should_exit() {
            return Err(WorkerError::Stopped);
        }
        r.map(|_| ()).map_err(WorkerError::from)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn with_signals_blocked<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: sigset manipulation on local storage; the old mask is restored.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let r = f();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readable(fd: i32, timeout_ms: i32) -> bool {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd on the stack
        let n = unsafe { libc::poll(&mut p, 1, timeout_ms) };
        n == 1 && p.revents & libc::POLLIN != 0
    }

    /// The hand-off protocol of `ring` and `clear`/`woke` never loses a
    /// wake-up (a consumer that found its channel empty and waits is always
    /// woken for what comes next) and never leaves the eventfd readable with
    /// nothing to take. A lost wake-up shows as a wait that runs to its
    /// (long) timeout with items still to come.
    #[test]
    fn no_lost_or_stuck_wake_ups() {
        const N: u32 = 20_000;
        let ev = Arc::new(EventFd::new().expect("eventfd"));
        let (tx, rx) = std::sync::mpsc::channel::<u32>();
        let producer = {
            let ev = ev.clone();
            std::thread::spawn(move || {
                for i in 0..N {
                    tx.send(i).expect("send");
                    ev.ring();
                    // vary the timing against the consumer
                    match i % 7 {
                        0 => std::thread::yield_now(),
                        1 => std::thread::sleep(std::time::Duration::from_micros(50)),
                        _ => {}
                    }
                }
            })
        };
        let mut next = 0u32;
        let mut timeouts = 0;
        let mut stuck = 0;
        while next < N {
            ev.clear();
            while let Ok(v) = rx.try_recv() {
                assert_eq!(v, next, "items in order");
                next += 1;
            }
            if next == N {
                break;
            }
            if readable(ev.fd, 5000) {
                ev.woke();
                // after `woke`, only a new ring makes it readable, and a ring
                // raises the flag before it writes
                if readable(ev.fd, 0) && !ev.rung.load(Ordering::Acquire) {
                    stuck += 1;
                }
            } else {
                timeouts += 1;
            }
        }
        producer.join().expect("producer");
        assert_eq!(timeouts, 0, "a wait ran to its timeout with items pending");
        assert_eq!(stuck, 0, "the eventfd stayed readable with the flag down");
        // nothing left pending: at most one stale count, taken by one wait
        ev.clear();
        if readable(ev.fd, 50) {
            ev.woke();
        }
        assert!(!readable(ev.fd, 50), "the eventfd stayed readable");
    }
}
