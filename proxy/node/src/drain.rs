//! One shutdown primitive shared by every listener: a watch channel that flips once.

use tokio::sync::watch;

/// The sending half: [`Drain::signal`] tells every [`Watch`] to stop accepting.
#[derive(Debug)]
pub struct Drain {
    tx: watch::Sender<bool>,
}

/// The receiving half, cloned into every accept loop.
#[derive(Clone, Debug)]
pub struct Watch {
    rx: watch::Receiver<bool>,
}

impl Drain {
    /// A new, not yet signalled drain and its first watcher.
    pub fn new() -> (Drain, Watch) {
        let (tx, rx) = watch::channel(false);
        (Drain { tx }, Watch { rx })
    }

    /// Another watcher of this drain.
    pub fn watch(&self) -> Watch {
        Watch {
            rx: self.tx.subscribe(),
        }
    }

    /// Signals every watcher (idempotent).
    pub fn signal(&self) {
        self.tx.send_replace(true);
    }
}

impl Watch {
    /// Completes once the drain is signalled (or its sender is gone).
    pub async fn signaled(mut self) {
        // An Err means the sender dropped, which also means "stop".
        let _ = self.rx.wait_for(|v| *v).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn signal_wakes_every_watcher() {
        let (drain, w1) = Drain::new();
        let w2 = drain.watch();
        drain.signal();
        w1.signaled().await;
        w2.signaled().await;
    }
}
