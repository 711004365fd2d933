//! The HCM's `add_user_agent`: Envoy then sets `x-envoy-downstream-service-cluster` (and
//! `user-agent` when the request has none or an empty one) to the node's `cluster`, and
//! `x-envoy-downstream-service-node` to its `id` when that is not empty
//! (`ConnectionManagerUtility::mutateRequestHeaders`). The values come from the bootstrap's
//! `node`, so they are filled in once the whole bootstrap is read ([`fill`]).

use http::HeaderValue;

use super::{listener::NetworkFilter, ConfigError, FieldPath, Listener, Node};

/// What `add_user_agent` sends.
#[derive(Debug, Clone)]
pub struct UserAgent {
    /// The node's `cluster` (empty without one, as Envoy's local cluster name).
    pub cluster: HeaderValue,
    /// The node's `id`, unless empty.
    pub node: Option<HeaderValue>,
}

impl UserAgent {
    /// `add_user_agent` before [`fill`] gives it the node's identity.
    pub(crate) fn unresolved() -> Self {
        Self {
            cluster: HeaderValue::from_static(""),
            node: None,
        }
    }
}

/// Gives every HCM with `add_user_agent` the node's identity.
pub(crate) fn fill(
    listeners: &mut [Listener],
    node: Option<&Node>,
    root: &FieldPath,
) -> Result<(), ConfigError> {
    let mut resolved: Option<UserAgent> = None;
    for chain in listeners
        .iter_mut()
        .flat_map(|l| l.filter_chains.iter_mut())
    {
        let NetworkFilter::Http(h) = &mut chain.filter else {
            continue;
        };
        if h.user_agent.is_none() {
            continue;
        }
        let ua = match &resolved {
            Some(ua) => ua.clone(),
            None => resolved.insert(of(node, root)?).clone(),
        };
        std::sync::Arc::make_mut(h).user_agent = Some(ua);
    }
    Ok(())
}

fn of(node: Option<&Node>, root: &FieldPath) -> Result<UserAgent, ConfigError> {
    let value = |v: &str, field: &str| {
        HeaderValue::from_str(v).map_err(|_| {
            root.field("node").field(field).err(format!(
                "{v:?} is not a valid header value (add_user_agent sends it)"
            ))
        })
    };
    let (cluster, id) = node.map_or(("", ""), |n| (n.cluster.as_str(), n.id.as_str()));
    Ok(UserAgent {
        cluster: value(cluster, "cluster")?,
        node: if id.is_empty() {
            None
        } else {
            Some(value(id, "id")?)
        },
    })
}
