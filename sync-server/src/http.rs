//! The HTTP surface: routes, auth, problem+json errors, request ids and tracing.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State as AxState};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use sync_runtime::protocol::{
    ChangesResponse, FINGERPRINT_HEADER, MAX_PAGE_LIMIT, MutationResult, PROBLEM_JSON, Problem,
    PushResponse, REQUEST_ID_HEADER, ServerRecord, SnapshotResponse,
};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::logic::{self, Cursor};
use crate::{ServerError, State, problem};

type Shared = Arc<State>;

/// A problem response (`application/problem+json`).
pub(crate) struct ProblemResponse(Box<ProblemInner>);

struct ProblemInner {
    problem: Problem,
    headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl ProblemResponse {
    fn new(status: u16, kind: &str, title: &str, detail: impl Into<String>) -> Self {
        ProblemResponse(Box::new(ProblemInner {
            problem: problem(kind, title, status, detail),
            headers: Vec::new(),
        }))
    }
}

impl IntoResponse for ProblemResponse {
    fn into_response(self) -> Response {
        let inner = *self.0;
        let status =
            StatusCode::from_u16(inner.problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut res = (
            status,
            serde_json::to_string(&inner.problem).unwrap_or_default(),
        )
            .into_response();
        res.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        for (k, v) in inner.headers {
            res.headers_mut().insert(k, v);
        }
        res
    }
}

impl From<ServerError> for ProblemResponse {
    fn from(e: ServerError) -> Self {
        match e {
            ServerError::TokenExpired => ProblemResponse::new(
                410,
                "token-expired",
                "Change token expired",
                "the changes after this token were compacted; take a new snapshot (GET /snapshot) and continue from its token",
            ),
            ServerError::TokenUnknown => ProblemResponse::new(
                410,
                "token-unknown",
                "Change token unknown",
                "this database did not issue this change token or cursor to this account (the database was restored from a backup or replaced, or the token is another account's); take a new snapshot (GET /snapshot) and push again what the server lost",
            ),
            ServerError::BadRecord(msg) => {
                ProblemResponse::new(422, "invalid-record", "Invalid record", msg)
            }
            other => {
                tracing::error!(error = %other, "request failed");
                ProblemResponse::new(
                    500,
                    "internal",
                    "Internal server error",
                    "the server failed; retry later",
                )
            }
        }
    }
}

pub(crate) fn router(state: Shared) -> Router {
    let clock = state.clone();
    Router::new()
        .route("/push", post(push))
        .route("/changes", get(changes))
        .route("/snapshot", get(snapshot))
        .route("/health", get(health))
        .fallback(|| async { ProblemResponse::new(404, "not-found", "Not found", "no such route; the protocol serves POST /push, GET /changes, GET /snapshot and GET /health") })
        .method_not_allowed_fallback(|| async { ProblemResponse::new(405, "method-not-allowed", "Method not allowed", "see the OpenAPI document for the methods of each route") })
        .with_state(state)
        .layer(CatchPanicLayer::custom(|_| {
            ProblemResponse::new(500, "internal", "Internal server error", "the server failed; retry later").into_response()
        }))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<Body>| {
            let request_id = req
                .headers()
                .get(REQUEST_ID_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id)
        }))
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        // Every response says the server's time (RFC 9110 `Date`), from the server's
        // clock: clients learn their clock offset from it (see *Clocks* in the crate docs).
        .layer(axum::middleware::map_response(move |mut res: Response| {
            let now = clock.now();
            async move {
                let date = now.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
                if let Ok(v) = HeaderValue::from_str(&date) {
                    res.headers_mut().insert(header::DATE, v);
                }
                // And the protocol it speaks: clients send dots once they saw 1.3.0.
                res.headers_mut().insert(
                    sync_runtime::protocol::PROTOCOL_HEADER,
                    HeaderValue::from_static(sync_runtime::protocol::PROTOCOL_VERSION),
                );
                res
            }
        }))
}

/// The token of an `Authorization: Bearer <token>` value. The scheme's name is
/// case-insensitive and followed by one or more spaces (RFC 9110 section 11.1, RFC 6750
/// section 2.1).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim_start_matches(' ');
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The page size of a `limit` query parameter: 1 to [`MAX_PAGE_LIMIT`] as the document
/// says, capped by the server's [`crate::Config::max_page`]; the server's page size if
/// absent.
fn page_limit(limit: Option<u32>, max_page: u32) -> Result<u32, ProblemResponse> {
    match limit {
        None => Ok(max_page.clamp(1, MAX_PAGE_LIMIT)),
        Some(n) if (1..=MAX_PAGE_LIMIT).contains(&n) => Ok(n.min(max_page.max(1))),
        Some(n) => Err(ProblemResponse::new(
            400,
            "invalid-query",
            "Invalid query",
            format!("`limit` is 1 to {MAX_PAGE_LIMIT}; got {n}"),
        )),
    }
}

