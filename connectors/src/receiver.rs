//! HTTP receivers: the status-code policy of CONTRACT.md in one place.
//!
//! Every receiver follows the same path: authentication (401), a declared body
//! length over the limit (413, after the body is drained), content type (415),
//! body size (413), decode (400 malformed / 422 unsupported), durable append
//! to the event log (503 when unavailable), then 200 with the number of events
//! accepted. Every refusal is counted by source and reason, and since the log
//! append is the only side effect and happens last, a refused request changes no
//! state.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use causeway_rules::{Event, IndexedCatalog, ProcessingTime};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use crate::decode::{
    DecodeContext, alertmanager, argocd, cloudevents, cloudtrail, cost, github, k8s_audit,
    k8s_events,
};
use crate::{Error, EventLog, metrics};

/// Credentials a receiver requires.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// `Authorization: Bearer <token>`.
    Bearer(String),
    /// `Authorization: Basic <base64(user:password)>`.
    Basic { username: String, password: String },
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets.
        match self {
            Credential::Bearer(_) => f.write_str("Bearer(***)"),
            Credential::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
        }
    }
}

/// Receiver settings.
#[derive(Debug, Clone)]
pub struct ReceiverConfig {
    /// Largest accepted body; larger gets 413.
    pub max_body_bytes: usize,
    /// When set, GitHub deliveries must carry a valid `X-Hub-Signature-256`.
    pub github_secret: Option<String>,
    /// Credentials required per source (receiver name), if any.
    pub auth: std::collections::BTreeMap<String, Credential>,
    /// Requests handled at once, over all receivers; more get 429.
    pub max_concurrent_requests: usize,
    /// Requests per second allowed per receiver (a token bucket with one second of
    /// burst); more get 429. `None` leaves rates unlimited.
    pub max_requests_per_second: Option<u32>,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        ReceiverConfig {
            max_body_bytes: 10 << 20,
            github_secret: None,
            auth: Default::default(),
            max_concurrent_requests: 256,
            max_requests_per_second: None,
        }
    }
}

/// What every receiver shares.
#[derive(Debug, Clone)]
pub struct ReceiverState {
    pub log: Arc<dyn EventLog>,
    pub catalog: Arc<IndexedCatalog>,
    pub config: Arc<ReceiverConfig>,
}

/// The `/ingest/*` routes.
pub fn router(state: ReceiverState) -> Router {
    let limit = state.config.max_body_bytes;
    let inflight = Arc::new(tokio::sync::Semaphore::new(
        state.config.max_concurrent_requests.max(1),
    ));
    let rate = state
        .config
        .max_requests_per_second
        .and_then(std::num::NonZeroU32::new)
        .map(|n| Arc::new(governor::RateLimiter::keyed(governor::Quota::per_second(n))));
    let guard_state = state.clone();
    Router::new()
        .route(
            "/ingest/alertmanager",
            json_receiver("alertmanager", alertmanager::decode),
        )
        .route(
            "/api/v2/alerts",
            json_receiver("prometheus", alertmanager::decode_api_v2),
        )
        .route("/ingest/argocd", json_receiver("argocd", argocd::decode))
        .route(
            "/ingest/k8s-events",
            json_receiver("k8s_event", k8s_events::decode),
        )
        .route(
            "/ingest/cloudtrail",
            json_receiver("cloudtrail", cloudtrail::decode),
        )
        .route(
            "/ingest/events",
            json_receiver("events", cloudevents::decode),
        )
        .route("/ingest/github", post(github_webhook))
        .route("/ingest/k8s-audit", post(k8s_audit_webhook))
        .route("/ingest/cost", post(cost_webhook))
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn(move |req, next| {
            guard(
                guard_state.clone(),
                inflight.clone(),
                rate.clone(),
                req,
                next,
            )
        }))
        .with_state(state)
}

