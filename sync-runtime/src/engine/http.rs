//! The HTTP transport (reqwest).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::protocol::{
    ChangesResponse, FINGERPRINT_HEADER, Problem, PushRequest, PushResponse, SnapshotResponse,
};

use super::{Transport, TransportError};

/// Talks to a server's `/push`, `/changes`, `/snapshot` and `/health` over HTTP.
#[derive(Debug, Clone)]
pub struct HttpTransport {
    client: reqwest::Client,
    base_url: String,
    fingerprint: Option<String>,
    /// The `Date` of the last response (the server's clock).
    server_time: Arc<Mutex<Option<chrono::DateTime<chrono::Utc>>>>,
    /// The `sync-protocol` of the last response that carried one.
    server_protocol: Arc<Mutex<Option<String>>>,
}

impl HttpTransport {
    /// A transport to `base_url` (e.g. `http://127.0.0.1:8080`), with a 30 s timeout.
    ///
    /// ```
    /// use sync_runtime::engine::HttpTransport;
    ///
    /// assert!(HttpTransport::new("http://127.0.0.1:8080/sync").is_ok());
    /// assert!(HttpTransport::new("127.0.0.1:8080").is_err(), "no scheme");
    /// ```
    ///
    /// # Errors
    /// As [`HttpTransport::with_timeout`].
    pub fn new(base_url: impl Into<String>) -> Result<Self, TransportError> {
        Self::with_timeout(base_url, Duration::from_secs(30))
    }

    /// A transport with another request timeout.
    ///
    /// # Errors
    /// [`TransportError::Invalid`] if `base_url` is not an absolute `http` or `https` URL
    /// (a malformed one would otherwise fail every request as if the server were
    /// unreachable, and the engine would wait for it forever), or if reqwest cannot build
    /// its client (a TLS backend or the system's resolver configuration cannot be loaded).
    pub fn with_timeout(
        base_url: impl Into<String>,
        timeout: Duration,
    ) -> Result<Self, TransportError> {
        let base_url = base_url.into();
        match reqwest::Url::parse(&base_url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => {}
            Ok(u) => {
                return Err(TransportError::Invalid(format!(
                    "server URL `{base_url}`: expected http:// or https:// with a host, got scheme `{}`",
                    u.scheme()
                )));
            }
            Err(e) => {
                return Err(TransportError::Invalid(format!(
                    "server URL `{base_url}`: {e} (expected e.g. http://127.0.0.1:8080)"
                )));
            }
        }
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| TransportError::Invalid(e.to_string()))?;
        Ok(HttpTransport {
            client,
            base_url: base_url.trim_end_matches('/').to_string(),
            fingerprint: None,
            server_time: Arc::default(),
            server_protocol: Arc::default(),
        })
    }

    /// Sends this model fingerprint with every request, so the server can tell an old
    /// client (see `LocalStore::fingerprint`). Not needed with a
    /// [`SyncEngine`](super::SyncEngine): it hands over its store's
    /// ([`Transport::use_fingerprint`]).
    pub fn fingerprint(mut self, fingerprint: impl Into<String>) -> Self {
        self.fingerprint = Some(fingerprint.into());
        self
    }

    fn request(&self, method: reqwest::Method, path: &str, token: &str) -> reqwest::RequestBuilder {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base_url))
            .bearer_auth(token)
            .header(
                crate::protocol::PROTOCOL_HEADER,
                crate::protocol::PROTOCOL_VERSION,
            );
        if let Some(fp) = &self.fingerprint {
            req = req.header(FINGERPRINT_HEADER, fp);
        }
        req
    }

    async fn send<R: serde::de::DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<R, TransportError> {
        let res = req.send().await.map_err(map_error)?;
        self.note_date(res.headers());
        let status = res.status().as_u16();
        // The server's request id, so a client log line can be matched with the server's.
        if let Some(id) = res
            .headers()
            .get(crate::protocol::REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
        {
            tracing::info!(
                request_id = id,
                status,
                path = res.url().path(),
                "server answered"
            );
        }
        if !(200..300).contains(&status) {
            let retry_after = res
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let problem = res.json::<Problem>().await.ok().map(Box::new);
            return Err(TransportError::Http {
                status,
                retry_after,
                problem,
            });
        }
        res.json::<R>().await.map_err(|e| {
            if e.is_timeout() {
                TransportError::Timeout
            } else {
                TransportError::Invalid(e.to_string())
            }
        })
    }
}

impl HttpTransport {
    /// Keeps the server's time from a response's `Date` header (RFC 9110, one-second
    /// resolution).
    fn note_date(&self, headers: &reqwest::header::HeaderMap) {
        let date = headers
            .get(reqwest::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| chrono::DateTime::parse_from_rfc2822(v).ok());
        if let Some(d) = date {
            *self.server_time.lock().unwrap_or_else(|e| e.into_inner()) = Some(d.to_utc());
        }
        if let Some(v) = headers
            .get(crate::protocol::PROTOCOL_HEADER)
            .and_then(|v| v.to_str().ok())
        {
            *self
                .server_protocol
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(v.to_string());
        }
    }
}

fn map_error(e: reqwest::Error) -> TransportError {
    if e.is_timeout() {
        TransportError::Timeout
    } else if e.is_connect() {
        TransportError::Unreachable(e.to_string())
    } else if e.is_request() || e.is_body() {
        // The connection broke mid-request: it may have been applied, like a timeout.
        TransportError::Timeout
    } else {
        TransportError::Unreachable(e.to_string())
    }
}

impl Transport for HttpTransport {
    async fn push(
        &self,
        token: &str,
        request: &PushRequest,
    ) -> Result<PushResponse, TransportError> {
        self.send(
            self.request(reqwest::Method::POST, "/push", token)
                .json(request),
        )
        .await
    }

    async fn changes(
        &self,
        token: &str,
        since: Option<&str>,
        limit: u32,
    ) -> Result<ChangesResponse, TransportError> {
        let path = crate::protocol::changes_target(since, limit);
        self.send(self.request(reqwest::Method::GET, &path, token))
            .await
    }

    async fn snapshot(
        &self,
        token: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<SnapshotResponse, TransportError> {
        let path = crate::protocol::snapshot_target(cursor, limit);
        self.send(self.request(reqwest::Method::GET, &path, token))
            .await
    }

    async fn entity_snapshot(
        &self,
        token: &str,
        entity: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<SnapshotResponse, TransportError> {
        let path = crate::protocol::entity_snapshot_target(entity, cursor, limit);
        self.send(self.request(reqwest::Method::GET, &path, token))
            .await
    }

    fn server_time(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        *self.server_time.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn use_fingerprint(&mut self, fingerprint: &str) {
        if self.fingerprint.is_none() {
            self.fingerprint = Some(fingerprint.to_string());
        }
    }

    fn server_protocol(&self) -> Option<String> {
        self.server_protocol
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    async fn health(&self) -> Result<(), TransportError> {
        let res = self
            .client
            .get(format!("{}/health", self.base_url))
            .send()
            .await
            .map_err(map_error)?;
        self.note_date(res.headers());
        if res.status().is_success() {
            Ok(())
        } else {
            Err(TransportError::Http {
                status: res.status().as_u16(),
                retry_after: None,
                problem: None,
            })
        }
    }
}
