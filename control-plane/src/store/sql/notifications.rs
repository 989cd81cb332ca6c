//! `NotificationsTx`, written once over [`Conn`] (tables from the notifications migration).

use super::{all, get, one, placeholders, Conn, SqlRow, Value};
use crate::store::notifications::{MailRecord, MailSettings, NetworkRecord, NotificationsTx};
use crate::store::StoreResult;

const NET_COLS: &str =
    "token_id, network, org_id, first_seen_at, last_seen_at, alerted_at, edge_id";

const MAIL_COLS: &str = "id, org_id, user_id, to_addr, event, subject, body, created_at, \
                         attempts, next_at, claimed_until, sent_at, failed_at, last_error";
const SETTINGS_COLS: &str = "user_id, org_id, email, muted, updated_at";

fn mail(r: &dyn SqlRow) -> StoreResult<MailRecord> {
    Ok(MailRecord {
        id: get(r, 0)?,
        org_id: get(r, 1)?,
        user_id: get(r, 2)?,
        to_addr: get(r, 3)?,
        event: get(r, 4)?,
        subject: get(r, 5)?,
        body: get(r, 6)?,
        created_at: get(r, 7)?,
        attempts: get(r, 8)?,
        next_at: get(r, 9)?,
        claimed_until: get(r, 10)?,
        sent_at: get(r, 11)?,
        failed_at: get(r, 12)?,
        last_error: get(r, 13)?,
    })
}

fn settings(r: &dyn SqlRow) -> StoreResult<MailSettings> {
    let muted: String = get(r, 3)?;
    Ok(MailSettings {
        user_id: get(r, 0)?,
        org_id: get(r, 1)?,
        email: get(r, 2)?,
        muted: muted.split_whitespace().map(str::to_string).collect(),
        updated_at: get(r, 4)?,
    })
}

fn network(r: &dyn SqlRow) -> StoreResult<NetworkRecord> {
    Ok(NetworkRecord {
        token_id: get(r, 0)?,
        network: get(r, 1)?,
        org_id: get(r, 2)?,
        first_seen_at: get(r, 3)?,
        last_seen_at: get(r, 4)?,
        alerted_at: get(r, 5)?,
        edge_id: get(r, 6)?,
    })
}

impl<C: Conn> NotificationsTx for C {
    fn claim_notice(
        &mut self,
        token_id: &str,
        org_id: &str,
        kind: &str,
        days: i64,
        at: i64,
    ) -> StoreResult<bool> {
        // A concurrent claim of the same row waits for the other transaction (PostgreSQL's
        // unique index) and then inserts nothing.
        let n = self.exec(
            "INSERT INTO token_notices (token_id, kind, days, org_id, sent_at) \
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (token_id, kind, days) DO NOTHING",
            &values![token_id, kind, days, org_id, at],
        )?;
        Ok(n == 1)
    }

    fn expiring_tokens(&mut self, now: i64, days: i64, limit: i64) -> StoreResult<Vec<String>> {
        all(
            self,
            "SELECT t.id FROM tokens t WHERE t.revoked_at IS NULL AND t.deleted_at IS NULL \
             AND t.expires_at > ?1 AND t.expires_at <= ?2 \
             AND t.expires_at - t.created_at > ?3 \
             AND t.jwt_sha256 IS NOT NULL AND t.enabled \
             AND NOT EXISTS (SELECT 1 FROM token_notices n WHERE n.token_id = t.id \
                 AND n.kind = 'expiring' AND n.days <= ?4) \
             ORDER BY t.expires_at, t.id LIMIT ?5",
            &values![now, now + days * 86_400, days * 86_400, days, limit],
            |r| get(r, 0),
        )
    }

    fn token_networks(&mut self, token_id: &str) -> StoreResult<Vec<NetworkRecord>> {
        let sql = format!(
            "SELECT {NET_COLS} FROM token_networks WHERE token_id = ?1 \
             ORDER BY last_seen_at DESC, network"
        );
        all(self, &sql, &values![token_id], network)
    }

    fn put_token_network(&mut self, n: &NetworkRecord) -> StoreResult<()> {
        let sql = format!(
            "INSERT INTO token_networks ({NET_COLS}) VALUES ({}) \
             ON CONFLICT (token_id, network) DO UPDATE SET first_seen_at = excluded.first_seen_at, \
             last_seen_at = excluded.last_seen_at, alerted_at = excluded.alerted_at, \
             edge_id = excluded.edge_id",
            placeholders(7)
        );
        let v = values![
            &n.token_id,
            &n.network,
            &n.org_id,
            n.first_seen_at,
            n.last_seen_at,
            n.alerted_at,
            &n.edge_id,
        ];
        self.exec(&sql, &v)?;
        Ok(())
    }

    fn touch_token_network(&mut self, token_id: &str, network: &str, at: i64) -> StoreResult<()> {
        self.exec(
            "UPDATE token_networks SET last_seen_at = ?3 WHERE token_id = ?1 AND network = ?2 \
             AND last_seen_at < ?3",
            &values![token_id, network, at],
        )?;
        Ok(())
    }

