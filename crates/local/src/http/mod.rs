//! The control API: routes, bearer-token authorization, and the small handlers. Applying and
//! listing live in [`apply`] and [`listings`].

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::controller::Controller;
use crate::wire::ApiError;

mod apply;
mod listings;
mod rayclusters;

use apply::{apply, diff};
use listings::{
    delete_service, get_service, list_clusters, list_endpoints, list_events, list_pods,
    list_services,
};

#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) controller: Arc<Controller>,
    pub(crate) token: Arc<String>,
    pub(crate) shutdown: Arc<tokio::sync::watch::Sender<bool>>,
}

pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/apply", post(apply))
        .route("/v1/diff", post(diff))
        .route("/v1/rayservices", get(list_services))
        .route(
            "/v1/rayservices/{name}",
            get(get_service).delete(delete_service),
        )
        .route("/v1/rayclusters", get(list_clusters))
        .route(
            "/v1/rayclusters/{name}",
            axum::routing::delete(rayclusters::delete_raycluster),
        )
        .route("/v1/pods", get(list_pods))
        .route("/v1/services", get(list_endpoints))
        .route("/v1/events/{name}", get(list_events))
        .route("/v1/shutdown", post(shutdown))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authorize,
        ))
        .with_state(state)
}

async fn authorize(
    State(state): State<AppState>,
    headers: HeaderMap,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let expected = format!("Bearer {}", state.token);
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if given.len() == expected.len() && constant_time_eq(given.as_bytes(), expected.as_bytes()) {
        next.run(request).await
    } else {
        error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong token: use the rayservice CLI with the same RAYSERVICE_HOME",
        )
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(crate) fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(ApiError {
            error: message.to_string(),
        }),
    )
        .into_response()
}

async fn health() -> Json<Value> {
    Json(json!({"pid": std::process::id(), "version": env!("CARGO_PKG_VERSION")}))
}

async fn shutdown(State(state): State<AppState>, Json(body): Json<Value>) -> Json<Value> {
    if body["stopClusters"].as_bool().unwrap_or(false) {
        for name in state.controller.service_names() {
            let _ = state.controller.delete_service(&name).await;
        }
        let standalone = state
            .controller
            .with_store(|s| s.rayclusters())
            .unwrap_or_default();
        for (name, _) in standalone {
            let _ = state.controller.delete_raycluster(&name).await;
        }
    }
    let _ = state.shutdown.send(true);
    Json(json!({"stopping": true}))
}
