//! Lifecycle: the draining flag that readiness reads, and shutdown requests from the admin API.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

#[derive(Debug, Default)]
pub(crate) struct Lifecycle {
    draining: AtomicBool,
    quit: Notify,
}

impl Lifecycle {
    pub(crate) fn begin_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// `POST /quitquitquit`: the same shutdown as SIGTERM.
    pub(crate) fn request_quit(&self) {
        self.quit.notify_one();
    }

    pub(crate) async fn quit_requested(&self) {
        self.quit.notified().await
    }
}
