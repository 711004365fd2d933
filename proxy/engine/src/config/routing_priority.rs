//! `core.v3.RoutingPriority`: which of a cluster's two resource managers (circuit-breaker
//! thresholds with their own counters) and which of a host's connection pools a route's
//! requests use (Envoy's `Upstream::ResourcePriority`).

use std::ops::{Index, IndexMut};

/// `core.v3.RoutingPriority`: a route's `priority` and a circuit breaker threshold's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RoutingPriority {
    /// `DEFAULT` (every route without `priority`).
    #[default]
    Default,
    /// `HIGH`.
    High,
}

impl RoutingPriority {
    /// Both priorities, in index order.
    pub const ALL: [Self; 2] = [Self::Default, Self::High];

    /// The proto enum value name (`DEFAULT`, `HIGH`); `None` for another name.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "DEFAULT" => Some(Self::Default),
            "HIGH" => Some(Self::High),
            _ => None,
        }
    }

    /// The proto enum value name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Default => "DEFAULT",
            Self::High => "HIGH",
        }
    }
}

/// One value per routing priority, indexed by it (no lookup beyond the array index).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ByPriority<T>(pub [T; 2]);

impl<T> ByPriority<T> {
    /// The values with their priority, DEFAULT first.
    pub fn iter(&self) -> impl Iterator<Item = (RoutingPriority, &T)> {
        RoutingPriority::ALL.into_iter().zip(&self.0)
    }

    /// Each value mapped through `f`.
    pub fn map<U>(&self, mut f: impl FnMut(&T) -> U) -> ByPriority<U> {
        ByPriority([f(&self.0[0]), f(&self.0[1])])
    }
}

impl<T> Index<RoutingPriority> for ByPriority<T> {
    type Output = T;
    fn index(&self, p: RoutingPriority) -> &T {
        &self.0[p as usize]
    }
}

impl<T> IndexMut<RoutingPriority> for ByPriority<T> {
    fn index_mut(&mut self, p: RoutingPriority) -> &mut T {
        &mut self.0[p as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        config::{
            from_yaml_str,
            tests::{expect_err, rc_path, with_routes, ROUTES_OK},
            CircuitBreakers, NetworkFilter,
        },
        route::RouteAction,
    };

    /// The `priority` of the first route of `with_routes(routes)`.
    fn route_priority(routes: &str) -> RoutingPriority {
        let b = from_yaml_str(&with_routes(routes)).expect("valid");
        let NetworkFilter::Http(hcm) = &b.listeners[0].filter_chains[0].filter else {
            panic!("expected HCM")
        };
        let RouteAction::Forward(f) = &hcm.route_table.virtual_hosts[0].routes[0].action else {
            panic!("expected a forwarding route")
        };
        f.priority
    }

    #[test]
    fn route_priority_is_parsed_by_name_and_defaults_to_default() {
        assert_eq!(route_priority(ROUTES_OK), RoutingPriority::Default);
        for (name, p) in [
            ("HIGH", RoutingPriority::High),
            ("DEFAULT", RoutingPriority::Default),
        ] {
            let routes = ROUTES_OK.replace(
                "{ cluster: a }",
                &format!("{{ cluster: a, priority: {name} }}"),
            );
            assert_eq!(route_priority(&routes), p);
        }
        let bad = ROUTES_OK.replace("{ cluster: a }", "{ cluster: a, priority: URGENT }");
        expect_err(
            &with_routes(&bad),
            &rc_path("virtual_hosts[0].routes[0].route.priority"),
            "unknown value \"URGENT\"",
        );
    }

    #[test]
    fn thresholds_apply_per_priority_first_entry_wins() {
        let yaml = with_routes(ROUTES_OK).replace(
            "  - name: b\n",
            "  - name: b\n    circuit_breakers: {thresholds: [{priority: HIGH, max_requests: 0}, \
             {max_retries: 7}, {priority: HIGH, max_requests: 5}, {priority: DEFAULT, max_retries: 1}]}\n",
        );
        let b = from_yaml_str(&yaml).expect("valid: Envoy accepts repeated priorities");
        let cb = b.cluster("b").expect("cluster b").circuit_breakers;
        let d = CircuitBreakers::default();
        assert_eq!(
            cb[RoutingPriority::High],
            CircuitBreakers {
                max_requests: 0,
                ..d
            }
        );
        assert_eq!(
            cb[RoutingPriority::Default],
            CircuitBreakers {
                max_retries: 7,
                ..d
            }
        );
    }

    #[test]
    fn names_round_trip_and_index_in_order() {
        for p in RoutingPriority::ALL {
            assert_eq!(RoutingPriority::parse(p.name()), Some(p));
        }
        assert_eq!(RoutingPriority::parse("high"), None);
        assert_eq!(RoutingPriority::parse("LOW"), None);
        let mut v = ByPriority([1, 2]);
        assert_eq!(v[RoutingPriority::Default], 1);
        assert_eq!(v[RoutingPriority::High], 2);
        v[RoutingPriority::High] = 5;
        let names: Vec<_> = v.iter().map(|(p, n)| (p.name(), *n)).collect();
        assert_eq!(names, [("DEFAULT", 1), ("HIGH", 5)]);
        assert_eq!(v.map(|n| n * 2).0, [2, 10]);
    }
}
