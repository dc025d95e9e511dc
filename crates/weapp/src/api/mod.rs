//! The API domains, one handler each, reached from [`crate::Client`].

pub mod auth;
pub mod security;

use serde::Deserialize;

use crate::http::JsonResponse;

/// A success body with nothing in it but `errcode: 0`.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[non_exhaustive]
pub struct Ack {}

impl JsonResponse for Ack {}
