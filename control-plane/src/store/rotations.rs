//! What the store keeps for token rotations (`service::rotation`): one row per rotated
//! token, naming its successor, the grace and the hard deadline, when the successor was
//! first seen, when the old token stops (`ends_at`) and when it was stopped. A supertrait
//! of `Tx`, so every transaction has it.

use super::StoreResult;

/// One rotation: `token_id` (the old token) hands over to `successor_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationRecord {
    pub token_id: String,
    pub successor_id: String,
    pub org_id: String,
    pub created_by: String,
    pub created_at: i64,
    /// Seconds the old token keeps working after the successor's first use.
    pub grace_secs: i64,
    /// The hard deadline (Unix s), whatever the successor does.
    pub deadline: Option<i64>,
    /// The successor's first use at any edge (or the API), Unix s.
    pub successor_seen_at: Option<i64>,
    /// When the old token stops: the earlier of `successor_seen_at + grace_secs` and
    /// `deadline`, once either is known.
    pub ends_at: Option<i64>,
    /// When the old token was marked rotated in the status list.
    pub ended_at: Option<i64>,
    /// The first use of the old token reported after it ended (a possible leak).
    pub presented_at: Option<i64>,
}

pub trait RotationsTx {
    /// Adds a rotation; a second rotation of the same token is a `Conflict`.
    fn insert_rotation(&mut self, r: &RotationRecord) -> StoreResult<()>;
    fn update_rotation(&mut self, r: &RotationRecord) -> StoreResult<()>;
    /// The rotation of the old token `token_id` (locked in a PostgreSQL write).
    fn rotation_of(&mut self, token_id: &str) -> StoreResult<Option<RotationRecord>>;
    /// The rotation whose successor is `successor_id` (locked in a PostgreSQL write).
    fn rotation_by_successor(&mut self, successor_id: &str) -> StoreResult<Option<RotationRecord>>;
    /// Old tokens whose rotation ends at or before `now` and that are not stopped yet,
    /// at most `limit`, the earliest first.
    fn due_rotations(&mut self, now: i64, limit: i64) -> StoreResult<Vec<String>>;
    /// The id of the live (not deleted) token `name` of user `user_id`.
    fn token_id_by_name(&mut self, user_id: &str, name: &str) -> StoreResult<Option<String>>;
}
