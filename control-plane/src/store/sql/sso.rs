//! `SsoTx`, written once over [`Conn`] (tables from the single sign-on migration).

use super::{all, get, one, placeholders, Conn, SqlRow, Value};
use crate::store::sso::{SsoConnection, SsoDomainClaim, SsoIdentity, SsoLogin, SsoTx};
use crate::store::StoreResult;

const CONN_COLS: &str = "org_id, issuer, client_id, secret_enc, domains, require_sso, \
                         default_role, group_roles, created_at, updated_at, sync_roles";
const LOGIN_COLS: &str =
    "state_sha256, org_id, nonce, verifier_enc, browser_sha256, created_at, expires_at";
const CLAIM_COLS: &str = "domain, org_id, claimed_at, approved_at, approved_by";
const IDENTITY_COLS: &str = "org_id, issuer, subject, user_id, email, created_at, last_sign_in_at";

fn connection(r: &dyn SqlRow) -> StoreResult<SsoConnection> {
    let domains: String = get(r, 4)?;
    Ok(SsoConnection {
        org_id: get(r, 0)?,
        issuer: get(r, 1)?,
        client_id: get(r, 2)?,
        secret_enc: get(r, 3)?,
        domains: domains.split_whitespace().map(str::to_string).collect(),
        require_sso: get(r, 5)?,
        default_role: get(r, 6)?,
        group_roles: get(r, 7)?,
        created_at: get(r, 8)?,
        updated_at: get(r, 9)?,
        sync_roles: get(r, 10)?,
    })
}

fn claim(r: &dyn SqlRow) -> StoreResult<SsoDomainClaim> {
    Ok(SsoDomainClaim {
        domain: get(r, 0)?,
        org_id: get(r, 1)?,
        claimed_at: get(r, 2)?,
        approved_at: get(r, 3)?,
        approved_by: get(r, 4)?,
    })
}

fn login(r: &dyn SqlRow) -> StoreResult<SsoLogin> {
    Ok(SsoLogin {
        state_sha256: get(r, 0)?,
        org_id: get(r, 1)?,
        nonce: get(r, 2)?,
        verifier_enc: get(r, 3)?,
        browser_sha256: get(r, 4)?,
        created_at: get(r, 5)?,
        expires_at: get(r, 6)?,
    })
}

fn identity(r: &dyn SqlRow) -> StoreResult<SsoIdentity> {
    Ok(SsoIdentity {
        org_id: get(r, 0)?,
        issuer: get(r, 1)?,
        subject: get(r, 2)?,
        user_id: get(r, 3)?,
        email: get(r, 4)?,
        created_at: get(r, 5)?,
        last_sign_in_at: get(r, 6)?,
    })
}

impl<C: Conn> SsoTx for C {
    fn get_sso_connection(&mut self, org_id: &str) -> StoreResult<Option<SsoConnection>> {
        let sql = format!(
            "SELECT {CONN_COLS} FROM sso_connections WHERE org_id = ?1{}",
            self.lock()
        );
        one(self, &sql, &values![org_id], connection)
    }

    fn put_sso_connection(&mut self, c: &SsoConnection) -> StoreResult<()> {
        let sql = format!(
            "INSERT INTO sso_connections ({CONN_COLS}) VALUES ({}) ON CONFLICT (org_id) DO UPDATE SET \
             issuer = excluded.issuer, client_id = excluded.client_id, \
             secret_enc = excluded.secret_enc, domains = excluded.domains, \
             require_sso = excluded.require_sso, default_role = excluded.default_role, \
             group_roles = excluded.group_roles, updated_at = excluded.updated_at, \
             sync_roles = excluded.sync_roles",
            placeholders(11)
        );
        let v = values![
            &c.org_id,
            &c.issuer,
            &c.client_id,
            c.secret_enc.as_slice(),
            c.domains.join(" "),
            c.require_sso,
            &c.default_role,
            &c.group_roles,
            c.created_at,
            c.updated_at,
            c.sync_roles
        ];
        self.exec(&sql, &v)?;
        for old in self.sso_domain_claims(Some(&c.org_id), false)? {
            if !c.domains.contains(&old.domain) {
                self.exec(
                    "DELETE FROM sso_domain_claims WHERE domain = ?1 AND org_id = ?2",
                    &values![&old.domain, &c.org_id],
                )?;
            }
        }
        for d in &c.domains {
            self.exec(
                "INSERT INTO sso_domain_claims (domain, org_id, claimed_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (domain, org_id) DO NOTHING",
                &values![d, &c.org_id, c.updated_at],
            )?;
        }
        Ok(())
    }

