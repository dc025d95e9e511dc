//! The trait every source of access tokens implements. It lives apart from [`crate::token`]
//! (token management, which calls WeChat through [`crate::http`]) so that the HTTP pipeline,
//! which asks a source for the token of each call, does not import token management back.
//! Public as [`crate::token::TokenSource`] and [`crate::TokenSource`].

use async_trait::async_trait;

use crate::error::Result;
use crate::secret::AccessToken;

/// Something that hands out access tokens: a [`TokenManager`](crate::token::TokenManager), or a
/// remote broker.
#[async_trait]
pub trait TokenSource: Send + Sync + std::fmt::Debug {
    /// A token that is valid now, fetching or waiting for one if needed.
    ///
    /// # Errors
    /// Upstream errors from the token endpoint (typed), or a store failure with no usable copy.
    async fn token(&self) -> Result<AccessToken>;

    /// Reports that `stale` was rejected by WeChat (40001/40014/42001). The source drops it
    /// only if it is still current, so the next [`TokenSource::token`] refreshes once.
    ///
    /// # Errors
    /// Implementations may report store failures; the default manager logs them instead.
    async fn invalidate(&self, stale: &AccessToken) -> Result<()>;
}
