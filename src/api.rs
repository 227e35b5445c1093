//! Query and operations endpoints: SQL, incidents, metrics, liveness, readiness.

use std::sync::atomic::Ordering;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use causeway_engine::Error as EngineError;
use causeway_engine::sql::QueryResult;
use serde::Deserialize;

use crate::app::Shared;
use crate::format;

/// The `/api/v1/*`, `/metrics`, `/livez` and `/readyz` routes.
pub(crate) fn router(shared: Shared) -> Router {
    Router::new()
        .route("/api/v1/sql", post(sql))
        .route("/api/v1/incidents", get(incidents))
        .route("/api/v1/incidents/{id}", get(incident))
        .route("/api/v1/actions", get(actions_pending))
        .route("/api/v1/actions/{id}/approve", post(approve))
        .route("/api/v1/actions/{id}/deny", post(deny))
        .route("/api/v1/runbooks/{name}/resume", post(resume))
        .route(
            "/api/v1/kill-switch",
            get(kill_switch_state).post(set_kill_switch),
        )
        .route("/metrics", get(metrics))
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(shared)
}

/// An API error: logged in full, shown to the client as a safe message.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({"error": self.1}))).into_response()
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Query(msg) => ApiError(StatusCode::BAD_REQUEST, msg),
            EngineError::QueryTimeout { .. } => {
                ApiError(StatusCode::REQUEST_TIMEOUT, e.to_string())
            }
            EngineError::Busy { .. } => ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            other => {
                tracing::error!(error = %other, "query failed");
                ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal error".into())
            }
        }
    }
}

impl From<crate::actions::CommandError> for ApiError {
    fn from(e: crate::actions::CommandError) -> Self {
        use crate::actions::CommandError as C;
        match e {
            C::NotFound(m) => ApiError(StatusCode::NOT_FOUND, m),
            C::Conflict(m) => ApiError(StatusCode::CONFLICT, m),
            C::Invalid(m) => ApiError(StatusCode::BAD_REQUEST, m),
        }
    }
}

/// Who decides on an action: `{"approver": "alice@example.com"}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApprovalRequest {
    approver: String,
}

async fn approve(
    State(shared): State<Shared>,
    Path(id): Path<String>,
    body: Result<Json<ApprovalRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Json(req) = body.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))?;
    let decisions = shared.actions.approve(&id, &req.approver)?;
    Ok(Json(decisions_json(&id, &decisions)))
}

async fn deny(
    State(shared): State<Shared>,
    Path(id): Path<String>,
    body: Result<Json<ApprovalRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Json(req) = body.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))?;
    let decisions = shared.actions.deny(&id, &req.approver)?;
    Ok(Json(decisions_json(&id, &decisions)))
}

/// The answer to approve/deny: the new decision rows (none when it repeats an
/// earlier, identical decision).
fn decisions_json(id: &str, decisions: &[causeway_rules::runbook::Decision]) -> serde_json::Value {
    serde_json::json!({
        "action_id": id,
        "decisions": decisions.iter().map(crate::actions::decision_json).collect::<Vec<_>>(),
    })
}

async fn actions_pending(State(shared): State<Shared>) -> Json<serde_json::Value> {
    Json(shared.actions.pending())
}

async fn resume(
    State(shared): State<Shared>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    shared.actions.resume(&name)?;
    Ok(Json(serde_json::json!({"runbook": name, "halted": false})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KillSwitchRequest {
    on: bool,
}

async fn kill_switch_state(State(shared): State<Shared>) -> Json<serde_json::Value> {
    Json(serde_json::json!({"on": shared.actions.kill_switch()}))
}

async fn set_kill_switch(
    State(shared): State<Shared>,
    body: Result<Json<KillSwitchRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Json(req) = body.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))?;
    shared.actions.set_kill_switch(req.on);
    Ok(Json(serde_json::json!({"on": req.on})))
}

#[derive(Debug, Deserialize)]
struct SqlRequest {
    query: String,
}

async fn sql(
    State(shared): State<Shared>,
    headers: HeaderMap,
    body: Result<Json<SqlRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body.map_err(|e| ApiError(e.status(), e.body_text()))?;
    let result = shared.reader.query(&req.query, shared.limits).await?;
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let internal = |e: anyhow::Error| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}"));
    if accept.contains("application/vnd.apache.arrow.stream") {
        let bytes = format::arrow_ipc(&result).map_err(internal)?;
        return Ok((
            [(header::CONTENT_TYPE, "application/vnd.apache.arrow.stream")],
            bytes,
        )
            .into_response());
    }
    if accept.contains("text/csv") {
        let bytes = format::csv(&result.batches).map_err(internal)?;
        return Ok(([(header::CONTENT_TYPE, "text/csv")], bytes).into_response());
    }
    let bytes = format::json_rows(&result.batches).map_err(internal)?;
    Ok(([(header::CONTENT_TYPE, "application/json")], bytes).into_response())
}