    fn delete_sso_connection(&mut self, org_id: &str) -> StoreResult<bool> {
        self.exec(
            "DELETE FROM sso_domain_claims WHERE org_id = ?1",
            &values![org_id],
        )?;
        let n = self.exec(
            "DELETE FROM sso_connections WHERE org_id = ?1",
            &values![org_id],
        )?;
        Ok(n > 0)
    }

    fn sso_domain_owner(&mut self, domain: &str) -> StoreResult<Option<String>> {
        one(
            self,
            "SELECT org_id FROM sso_domain_claims WHERE domain = ?1 AND approved_at IS NOT NULL",
            &values![domain],
            |r| get(r, 0),
        )
    }

    fn sso_domain_claims(
        &mut self,
        org_id: Option<&str>,
        pending_only: bool,
    ) -> StoreResult<Vec<SsoDomainClaim>> {
        let pending = if pending_only {
            " AND approved_at IS NULL"
        } else {
            ""
        };
        match org_id {
            Some(o) => all(
                self,
                &format!(
                    "SELECT {CLAIM_COLS} FROM sso_domain_claims WHERE org_id = ?1{pending} \
                     ORDER BY domain, org_id"
                ),
                &values![o],
                claim,
            ),
            None => all(
                self,
                &format!(
                    "SELECT {CLAIM_COLS} FROM sso_domain_claims WHERE 1 = 1{pending} \
                     ORDER BY domain, org_id"
                ),
                &values![],
                claim,
            ),
        }
    }

    fn set_sso_domain_approved(
        &mut self,
        domain: &str,
        org_id: &str,
        approved: Option<(i64, &str)>,
    ) -> StoreResult<bool> {
        let (at, by) = approved.map_or((None, None), |(a, b)| (Some(a), Some(b)));
        let n = self.exec(
            "UPDATE sso_domain_claims SET approved_at = ?3, approved_by = ?4 \
             WHERE domain = ?1 AND org_id = ?2",
            &values![domain, org_id, at, by],
        )?;
        Ok(n > 0)
    }

    fn insert_sso_login(&mut self, l: &SsoLogin) -> StoreResult<()> {
        let sql = format!(
            "INSERT INTO sso_logins ({LOGIN_COLS}) VALUES ({})",
            placeholders(7)
        );
        let v = values![
            &l.state_sha256,
            &l.org_id,
            &l.nonce,
            l.verifier_enc.as_slice(),
            &l.browser_sha256,
            l.created_at,
            l.expires_at
        ];
        self.exec(&sql, &v)?;
        Ok(())
    }

    fn take_sso_login(&mut self, state_sha256: &str) -> StoreResult<Option<SsoLogin>> {
        let sql = format!(
            "SELECT {LOGIN_COLS} FROM sso_logins WHERE state_sha256 = ?1{}",
            self.lock()
        );
        let found = one(self, &sql, &values![state_sha256], login)?;
        if found.is_some() {
            // Only the transaction that deletes the row may use it: a concurrent one on
            // PostgreSQL waited on the lock above and finds it gone.
            let n = self.exec(
                "DELETE FROM sso_logins WHERE state_sha256 = ?1",
                &values![state_sha256],
            )?;
            if n == 0 {
                return Ok(None);
            }
        }
        Ok(found)
    }

    fn find_sso_identity(
        &mut self,
        org_id: &str,
        issuer: &str,
        subject: &str,
    ) -> StoreResult<Option<SsoIdentity>> {
        let sql = format!(
            "SELECT {IDENTITY_COLS} FROM sso_identities \
             WHERE org_id = ?1 AND issuer = ?2 AND subject = ?3"
        );
        one(self, &sql, &values![org_id, issuer, subject], identity)
    }

    fn insert_sso_identity(&mut self, i: &SsoIdentity) -> StoreResult<()> {
        let sql = format!(
            "INSERT INTO sso_identities ({IDENTITY_COLS}) VALUES ({})",
            placeholders(7)
        );
        let v = values![
            &i.org_id,
            &i.issuer,
            &i.subject,
            &i.user_id,
            &i.email,
            i.created_at,
            i.last_sign_in_at
        ];
        self.exec(&sql, &v)?;
        Ok(())
    }

    fn touch_sso_identity(
        &mut self,
        org_id: &str,
        issuer: &str,
        subject: &str,
        at: i64,
    ) -> StoreResult<()> {
        self.exec(
            "UPDATE sso_identities SET last_sign_in_at = ?4 \
             WHERE org_id = ?1 AND issuer = ?2 AND subject = ?3",
            &values![org_id, issuer, subject, at],
        )?;
        Ok(())
    }

    fn prune_sso_logins(&mut self, before: i64) -> StoreResult<u64> {
        self.exec(
            "DELETE FROM sso_logins WHERE expires_at < ?1",
            &values![before],
        )
    }
}
