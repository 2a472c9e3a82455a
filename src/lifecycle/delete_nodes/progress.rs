//! What a `delete_nodes` node's steps record (also the first half of a `repair` node's
//! record): see `engine::progress` for how records are stored, versioned and read.

use serde::{Deserialize, Serialize};

use crate::engine::progress::{Field, Progress};

/// A delete's progress: what mark learned about the node before asking for it to go, and
/// what force and release did.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct DeleteProgress {
    /// When mark first ran (Unix ms): `force_after` counts from here.
    pub started_at: Option<i64>,
    /// CAPO's names for the node's ports and volumes, read before its objects go.
    pub port_names: Option<Vec<String>>,
    pub volume_names: Option<Vec<String>>,
    /// The servers this cluster's objects named for the node: the proof a later step
    /// deletes them with.
    pub server_ids: Option<Vec<String>>,
    /// scale_out's field, for the node a repair recreated (and as earlier versions recorded
    /// it): one more server of this node's.
    pub server_id: Option<String>,
    /// The node's MachineSet's members when it was marked: what must still be there after.
    pub set_members: Option<Vec<SetMember>>,
    /// The object whose replicas this node lowers (its set, or the set's deployment).
    pub scaled: Option<Scaled>,
    pub forced: Option<bool>,
    pub released: Option<bool>,
}

impl Progress for DeleteProgress {}

/// A Machine of the node's set when the node was marked.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SetMember {
    pub name: Option<String>,
    pub uid: Option<String>,
}

/// A MachineSet or MachineDeployment whose replicas a delete lowers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Scaled {
    pub kind: String,
    pub name: String,
}

impl DeleteProgress {
    pub const STARTED_AT: Field<Self, i64> = Field::new("started_at");
    pub const PORT_NAMES: Field<Self, Vec<String>> = Field::new("port_names");
    pub const VOLUME_NAMES: Field<Self, Vec<String>> = Field::new("volume_names");
    pub const SERVER_IDS: Field<Self, Vec<String>> = Field::new("server_ids");
    pub const SET_MEMBERS: Field<Self, Vec<SetMember>> = Field::new("set_members");
    pub const SCALED: Field<Self, Scaled> = Field::new("scaled");
    pub const FORCED: Field<Self, bool> = Field::new("forced");
    pub const RELEASED: Field<Self, bool> = Field::new("released");

    /// Every server ID recorded for the node (by mark, or by scale_out for a repaired one).
    pub fn all_server_ids(&self) -> Vec<String> {
        let mut ids = self.server_ids.clone().unwrap_or_default();
        ids.extend(self.server_id.clone());
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::progress::read;
    use serde_json::json;

    /// A repair node's record as the release before typed records stored it: delete's
    /// fields and scale_out's `server_id`, no `"v"`.
    #[test]
    fn a_record_stored_before_records_were_typed_reads_as_the_current_version() {
        let stored = json!({
            "started_at": 1_790_000_000_000i64,
            "port_names": ["w-1-0"],
            "volume_names": ["w-1-root"],
            "server_ids": ["s-old"],
            "set_members": [{ "name": "w-1", "uid": "u-1" }, { "name": null, "uid": "u-2" }],
            "scaled": { "kind": "MachineDeployment", "name": "md-0" },
            "attempts": 1,
            "server_id": "s-new",
        });
        let p: DeleteProgress = read(stored.as_object().unwrap()).unwrap();
        assert_eq!(p.started_at, Some(1_790_000_000_000));
        assert_eq!(p.all_server_ids(), ["s-old", "s-new"]);
        let members = p.set_members.unwrap();
        assert_eq!(members[1].uid.as_deref(), Some("u-2"));
        assert_eq!(p.scaled.unwrap().kind, "MachineDeployment");
        assert_eq!((p.forced, p.released), (None, None));
    }

    #[test]
    fn port_names_that_are_not_a_list_name_the_field() {
        let stored = json!({ "v": 1, "port_names": "w-1-0" });
        let e = read::<DeleteProgress>(stored.as_object().unwrap()).unwrap_err();
        assert_eq!(e.field, "port_names");
    }
}
