//! The keys domain's error: why stored secrets could not be re-sealed or the signing keys
//! kept.

use crate::http::AppError;
use crate::store::StoreError;

/// Why stored secrets could not be re-sealed under the newest data key, or the access-token
/// signing keys kept (read, added, rotated, unpublished).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The database could not be read or written.
    #[error(transparent)]
    Database(#[from] StoreError),
}

impl From<SealError> for AppError {
    /// Keeping the signing keys failed: logged in full, answered as a bare 500.
    fn from(e: SealError) -> Self {
        AppError::Internal(e.to_string())
    }
}
