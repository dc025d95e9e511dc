//! One module per subcommand. Each exposes `Args` (clap) and `run`, which returns a one-line
//! error message on failure.

pub mod api;
pub mod app;
pub mod decrypt;
pub mod demo;
pub mod push;
pub mod qrcode;
pub mod serve;
pub mod sim;
pub mod token;

/// A subcommand's failure: the one line printed after `weapp: error: `.
pub type CmdResult = Result<(), String>;

/// Completes on ctrl-c or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown requested; finishing in-flight requests");
}
