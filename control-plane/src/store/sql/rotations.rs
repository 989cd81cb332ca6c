//! `RotationsTx`, written once over [`Conn`] (the `token_rotations` table).

use super::{all, get, one, placeholders, Conn, SqlRow, Value};
use crate::store::rotations::{RotationRecord, RotationsTx};
use crate::store::StoreResult;

const COLS: &str = "token_id, successor_id, org_id, created_by, created_at, grace_secs, \
                    deadline, successor_seen_at, ends_at, ended_at, presented_at";

fn rotation(r: &dyn SqlRow) -> StoreResult<RotationRecord> {
    Ok(RotationRecord {
        token_id: get(r, 0)?,
        successor_id: get(r, 1)?,
        org_id: get(r, 2)?,
        created_by: get(r, 3)?,
        created_at: get(r, 4)?,
        grace_secs: get(r, 5)?,
        deadline: get(r, 6)?,
        successor_seen_at: get(r, 7)?,
        ends_at: get(r, 8)?,
        ended_at: get(r, 9)?,
        presented_at: get(r, 10)?,
    })
}

impl<C: Conn> RotationsTx for C {
    fn insert_rotation(&mut self, r: &RotationRecord) -> StoreResult<()> {
        let sql = format!(
            "INSERT INTO token_rotations ({COLS}) VALUES ({})",
            placeholders(11)
        );
        let v = values![
            &r.token_id,
            &r.successor_id,
            &r.org_id,
            &r.created_by,
            r.created_at,
            r.grace_secs,
            r.deadline,
            r.successor_seen_at,
            r.ends_at,
            r.ended_at,
            r.presented_at,
        ];
        self.exec(&sql, &v)?;
        Ok(())
    }

    fn update_rotation(&mut self, r: &RotationRecord) -> StoreResult<()> {
        self.exec(
            "UPDATE token_rotations SET successor_seen_at = ?2, ends_at = ?3, ended_at = ?4, \
             presented_at = ?5 WHERE token_id = ?1",
            &values![
                &r.token_id,
                r.successor_seen_at,
                r.ends_at,
                r.ended_at,
                r.presented_at
            ],
        )?;
        Ok(())
    }

    fn rotation_of(&mut self, token_id: &str) -> StoreResult<Option<RotationRecord>> {
        let sql = format!(
            "SELECT {COLS} FROM token_rotations WHERE token_id = ?1{}",
            self.lock()
        );
        one(self, &sql, &values![token_id], rotation)
    }

    fn rotation_by_successor(&mut self, successor_id: &str) -> StoreResult<Option<RotationRecord>> {
        let sql = format!(
            "SELECT {COLS} FROM token_rotations WHERE successor_id = ?1{}",
            self.lock()
        );
        one(self, &sql, &values![successor_id], rotation)
    }

    fn due_rotations(&mut self, now: i64, limit: i64) -> StoreResult<Vec<String>> {
        all(
            self,
            "SELECT token_id FROM token_rotations WHERE ended_at IS NULL AND ends_at <= ?1 \
             ORDER BY ends_at, token_id LIMIT ?2",
            &values![now, limit],
            |r| get(r, 0),
        )
    }

    fn token_id_by_name(&mut self, user_id: &str, name: &str) -> StoreResult<Option<String>> {
        one(
            self,
            "SELECT id FROM tokens WHERE user_id = ?1 AND name = ?2 AND deleted_at IS NULL",
            &values![user_id, name],
            |r| get(r, 0),
        )
    }
}
