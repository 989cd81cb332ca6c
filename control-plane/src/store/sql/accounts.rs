//! `AccountsTx`, written once over [`Conn`] (tables from the accounts migration). Getters
//! lock the row they read inside a PostgreSQL write (see `Dialect::for_update`).

use super::{all, get, one, placeholders, Conn, SqlRow, Value};
use crate::model::EdgeCredential;
use crate::store::accounts::{
    Account, AccountsTx, EdgeRecord, Session, SignInCutoffs, SignInLink, Throttle,
};
use crate::store::{StoreError, StoreResult};

const ACCOUNT_COLS: &str =
    "a.user_id, a.password_hash, a.disabled_at, a.deleted_at, a.suspended_tokens, a.prefs";
const SESSION_COLS: &str =
    "id, secret_sha256, user_id, csrf, created_at, last_seen_at, ended_at, sso_issuer";
const LINK_COLS: &str = "secret_sha256, user_id, kind, created_at, expires_at, used_at";
const THROTTLE_COLS: &str = "key, failures, locked_until, last_at";
const EDGE_COLS: &str = "id, org_id, name, secret_sha256, created_at, revoked_at";

fn account(r: &dyn SqlRow) -> StoreResult<Account> {
    let suspended: String = get(r, 4)?;
    let prefs: String = get(r, 5)?;
    Ok(Account {
        user_id: get(r, 0)?,
        password_hash: get(r, 1)?,
        disabled_at: get(r, 2)?,
        deleted_at: get(r, 3)?,
        suspended_tokens: serde_json::from_str(&suspended).unwrap_or_default(),
        prefs: serde_json::from_str(&prefs).unwrap_or(serde_json::Value::Null),
    })
}

fn session(r: &dyn SqlRow) -> StoreResult<Session> {
    Ok(Session {
        id: get(r, 0)?,
        secret_sha256: get(r, 1)?,
        user_id: get(r, 2)?,
        csrf: get(r, 3)?,
        created_at: get(r, 4)?,
        last_seen_at: get(r, 5)?,
        ended_at: get(r, 6)?,
        sso_issuer: get(r, 7)?,
    })
}

fn link(r: &dyn SqlRow) -> StoreResult<SignInLink> {
    Ok(SignInLink {
        secret_sha256: get(r, 0)?,
        user_id: get(r, 1)?,
        kind: get(r, 2)?,
        created_at: get(r, 3)?,
        expires_at: get(r, 4)?,
        used_at: get(r, 5)?,
    })
}

fn throttle(r: &dyn SqlRow) -> StoreResult<Throttle> {
    Ok(Throttle {
        key: get(r, 0)?,
        failures: get(r, 1)?,
        locked_until: get(r, 2)?,
        last_at: get(r, 3)?,
    })
}

fn edge(r: &dyn SqlRow) -> StoreResult<EdgeRecord> {
    Ok(EdgeRecord {
        edge: EdgeCredential {
            id: get(r, 0)?,
            org_id: get(r, 1)?,
            name: get(r, 2)?,
            secret_sha256: get(r, 3)?,
            created_at: get(r, 4)?,
        },
        revoked_at: get(r, 5)?,
    })
}

impl<C: Conn> AccountsTx for C {
    fn get_account(&mut self, user_id: &str) -> StoreResult<Option<Account>> {
        let sql = format!(
            "SELECT {ACCOUNT_COLS} FROM accounts a WHERE a.user_id = ?1{}",
            self.lock()
        );
        one(self, &sql, &values![user_id], account)
    }

    fn put_account(&mut self, a: &Account) -> StoreResult<()> {
        let suspended = serde_json::to_string(&a.suspended_tokens).unwrap_or_else(|_| "[]".into());
        let prefs = if a.prefs.is_object() {
            a.prefs.to_string()
        } else {
            "{}".into()
        };
        let v = values![
            &a.user_id,
            &a.password_hash,
            a.disabled_at,
            a.deleted_at,
            suspended,
            prefs
        ];
        self.exec(
            "INSERT INTO accounts (user_id, password_hash, disabled_at, deleted_at, \
             suspended_tokens, prefs) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
             ON CONFLICT (user_id) DO UPDATE SET password_hash = excluded.password_hash, \
             disabled_at = excluded.disabled_at, deleted_at = excluded.deleted_at, \
             suspended_tokens = excluded.suspended_tokens, prefs = excluded.prefs",
            &v,
        )?;
        Ok(())
    }