/// The receiver name of a path, for metrics and auth.
fn source_of(path: &str) -> &'static str {
    match path {
        "/ingest/alertmanager" => "alertmanager",
        "/api/v2/alerts" => "prometheus",
        "/ingest/github" => "github",
        "/ingest/argocd" => "argocd",
        "/ingest/k8s-audit" => "k8s_audit",
        "/ingest/k8s-events" => "k8s_event",
        "/ingest/cloudtrail" => "cloudtrail",
        "/ingest/cost" => "cost",
        "/ingest/events" => "events",
        _ => "unknown",
    }
}

/// Per-receiver request rate limiter.
type RateLimiter = governor::DefaultKeyedRateLimiter<&'static str>;

fn too_many(source: &'static str, reason: &'static str, message: &str) -> Response {
    let mut resp = reject(source, StatusCode::TOO_MANY_REQUESTS, reason, message).into_response();
    resp.headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    resp
}

/// Rate limit, concurrency cap, authentication and a declared body length over
/// the limit, before the receiver reads the body.
async fn guard(
    state: ReceiverState,
    inflight: Arc<tokio::sync::Semaphore>,
    rate: Option<Arc<RateLimiter>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let source = source_of(req.uri().path());
    if let Some(rate) = &rate
        && rate.check_key(&source).is_err()
    {
        return too_many(
            source,
            "rate_limited",
            "request rate over the limit; retry later",
        );
    }
    let Ok(_permit) = inflight.try_acquire() else {
        return too_many(
            source,
            "overloaded",
            "too many concurrent requests; retry later",
        );
    };
    if let Some(credential) = state.config.auth.get(source)
        && !authorized(credential, req.headers())
    {
        let mut resp = reject(
            source,
            StatusCode::UNAUTHORIZED,
            "credentials",
            "missing or wrong credentials",
        )
        .into_response();
        let challenge = match credential {
            Credential::Bearer(_) => "Bearer",
            Credential::Basic { .. } => "Basic realm=\"causeway\"",
        };
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static(challenge),
        );
        return resp;
    }
    let limit = state.config.max_body_bytes;
    // hyper sets an exact size hint from a valid Content-Length.
    if let Some(declared) = axum::body::HttpBody::size_hint(req.body()).exact()
        && declared > limit as u64
    {
        return refuse_declared_oversize(source, limit, declared, req.into_body()).await;
    }
    next.run(req).await
}

/// How long a declared-oversize body is read and discarded before the 413.
const OVERSIZE_DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// 413 for a body that declares more than the limit, after reading and
/// discarding it.
///
/// An HTTP/1.1 client without `Expect: 100-continue` writes its whole body
/// before it reads the answer. If the server answers early and closes with the
/// body unread, the client gets a broken pipe or a reset instead of the 413
/// (the lingering-close problem nginx and Apache drain for). So a body of up to
/// four times the limit is drained, within a timeout; a larger one is answered
/// at once, since the sender is beyond helping. A chunked body without a length
/// is cut off by the body limit as it crosses it.
async fn refuse_declared_oversize(
    source: &'static str,
    limit: usize,
    declared: u64,
    body: axum::body::Body,
) -> Response {
    use futures::StreamExt as _;
    if declared <= (limit as u64).saturating_mul(4) {
        let mut stream = body.into_data_stream();
        // hyper ends the body at its declared length.
        let drain = async { while let Some(Ok(_)) = stream.next().await {} };
        // A client that stops sending only costs the timeout.
        let _ = tokio::time::timeout(OVERSIZE_DRAIN_TIMEOUT, drain).await;
    }
    reject(
        source,
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!("body declares {declared} bytes; the limit is {limit}"),
    )
    .into_response()
}

fn authorized(credential: &Credential, headers: &HeaderMap) -> bool {
    use subtle::ConstantTimeEq;
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    match credential {
        Credential::Bearer(token) => value
            .strip_prefix("Bearer ")
            .is_some_and(|given| bool::from(given.as_bytes().ct_eq(token.as_bytes()))),
        Credential::Basic { username, password } => {
            use base64::Engine as _;
            let expected = base64::engine::general_purpose::STANDARD
                .encode(format!("{username}:{password}").as_bytes());
            value
                .strip_prefix("Basic ")
                .is_some_and(|given| bool::from(given.trim().as_bytes().ct_eq(expected.as_bytes())))
        }
    }
}

