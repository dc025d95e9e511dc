//! One tokio runtime per process, created on first use.
//!
//! A runtime's worker threads do not survive `fork()`: a runtime started in a gunicorn
//! `--preload` master, a Celery parent or before `multiprocessing` forks would leave the
//! children with a runtime whose threads are gone, and every call would hang. So nothing is
//! started when the module is imported or a client is built; the runtime is made by the first
//! call in each process (the process id is checked on every call) and a child simply makes its
//! own. The parent's runtime, copied into the child, is leaked there, never dropped: dropping it
//! would wait for threads that do not exist in the child.

use std::future::Future;
use std::sync::Mutex;

use tokio::runtime::Runtime;

struct ProcessRuntime {
    pid: u32,
    runtime: &'static Runtime,
}

/// The lock is held only to read or swap the pointer, never while a runtime is built or
/// anything else waits, so a `fork()` from another thread cannot copy it held in practice.
static CURRENT: Mutex<Option<ProcessRuntime>> = Mutex::new(None);

/// This process's runtime, made on first use.
///
/// # Panics
/// When the operating system refuses the runtime's threads or its I/O driver.
pub fn runtime() -> &'static Runtime {
    let pid = std::process::id();
    if let Some(rt) = current(pid) {
        return rt;
    }
    let built = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("weapp")
        .enable_all()
        .build()
        .expect("weapp: cannot start its tokio runtime");
    let mut slot = CURRENT.lock().unwrap_or_else(|p| p.into_inner());
    match slot.as_ref() {
        // Another thread of this process won the race: ours is dropped (its threads are ours).
        Some(existing) if existing.pid == pid => existing.runtime,
        _ => {
            let runtime: &'static Runtime = Box::leak(Box::new(built));
            *slot = Some(ProcessRuntime { pid, runtime });
            runtime
        }
    }
}

fn current(pid: u32) -> Option<&'static Runtime> {
    let slot = CURRENT.lock().unwrap_or_else(|p| p.into_inner());
    slot.as_ref().filter(|r| r.pid == pid).map(|r| r.runtime)
}

/// Whether this process has started its runtime (for tests of laziness).
pub fn started() -> bool {
    current(std::process::id()).is_some()
}

/// Runs `fut` to completion on this process's runtime, from a thread that is not one of the
/// runtime's own (a Python thread that has released the GIL).
pub fn block_on<F: Future>(fut: F) -> F::Output {
    runtime().block_on(fut)
}