    fn delete_token_network(&mut self, token_id: &str, network: &str) -> StoreResult<()> {
        self.exec(
            "DELETE FROM token_networks WHERE token_id = ?1 AND network = ?2",
            &values![token_id, network],
        )?;
        Ok(())
    }

    fn insert_mail(&mut self, m: &MailRecord) -> StoreResult<()> {
        let sql = format!(
            "INSERT INTO mail_outbox ({MAIL_COLS}) VALUES ({})",
            placeholders(14)
        );
        let v = values![
            &m.id,
            &m.org_id,
            &m.user_id,
            &m.to_addr,
            &m.event,
            &m.subject,
            &m.body,
            m.created_at,
            m.attempts,
            m.next_at,
            m.claimed_until,
            m.sent_at,
            m.failed_at,
            &m.last_error,
        ];
        self.exec(&sql, &v)?;
        Ok(())
    }

    fn update_mail(&mut self, m: &MailRecord) -> StoreResult<()> {
        self.exec(
            "UPDATE mail_outbox SET attempts = ?2, next_at = ?3, claimed_until = ?4, \
             sent_at = ?5, failed_at = ?6, last_error = ?7, body = ?8 WHERE id = ?1",
            &values![
                &m.id,
                m.attempts,
                m.next_at,
                m.claimed_until,
                m.sent_at,
                m.failed_at,
                &m.last_error,
                &m.body
            ],
        )?;
        Ok(())
    }

    fn get_mail(&mut self, id: &str) -> StoreResult<Option<MailRecord>> {
        let sql = format!(
            "SELECT {MAIL_COLS} FROM mail_outbox WHERE id = ?1{}",
            self.lock()
        );
        one(self, &sql, &values![id], mail)
    }

    fn claim_mail(&mut self, now: i64, until: i64, limit: i64) -> StoreResult<Vec<MailRecord>> {
        // SQLite has one writer, whose transaction already excludes the others.
        let lock = self.lock();
        let skip = if lock.is_empty() { "" } else { " SKIP LOCKED" };
        let sql = format!(
            "SELECT {MAIL_COLS} FROM mail_outbox WHERE sent_at IS NULL AND failed_at IS NULL \
             AND next_at <= ?1 AND (claimed_until IS NULL OR claimed_until <= ?1) \
             ORDER BY next_at, id LIMIT ?2{lock}{skip}"
        );
        let mut due = all(self, &sql, &values![now, limit], mail)?;
        for m in &mut due {
            m.claimed_until = Some(until);
            self.exec(
                "UPDATE mail_outbox SET claimed_until = ?2 WHERE id = ?1",
                &values![&m.id, until],
            )?;
        }
        Ok(due)
    }

    fn any_due_mail(&mut self, now: i64) -> StoreResult<bool> {
        let found: Vec<String> = all(
            self,
            "SELECT id FROM mail_outbox WHERE sent_at IS NULL AND failed_at IS NULL \
             AND next_at <= ?1 AND (claimed_until IS NULL OR claimed_until <= ?1) LIMIT 1",
            &values![now],
            |r| get(r, 0),
        )?;
        Ok(!found.is_empty())
    }

    fn list_mail(&mut self, user_id: &str, limit: i64) -> StoreResult<Vec<MailRecord>> {
        let sql = format!(
            "SELECT {MAIL_COLS} FROM mail_outbox WHERE user_id = ?1 \
             ORDER BY created_at DESC, id DESC LIMIT ?2"
        );
        all(self, &sql, &values![user_id, limit], mail)
    }

    fn get_mail_settings(&mut self, user_id: &str) -> StoreResult<Option<MailSettings>> {
        let sql = format!("SELECT {SETTINGS_COLS} FROM mail_settings WHERE user_id = ?1");
        one(self, &sql, &values![user_id], settings)
    }

    fn put_mail_settings(&mut self, s: &MailSettings) -> StoreResult<()> {
        let sql = format!(
            "INSERT INTO mail_settings ({SETTINGS_COLS}) VALUES ({}) \
             ON CONFLICT (user_id) DO UPDATE SET email = excluded.email, \
             muted = excluded.muted, updated_at = excluded.updated_at",
            placeholders(5)
        );
        let v = values![
            &s.user_id,
            &s.org_id,
            &s.email,
            s.muted.join(" "),
            s.updated_at,
        ];
        self.exec(&sql, &v)?;
        Ok(())
    }

    fn sso_email_of(&mut self, user_id: &str) -> StoreResult<Option<String>> {
        one(
            self,
            "SELECT email FROM sso_identities WHERE user_id = ?1 AND email <> '' \
             ORDER BY last_sign_in_at DESC LIMIT 1",
            &values![user_id],
            |r| get(r, 0),
        )
    }
}
