//! What credyt-worker and credyt-server share, so that both are configured, log,
//! expose metrics, stop and reach PostgreSQL the same way.

pub mod log;
pub mod metrics;
pub mod options;
pub mod shutdown;
pub mod tls;
