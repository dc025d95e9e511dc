//! The API domains, one handler each, reached from [`crate::Client`].

pub mod analytics;
pub mod auth;
pub mod customer_service;
pub mod media;
pub mod openapi;
pub mod security;
pub mod subscribe;
pub mod url_link;
pub mod wxacode;

use serde::{Deserialize, Serialize};

use crate::http::JsonResponse;

/// A success body with nothing in it but `errcode: 0`.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[non_exhaustive]
pub struct Ack {}

impl JsonResponse for Ack {}

/// Which version of the mini program a code or link opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EnvVersion {
    /// The published version (default).
    #[default]
    Release,
    /// The trial version.
    Trial,
    /// The development version.
    Develop,
}
