//! A handler's link back to the connection it is answering on: the one thing both the accept
//! loop (which makes it) and the handlers (which use it) need, kept below both.

use std::sync::Arc;

use tokio::sync::{Notify, watch};

use super::reply::{self, Reply};

/// A handler's way to cut its own connection, for [`Fault::Drop`] and [`Fault::LoseAnswer`].
#[derive(Clone, Debug)]
pub(super) struct ConnLink {
    close: Arc<Notify>,
    gone: watch::Receiver<()>,
}

impl ConnLink {
    /// A link that asks through `close` and learns the connection is gone when the sender of
    /// `gone` is dropped.
    pub(super) fn new(close: Arc<Notify>, gone: watch::Receiver<()>) -> Self {
        Self { close, gone }
    }

    /// Closes the connection and waits until it is gone. Over HTTP/1 the connection owns this
    /// future and drops it; over HTTP/2 the stream task gets here, and its answer goes nowhere.
    pub(super) async fn close(mut self) -> Reply {
        self.close.notify_one();
        let _ = self.gone.changed().await;
        reply::not_found()
    }
}
