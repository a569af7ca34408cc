//! Threads that work through jobs while their sender goes on: the sender submits jobs
//! in order and takes the results back in the same order, whatever order the threads
//! finish them in. `check` uses it to recompute samples on every core while one thread
//! authenticates and decodes the stream.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// A result, or the panic of the job that should have produced it.
type Outcome<R> = std::thread::Result<R>;

/// A fixed set of threads applying one function to submitted jobs.
pub struct Pool<J, R> {
    jobs: Option<mpsc::Sender<(u64, J)>>,
    results: mpsc::Receiver<(u64, Outcome<R>)>,
    workers: Vec<JoinHandle<()>>,
    /// set when the pool is dropped: the threads take no further job
    stop: Arc<AtomicBool>,
    /// sequence number of the next job submitted
    submitted: u64,
    /// sequence number of the next result to hand back
    returned: u64,
    /// results that arrived before those of earlier jobs
    early: BTreeMap<u64, Outcome<R>>,
}

impl<J: Send + 'static, R: Send + 'static> Pool<J, R> {
    /// `threads` threads (at least one) applying `f`.
    pub fn new(threads: usize, f: impl Fn(J) -> R + Send + Sync + 'static) -> Self {
        let (job_tx, job_rx) = mpsc::channel::<(u64, J)>();
        let (result_tx, results) = mpsc::channel();
        let job_rx = Arc::new(Mutex::new(job_rx));
        let f = Arc::new(f);
        let stop = Arc::new(AtomicBool::new(false));
        let workers = (0..threads.max(1))
            .map(|_| {
                let (job_rx, result_tx, f) = (job_rx.clone(), result_tx.clone(), f.clone());
                let stop = stop.clone();
                std::thread::spawn(move || loop {
                    // The lock is held only to take one job off the channel.
                    let job = job_rx.lock().map(|rx| rx.recv());
                    let Ok(Ok((seq, job))) = job else {
                        return;
                    };
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(job)));
                    if result_tx.send((seq, out)).is_err() {
                        return;
                    }
                })
            })
            .collect();
        Pool {
            jobs: Some(job_tx),
            results,
            workers,
            stop,
            submitted: 0,
            returned: 0,
            early: BTreeMap::new(),
        }
    }

    /// Hands a job to the threads.
    pub fn submit(&mut self, job: J) {
        if let Some(jobs) = &self.jobs {
            // The workers hold the receiver until the pool is dropped.
            let _ = jobs.send((self.submitted, job));
        }
        self.submitted += 1;
    }

    /// Jobs submitted whose results were not handed back yet.
    pub fn in_flight(&self) -> usize {
        (self.submitted - self.returned) as usize
    }

    /// The result of the oldest job not handed back yet: `None` when none is in
    /// flight, or (with `wait` false) when it is not ready. A job that panicked
    /// panics here, on the caller's thread.
    pub fn next(&mut self, wait: bool) -> Option<R> {
        if self.in_flight() == 0 {
            return None;
        }
        loop {
            if let Some(out) = self.early.remove(&self.returned) {
                self.returned += 1;
                return Some(out.unwrap_or_else(|panic| std::panic::resume_unwind(panic)));
            }
            let (seq, out) = if wait {
                self.results.recv().expect("the pool's threads outlive it")
            } else {
                self.results.try_recv().ok()?
            };
            self.early.insert(seq, out);
        }
    }
}

impl<J, R> Drop for Pool<J, R> {
    fn drop(&mut self) {
        // Each thread ends after its current job: the jobs still queued are not run.
        self.stop.store(true, Ordering::Relaxed);
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_back_in_submission_order() {
        // Later jobs finish first: each sleeps less than the one before.
        let mut pool = Pool::new(4, |i: u64| {
            std::thread::sleep(std::time::Duration::from_millis(20 - i));
            i * i
        });
        for i in 0..20 {
            pool.submit(i);
        }
        assert_eq!(pool.in_flight(), 20);
        let got: Vec<u64> = std::iter::from_fn(|| pool.next(true)).collect();
        assert_eq!(got, (0..20).map(|i| i * i).collect::<Vec<_>>());
        assert_eq!(pool.in_flight(), 0);
        assert_eq!(pool.next(false), None);
    }

    #[test]
    fn dropping_the_pool_waits_for_the_jobs_running_not_the_queued_ones() {
        let mut pool = Pool::new(1, |_: u32| {
            std::thread::sleep(std::time::Duration::from_millis(100))
        });
        for i in 0..10 {
            pool.submit(i);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        let t = std::time::Instant::now();
        drop(pool);
        // the one job running (100 ms), not the nine queued behind it (900 ms)
        assert!(
            t.elapsed() < std::time::Duration::from_millis(600),
            "{:?}",
            t.elapsed()
        );
    }

    #[test]
    fn a_panicking_job_panics_its_caller_and_the_pool_still_drops() {
        let mut pool = Pool::new(2, |i: u32| if i == 1 { panic!("job {i}") } else { i });
        for i in 0..3 {
            pool.submit(i);
        }
        assert_eq!(pool.next(true), Some(0));
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pool.next(true)));
        assert!(caught.is_err());
        assert_eq!(pool.next(true), Some(2));
    }
}
