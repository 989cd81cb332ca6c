//! `LimitsTx`, written once over [`Conn`] (the table from the rate-limits migration).

use super::{all, get, one, Conn, SqlRow, Value};
use crate::store::limits::{LeaseRecord, LimitsTx, RateLimits};
use crate::store::StoreResult;

const COLS: &str = "per_second, per_minute, per_hour, per_day, per_month, total";
const LEASE_COLS: &str =
    "token_id, kind, edge, first_index, last_index, per_window, demand, granted_at";

fn lease(r: &dyn SqlRow) -> StoreResult<LeaseRecord> {
    Ok(LeaseRecord {
        token_id: get(r, 0)?,
        kind: get(r, 1)?,
        edge: get(r, 2)?,
        first: get(r, 3)?,
        last: get(r, 4)?,
        per_window: get(r, 5)?,
        demand: get(r, 6)?,
        granted_at: get(r, 7)?,
    })
}

fn limits(r: &dyn SqlRow, first: usize) -> StoreResult<RateLimits> {
    let mut v = [None; 6];
    for (i, slot) in v.iter_mut().enumerate() {
        *slot = get(r, first + i)?;
    }
    Ok(RateLimits::from_values(v))
}

impl<C: Conn> LimitsTx for C {
    fn leases_from(
        &mut self,
        token_id: &str,
        kind: &str,
        from: i64,
    ) -> StoreResult<Vec<LeaseRecord>> {
        let sql = format!(
            "SELECT {LEASE_COLS} FROM rate_leases WHERE token_id = ?1 AND kind = ?2 \
             AND last_index >= ?3 ORDER BY edge, first_index{}",
            self.lock()
        );
        all(self, &sql, &values![token_id, kind, from], lease)
    }

    fn put_lease(&mut self, l: &LeaseRecord) -> StoreResult<()> {
        let sql = format!(
            "INSERT INTO rate_leases ({LEASE_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
             ON CONFLICT (token_id, kind, edge, first_index) DO UPDATE SET \
             last_index = ?5, per_window = ?6, demand = ?7, granted_at = ?8"
        );
        let v = values![
            &l.token_id,
            &l.kind,
            &l.edge,
            l.first,
            l.last,
            l.per_window,
            l.demand,
            l.granted_at
        ];
        self.exec(&sql, &v)?;
        Ok(())
    }

    fn forget_leases(&mut self, token_id: &str, kind: &str, before: i64) -> StoreResult<()> {
        self.exec(
            "DELETE FROM rate_leases WHERE token_id = ?1 AND kind = ?2 AND last_index < ?3",
            &values![token_id, kind, before],
        )?;
        Ok(())
    }

    fn get_limits(&mut self, org_id: &str, subject: &str) -> StoreResult<Option<RateLimits>> {
        let sql = format!(
            "SELECT {COLS} FROM rate_limits WHERE org_id = ?1 AND subject = ?2{}",
            self.lock()
        );
        one(self, &sql, &values![org_id, subject], |r| limits(r, 0))
    }

    fn put_limits(
        &mut self,
        org_id: &str,
        subject: &str,
        l: &RateLimits,
        now: i64,
    ) -> StoreResult<()> {
        if l.is_empty() {
            self.exec(
                "DELETE FROM rate_limits WHERE org_id = ?1 AND subject = ?2",
                &values![org_id, subject],
            )?;
            return Ok(());
        }
        let v = values![
            org_id,
            subject,
            l.per_second,
            l.per_minute,
            l.per_hour,
            l.per_day,
            l.per_month,
            l.total,
            now
        ];
        self.exec(
            "INSERT INTO rate_limits (org_id, subject, per_second, per_minute, per_hour, \
             per_day, per_month, total, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
             ON CONFLICT (org_id, subject) DO UPDATE SET per_second = ?3, per_minute = ?4, \
             per_hour = ?5, per_day = ?6, per_month = ?7, total = ?8, updated_at = ?9",
            &v,
        )?;
        Ok(())
    }

    fn list_token_limits(&mut self, org_id: &str) -> StoreResult<Vec<(String, RateLimits)>> {
        let sql = format!(
            "SELECT subject, {COLS} FROM rate_limits WHERE org_id = ?1 AND subject LIKE 'token:%' \
             ORDER BY subject"
        );
        all(self, &sql, &values![org_id], |r| {
            Ok((get(r, 0)?, limits(r, 1)?))
        })
    }

    fn recent_tokens(&mut self, org_id: &str, since: i64, limit: i64) -> StoreResult<Vec<String>> {
        all(
            self,
            "SELECT id FROM tokens WHERE org_id = ?1 AND deleted_at IS NULL \
             AND revoked_at IS NULL AND jwt_sha256 IS NOT NULL \
             AND (last_used_at >= ?2 OR minted_at >= ?2) \
             ORDER BY COALESCE(last_used_at, minted_at) DESC, id LIMIT ?3",
            &values![org_id, since, limit],
            |r| get(r, 0),
        )
    }
}
