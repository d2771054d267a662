//! Store calls made from the async runtime's worker threads.
//!
//! A sled call can block for as long as the disk makes it: an insert or a
//! read waits for the tree's lock while a transaction or a batch waits for a
//! flush, and on a full disk that flush may never end. Made on a worker
//! thread, such a call stopped that worker; with two cores both workers were
//! soon stopped and the hub answered nothing, timers included. Every
//! method of `Store` that touches the database (all but `open` and `db`)
//! therefore runs through [`off_worker`], which tells the runtime to move
//! its other tasks to another thread first, and so do the supervisor's
//! checkpoint-store reads and removals made from async code (its persists
//! and loads already run on blocking threads). The call itself still
//! waits; the hub around it goes on.

use tokio::runtime::{Handle, RuntimeFlavor};

/// Runs `call`, first handing this worker's other tasks to another thread
/// when called on a worker of a multi-threaded runtime. Elsewhere (a
/// blocking thread, a plain thread, a single-threaded runtime, nested
/// calls) it just runs `call`.
pub(crate) fn off_worker<T>(call: impl FnOnce() -> T) -> T {
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(call),
        _ => call(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::off_worker;

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_blocked_store_call_leaves_the_runtime_running_other_tasks() {
        let (entered_tx, entered_rx) = mpsc::channel();
        let (done_tx, done_rx) = mpsc::channel();
        // A task on the only worker blocks in a call until another task has
        // run: that one can only run if the call handed the worker on.
        let blocked = tokio::spawn(async move {
            off_worker(|| {
                entered_tx.send(()).unwrap();
                done_rx.recv_timeout(Duration::from_secs(20))
            })
        });
        entered_rx.recv().unwrap();
        tokio::spawn(async move { done_tx.send(()).unwrap() });
        let ran = blocked.await.unwrap();
        assert!(ran.is_ok(), "no other task ran while a store call blocked");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn nested_and_blocking_thread_calls_just_run() {
        let nested = tokio::spawn(async { off_worker(|| off_worker(|| 7)) }).await.unwrap();
        assert_eq!(nested, 7);
        let on_blocking = tokio::task::spawn_blocking(|| off_worker(|| 8)).await.unwrap();
        assert_eq!(on_blocking, 8);
    }

    #[tokio::test]
    async fn a_single_threaded_runtime_runs_the_call_in_place() {
        assert_eq!(off_worker(|| 9), 9);
    }
}