#[derive(Debug, Deserialize)]
struct Hints {
    cluster: Option<String>,
}

struct Rejection {
    source: &'static str,
    status: StatusCode,
    reason: &'static str,
    message: String,
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        metrics::REJECTED
            .with_label_values(&[self.source, self.reason])
            .inc();
        tracing::info!(
            source = self.source,
            reason = self.reason,
            status = self.status.as_u16(),
            message = %self.message,
            "request rejected"
        );
        let body =
            serde_json::json!({"status": "error", "reason": self.reason, "error": self.message});
        (self.status, Json(body)).into_response()
    }
}

fn reject(
    source: &'static str,
    status: StatusCode,
    reason: &'static str,
    message: impl Into<String>,
) -> Rejection {
    Rejection {
        source,
        status,
        reason,
        message: message.into(),
    }
}

/// The request's media type, lowercased, without parameters.
fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

fn is_json(mime: &str) -> bool {
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

fn is_json_or_csv(mime: &str) -> bool {
    is_json(mime) || mime == "text/csv"
}

fn check_content_type(
    source: &'static str,
    headers: &HeaderMap,
    accepts: fn(&str) -> bool,
) -> Result<(), Rejection> {
    let mime = media_type(headers);
    if accepts(&mime) {
        Ok(())
    } else {
        Err(reject(
            source,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content_type",
            format!("content type {mime:?} is not accepted here"),
        ))
    }
}

fn check_json(source: &'static str, headers: &HeaderMap) -> Result<(), Rejection> {
    check_content_type(source, headers, is_json)
}

fn body_or_reject(
    source: &'static str,
    body: Result<Bytes, BytesRejection>,
) -> Result<Bytes, Rejection> {
    body.map_err(|rej| {
        let status = rej.status();
        let reason = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "too_large"
        } else {
            "body"
        };
        reject(source, status, reason, rej.body_text())
    })
}

fn decode_rejection(source: &'static str, e: Error) -> Rejection {
    match e {
        Error::Malformed { .. } => {
            reject(source, StatusCode::BAD_REQUEST, "malformed", e.to_string())
        }
        Error::Unsupported { .. } => reject(
            source,
            StatusCode::UNPROCESSABLE_ENTITY,
            "unsupported",
            e.to_string(),
        ),
        other => reject(
            source,
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            other.to_string(),
        ),
    }
}

async fn append(
    state: &ReceiverState,
    source: &'static str,
    events: Vec<Event>,
) -> Result<Response, Rejection> {
    let n = events.len();
    state.log.append(events).await.map_err(|e| {
        reject(
            source,
            StatusCode::SERVICE_UNAVAILABLE,
            "log_unavailable",
            e.to_string(),
        )
    })?;
    metrics::ACCEPTED
        .with_label_values(&[source])
        .inc_by(n as u64);
    Ok((
        StatusCode::OK,
        Json(serde_json::json!({"status": "success", "accepted": n})),
    )
        .into_response())
}

fn finish(source: &'static str, started: Instant, r: Result<Response, Rejection>) -> Response {
    metrics::REQUEST_SECONDS
        .with_label_values(&[source])
        .observe(started.elapsed().as_secs_f64());
    match r {
        Ok(resp) => resp,
        Err(rej) => rej.into_response(),
    }
}

async fn k8s_audit_webhook(
    State(state): State<ReceiverState>,
    query: Result<Query<Hints>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    const SOURCE: &str = "k8s_audit";
    let started = Instant::now();
    let result = async {
        let Query(hints) =
            query.map_err(|e| reject(SOURCE, StatusCode::BAD_REQUEST, "query", e.body_text()))?;
        check_json(SOURCE, &headers)?;
        let body = body_or_reject(SOURCE, body)?;
        let cx = DecodeContext {
            catalog: &state.catalog,
            cluster_hint: hints.cluster.as_deref().filter(|c| !c.is_empty()),
            received_at: ProcessingTime::now(),
        };
        let decoded = k8s_audit::decode(&body, &cx).map_err(|e| decode_rejection(SOURCE, e))?;
        for skipped in &decoded.skipped {
            metrics::SKIPPED
                .with_label_values(&[SOURCE, skipped.as_str()])
                .inc();
        }
        append(&state, SOURCE, decoded.events).await
    }
    .await;
    finish(SOURCE, started, result)
}

