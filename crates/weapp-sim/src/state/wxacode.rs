//! The mini program codes domain's state: each app's published pages and the codes it made.
//! The rules are in `crate::wxacode`.

/// An app's code slice.
#[derive(Debug)]
pub(crate) struct AppCodes {
    /// Published pages (for `check_path`).
    pub(crate) pages: Vec<String>,
    /// getwxacode + createwxaqrcode codes made so far (lifetime).
    pub(crate) qrcodes_used: u64,
}

impl Default for AppCodes {
    fn default() -> Self {
        Self {
            pages: DEFAULT_PAGES.iter().map(|p| p.to_string()).collect(),
            qrcodes_used: 0,
        }
    }
}

/// The pages an app has when none were registered.
pub const DEFAULT_PAGES: &[&str] = &["pages/index/index"];
