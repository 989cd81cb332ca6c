//! `WebhooksTx`, written once over [`Conn`] (tables from the webhooks migration).

use super::{all, get, one, placeholders, Conn, SqlRow, Value};
use crate::store::webhooks::{AttemptRecord, OutboxRecord, WebhookRecord, WebhooksTx};
use crate::store::StoreResult;

const HOOK_COLS: &str =
    "id, org_id, url, events, secret_sealed, description, created_by, created_at, deleted_at";
const OUT_COLS: &str = "id, webhook_id, org_id, event, payload, created_at, attempts, next_at, \
                        claimed_until, delivered_at, failed_at, last_status, last_error";
const ATTEMPT_COLS: &str = "message_id, webhook_id, org_id, at, status, error";

fn hook(r: &dyn SqlRow) -> StoreResult<WebhookRecord> {
    let events: String = get(r, 3)?;
    Ok(WebhookRecord {
        id: get(r, 0)?,
        org_id: get(r, 1)?,
        url: get(r, 2)?,
        events: events.split_whitespace().map(str::to_string).collect(),
        secret_sealed: get(r, 4)?,
        description: get(r, 5)?,
        created_by: get(r, 6)?,
        created_at: get(r, 7)?,
        deleted_at: get(r, 8)?,
    })
}

fn message(r: &dyn SqlRow) -> StoreResult<OutboxRecord> {
    Ok(OutboxRecord {
        id: get(r, 0)?,
        webhook_id: get(r, 1)?,
        org_id: get(r, 2)?,
        event: get(r, 3)?,
        payload: get(r, 4)?,
        created_at: get(r, 5)?,
        attempts: get(r, 6)?,
        next_at: get(r, 7)?,
        claimed_until: get(r, 8)?,
        delivered_at: get(r, 9)?,
        failed_at: get(r, 10)?,
        last_status: get(r, 11)?,
        last_error: get(r, 12)?,
    })
}

fn attempt(r: &dyn SqlRow) -> StoreResult<AttemptRecord> {
    Ok(AttemptRecord {
        message_id: get(r, 0)?,
        webhook_id: get(r, 1)?,
        org_id: get(r, 2)?,
        at: get(r, 3)?,
        status: get(r, 4)?,
        error: get(r, 5)?,
    })
}

impl<C: Conn> WebhooksTx for C {
    fn insert_webhook(&mut self, w: &WebhookRecord) -> StoreResult<()> {
        let sql = format!(
            "INSERT INTO webhooks ({HOOK_COLS}) VALUES ({})",
            placeholders(9)
        );
        let v = values![
            &w.id,
            &w.org_id,
            &w.url,
            w.events.join(" "),
            w.secret_sealed.as_slice(),
            &w.description,
            &w.created_by,
            w.created_at,
            w.deleted_at,
        ];
        self.exec(&sql, &v)?;
        Ok(())
    }

    fn update_webhook(&mut self, w: &WebhookRecord) -> StoreResult<()> {
        self.exec(
            "UPDATE webhooks SET url = ?2, events = ?3, description = ?4, deleted_at = ?5 \
             WHERE id = ?1",
            &values![
                &w.id,
                &w.url,
                w.events.join(" "),
                &w.description,
                w.deleted_at
            ],
        )?;
        Ok(())
    }

    fn get_webhook(&mut self, id: &str) -> StoreResult<Option<WebhookRecord>> {
        let sql = format!("SELECT {HOOK_COLS} FROM webhooks WHERE id = ?1");
        one(self, &sql, &values![id], hook)
    }

    fn list_webhooks(&mut self, org_id: &str) -> StoreResult<Vec<WebhookRecord>> {
        let sql = format!(
            "SELECT {HOOK_COLS} FROM webhooks WHERE org_id = ?1 AND deleted_at IS NULL \
             ORDER BY created_at, id"
        );
        all(self, &sql, &values![org_id], hook)
    }