fn request_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The account of the request's bearer token (a malformed fingerprint header is a bad
/// request here; whether the server serves that model is [`check_model`]'s, after the
/// request's input is checked).
fn authorize(state: &State, headers: &HeaderMap) -> Result<String, ProblemResponse> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .ok_or_else(|| {
            let mut p = ProblemResponse::new(
                401,
                "unauthorized",
                "Unauthorized",
                "send `Authorization: Bearer <token>`",
            );
            p.0.headers
                .push((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
            p
        })?;
    let account = state.verifier.verify(token.trim()).ok_or_else(|| {
        let mut p = ProblemResponse::new(
            401,
            "unauthorized",
            "Unauthorized",
            "the bearer token is not valid; refresh it",
        );
        p.0.headers.push((
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer error=\"invalid_token\""),
        ));
        p
    })?;
    if let Some(raw) = headers.get(FINGERPRINT_HEADER) {
        let fp = raw.to_str().unwrap_or_default();
        let well_formed = fp.strip_prefix("sha256:").is_some_and(|h| {
            h.len() == 32
                && h.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        });
        if !well_formed {
            return Err(ProblemResponse::new(
                400,
                "invalid-fingerprint",
                "Invalid model fingerprint",
                "the sync-model-fingerprint header must look like `sha256:` and 32 hex digits",
            ));
        }
    }
    Ok(account)
}

/// The `sync-model-fingerprint` header's value (well-formed: see [`authorize`]).
fn client_fingerprint(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(FINGERPRINT_HEADER)
        .and_then(|v| v.to_str().ok())
}

/// 426 for a client model the server does not serve. Checked after the request's input,
/// so input the document does not allow is 400/422 whatever the client's model.
fn check_model(state: &State, headers: &HeaderMap) -> Result<(), ProblemResponse> {
    if let Some(fp) = client_fingerprint(headers)
        && !state.fingerprints.contains(fp)
    {
        return Err(ProblemResponse::new(
            426,
            "upgrade-required",
            "Client model not supported",
            format!(
                "this client was built for model {fp}, which this server does not serve (it serves {}); update the app if it is older than the server, or wait: a device newer than its server keeps its changes until the server is upgraded",
                state.current_fingerprint
            ),
        ));
    }
    if let (Some(fp), Some(oldest)) = (client_fingerprint(headers), &state.config.oldest_model)
        && let (Some(client), Some(floor)) =
            (state.history.position(fp), state.history.position(oldest))
        && client < floor
    {
        return Err(ProblemResponse::new(
            426,
            "upgrade-required",
            "Client model no longer served",
            format!(
                "this client was built for model {fp}, which this server no longer serves (the oldest it serves is {oldest}); update the app: its changes are kept until then"
            ),
        ));
    }
    Ok(())
}

/// Records for a client of an earlier model, in that model's shape (see
/// [`crate::history`]): records of entities it does not know left out, the others
/// translated. Records for a client of the server's model as they are.
fn serve_in_client_shape(state: &State, headers: &HeaderMap, records: &mut Vec<ServerRecord>) {
    if !speaks_1_3(headers) {
        records.iter_mut().for_each(|r| r.dots = None);
    }
    if !speaks(headers, sync_runtime::protocol::GAPS_SINCE) {
        records.iter_mut().for_each(|r| r.dot_gaps = None);
    }
    if !speaks(headers, sync_runtime::protocol::LIVES_SINCE) {
        records.iter_mut().for_each(|r| r.life_since = None);
    }
    let Some(lens) = client_fingerprint(headers).and_then(|fp| state.history.lens(fp)) else {
        return;
    };
    records.retain(|r| lens.knows_entity(&r.entity_type));
    records.iter_mut().for_each(|r| lens.record_out(r));
}

/// Whether the client reads what protocol 1.3.0 added to responses
/// ([`ServerRecord::dots`], [`SnapshotResponse::estimated_total`]): it says it speaks
/// 1.3.0 or later ([`sync_runtime::protocol::PROTOCOL_HEADER`]). Earlier runtimes refuse
/// unknown members, so they are served responses without.
fn speaks_1_3(headers: &HeaderMap) -> bool {
    speaks(headers, sync_runtime::protocol::DOTS_SINCE)
}

