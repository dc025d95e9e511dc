//! The composition root: builds every domain service ([`AppState`]), assembles their routes
//! inside the shared middleware ([`router`]), starts the background tasks and serves
//! ([`run`], [`serve`], [`spawn`]). Also the operations endpoints ([`ops`]: health, readiness,
//! metrics, the OpenAPI document). The only module that knows every domain.

mod errors;
pub mod ops;
mod serve;
mod state;
mod tasks;

pub use errors::StartError;
pub use serve::{router, run, serve, spawn, RunError, ServerHandle};
pub use state::AppState;