    fn insert_outbox(&mut self, m: &OutboxRecord) -> StoreResult<()> {
        let sql = format!(
            "INSERT INTO webhook_outbox ({OUT_COLS}) VALUES ({})",
            placeholders(13)
        );
        let v = values![
            &m.id,
            &m.webhook_id,
            &m.org_id,
            &m.event,
            &m.payload,
            m.created_at,
            m.attempts,
            m.next_at,
            m.claimed_until,
            m.delivered_at,
            m.failed_at,
            m.last_status,
            &m.last_error,
        ];
        self.exec(&sql, &v)?;
        Ok(())
    }

    fn update_outbox(&mut self, m: &OutboxRecord) -> StoreResult<()> {
        self.exec(
            "UPDATE webhook_outbox SET attempts = ?2, next_at = ?3, claimed_until = ?4, \
             delivered_at = ?5, failed_at = ?6, last_status = ?7, last_error = ?8 WHERE id = ?1",
            &values![
                &m.id,
                m.attempts,
                m.next_at,
                m.claimed_until,
                m.delivered_at,
                m.failed_at,
                m.last_status,
                &m.last_error
            ],
        )?;
        Ok(())
    }

    fn get_outbox(&mut self, id: &str) -> StoreResult<Option<OutboxRecord>> {
        let sql = format!(
            "SELECT {OUT_COLS} FROM webhook_outbox WHERE id = ?1{}",
            self.lock()
        );
        one(self, &sql, &values![id], message)
    }

    fn claim_outbox(&mut self, now: i64, until: i64, limit: i64) -> StoreResult<Vec<OutboxRecord>> {
        // SQLite has one writer, whose transaction already excludes the others.
        let lock = self.lock();
        let skip = if lock.is_empty() { "" } else { " SKIP LOCKED" };
        let sql = format!(
            "SELECT {OUT_COLS} FROM webhook_outbox WHERE delivered_at IS NULL \
             AND failed_at IS NULL AND next_at <= ?1 \
             AND (claimed_until IS NULL OR claimed_until <= ?1) \
             ORDER BY next_at, id LIMIT ?2{lock}{skip}"
        );
        let mut due = all(self, &sql, &values![now, limit], message)?;
        for m in &mut due {
            m.claimed_until = Some(until);
            self.exec(
                "UPDATE webhook_outbox SET claimed_until = ?2 WHERE id = ?1",
                &values![&m.id, until],
            )?;
        }
        Ok(due)
    }

    fn count_due_outbox(&mut self, now: i64) -> StoreResult<i64> {
        let found: Vec<String> = all(
            self,
            "SELECT id FROM webhook_outbox WHERE delivered_at IS NULL AND failed_at IS NULL \
             AND next_at <= ?1 AND (claimed_until IS NULL OR claimed_until <= ?1) LIMIT 1",
            &values![now],
            |r| get(r, 0),
        )?;
        Ok(found.len() as i64)
    }

    fn list_outbox(
        &mut self,
        webhook_id: &str,
        limit: i64,
        offset: i64,
    ) -> StoreResult<Vec<OutboxRecord>> {
        let sql = format!(
            "SELECT {OUT_COLS} FROM webhook_outbox WHERE webhook_id = ?1 \
             ORDER BY created_at DESC, id DESC LIMIT ?2 OFFSET ?3"
        );
        all(self, &sql, &values![webhook_id, limit, offset], message)
    }

    fn insert_attempt(&mut self, a: &AttemptRecord) -> StoreResult<()> {
        let sql = format!(
            "INSERT INTO webhook_attempts ({ATTEMPT_COLS}) VALUES ({})",
            placeholders(6)
        );
        let v = values![
            &a.message_id,
            &a.webhook_id,
            &a.org_id,
            a.at,
            a.status,
            &a.error
        ];
        self.exec(&sql, &v)?;
        Ok(())
    }

    fn list_attempts(&mut self, message_id: &str) -> StoreResult<Vec<AttemptRecord>> {
        let sql = format!(
            "SELECT {ATTEMPT_COLS} FROM webhook_attempts WHERE message_id = ?1 ORDER BY at, seq"
        );
        all(self, &sql, &values![message_id], attempt)
    }
}
