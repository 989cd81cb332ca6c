//! `AccountsTx` on SQLite (tables from the accounts migration).

use super::SqliteTx;
use crate::model::EdgeCredential;
use crate::store::accounts::{
    Account, AccountsTx, EdgeRecord, Session, SignInCutoffs, SignInLink, Throttle,
};
use crate::store::{StoreError, StoreResult};
use rusqlite::{params, OptionalExtension, Row};

const ACCOUNT_COLS: &str =
    "a.user_id, a.password_hash, a.disabled_at, a.deleted_at, a.suspended_tokens, a.prefs";

fn account(r: &Row) -> rusqlite::Result<Account> {
    let suspended: String = r.get(4)?;
    let prefs: String = r.get(5)?;
    Ok(Account {
        user_id: r.get(0)?,
        password_hash: r.get(1)?,
        disabled_at: r.get(2)?,
        deleted_at: r.get(3)?,
        suspended_tokens: serde_json::from_str(&suspended).unwrap_or_default(),
        prefs: serde_json::from_str(&prefs).unwrap_or(serde_json::Value::Null),
    })
}

const SESSION_COLS: &str = "id, secret_sha256, user_id, csrf, created_at, last_seen_at, ended_at";

fn session(r: &Row) -> rusqlite::Result<Session> {
    Ok(Session {
        id: r.get(0)?,
        secret_sha256: r.get(1)?,
        user_id: r.get(2)?,
        csrf: r.get(3)?,
        created_at: r.get(4)?,
        last_seen_at: r.get(5)?,
        ended_at: r.get(6)?,
    })
}

const EDGE_COLS: &str = "id, org_id, name, secret_sha256, created_at, revoked_at";

fn edge(r: &Row) -> rusqlite::Result<EdgeRecord> {
    Ok(EdgeRecord {
        edge: EdgeCredential {
            id: r.get(0)?,
            org_id: r.get(1)?,
            name: r.get(2)?,
            secret_sha256: r.get(3)?,
            created_at: r.get(4)?,
        },
        revoked_at: r.get(5)?,
    })
}

