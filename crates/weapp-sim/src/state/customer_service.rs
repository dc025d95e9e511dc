//! The customer-service domain's state: each user's last action in the conversation (what opens
//! the reply windows) and temporary media. The rules are in `crate::customer_service`.

use std::collections::HashMap;

use serde::Serialize;

/// A user action in the customer-service conversation (what opens the reply windows).
#[derive(Debug, Clone, Serialize)]
pub struct UserAction {
    /// `text` or `enter_session`.
    pub kind: String,
    /// Unix ms.
    pub at: i64,
    /// Replies sent since.
    pub replies: u32,
    /// Whether "typing" is shown.
    pub typing: bool,
}

/// An app's customer-service slice.
#[derive(Debug, Default)]
pub(crate) struct AppCs {
    /// Last customer-service action per openid.
    pub(crate) user_actions: HashMap<String, UserAction>,
}

/// Temporary media by id: (appid, content type, bytes, created_at ms).
#[derive(Debug, Default)]
pub(crate) struct MediaStore {
    pub(crate) items: HashMap<String, (String, String, Vec<u8>, i64)>,
}
