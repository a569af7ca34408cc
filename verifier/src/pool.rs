//! Threads that work through jobs while their senders go on. [`Workers`] are the
//! threads, shared by any number of owners (every connection of `serve`); a [`Pool`] is
//! one owner's view of them: it submits jobs in order and takes the results back in the
//! same order, whatever order the threads finish them in. `check` uses it to recompute
//! samples on every core while one thread authenticates and decodes the stream.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// A result, or the panic of the job that should have produced it.
type Outcome<R> = std::thread::Result<R>;

/// A job for the threads.
type Job = Box<dyn FnOnce() + Send>;

/// A fixed set of threads running jobs from a shared queue.
pub struct Workers {
    jobs: Option<mpsc::Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    /// `threads` threads (at least one).
    pub fn new(threads: usize) -> Arc<Workers> {
        let (jobs, job_rx) = mpsc::channel::<Job>();
        let job_rx = Arc::new(Mutex::new(job_rx));
        let threads = (0..threads.max(1))
            .map(|_| {
                let job_rx = job_rx.clone();
                std::thread::spawn(move || loop {
                    // The lock is held only to take one job off the queue.
                    let job = job_rx.lock().map(|rx| rx.recv());
                    let Ok(Ok(job)) = job else {
                        return;
                    };
                    job();
                })
            })
            .collect();
        Arc::new(Workers {
            jobs: Some(jobs),
            threads,
        })
    }

    /// How many threads there are.
    pub fn threads(&self) -> usize {
        self.threads.len()
    }

    fn run(&self, job: Job) {
        if let Some(jobs) = &self.jobs {
            // The threads hold the receiver until the workers are dropped.
            let _ = jobs.send(job);
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        // Closing the queue ends each thread once the queue is empty; the jobs of a
        // dropped [`Pool`] return at once.
        self.jobs = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// One owner's jobs on [`Workers`], all applying one function, results in order.
pub struct Pool<J, R> {
    workers: Arc<Workers>,
    f: Arc<dyn Fn(J) -> R + Send + Sync>,
    results_tx: mpsc::Sender<(u64, Outcome<R>)>,
    results: mpsc::Receiver<(u64, Outcome<R>)>,
    /// set when the pool is dropped: its jobs not yet started are not run
    dropped: Arc<AtomicBool>,
    /// sequence number of the next job submitted
    submitted: u64,
    /// sequence number of the next result to hand back
    returned: u64,
    /// results that arrived before those of earlier jobs
    early: BTreeMap<u64, Outcome<R>>,
    /// called on the worker after each result is ready ([`Pool::notifying`])
    notify: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl<J: Send + 'static, R: Send + 'static> Pool<J, R> {
    /// `threads` threads of its own (at least one) applying `f`.
    pub fn new(threads: usize, f: impl Fn(J) -> R + Send + Sync + 'static) -> Self {
        Pool::on(Workers::new(threads), f)
    }

    /// `f` applied on shared `workers`.
    pub fn on(workers: Arc<Workers>, f: impl Fn(J) -> R + Send + Sync + 'static) -> Self {
        let (results_tx, results) = mpsc::channel();
        Pool {
            workers,
            f: Arc::new(f),
            results_tx,
            results,
            dropped: Arc::new(AtomicBool::new(false)),
            submitted: 0,
            returned: 0,
            early: BTreeMap::new(),
            notify: None,
        }
    }

    /// Calls `f` on the worker thread after each job's result is ready (an event loop
    /// that must not wait for results wakes itself with it).
    pub fn notifying(mut self, f: impl Fn() + Send + Sync + 'static) -> Self {
        self.notify = Some(Arc::new(f));
        self
    }

    /// Hands a job to the threads.
    pub fn submit(&mut self, job: J) {
        let (f, tx, dropped, notify) = (
            self.f.clone(),
            self.results_tx.clone(),
            self.dropped.clone(),
            self.notify.clone(),
        );
        let seq = self.submitted;
        self.workers.run(Box::new(move || {
            if dropped.load(Ordering::Relaxed) {
                return;
            }
            let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(job)));
            let _ = tx.send((seq, out));
            if let Some(n) = notify {
                n();
            }
        }));
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
                // The pool holds a sender, so this waits for a job, never for nothing.
                self.results.recv().expect("the pool holds a sender")
            } else {
                self.results.try_recv().ok()?
            };
            self.early.insert(seq, out);
        }
    }
}

impl<J, R> Drop for Pool<J, R> {
    fn drop(&mut self) {
        // Jobs not started yet return at once; threads of its own (`Pool::new`) end
        // when the last handle to them goes, after the jobs running.
        self.dropped.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn results_come_back_in_submission_order() {
        // Later jobs finish first: each sleeps less than the one before.
        let mut pool = Pool::new(4, |i: u64| {
            std::thread::sleep(Duration::from_millis(20 - i));
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
        let mut pool = Pool::new(1, |_: u32| std::thread::sleep(Duration::from_millis(100)));
        for i in 0..10 {
            pool.submit(i);
        }
        std::thread::sleep(Duration::from_millis(20));
        let t = Instant::now();
        drop(pool);
        // the one job running (100 ms), not the nine queued behind it (900 ms)
        assert!(
            t.elapsed() < Duration::from_millis(600),
            "{:?}",
            t.elapsed()
        );
    }

    #[test]
    fn owners_sharing_workers_each_get_their_own_results_in_order() {
        let workers = Workers::new(3);
        let mut a = Pool::on(workers.clone(), |i: u64| i + 1000);
        let mut b = Pool::on(workers.clone(), |i: u64| {
            std::thread::sleep(Duration::from_millis(i % 3));
            i * 2
        });
        for i in 0..50 {
            a.submit(i);
            b.submit(i);
        }
        let from_a: Vec<u64> = std::iter::from_fn(|| a.next(true)).collect();
        let from_b: Vec<u64> = std::iter::from_fn(|| b.next(true)).collect();
        assert_eq!(from_a, (0..50).map(|i| i + 1000).collect::<Vec<_>>());
        assert_eq!(from_b, (0..50).map(|i| i * 2).collect::<Vec<_>>());
        // one owner gone with jobs queued: the other still gets all of its own
        for i in 0..20 {
            a.submit(i);
        }
        drop(a);
        b.submit(7);
        assert_eq!(b.next(true), Some(14));
        assert_eq!(workers.threads(), 3);
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
