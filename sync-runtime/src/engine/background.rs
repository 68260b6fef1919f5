//! The background loop: syncs on a timer, after local writes (debounced), and on demand.

use super::*;

/// When the engine syncs on its own.
#[derive(Debug, Clone)]
pub struct Triggers {
    /// A periodic sync (default every 60 s).
    pub interval: Duration,
    /// A sync this long after the last local write (default 500 ms), so a burst of edits
    /// goes in one push.
    pub debounce: Duration,
}

impl Default for Triggers {
    fn default() -> Self {
        Triggers {
            interval: Duration::from_secs(60),
            debounce: Duration::from_millis(500),
        }
    }
}

/// A running background engine; dropping it (or [`EngineHandle::stop`]) stops it.
#[derive(Debug)]
pub struct EngineHandle {
    task: tokio::task::JoinHandle<()>,
    wake: Arc<tokio::sync::Notify>,
}

impl EngineHandle {
    /// Asks for a sync now (does not wait for it).
    pub fn sync_soon(&self) {
        self.wake.notify_one();
    }

    /// Stops the background engine.
    pub fn stop(self) {
        self.task.abort();
    }
}

impl Drop for EngineHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<T: Transport> SyncEngine<T> {
    /// Runs the engine in the background: a sync every `interval`, one `debounce` after
    /// local writes, and on [`EngineHandle::sync_soon`]. Before each run the engine checks
    /// that the server answers its health endpoint (never a network-interface flag), and
    /// skips the run while it does not.
    pub fn start(self: Arc<Self>, triggers: Triggers) -> EngineHandle {
        let wake = Arc::new(tokio::sync::Notify::new());
        let writes = self.store.subscribe();
        let wake_on_write = wake.clone();
        // Store events arrive on a std channel; forward them to the async side.
        std::thread::spawn(move || {
            while writes.recv().is_some() {
                wake_on_write.notify_one();
            }
        });
        let wake_loop = wake.clone();
        let task = tokio::spawn(async move {
            let mut interval = tokio::time::interval(triggers.interval);
            loop {
                tokio::select! {
                    _ = interval.tick() => {}
                    _ = wake_loop.notified() => {
                        tokio::time::sleep(triggers.debounce).await;
                    }
                }
                if let Err(e) = self.transport.health().await {
                    // Not reachable: no run, but the status says why nothing moves.
                    self.store
                        .set_engine_state(crate::store::EngineState::Offline {
                            reason: e.to_string(),
                        });
                    continue;
                }
                if let Err(e) = self.sync_now().await {
                    tracing::error!(error = %e, "sync failed");
                }
            }
        });
        EngineHandle { task, wake }
    }
}
