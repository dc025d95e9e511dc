//! The platforms domain's error: why a platform's merchants could not be reconciled with
//! WeChat's authorizer list.

use crate::broker::SyncError;
use crate::store::StoreError;

/// Why a platform's merchants could not be reconciled with WeChat's authorizer list. Nothing
/// is de-authorized on a failed listing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReconcileError {
    /// This instance serves no such platform.
    #[error("no platform {0}")]
    UnknownPlatform(String),
    /// WeChat (or the network to it) failed to list the authorizers.
    #[error(transparent)]
    WeChat(#[from] weapp::Error),
    /// The list's total changed between two pages (a merchant could have fallen between them).
    #[error("the authorizer list changed while it was read; nothing reconciled")]
    ListChanged,
    /// The list had fewer entries than its total.
    #[error("the authorizer list was incomplete ({listed} of {total}); nothing reconciled")]
    Incomplete {
        /// Entries read.
        listed: usize,
        /// The total WeChat announced.
        total: i64,
    },
    /// The database could not be read or written.
    #[error(transparent)]
    Database(#[from] StoreError),
    /// A stored refresh token could not be read.
    #[error(transparent)]
    RefreshTokens(#[from] weapp::StoreError),
    /// The merchants could not be served again afterwards.
    #[error(transparent)]
    Sync(#[from] SyncError),
}
