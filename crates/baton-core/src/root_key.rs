//! The root key's rotation, as pure rules over what the store and the nodes' heartbeats say.
//!
//! Phases, each persisted before the next begins:
//! `Added` (every node is given the new key; the gate waits until every live node holds it),
//! `Promoted` (new wraps use the new key; the old blobs are re-wrapped in bounded batches),
//! `Rewrapped` (the gate waits until every live node wraps with the new key and nothing is left
//! under an old one) and `Retired` (the old keys open nothing and are dropped).
//! Only the server reads the clock; these functions take what it saw.

/// A phase of the root key's rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootKeyPhase {
    Added,
    Promoted,
    Rewrapped,
    Retired,
}

impl RootKeyPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            RootKeyPhase::Added => "Added",
            RootKeyPhase::Promoted => "Promoted",
            RootKeyPhase::Rewrapped => "Rewrapped",
            RootKeyPhase::Retired => "Retired",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            RootKeyPhase::Added,
            RootKeyPhase::Promoted,
            RootKeyPhase::Rewrapped,
            RootKeyPhase::Retired,
        ]
        .into_iter()
        .find(|p| p.as_str() == text)
    }

    /// Whether a rotation is in flight (a new one may not start).
    pub fn in_flight(self) -> bool {
        self != RootKeyPhase::Retired
    }
}

/// What one node's last heartbeat says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeKeys {
    pub node_id: String,
    pub keys_held: Vec<String>,
    pub wraps_with: String,
    /// Seen within the liveness window.
    pub live: bool,
}

fn names(nodes: &[&NodeKeys]) -> String {
    nodes
        .iter()
        .map(|n| n.node_id.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The gate after `Added`: every live node holds `new_key`. Otherwise the reason names the
/// nodes that hold it up. Nodes that are not live do not count: a node that starts later
/// without the promoted key refuses to start.
pub fn every_node_holds(new_key: &str, nodes: &[NodeKeys]) -> Result<(), String> {
    let lacking: Vec<&NodeKeys> = nodes
        .iter()
        .filter(|n| n.live && !n.keys_held.iter().any(|k| k == new_key))
        .collect();
    match lacking.as_slice() {
        [] => Ok(()),
        [one] => Err(format!(
            "node {} does not hold {new_key}: add it to its key source",
            one.node_id
        )),
        many => Err(format!(
            "nodes {} do not hold {new_key}: add it to their key sources",
            names(many)
        )),
    }
}

/// The gate after `Rewrapped`: every live node wraps with `new_key`, and a count made after
/// that found nothing left under another key.
pub fn nothing_left_under_old_keys(
    new_key: &str,
    nodes: &[NodeKeys],
    remaining: u64,
) -> Result<(), String> {
    let lagging: Vec<&NodeKeys> = nodes
        .iter()
        .filter(|n| n.live && n.wraps_with != new_key)
        .collect();
    match lagging.as_slice() {
        [] => {}
        [one] => return Err(format!("node {} still wraps with an old key", one.node_id)),
        many => return Err(format!("nodes {} still wrap with an old key", names(many))),
    }
    if remaining > 0 {
        return Err(format!(
            "{remaining} sealed values are still under an old key"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, held: &[&str], wraps: &str, live: bool) -> NodeKeys {
        NodeKeys {
            node_id: id.into(),
            keys_held: held.iter().map(|s| s.to_string()).collect(),
            wraps_with: wraps.into(),
            live,
        }
    }

    #[test]
    fn the_add_gate_waits_for_every_live_node_and_names_the_ones_that_lack_the_key() {
        let nodes = [
            node("a", &["old", "new"], "old", true),
            node("b", &["old"], "old", true),
            node("c", &["old"], "old", false),
        ];
        assert_eq!(
            every_node_holds("new", &nodes).unwrap_err(),
            "node b does not hold new: add it to its key source"
        );
        let two = [
            node("b", &["old"], "old", true),
            node("d", &[], "old", true),
        ];
        assert_eq!(
            every_node_holds("new", &two).unwrap_err(),
            "nodes b, d do not hold new: add it to their key sources"
        );
        assert!(every_node_holds("new", &nodes[..1]).is_ok());
        assert!(
            every_node_holds("new", &nodes[2..]).is_ok(),
            "a node that is not live does not count"
        );
    }

    #[test]
    fn the_retire_gate_needs_every_live_node_on_the_new_key_and_nothing_left() {
        let nodes = [
            node("a", &["old", "new"], "new", true),
            node("b", &["old", "new"], "old", true),
        ];
        assert_eq!(
            nothing_left_under_old_keys("new", &nodes, 0).unwrap_err(),
            "node b still wraps with an old key"
        );
        assert_eq!(
            nothing_left_under_old_keys("new", &nodes[..1], 3).unwrap_err(),
            "3 sealed values are still under an old key"
        );
        assert!(nothing_left_under_old_keys("new", &nodes[..1], 0).is_ok());
    }

    #[test]
    fn phases_round_trip_and_only_retired_is_not_in_flight() {
        for p in [
            RootKeyPhase::Added,
            RootKeyPhase::Promoted,
            RootKeyPhase::Rewrapped,
            RootKeyPhase::Retired,
        ] {
            assert_eq!(RootKeyPhase::parse(p.as_str()), Some(p));
            assert_eq!(p.in_flight(), p != RootKeyPhase::Retired);
        }
        assert_eq!(RootKeyPhase::parse("added"), None);
    }
}