    fn org_accounts(&mut self, org_id: &str) -> StoreResult<Vec<Account>> {
        let sql = format!(
            "SELECT {ACCOUNT_COLS} FROM accounts a JOIN users u ON u.id = a.user_id \
             WHERE u.org_id = ?1"
        );
        all(self, &sql, &values![org_id], account)
    }

    fn insert_link(&mut self, l: &SignInLink) -> StoreResult<()> {
        let sql = format!(
            "INSERT INTO sign_in_links ({LINK_COLS}) VALUES ({})",
            placeholders(6)
        );
        let v = values![
            &l.secret_sha256,
            &l.user_id,
            &l.kind,
            l.created_at,
            l.expires_at,
            l.used_at
        ];
        self.exec(&sql, &v)?;
        Ok(())
    }

    fn get_link(&mut self, hash: &str) -> StoreResult<Option<SignInLink>> {
        let sql = format!(
            "SELECT {LINK_COLS} FROM sign_in_links WHERE secret_sha256 = ?1{}",
            self.lock()
        );
        one(self, &sql, &values![hash], link)
    }

    fn use_link(&mut self, hash: &str, at: i64) -> StoreResult<bool> {
        let n = self.exec(
            "UPDATE sign_in_links SET used_at = ?2 WHERE secret_sha256 = ?1 AND used_at IS NULL",
            &values![hash, at],
        )?;
        Ok(n == 1)
    }

    fn void_links(&mut self, user_id: &str, kind: Option<&str>, at: i64) -> StoreResult<u64> {
        match kind {
            Some(k) => self.exec(
                "UPDATE sign_in_links SET used_at = ?2 \
                 WHERE user_id = ?1 AND used_at IS NULL AND kind = ?3",
                &values![user_id, at, k],
            ),
            None => self.exec(
                "UPDATE sign_in_links SET used_at = ?2 WHERE user_id = ?1 AND used_at IS NULL",
                &values![user_id, at],
            ),
        }
    }

    fn insert_session(&mut self, s: &Session) -> StoreResult<()> {
        let sql = format!(
            "INSERT INTO sessions ({SESSION_COLS}) VALUES ({})",
            placeholders(8)
        );
        #[rustfmt::skip]
        let v = values![
            &s.id, &s.secret_sha256, &s.user_id, &s.csrf, s.created_at, s.last_seen_at, s.ended_at,
            &s.sso_issuer,
        ];
        self.exec(&sql, &v)?;
        Ok(())
    }

    fn get_session(&mut self, hash: &str) -> StoreResult<Option<Session>> {
        let sql = format!(
            "SELECT {SESSION_COLS} FROM sessions WHERE secret_sha256 = ?1{}",
            self.lock()
        );
        one(self, &sql, &values![hash], session)
    }

    fn session_by_id(&mut self, id: &str) -> StoreResult<Option<Session>> {
        let sql = format!(
            "SELECT {SESSION_COLS} FROM sessions WHERE id = ?1{}",
            self.lock()
        );
        one(self, &sql, &values![id], session)
    }

    fn touch_session(&mut self, id: &str, at: i64) -> StoreResult<()> {
        // The later of the two (SQLite's max(a, b) is PostgreSQL's greatest).
        self.exec(
            "UPDATE sessions SET last_seen_at = \
             CASE WHEN last_seen_at < ?2 THEN ?2 ELSE last_seen_at END WHERE id = ?1",
            &values![id, at],
        )?;
        Ok(())
    }

