//! `GET /openapi.json`: the OpenAPI document of every endpoint, embedded at
//! build time from `openapi.json` beside this file. It is written by hand
//! (the routes are few, and their prose matters more than generated
//! schemas); the tests below keep it true: its paths and methods against
//! the router's routes and the actions the handlers accept, its error
//! codes against `protocol::ErrorCode`, its statuses against that table.

use axum::http::header;
use axum::response::{IntoResponse, Response};

pub const DOCUMENT: &str = include_str!("openapi.json");

pub async fn handler() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT).into_response()
}

#[cfg(test)]
mod tests;
