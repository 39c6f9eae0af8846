//! Shutdown as a future (as in tokio's mini-redis): it resolves at the first SIGTERM
//! or SIGINT; a second signal exits at once, because the claims still held come back
//! by themselves (their session is gone).

/// Resolves at the first SIGTERM or SIGINT (never, if the handlers cannot be
/// installed: the worker then runs until killed). A second signal exits with status 1.
pub async fn signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        crate::log!("error", "cannot install signal handlers");
        return std::future::pending().await;
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    crate::log!("info", "shutting down", "signal" => name);
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        crate::log!("warn", "second signal: exiting at once");
        std::process::exit(1);
    });
}
