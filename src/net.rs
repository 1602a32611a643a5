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
struct EventFd(i32, AtomicBool);

impl Drop for EventFd {
    fn drop(&mut self) {
        // SAFETY: we own the descriptor.
        unsafe { libc::close(self.0) };
    }
}

impl Waker {
    /// Call after publishing what the main thread should see (a channel send):
    /// either this writes the eventfd, or the main thread's next look at its
    /// channels comes after the publication (see `Net::drain`).
    pub fn wake(&self) {
        // pairs with the fence in `drain`: the send before it and the flag
        // after it are not reordered
        fence(Ordering::SeqCst);
        if self.fd.1.swap(true, Ordering::AcqRel) {
            // written and not yet read: the main thread has a wake-up coming,
            // or clears the flag before looking at its channels
            return;
        }
        let one: u64 = 1;
        // SAFETY: writing 8 bytes to our eventfd; EAGAIN (counter full) is harmless.
        unsafe { libc::write(self.fd.0, &one as *const u64 as *const libc::c_void, 8) };
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
        // SAFETY: plain syscall.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(WorkerError::Internal(format!(
                "eventfd failed: {}",
                std::io::Error::last_os_error()
            )));
        }
        let waker = Waker {
            fd: Arc::new(EventFd(fd, AtomicBool::new(false))),
        };
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
        let fd = &self.waker.fd;
        // Only this thread clears the flag. A wake-up racing with the clearing
        // finds the flag still set and writes nothing; the fence then makes
        // what it sent visible to the look that follows. (One that raised the
        // flag just before may write just after the read: `sleep` takes that.)
        if fd.1.load(Ordering::Acquire) {
            self.read_eventfd();
            fd.1.store(false, Ordering::Release);
        }
        fence(Ordering::SeqCst);
    }

    fn read_eventfd(&self) {
        let mut buf: u64 = 0;
        // SAFETY: reading 8 bytes from our non-blocking eventfd.
        unsafe {
            libc::read(
                self.waker.fd.0,
                &mut buf as *mut u64 as *mut libc::c_void,
                8,
            )
        };
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
        let r = pg.wait(self.waker.fd.0, timeout_ms);
        if let Ok(rc) = r {
            if rc & crate::ffi::SDB_WAIT_SOCKET != 0 && !self.waker.fd.1.load(Ordering::Acquire) {
                // A write can land after `drain` cleared the flag it raised:
                // take it here, or the eventfd stays readable and every wait
                // returns at once. (With the flag set, `drain` reads it.)
                self.read_eventfd();
            }
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
