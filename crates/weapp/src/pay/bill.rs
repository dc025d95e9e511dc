//! [`BillDownload`]: a bill file streamed chunk by chunk, its SHA1 computed on the way and
//! checked against the apply call's `hash_value` at the end. The download answer is not
//! signed (the one unsigned endpoint), so the hash is what authenticates it.

use std::borrow::Cow;

use bytes::Bytes;
use sha1::{Digest, Sha1};

use crate::pay::error::PayError;

/// The endpoint name in errors.
pub(crate) const ENDPOINT: &str = "/v3/billdownload/file";

/// A bill being downloaded. Read it with [`BillDownload::chunk`] until `Ok(None)`; only then
/// has the hash been checked, so treat earlier chunks as provisional (write them to a
/// temporary file and keep it only after `Ok(None)`).
pub struct BillDownload {
    resp: reqwest::Response,
    hasher: Sha1,
    expected: String,
    received: u64,
    done: bool,
    timeout: std::time::Duration,
}

impl std::fmt::Debug for BillDownload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BillDownload")
            .field("expected_sha1", &self.expected)
            .field("received", &self.received)
            .field("done", &self.done)
            .finish()
    }
}

impl BillDownload {
    pub(crate) fn new(
        resp: reqwest::Response,
        expected_sha1: &str,
        timeout: std::time::Duration,
    ) -> Self {
        Self {
            timeout,
            resp,
            hasher: Sha1::new(),
            expected: expected_sha1.to_ascii_lowercase(),
            received: 0,
            done: false,
        }
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// The next chunk; `Ok(None)` at the end once the SHA1 matched.
    ///
    /// # Errors
    /// [`PayError::BillHashMismatch`] at the end when the file is not the one announced;
    /// [`PayError::Transport`] / [`PayError::TimedOut`] when the stream breaks.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, PayError> {
        if self.done {
            return Ok(None);
        }
        match self.resp.chunk().await {
            Ok(Some(bytes)) => {
                self.hasher.update(&bytes);
                self.received += bytes.len() as u64;
                Ok(Some(bytes))
            }
            Ok(None) => {
                self.done = true;
                let actual = hex::encode(std::mem::take(&mut self.hasher).finalize());
                if actual == self.expected {
                    Ok(None)
                } else {
                    Err(PayError::BillHashMismatch {
                        expected: self.expected.clone(),
                        actual,
                    })
                }
            }
            Err(e) => {
                self.done = true;
                Err(if e.is_timeout() {
                    PayError::TimedOut {
                        endpoint: Cow::Borrowed(ENDPOINT),
                        after: self.timeout,
                    }
                } else {
                    PayError::Transport {
                        endpoint: Cow::Borrowed(ENDPOINT),
                        source: std::sync::Arc::new(e.without_url()),
                    }
                })
            }
        }
    }

    /// The whole file in memory, once its hash matched, up to
    /// [`BillDownload::DEFAULT_MAX_BYTES`] (256 MiB). A larger bill is refused; stream it
    /// with [`BillDownload::chunk`] (unbounded by design: the caller decides where it goes),
    /// or choose the limit with [`BillDownload::bytes_up_to`].
    ///
    /// # Errors
    /// As [`BillDownload::chunk`]; [`PayError::ResponseTooLarge`] past the limit.
    pub async fn bytes(self) -> Result<Vec<u8>, PayError> {
        self.bytes_up_to(Self::DEFAULT_MAX_BYTES).await
    }

    /// The most [`BillDownload::bytes`] reads into memory: 256 MiB.
    pub const DEFAULT_MAX_BYTES: u64 = 256 << 20;

    /// The whole file in memory, once its hash matched, refusing one larger than `limit`
    /// bytes (by its `Content-Length`, or as soon as more arrives).
    ///
    /// # Errors
    /// As [`BillDownload::chunk`]; [`PayError::ResponseTooLarge`] past `limit`.
    pub async fn bytes_up_to(mut self, limit: u64) -> Result<Vec<u8>, PayError> {
        let too_large = || PayError::ResponseTooLarge {
            endpoint: Cow::Borrowed(ENDPOINT),
            limit,
        };
        if self.resp.content_length().is_some_and(|n| n > limit) {
            return Err(too_large());
        }
        let mut out = Vec::new();
        while let Some(chunk) = self.chunk().await? {
            if self.received > limit {
                return Err(too_large());
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }
}
