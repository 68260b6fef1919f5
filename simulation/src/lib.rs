//! syncgen's deterministic fault simulations and what they share.
//!
//! The simulations are tests: `tests/simulation.rs` (clients, the reference server and
//! seeded faults, one model) and `tests/upgrades.rs` (the same with model versions:
//! devices and the server upgrading at random moments with edits in flight). See each
//! file's documentation for its fault model and invariants. This library holds their
//! harness: the seeded generator ([`Rng`]) and the seed runner ([`run_seeds`]), which
//! reads the variables that choose seeds:
//!
//! | variable | meaning |
//! |---|---|
//! | `SYNC_SIM_SEEDS` (or the test's own, such as `SYNC_SIM_PG_SEEDS`) | run seeds `FIRST..FIRST+N` |
//! | `SYNC_SIM_FIRST` | where that range starts (default 0) |
//! | `SYNC_SIM_SEED` | run this one seed and print its trace |
//! | `SYNC_SIM_STEPS` | steps per seed (default 60) |
//! | `SYNC_SIM_THREADS` | threads the seeds run on (default: given by the test) |
//! | `SYNC_SIM_TRACE_LIVE` | `simulation.rs`: print each trace line as it happens (the trace of a seed that panics) |
//!
//! A failing seed, also one that panics, prints the command that replays it.

/// SplitMix64 (Steele, Lea and Flood, "Fast splittable pseudorandom number generators",
/// OOPSLA 2014): a tiny, well-known generator; a whole run depends on its seed only.
#[derive(Clone, Debug)]
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits. (Not an `Iterator`: the stream never ends, and the
    /// simulations call it by this name in hundreds of places.)
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`0` when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// `true` with a chance of `percent` in 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// A UUID made of 128 random bits (not a valid v4 or v7: ids need not be).
    pub fn uuid(&mut self) -> uuid::Uuid {
        uuid::Uuid::from_u128((u128::from(self.next()) << 64) | u128::from(self.next()))
    }
}

/// A single-threaded tokio runtime, one per thread of seeds: a seed's trace does not
/// depend on scheduling.
///
/// # Panics
/// If the runtime cannot be built (no file descriptors left).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

fn env_number<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|s| s.parse().ok())
}

/// How [`run_seeds`] runs a test's seeds.
#[derive(Clone, Debug)]
pub struct Seeds<'a> {
    /// The test's name, for the command that replays a failing seed.
    pub test: &'a str,
    /// The test file, for the same command (`simulation`, `upgrades`).
    pub file: &'a str,
    /// The variable that sets how many seeds run (`SYNC_SIM_SEEDS`, ...).
    pub count_var: &'a str,
    /// How many seeds run when it is unset.
    pub default_count: u64,
    /// How many threads run seeds when `SYNC_SIM_THREADS` is unset.
    pub default_threads: u64,
}

/// Runs `run(seed, steps)` for every seed the environment chooses (see the crate
/// documentation), on several threads, each with its own runtime ([`runtime`]); stops
/// after five failures.
///
/// # Panics
/// With every failing seed's error and the command that replays it, if any seed fails.
/// With `SYNC_SIM_SEED` set, a passing seed prints its trace.
pub fn run_seeds<F, Fut>(seeds: &Seeds<'_>, run: F)
where
    F: Fn(u64, usize) -> Fut + Sync,
    Fut: std::future::Future<Output = Result<Vec<String>, String>>,
{
    let (first, count) = match env_number::<u64>("SYNC_SIM_SEED") {
        Some(s) => (s, 1),
        None => (
            env_number("SYNC_SIM_FIRST").unwrap_or(0),
            env_number(seeds.count_var).unwrap_or(seeds.default_count),
        ),
    };
    let steps: usize = env_number("SYNC_SIM_STEPS").unwrap_or(60);
    let threads = env_number::<u64>("SYNC_SIM_THREADS")
        .unwrap_or(seeds.default_threads)
        .clamp(1, count.max(1));
    let failed = std::sync::atomic::AtomicUsize::new(0);
    let mut failures: Vec<(u64, String)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|k| {
                let (failed, run) = (&failed, &run);
                scope.spawn(move || {
                    let mut rt = runtime();
                    let mut out = Vec::new();
                    let mut seed = first + k;
                    while seed < first + count
                        && failed.load(std::sync::atomic::Ordering::SeqCst) < 5
                    {
                        // A seed that panics (a `Result` the run unwraps) fails like any
                        // other, with its number and the command that replays it.
                        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(
                            || rt.block_on(run(seed, steps)),
                        ))
                        .unwrap_or_else(|panic| {
                            rt = runtime();
                            let why = panic
                                .downcast_ref::<String>()
                                .cloned()
                                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                                .unwrap_or_default();
                            Err(format!("panicked: {why}"))
                        });
                        match outcome {
                            Ok(trace) => {
                                if count == 1 {
                                    for line in trace {
                                        println!("{line}");
                                    }
                                }
                            }
                            Err(e) => {
                                failed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                                out.push((seed, format!(
                                    "seed {seed}: {e}\n  reproduce: SYNC_SIM_SEED={seed} SYNC_SIM_STEPS={steps} cargo test --release -p sync-simulation --test {} -- {} --nocapture",
                                    seeds.file, seeds.test
                                )));
                            }
                        }
                        seed += threads;
                    }
                    out
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    failures.sort_by_key(|(seed, _)| *seed);
    let failures: Vec<String> = failures.into_iter().map(|(_, f)| f).collect();
    assert!(
        failures.is_empty(),
        "{} failing seeds:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The path and query of `GET /changes` (the token as the server gave it: tokens hold
/// no characters a query must escape).
pub fn changes_uri(since: Option<&str>, limit: u32) -> String {
    match since {
        Some(s) => format!("/changes?since={s}&limit={limit}"),
        None => format!("/changes?limit={limit}"),
    }
}

/// The path and query of `GET /snapshot` (cursors, like tokens, need no escaping).
pub fn snapshot_uri(cursor: Option<&str>, limit: u32) -> String {
    match cursor {
        Some(c) => format!("/snapshot?cursor={c}&limit={limit}"),
        None => format!("/snapshot?limit={limit}"),
    }
}

/// The machine's parallelism (at least 1).
pub fn parallelism() -> u64 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u64)
}
