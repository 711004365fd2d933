//! Envoy's `/stats/prometheus` text of the counters, named as Envoy 1.40's default tag
//! extraction names them: the scope name up to its first `.` becomes the label
//! (`envoy_cluster_name`, `envoy_http_conn_manager_prefix`, `envoy_tcp_prefix`), the rest of it
//! joins the metric name (`cluster.outbound|80||svc.ns.svc.cluster.local.upstream_rq_total` ->
//! `envoy_cluster_ns_svc_cluster_local_upstream_rq_total{envoy_cluster_name="outbound|80||svc"}`),
//! `*_rq_2xx` become `*_rq_xx{envoy_response_code_class="2",...}`, and characters outside
//! `[a-zA-Z0-9_]` become `_`. Counters Envoy only creates on first use (upstream code classes,
//! outlier ejections, health checks) are printed once non-zero, as Envoy does. sluice's own
//! `server.*` counters have no Envoy equivalent and print as `sluice_server_*`.

use std::{collections::BTreeMap, fmt::Write as _};

/// Family name -> (label text, value) samples.
#[derive(Debug, Default)]
pub(super) struct Families(BTreeMap<String, Vec<(String, u64)>>);

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Envoy's name of a sluice stat, and whether Envoy creates it only on first use.
pub(super) fn envoy_stat(stat: &str) -> (&str, bool) {
    match stat {
        "outlier_ejections" => ("outlier_detection.ejections_enforced_total", true),
        s if s.starts_with("upstream_rq_") && class(s).is_some() => (s, true),
        s => (s, false),
    }
}

/// `Some((prefix, digit))` for `<prefix>Nxx`.
fn class(stat: &str) -> Option<(&str, char)> {
    let p = stat.strip_suffix("xx")?;
    let d = p.chars().last().filter(|c| ('1'..='5').contains(c))?;
    Some((&p[..p.len() - 1], d))
}

impl Families {
    /// Adds the stats of scope `scope.<name>` (`stats`: stat -> value), labelled `tag`.
    pub(super) fn add(
        &mut self,
        scope: &str,
        tag: &str,
        name: &str,
        stats: &BTreeMap<String, u64>,
    ) {
        let (value, rest) = match name.split_once('.') {
            Some((v, rest)) => (v, Some(rest)),
            None => (name, None),
        };
        for (stat, v) in stats {
            let (stat, lazy) = envoy_stat(stat.trim_start_matches('.'));
            if lazy && *v == 0 {
                continue;
            }
            let (stat, labels) = match class(stat) {
                Some((p, d)) => (
                    format!("{p}xx"),
                    format!(
                        "envoy_response_code_class=\"{d}\",{tag}=\"{}\"",
                        escape(value)
                    ),
                ),
                None => (stat.to_string(), format!("{tag}=\"{}\"", escape(value))),
            };
            let full = match rest {
                Some(r) => format!("{r}.{stat}"),
                None => stat,
            };
            let family = format!("envoy_{scope}_{}", sanitize(&full));
            self.0
                .entry(family)
                .or_default()
                .push((format!("{{{labels}}}"), *v));
        }
    }

    /// Adds a route's `stat_prefix` counters (`stats`: `.stat` -> value) as Envoy's tag
    /// extraction names them: `envoy_vhost_route_<stat>{envoy_virtual_host, envoy_route}`, a code
    /// as `envoy_vhost_route_upstream_rq{envoy_response_code}`, a class as `..._rq_xx`.
    pub(super) fn add_route(&mut self, vhost: &str, route: &str, stats: &BTreeMap<String, u64>) {
        let tags = format!(
            "envoy_virtual_host=\"{}\",envoy_route=\"{}\"",
            escape(vhost),
            escape(route)
        );
        for (stat, v) in stats {
            let stat = stat.trim_start_matches('.');
            let code = stat
                .strip_prefix("upstream_rq_")
                .filter(|c| c.len() == 3 && c.bytes().all(|b| b.is_ascii_digit()));
            let (family, labels) = match (code, class(stat)) {
                (Some(code), _) => (
                    "upstream_rq".to_string(),
                    format!("envoy_response_code=\"{code}\",{tags}"),
                ),
                (None, Some((p, d))) => (
                    format!("{p}xx"),
                    format!("envoy_response_code_class=\"{d}\",{tags}"),
                ),
                (None, None) => (stat.to_string(), tags.clone()),
            };
            self.0
                .entry(format!("envoy_vhost_route_{}", sanitize(&family)))
                .or_default()
                .push((format!("{{{labels}}}"), *v));
        }
    }

    /// Adds sluice's own `server.*` counters.
    pub(super) fn add_server(&mut self, stats: &BTreeMap<String, u64>) {
        for (stat, v) in stats {
            let family = format!("sluice_server_{}", sanitize(stat.trim_start_matches('.')));
            self.0.entry(family).or_default().push((String::new(), *v));
        }
    }

    /// Counters named in full (a network filter's `<stat_prefix>.rbac.allowed`): `envoy_` and
    /// the name, untagged.
    pub(super) fn add_named(&mut self, stats: &BTreeMap<String, u64>) {
        for (stat, v) in stats {
            let family = format!("envoy_{}", sanitize(stat));
            self.0.entry(family).or_default().push((String::new(), *v));
        }
    }

    /// The text: `# TYPE` then the samples of each family, families sorted.
    pub(super) fn text(&self) -> String {
        let mut out = String::new();
        for (family, samples) in &self.0 {
            let kind = if family.ends_with("_active")
                || family.contains("_circuit_breakers_")
                || family.ends_with("_health_check_healthy")
                || family.ends_with("_health_check_degraded")
            {
                "gauge"
            } else {
                "counter"
            };
            let _ = writeln!(out, "# TYPE {family} {kind}");
            for (labels, v) in samples {
                let _ = writeln!(out, "{family}{labels} {v}");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_envoys_tag_extraction() {
        let mut f = Families::default();
        let stats: BTreeMap<String, u64> = [
            (".upstream_rq_total".to_string(), 3),
            (".upstream_rq_2xx".to_string(), 3),
            (".upstream_rq_5xx".to_string(), 0),
            (".outlier_ejections".to_string(), 0),
        ]
        .into();
        f.add(
            "cluster",
            "envoy_cluster_name",
            "outbound|80||web.shop.svc.cluster.local",
            &stats,
        );
        f.add(
            "http",
            "envoy_http_conn_manager_prefix",
            "ingress",
            &[(".downstream_rq_2xx".to_string(), 1)].into(),
        );
        let t = f.text();
        assert!(t.contains("envoy_cluster_shop_svc_cluster_local_upstream_rq_total{envoy_cluster_name=\"outbound|80||web\"} 3\n"), "{t}");
        assert!(t.contains("envoy_cluster_shop_svc_cluster_local_upstream_rq_xx{envoy_response_code_class=\"2\",envoy_cluster_name=\"outbound|80||web\"} 3\n"), "{t}");
        assert!(
            !t.contains("class=\"5\""),
            "created on first use, like Envoy: {t}"
        );
        assert!(!t.contains("outlier"), "{t}");
        assert!(t.contains("envoy_http_downstream_rq_xx{envoy_response_code_class=\"2\",envoy_http_conn_manager_prefix=\"ingress\"} 1\n"), "{t}");
    }
}