/// Whether the client says it speaks protocol `since` or later
/// ([`sync_runtime::protocol::PROTOCOL_HEADER`]); [`ServerRecord::dot_gaps`] go only to
/// clients of 1.3.2 or later.
fn speaks(headers: &HeaderMap, since: (u64, u64, u64)) -> bool {
    headers
        .get(sync_runtime::protocol::PROTOCOL_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| sync_runtime::protocol::speaks_at_least(v, since))
}

fn with_instance(mut p: ProblemResponse, headers: &HeaderMap) -> ProblemResponse {
    p.0.problem.instance = request_id(headers).map(|id| format!("urn:request:{id}"));
    p
}

async fn push(
    AxState(state): AxState<Shared>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<PushResponse>, ProblemResponse> {
    let result = push_inner(&state, &headers, body).await;
    result.map_err(|p| with_instance(p, &headers))
}

async fn push_inner(
    state: &State,
    headers: &HeaderMap,
    body: Body,
) -> Result<Json<PushResponse>, ProblemResponse> {
    let account = authorize(state, headers)?;
    let bytes = axum::body::to_bytes(body, state.config.max_body_bytes)
        .await
        .map_err(|_| {
            ProblemResponse::new(
                413,
                "body-too-large",
                "Request body too large",
                format!(
                    "a push body may be at most {} bytes; send fewer mutations per request",
                    state.config.max_body_bytes
                ),
            )
        })?;
    let request = sync_runtime::protocol::decode_push_request(&bytes).map_err(|r| {
        let mut p = ProblemResponse::new(r.status, "invalid-body", "Invalid push body", r.detail);
        p.0.problem.pointer = Some(r.pointer);
        p
    })?;
    check_model(state, headers)?;
    let max_batch = state
        .config
        .max_batch
        .min(sync_runtime::protocol::MAX_PUSH_MUTATIONS);
    if request.mutations.len() > max_batch {
        return Err(ProblemResponse::new(
            413,
            "batch-too-large",
            "Too many mutations",
            format!("a push may hold at most {max_batch} mutations"),
        ));
    }
    // A client of an earlier model (a fingerprint the server knows, not its current one)
    // sends records without the fields added since.
    let model = match client_fingerprint(headers) {
        Some(fp) if fp != state.current_fingerprint => logic::ClientModel::Earlier,
        _ => logic::ClientModel::Current,
    };
    // ... in its own shape (renamed fields, dropped ones): translated to the server's.
    let lens = client_fingerprint(headers).and_then(|fp| state.history.lens(fp));
    let mut mutations = request.mutations;
    if let Some(lens) = lens {
        mutations.iter_mut().for_each(|m| lens.mutation_in(m));
    }
    let (mut results, in_flight) =
        logic::push_batch(state, &account, model, lens, &mutations).await?;
    let (dots, gaps, lives) = (
        speaks_1_3(headers),
        speaks(headers, sync_runtime::protocol::GAPS_SINCE),
        speaks(headers, sync_runtime::protocol::LIVES_SINCE),
    );
    for r in &mut results {
        if let MutationResult::Applied { server, .. } | MutationResult::Conflict { server, .. } = r
        {
            if !dots {
                server.dots = None;
            }
            if !gaps {
                server.dot_gaps = None;
            }
            if !lives {
                server.life_since = None;
            }
        }
    }
    if let Some(lens) = lens {
        for (m, r) in mutations.iter().zip(&mut results) {
            lens.result_out(r, &m.entity_type);
        }
    }
    for (m, r) in mutations.iter().zip(&results) {
        tracing::info!(
            entity_type = %m.entity_type,
            entity_id = %m.entity_id,
            idempotency_key = %m.idempotency_key,
            result = result_name(r),
            "mutation"
        );
    }
    if let Some(key) = in_flight {
        return Err(ProblemResponse::new(
            409,
            "request-in-progress",
            "Request in progress",
            format!(
                "the mutation with idempotency key `{key}` is still being processed; retry later (mutations before it were applied and will be replayed)"
            ),
        ));
    }
    Ok(Json(PushResponse { results }))
}

fn result_name(r: &MutationResult) -> &'static str {
    match r {
        MutationResult::Applied { .. } => "applied",
        MutationResult::Conflict { .. } => "conflict",
        MutationResult::Rejected { .. } => "rejected",
    }
}

/// The query of `GET /changes`; any other parameter is a bad request, as the document
/// lists every parameter.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangesParams {
    since: Option<String>,
    limit: Option<u32>,
}

