//! Hand-over of a running data path to a new agent (graceful upgrade) without stopping this one.

use super::{BpfError, Datapath, LINKS_DIR, SK_LOOKUP_PIN_PREFIX};

impl Datapath {
    /// Pins this data path's per-netns sk_lookup links under `<pin_dir>/links` while it keeps
    /// running, so that a new agent's [`Datapath::load`] on the same pin dir adopts them
    /// (`BPF_LINK_UPDATE` swaps its program in, then it removes the pins). Unlike
    /// [`Datapath::persist`] nothing is given up: this process keeps its link fds, its cgroup
    /// programs stay attached next to the new agent's (the second connect4 sees a loopback
    /// destination and leaves the socket alone), and dropping it afterwards detaches only its
    /// own cgroup programs while the links live on in the new agent.
    pub fn pin_links_for_upgrade(&self) -> Result<usize, BpfError> {
        let dir = self.pin_dir.join(LINKS_DIR);
        std::fs::create_dir_all(&dir).map_err(|source| BpfError::Links {
            path: dir.clone(),
            source,
        })?;
        // A pin left by an upgrade that was given up is replaced (it is the same link).
        for cookie in self.inbound_links.keys() {
            let pin = dir.join(format!("{SK_LOOKUP_PIN_PREFIX}{cookie}"));
            match std::fs::remove_file(&pin) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(BpfError::Links { path: pin, source }),
            }
        }
        Self::pin_inbound_links(&self.inbound_links, &self.pin_dir)?;
        Ok(self.inbound_links.len())
    }
}
