//! What happens to a host that service discovery (EDS, a STRICT_DNS answer) drops, as Envoy's
//! `updateDynamicHostList`: with active health checking and without
//! `ignore_health_on_host_removal`, a dropped host that passes its checks and is not
//! EDS-unhealthy stays, flagged `pending_dynamic_removal`, until a check fails; then it goes
//! (Envoy's `reloadHealthyHostsHelper`). Otherwise it goes at once.

use std::sync::{atomic::Ordering, Arc};

use super::{Cluster, Discovery, EndpointHealth, Host, HostEntry, HostMeta, HostSet};

impl Cluster {
    /// Whether dropped hosts wait for a failed health check (LOGICAL_DNS has one logical
    /// host, which Envoy replaces in place).
    fn keeps_dropped_hosts(&self) -> bool {
        self.spec.health_check.is_some()
            && !self.spec.options.ignore_health_on_host_removal
            && !matches!(
                self.spec.discovery,
                Discovery::StrictDns { logical: true, .. }
            )
    }

    /// The hosts of `old` that `new` drops but that stay for now, with their priority and
    /// health status; each is flagged pending removal.
    pub(super) fn dropped_but_kept(
        &self,
        old: &HostSet,
        new: &[HostEntry],
    ) -> Vec<(Arc<Host>, HostMeta)> {
        if !self.keeps_dropped_hosts() {
            return Vec::new();
        }
        old.hosts
            .iter()
            .zip(&old.meta)
            .filter(|(h, m)| {
                // A host with `disable_active_health_check` is not checked: it goes at once,
                // as Envoy's.
                !new.iter().any(|e| e.addr == h.addr)
                    && !h.unchecked()
                    && h.hc_healthy.load(Ordering::Relaxed)
                    && m.health != EndpointHealth::Unhealthy
            })
            .map(|(h, m)| {
                h.pending_removal.store(true, Ordering::Relaxed);
                (h.clone(), *m)
            })
            .collect()
    }

    /// After a health check round: the hosts pending removal that now fail their checks go.
    pub(super) fn remove_failed_pending(&self) {
        let gone = |h: &Host| {
            h.pending_removal.load(Ordering::Relaxed) && !h.hc_healthy.load(Ordering::Relaxed)
        };
        let _writer = self.host_writer.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.hosts.load();
        if !old.hosts.iter().any(|h| gone(h)) {
            return;
        }
        let hosts = old
            .hosts
            .iter()
            .zip(&old.meta)
            .filter(|(h, _)| !gone(h))
            .map(|(h, m)| (h.clone(), *m))
            .collect();
        let localities = old.localities.clone();
        self.store_hosts(hosts, localities);
    }
}