/// A decoder of one receiver's body.
type Decode = fn(&[u8], &DecodeContext<'_>) -> crate::Result<Vec<Event>>;

/// The route of a JSON receiver whose decoder needs only the body and `?cluster=`.
fn json_receiver(
    source: &'static str,
    decode: Decode,
) -> axum::routing::MethodRouter<ReceiverState> {
    post(
        move |State(state): State<ReceiverState>,
              query: Result<Query<Hints>, QueryRejection>,
              headers: HeaderMap,
              body: Result<Bytes, BytesRejection>| async move {
            simple(source, state, query, headers, body, is_json, decode).await
        },
    )
}

/// A receiver whose decoder takes the body, the catalog and `?cluster=`.
async fn simple(
    source: &'static str,
    state: ReceiverState,
    query: Result<Query<Hints>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
    accepts: fn(&str) -> bool,
    decode: Decode,
) -> Response {
    let started = Instant::now();
    let result = async {
        let Query(hints) =
            query.map_err(|e| reject(source, StatusCode::BAD_REQUEST, "query", e.body_text()))?;
        check_content_type(source, &headers, accepts)?;
        let body = body_or_reject(source, body)?;
        let cx = DecodeContext {
            catalog: &state.catalog,
            cluster_hint: hints.cluster.as_deref().filter(|c| !c.is_empty()),
            received_at: ProcessingTime::now(),
        };
        let events = decode(&body, &cx).map_err(|e| decode_rejection(source, e))?;
        append(&state, source, events).await
    }
    .await;
    finish(source, started, result)
}

/// FOCUS as `text/csv`, or FOCUS rows / OpenCost responses as JSON.
async fn cost_webhook(
    State(state): State<ReceiverState>,
    query: Result<Query<Hints>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let decode: Decode = if media_type(&headers) == "text/csv" {
        cost::decode_focus_csv
    } else {
        cost::decode_json
    };
    simple("cost", state, query, headers, body, is_json_or_csv, decode).await
}

async fn github_webhook(
    State(state): State<ReceiverState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    const SOURCE: &str = "github";
    let started = Instant::now();
    let result = async {
        check_json(SOURCE, &headers)?;
        let body = body_or_reject(SOURCE, body)?;
        if let Some(secret) = &state.config.github_secret {
            verify_github_signature(secret, &headers, &body)?;
        }
        let event_type = headers
            .get("x-github-event")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                reject(
                    SOURCE,
                    StatusCode::BAD_REQUEST,
                    "malformed",
                    "X-GitHub-Event header is missing",
                )
            })?;
        let delivery = headers
            .get("x-github-delivery")
            .and_then(|v| v.to_str().ok());
        let cx = DecodeContext {
            catalog: &state.catalog,
            cluster_hint: None,
            received_at: ProcessingTime::now(),
        };
        let events = github::decode(event_type, delivery, &body, &cx)
            .map_err(|e| decode_rejection(SOURCE, e))?;
        append(&state, SOURCE, events).await
    }
    .await;
    finish(SOURCE, started, result)
}

/// Checks `X-Hub-Signature-256: sha256=<hex>` over the raw body, in constant time.
fn verify_github_signature(
    secret: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), Rejection> {
    let unauthorized = |msg: &str| reject("github", StatusCode::UNAUTHORIZED, "signature", msg);
    let sig = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| unauthorized("X-Hub-Signature-256 is missing"))?;
    let hex_sig = sig
        .strip_prefix("sha256=")
        .ok_or_else(|| unauthorized("X-Hub-Signature-256 must start with sha256="))?;
    let expected = hex::decode(hex_sig).map_err(|_| unauthorized("signature is not hex"))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .map_err(|_| unauthorized("unusable secret"))?;
    mac.update(body);
    mac.verify_slice(&expected)
        .map_err(|_| unauthorized("signature does not match"))
}

#[cfg(test)]
mod tests;