    fn end_session(&mut self, id: &str, at: i64) -> StoreResult<()> {
        self.exec(
            "UPDATE sessions SET ended_at = ?2 WHERE id = ?1 AND ended_at IS NULL",
            &values![id, at],
        )?;
        Ok(())
    }

    fn end_user_sessions(&mut self, user_id: &str, at: i64) -> StoreResult<()> {
        self.exec(
            "UPDATE sessions SET ended_at = ?2 WHERE user_id = ?1 AND ended_at IS NULL",
            &values![user_id, at],
        )?;
        Ok(())
    }

    fn get_throttle(&mut self, key: &str) -> StoreResult<Option<Throttle>> {
        let sql = format!(
            "SELECT {THROTTLE_COLS} FROM sign_in_throttle WHERE key = ?1{}",
            self.lock()
        );
        one(self, &sql, &values![key], throttle)
    }

    fn lock_throttle(&mut self, key: &str, now: i64) -> StoreResult<Throttle> {
        // SQLite: the single writer already serialises writes. PostgreSQL: a concurrent
        // insert of the same key waits for the other transaction, then does nothing; the
        // SELECT ... FOR UPDATE that follows takes the row's lock.
        self.exec(
            "INSERT INTO sign_in_throttle (key, failures, locked_until, last_at) \
             VALUES (?1, 0, 0, ?2) ON CONFLICT (key) DO NOTHING",
            &values![key, now],
        )?;
        self.get_throttle(key)?
            .ok_or_else(|| StoreError::Backend("throttle row vanished".into()))
    }

    fn put_throttle(&mut self, t: &Throttle) -> StoreResult<()> {
        self.exec(
            "INSERT INTO sign_in_throttle (key, failures, locked_until, last_at) \
             VALUES (?1, ?2, ?3, ?4) ON CONFLICT (key) DO UPDATE SET \
             failures = excluded.failures, locked_until = excluded.locked_until, \
             last_at = excluded.last_at",
            &values![&t.key, t.failures, t.locked_until, t.last_at],
        )?;
        Ok(())
    }

    fn clear_throttle(&mut self, key: &str) -> StoreResult<()> {
        self.exec("DELETE FROM sign_in_throttle WHERE key = ?1", &values![key])?;
        Ok(())
    }

    fn prune_sign_in(&mut self, cut: &SignInCutoffs) -> StoreResult<u64> {
        let mut n = self.exec(
            "DELETE FROM sessions WHERE last_seen_at < ?1 OR created_at < ?2 OR ended_at < ?1",
            &values![cut.sessions_before, cut.started_before],
        )?;
        n += self.exec(
            "DELETE FROM sign_in_throttle WHERE last_at < ?1 AND locked_until < ?2",
            &values![cut.throttles_before, cut.now],
        )?;
        n += self.exec(
            "DELETE FROM sign_in_links WHERE expires_at < ?1 OR used_at < ?1",
            &values![cut.links_before],
        )?;
        Ok(n)
    }

    fn list_edges(&mut self, org_id: &str) -> StoreResult<Vec<EdgeRecord>> {
        let sql = format!(
            "SELECT {EDGE_COLS} FROM edge_credentials WHERE org_id = ?1 ORDER BY created_at, id"
        );
        all(self, &sql, &values![org_id], edge)
    }

    fn get_edge(&mut self, id: &str) -> StoreResult<Option<EdgeRecord>> {
        let sql = format!(
            "SELECT {EDGE_COLS} FROM edge_credentials WHERE id = ?1{}",
            self.lock()
        );
        one(self, &sql, &values![id], edge)
    }

    fn revoke_edge(&mut self, id: &str, at: i64) -> StoreResult<()> {
        // The stored hash is put behind a prefix no SHA-256 hex has, so the secret stops
        // authenticating in the same commit, and a later use can still be told "revoked".
        self.exec(
            "UPDATE edge_credentials SET revoked_at = ?2, secret_sha256 = 'revoked:' || secret_sha256 \
             WHERE id = ?1 AND revoked_at IS NULL",
            &values![id, at],
        )?;
        Ok(())
    }
}
