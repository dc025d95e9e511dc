//! The login writer: group commit for logins. Each login is a user upsert and a session insert;
//! written one by one, every login is two commits — on SQLite with `synchronous=FULL`, two
//! fsyncs, and each statement a round trip to the database's worker thread. The writer takes
//! the logins that arrived while the previous batch was being written and records them all in
//! one transaction with one statement per table ([`crate::store::SessionStore::record_logins`]), so under load a
//! commit (and its fsync) is shared by every login waiting for it. A login is answered only
//! once its batch is committed: acknowledged means durable, as before. On SQLite a batch is one
//! hand-over to a thread with a connection of its own (`store::sqlite_writer`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::store::{LoginRecorded, LoginWrite, Store, StoreError};

/// The most logins one transaction records.
pub const MAX_BATCH: usize = 256;

type Reply = oneshot::Sender<Result<LoginRecorded, StoreError>>;

/// A handle to the writer task (which ends when every handle is dropped).
#[derive(Debug, Clone)]
pub struct LoginWriter {
    tx: mpsc::Sender<(LoginWrite, Reply)>,
    /// (transactions committed, logins they recorded) so far.
    counts: Arc<(AtomicU64, AtomicU64)>,
}

impl LoginWriter {
    /// Starts the writer over `store`; each batch's commit is timed into `metrics`.
    pub fn spawn(store: Arc<dyn Store>, metrics: Arc<crate::metrics::Metrics>) -> Self {
        let (tx, mut rx) = mpsc::channel::<(LoginWrite, Reply)>(4 * MAX_BATCH);
        let counts = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
        let c = counts.clone();
        tokio::spawn(async move {
            let mut last_batch = 0usize;
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                let drain = |batch: &mut Vec<_>, rx: &mut mpsc::Receiver<_>| {
                    while batch.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(next) => batch.push(next),
                            Err(_) => break,
                        }
                    }
                };
                drain(&mut batch, &mut rx);
                // Under concurrency (the last batch had company), let the logins whose tasks
                // are already running reach the queue before committing: one turn of the
                // scheduler, no timer — a commit (an fsync) shared by more of them.
                if last_batch > 1 && batch.len() < MAX_BATCH {
                    tokio::task::yield_now().await;
                    drain(&mut batch, &mut rx);
                }
                last_batch = batch.len();
                // A login whose caller is gone (its request ended) is not written.
                batch.retain(|(_, reply)| !reply.is_closed());
                if batch.is_empty() {
                    continue;
                }
                let (writes, replies): (Vec<LoginWrite>, Vec<Reply>) = batch.into_iter().unzip();
                let committed = |logins: usize| {
                    c.0.fetch_add(1, Ordering::Relaxed);
                    c.1.fetch_add(logins as u64, Ordering::Relaxed);
                };
                let started = std::time::Instant::now();
                match store.record_logins(&writes).await {
                    Ok(done) => {
                        metrics.db_commit("login_batch", started.elapsed());
                        committed(done.len());
                        for (reply, r) in replies.into_iter().zip(done) {
                            let _ = reply.send(Ok(r));
                        }
                    }
                    Err(e) if replies.len() == 1 => {
                        let reply = replies.into_iter().next().expect("one");
                        let _ = reply.send(Err(e));
                    }
                    // The database itself is in trouble (pool, connection, a write lock held
                    // past the busy timeout, a full disk): every login of the batch gets the
                    // error now, instead of a retry each that waits as long.
                    Err(e) if !e.is_per_row() => {
                        let message = e.to_string();
                        let busy = e.is_busy();
                        for reply in replies {
                            let err = if busy {
                                StoreError(sqlx::Error::PoolTimedOut)
                            } else {
                                StoreError(sqlx::Error::Protocol(message.clone()))
                            };
                            let _ = reply.send(Err(err));
                        }
                    }
                    Err(e) => {
                        // One bad login (a constraint) must not fail the others: each on its own.
                        tracing::warn!(error = %e, logins = writes.len(), "a login batch failed; writing its logins one by one");
                        for (w, reply) in writes.iter().zip(replies) {
                            if reply.is_closed() {
                                continue;
                            }
                            let r = store
                                .record_logins(std::slice::from_ref(w))
                                .await
                                .map(|mut v| v.remove(0));
                            if r.is_ok() {
                                committed(1);
                            }
                            let _ = reply.send(r);
                        }
                    }
                }
            }
        });
        Self { tx, counts }
    }

    /// (transactions committed, logins they recorded) so far: their ratio is the mean batch
    /// size. A batch that failed counts only through the logins then written one by one.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.counts.0.load(Ordering::Relaxed),
            self.counts.1.load(Ordering::Relaxed),
        )
    }

    /// Records `login` with the others waiting; answers once it is committed.
    ///
    /// # Errors
    /// The database's error (the writer gone counts as a closed pool).
    pub async fn write(&self, login: LoginWrite) -> Result<LoginRecorded, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((login, reply))
            .await
            .map_err(|_| StoreError(sqlx::Error::PoolClosed))?;
        answer
            .await
            .map_err(|_| StoreError(sqlx::Error::PoolClosed))?
    }
}