#[derive(Debug, Deserialize)]
struct IncidentFilter {
    state: Option<String>,
}

async fn run_json(shared: &Shared, query: &str) -> Result<serde_json::Value, ApiError> {
    let result = shared.reader.query(query, shared.limits).await?;
    rows_value(&result)
}

fn rows_value(result: &QueryResult) -> Result<serde_json::Value, ApiError> {
    let bytes = format::json_rows(&result.batches)
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

async fn incidents(
    State(shared): State<Shared>,
    Query(filter): Query<IncidentFilter>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let condition = match filter.state.as_deref() {
        None | Some("") => "",
        Some("open") => "WHERE state <> 'resolved'",
        Some("resolved") => "WHERE state = 'resolved'",
        Some(other) => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                format!("state {other:?}: expected open or resolved"),
            ));
        }
    };
    let rows = run_json(
        &shared,
        &format!("SELECT * FROM incidents_latest {condition} ORDER BY opened_at, incident_id"),
    )
    .await?;
    Ok(Json(rows))
}

async fn incident(
    State(shared): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    // Ids are ours: `inc_` and 32 hex digits. Anything else cannot exist, and
    // checking it here keeps the value safe to put in SQL.
    let valid =
        id.len() == 36 && id.starts_with("inc_") && id[4..].bytes().all(|b| b.is_ascii_hexdigit());
    if !valid {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no incident {id:?}"),
        ));
    }
    let versions = run_json(
        &shared,
        &format!("SELECT * FROM incidents WHERE incident_id = '{id}' ORDER BY version"),
    )
    .await?;
    let Some(latest) = versions.as_array().and_then(|v| v.last()).cloned() else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no incident {id:?}"),
        ));
    };
    let chain = run_json(&shared, &format::chain_query(&id)).await?;
    let actions = run_json(
        &shared,
        &format!(
            "SELECT action_id, runbook, action_class, decision, reason, decided_at, approver, target, params \
             FROM actions WHERE incident_id = '{id}' ORDER BY decided_at, decision"
        ),
    )
    .await?;
    // The enrichment column holds JSON text; the API gives it as an object.
    let enrichment = latest["enrichment"]
        .as_str()
        .and_then(|e| serde_json::from_str::<serde_json::Value>(e).ok())
        .unwrap_or(serde_json::Value::Null);
    Ok(Json(serde_json::json!({
        "incident": latest,
        "enrichment": enrichment,
        "versions": versions,
        "chain": chain,
        "actions": actions,
    })))
}

async fn metrics() -> Response {
    use prometheus::Encoder;
    let encoder = prometheus::TextEncoder::new();
    let mut buf = Vec::new();
    match encoder.encode(&prometheus::gather(), &mut buf) {
        Ok(()) => (
            [(header::CONTENT_TYPE, encoder.format_type().to_owned())],
            buf,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn readyz(State(shared): State<Shared>) -> Response {
    let mut problems = Vec::new();
    if shared.draining.is_cancelled() {
        problems.push("draining");
    }
    if !shared.log.is_available() {
        problems.push("event log unavailable");
    }
    if !shared.engine_healthy.load(Ordering::Relaxed) {
        problems.push("history not writable");
    }
    if problems.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", problems.join(", ")),
        )
            .into_response()
    }
}