impl AccountsTx for SqliteTx<'_> {
    fn get_account(&mut self, user_id: &str) -> StoreResult<Option<Account>> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {ACCOUNT_COLS} FROM accounts a WHERE a.user_id = ?1"),
                [user_id],
                account,
            )
            .optional()?)
    }

    fn put_account(&mut self, a: &Account) -> StoreResult<()> {
        let suspended = serde_json::to_string(&a.suspended_tokens).unwrap_or_else(|_| "[]".into());
        let prefs = if a.prefs.is_object() {
            a.prefs.to_string()
        } else {
            "{}".into()
        };
        self.conn.execute(
            "INSERT OR REPLACE INTO accounts (user_id, password_hash, disabled_at, deleted_at, suspended_tokens, prefs) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![a.user_id, a.password_hash, a.disabled_at, a.deleted_at, suspended, prefs],
        )?;
        Ok(())
    }

    fn org_accounts(&mut self, org_id: &str) -> StoreResult<Vec<Account>> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {ACCOUNT_COLS} FROM accounts a JOIN users u ON u.id = a.user_id WHERE u.org_id = ?1"
        ))?;
        let rows = st.query_map([org_id], account)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn insert_link(&mut self, l: &SignInLink) -> StoreResult<()> {
        self.conn.execute(
            "INSERT INTO sign_in_links (secret_sha256, user_id, kind, created_at, expires_at, used_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![l.secret_sha256, l.user_id, l.kind, l.created_at, l.expires_at, l.used_at],
        )?;
        Ok(())
    }

    fn get_link(&mut self, hash: &str) -> StoreResult<Option<SignInLink>> {
        Ok(self.conn
            .query_row(
                "SELECT secret_sha256, user_id, kind, created_at, expires_at, used_at FROM sign_in_links WHERE secret_sha256 = ?1",
                [hash],
                |r| {
                    Ok(SignInLink {
                        secret_sha256: r.get(0)?,
                        user_id: r.get(1)?,
                        kind: r.get(2)?,
                        created_at: r.get(3)?,
                        expires_at: r.get(4)?,
                        used_at: r.get(5)?,
                    })
                },
            )
            .optional()?)
    }

    fn use_link(&mut self, hash: &str, at: i64) -> StoreResult<bool> {
        let n = self.conn.execute(
            "UPDATE sign_in_links SET used_at = ?2 WHERE secret_sha256 = ?1 AND used_at IS NULL",
            params![hash, at],
        )?;
        Ok(n == 1)
    }

    fn void_links(&mut self, user_id: &str, kind: Option<&str>, at: i64) -> StoreResult<u64> {
        let n = self.conn.execute(
            "UPDATE sign_in_links SET used_at = ?2 \
             WHERE user_id = ?1 AND used_at IS NULL AND (?3 IS NULL OR kind = ?3)",
            params![user_id, at, kind],
        )?;
        Ok(n as u64)
    }

    fn insert_session(&mut self, s: &Session) -> StoreResult<()> {
        self.conn.execute(
            &format!("INSERT INTO sessions ({SESSION_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
            params![
                s.id,
                s.secret_sha256,
                s.user_id,
                s.csrf,
                s.created_at,
                s.last_seen_at,
                s.ended_at
            ],
        )?;
        Ok(())
    }

    fn get_session(&mut self, hash: &str) -> StoreResult<Option<Session>> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {SESSION_COLS} FROM sessions WHERE secret_sha256 = ?1"),
                [hash],
                session,
            )
            .optional()?)
    }

    fn session_by_id(&mut self, id: &str) -> StoreResult<Option<Session>> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {SESSION_COLS} FROM sessions WHERE id = ?1"),
                [id],
                session,
            )
            .optional()?)
    }

    fn touch_session(&mut self, id: &str, at: i64) -> StoreResult<()> {
        self.conn.execute(
            "UPDATE sessions SET last_seen_at = max(last_seen_at, ?2) WHERE id = ?1",
            params![id, at],
        )?;
        Ok(())
    }

    fn end_session(&mut self, id: &str, at: i64) -> StoreResult<()> {
        self.conn.execute(
            "UPDATE sessions SET ended_at = ?2 WHERE id = ?1 AND ended_at IS NULL",
            params![id, at],
        )?;
        Ok(())
    }

    fn end_user_sessions(&mut self, user_id: &str, at: i64) -> StoreResult<()> {
        self.conn.execute(
            "UPDATE sessions SET ended_at = ?2 WHERE user_id = ?1 AND ended_at IS NULL",
            params![user_id, at],
        )?;
        Ok(())
    }

    fn get_throttle(&mut self, key: &str) -> StoreResult<Option<Throttle>> {
        Ok(self
            .conn
            .query_row(
                "SELECT key, failures, locked_until, last_at FROM sign_in_throttle WHERE key = ?1",
                [key],
                |r| {
                    Ok(Throttle {
                        key: r.get(0)?,
                        failures: r.get(1)?,
                        locked_until: r.get(2)?,
                        last_at: r.get(3)?,
                    })
                },
            )
            .optional()?)
    }

    fn lock_throttle(&mut self, key: &str, now: i64) -> StoreResult<Throttle> {
        // The single writer connection already serialises writes.
        self.conn.execute(
            "INSERT INTO sign_in_throttle (key, failures, locked_until, last_at) VALUES (?1, 0, 0, ?2) \
             ON CONFLICT (key) DO NOTHING",
            params![key, now],
        )?;
        self.get_throttle(key)?
            .ok_or_else(|| StoreError::Backend("throttle row vanished".into()))
    }

    fn put_throttle(&mut self, t: &Throttle) -> StoreResult<()> {
        self.conn.execute(
            "INSERT OR REPLACE INTO sign_in_throttle (key, failures, locked_until, last_at) VALUES (?1, ?2, ?3, ?4)",
            params![t.key, t.failures, t.locked_until, t.last_at],
        )?;
        Ok(())
    }

    fn clear_throttle(&mut self, key: &str) -> StoreResult<()> {
        self.conn
            .execute("DELETE FROM sign_in_throttle WHERE key = ?1", [key])?;
        Ok(())
    }

    fn prune_sign_in(&mut self, cut: &SignInCutoffs) -> StoreResult<u64> {
        let mut n = self.conn.execute(
            "DELETE FROM sessions WHERE last_seen_at < ?1 OR created_at < ?2 OR ended_at < ?1",
            params![cut.sessions_before, cut.started_before],
        )?;
        n += self.conn.execute(
            "DELETE FROM sign_in_throttle WHERE last_at < ?1 AND locked_until < ?2",
            params![cut.throttles_before, cut.now],
        )?;
        n += self.conn.execute(
            "DELETE FROM sign_in_links WHERE expires_at < ?1 OR used_at < ?1",
            params![cut.links_before],
        )?;
        Ok(n as u64)
    }

    fn list_edges(&mut self, org_id: &str) -> StoreResult<Vec<EdgeRecord>> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {EDGE_COLS} FROM edge_credentials WHERE org_id = ?1 ORDER BY created_at, id"
        ))?;
        let rows = st.query_map([org_id], edge)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn get_edge(&mut self, id: &str) -> StoreResult<Option<EdgeRecord>> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {EDGE_COLS} FROM edge_credentials WHERE id = ?1"),
                [id],
                edge,
            )
            .optional()?)
    }

    fn revoke_edge(&mut self, id: &str, at: i64) -> StoreResult<()> {
        // The stored hash is replaced by a value no SHA-256 hex can equal, so the secret
        // stops authenticating in the same commit.
        self.conn.execute(
            "UPDATE edge_credentials SET revoked_at = ?2, secret_sha256 = 'revoked:' || id \
             WHERE id = ?1 AND revoked_at IS NULL",
            params![id, at],
        )?;
        Ok(())
    }
}