async fn changes(
    AxState(state): AxState<Shared>,
    headers: HeaderMap,
    params: Result<Query<ChangesParams>, QueryRejection>,
) -> Result<Json<ChangesResponse>, ProblemResponse> {
    let result = async {
        let account = authorize(&state, &headers)?;
        let Query(params) = params.map_err(|e| {
            ProblemResponse::new(400, "invalid-query", "Invalid query", e.body_text())
        })?;
        let since = match &params.since {
            None => None,
            Some(t) => Some(logic::parse_token(t).ok_or_else(|| {
                ProblemResponse::new(
                    400,
                    "invalid-token",
                    "Invalid change token",
                    format!("`{t}` is not a change token from this server"),
                )
            })?),
        };
        let limit = page_limit(params.limit, state.config.max_page)?;
        check_model(&state, &headers)?;
        let (mut changes, next_token, has_more) =
            logic::changes(&state, &account, since.as_ref(), limit).await?;
        serve_in_client_shape(&state, &headers, &mut changes);
        Ok(Json(ChangesResponse {
            changes,
            next_token,
            has_more,
        }))
    }
    .await;
    result.map_err(|p| with_instance(p, &headers))
}

/// The query of `GET /snapshot` (no other parameter).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotParams {
    cursor: Option<String>,
    entity: Option<String>,
    limit: Option<u32>,
}

async fn snapshot(
    AxState(state): AxState<Shared>,
    headers: HeaderMap,
    params: Result<Query<SnapshotParams>, QueryRejection>,
) -> Result<Json<SnapshotResponse>, ProblemResponse> {
    let result = async {
        let account = authorize(&state, &headers)?;
        let Query(params) = params.map_err(|e| {
            ProblemResponse::new(400, "invalid-query", "Invalid query", e.body_text())
        })?;
        let cursor = match &params.cursor {
            None => None,
            Some(c) => Some(Cursor::parse(c).ok_or_else(|| {
                ProblemResponse::new(
                    400,
                    "invalid-cursor",
                    "Invalid snapshot cursor",
                    format!("`{c}` is not a snapshot cursor from this server"),
                )
            })?),
        };
        let limit = page_limit(params.limit, state.config.max_page)?;
        check_model(&state, &headers)?;
        let lens = client_fingerprint(&headers).and_then(|fp| state.history.lens(fp));
        let only = match &params.entity {
            None => None,
            Some(name) => {
                let server_name = lens.map_or(name.as_str(), |l| l.server_entity(name));
                let place = state
                    .entity_order
                    .iter()
                    .position(|e| e == server_name)
                    .filter(|_| lens.is_none_or(|l| l.knows_entity(server_name)))
                    .ok_or_else(|| {
                        ProblemResponse::new(
                            400,
                            "invalid-query",
                            "Invalid query",
                            format!("`{name}` is not an entity this server serves to this client"),
                        )
                    })?;
                if cursor.as_ref().is_some_and(|c| c.entity != place) {
                    return Err(ProblemResponse::new(
                        400,
                        "invalid-cursor",
                        "Invalid snapshot cursor",
                        format!("this cursor continues a snapshot of another entity than `{name}`"),
                    ));
                }
                Some(place)
            }
        };
        let (mut records, next, pinned, total) =
            logic::snapshot(&state, &account, cursor, only, limit).await?;
        serve_in_client_shape(&state, &headers, &mut records);
        Ok(Json(SnapshotResponse {
            records,
            has_more: next.is_some(),
            next_cursor: next.map(|c| c.encode()),
            token: pinned,
            estimated_total: total.filter(|_| speaks_1_3(&headers)),
        }))
    }
    .await;
    result.map_err(|p| with_instance(p, &headers))
}

/// `GET /health` takes no parameter; any is a bad request, as for the other routes.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthParams {}

async fn health(
    AxState(state): AxState<Shared>,
    headers: HeaderMap,
    params: Result<Query<HealthParams>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ProblemResponse> {
    params.map_err(|e| {
        with_instance(
            ProblemResponse::new(400, "invalid-query", "Invalid query", e.body_text()),
            &headers,
        )
    })?;
    Ok(Json(serde_json::json!({
        "status": "ok",
        "fingerprint": state.current_fingerprint,
        "protocol": sync_runtime::protocol::PROTOCOL_VERSION,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer abc"), Some("abc"));
        assert_eq!(bearer_token("BEARER   abc"), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Bearerabc"), None);
    }

    #[test]
    fn page_limits_are_those_the_document_gives() {
        assert_eq!(page_limit(None, 1000).ok(), Some(1000));
        assert_eq!(page_limit(Some(1), 1000).ok(), Some(1));
        assert_eq!(page_limit(Some(1000), 200).ok(), Some(200));
        assert!(page_limit(Some(0), 1000).is_err());
        assert!(page_limit(Some(1001), 1000).is_err());
    }
}
