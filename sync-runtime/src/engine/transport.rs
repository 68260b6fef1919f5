//! The transport the engine talks through: the trait, its errors, and the engine's calls
//! through it (the bearer token, refreshed once on 401/403; the server's time taken from
//! every response).

use super::*;

/// A failed request.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TransportError {
    /// The server could not be reached at all (no network, connection refused).
    #[error("server unreachable: {0}")]
    Unreachable(String),
    /// The request timed out (it may or may not have been applied).
    #[error("request timed out")]
    Timeout,
    /// The server answered with an error status.
    #[error("HTTP {status}{}", problem.as_ref().map(|p| format!(": {p}")).unwrap_or_default())]
    Http {
        /// The status code.
        status: u16,
        /// `Retry-After`, if the server sent one.
        retry_after: Option<Duration>,
        /// The problem body, if any.
        problem: Option<Box<Problem>>,
    },
    /// The response could not be understood.
    #[error("invalid response: {0}")]
    Invalid(String),
}

/// How the engine talks to a server. [`HttpTransport`] is the real one; tests wrap it to
/// inject faults, or implement it in process.
pub trait Transport: Send + Sync + 'static {
    /// `POST /push`.
    fn push(
        &self,
        token: &str,
        request: &PushRequest,
    ) -> impl Future<Output = Result<PushResponse, TransportError>> + Send;
    /// `GET /changes`.
    fn changes(
        &self,
        token: &str,
        since: Option<&str>,
        limit: u32,
    ) -> impl Future<Output = Result<ChangesResponse, TransportError>> + Send;
    /// `GET /snapshot`.
    fn snapshot(
        &self,
        token: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> impl Future<Output = Result<SnapshotResponse, TransportError>> + Send;
    /// `GET /snapshot?entity=...`: a snapshot of one entity's records (its wire name),
    /// which a device takes after a migration gave that entity new fields.
    ///
    /// The default takes the whole snapshot and keeps that entity's records: correct
    /// (its cursor pages through every entity), only slower; a transport that can ask the
    /// server for one entity ([`HttpTransport`](super::HttpTransport) does) should.
    fn entity_snapshot(
        &self,
        token: &str,
        entity: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> impl Future<Output = Result<SnapshotResponse, TransportError>> + Send {
        async move {
            let mut page = self.snapshot(token, cursor, limit).await?;
            page.records.retain(|r| r.entity_type == entity);
            Ok(page)
        }
    }
    /// `GET /health`: whether the server is reachable (the reachability check).
    fn health(&self) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// The server's wall time as of the last response (its `Date` header), if known. The
    /// engine hands it to [`LocalStore::observe_server_time`] after every request, so
    /// the device's hybrid logical clock follows the server's time. `None` (the default)
    /// leaves the device's clock as it is.
    fn server_time(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        None
    }

    /// The protocol version the server said it speaks in its last response (its
    /// [`PROTOCOL_HEADER`](crate::protocol::PROTOCOL_HEADER) header), if known. The
    /// engine hands it to [`LocalStore::observe_server_protocol`] after every request;
    /// from 1.3.0 on, pushes carry dots (PROTOCOL.md SUM-2). `None` (the default) leaves
    /// what the store knows as it is. A transport should also send the header with
    /// [`PROTOCOL_VERSION`](crate::protocol::PROTOCOL_VERSION) on its requests, so that
    /// the server's records carry their dots.
    fn server_protocol(&self) -> Option<String> {
        None
    }

    /// The model fingerprint of the engine's store ([`LocalStore::fingerprint`]), handed
    /// over by [`SyncEngine::new`]: a transport sends it with every request in
    /// [`FINGERPRINT_HEADER`](crate::protocol::FINGERPRINT_HEADER), so the server can
    /// serve an older app in its model's shape or answer 426 (PROTOCOL.md MODEL-1). A
    /// transport given a fingerprint of its own keeps that one. The default ignores it.
    fn use_fingerprint(&mut self, fingerprint: &str) {
        let _ = fingerprint;
    }
}

impl<T: Transport> SyncEngine<T> {
    pub(crate) fn token(&self) -> String {
        self.token.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Calls the server, refreshing the token once on 401/403.
    pub(crate) async fn call<R, F, Fut>(&self, f: F) -> Result<R, TransportError>
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = Result<R, TransportError>>,
    {
        let result = self.call_once(f).await;
        // A response (success or an error status) carries the server's time.
        if matches!(&result, Ok(_) | Err(TransportError::Http { .. }))
            && let Some(t) = self.transport.server_time()
        {
            self.store.observe_server_time(t);
        }
        if matches!(&result, Ok(_) | Err(TransportError::Http { .. }))
            && let Some(v) = self.transport.server_protocol()
            && let Err(e) = self.store.observe_server_protocol(&v)
        {
            tracing::warn!(error = %e, "could not keep the server's protocol version");
        }
        result
    }

    pub(crate) async fn call_once<R, F, Fut>(&self, f: F) -> Result<R, TransportError>
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = Result<R, TransportError>>,
    {
        match f(self.token()).await {
            Err(TransportError::Http {
                status: 401 | 403, ..
            }) if self.config.refresher.is_some() => {
                let refreshed = (self.config.refresher.as_ref().expect("checked"))();
                match refreshed {
                    Some(t) => {
                        *self.token.lock().unwrap_or_else(|e| e.into_inner()) = t.clone();
                        f(t).await
                    }
                    None => f(self.token()).await,
                }
            }
            other => other,
        }
    }
}
