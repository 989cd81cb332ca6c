//! `ScimTx`, written once over [`Conn`] (tables from the SCIM migration).

use super::{all, get, one, placeholders, Conn, SqlRow, Value};
use crate::store::scim::{ScimCredential, ScimTx, ScimUser};
use crate::store::StoreResult;

const CRED_COLS: &str =
    "id, org_id, name, secret_sha256, created_by, created_at, revoked_at, last_used_at";
const USER_COLS: &str = "user_id, org_id, external_id, attrs, version, updated_at";

fn credential(r: &dyn SqlRow) -> StoreResult<ScimCredential> {
    Ok(ScimCredential {
        id: get(r, 0)?,
        org_id: get(r, 1)?,
        name: get(r, 2)?,
        secret_sha256: get(r, 3)?,
        created_by: get(r, 4)?,
        created_at: get(r, 5)?,
        revoked_at: get(r, 6)?,
        last_used_at: get(r, 7)?,
    })
}

fn scim_user(r: &dyn SqlRow) -> StoreResult<ScimUser> {
    let attrs: String = get(r, 3)?;
    Ok(ScimUser {
        user_id: get(r, 0)?,
        org_id: get(r, 1)?,
        external_id: get(r, 2)?,
        attrs: serde_json::from_str(&attrs).unwrap_or_else(|_| serde_json::json!({})),
        version: get(r, 4)?,
        updated_at: get(r, 5)?,
    })
}

impl<C: Conn> ScimTx for C {
    fn insert_scim_credential(&mut self, c: &ScimCredential) -> StoreResult<()> {
        let sql = format!(
            "INSERT INTO scim_credentials ({CRED_COLS}) VALUES ({})",
            placeholders(8)
        );
        let v = values![
            &c.id,
            &c.org_id,
            &c.name,
            &c.secret_sha256,
            &c.created_by,
            c.created_at,
            c.revoked_at,
            c.last_used_at
        ];
        self.exec(&sql, &v)?;
        Ok(())
    }

    fn list_scim_credentials(&mut self, org_id: &str) -> StoreResult<Vec<ScimCredential>> {
        let sql = format!(
            "SELECT {CRED_COLS} FROM scim_credentials WHERE org_id = ?1 ORDER BY created_at, id"
        );
        all(self, &sql, &values![org_id], credential)
    }

    fn get_scim_credential(&mut self, id: &str) -> StoreResult<Option<ScimCredential>> {
        let sql = format!(
            "SELECT {CRED_COLS} FROM scim_credentials WHERE id = ?1{}",
            self.lock()
        );
        one(self, &sql, &values![id], credential)
    }

    fn find_scim_credential(&mut self, hash: &str) -> StoreResult<Option<ScimCredential>> {
        let sql = format!("SELECT {CRED_COLS} FROM scim_credentials WHERE secret_sha256 = ?1");
        one(self, &sql, &values![hash], credential)
    }

    fn revoke_scim_credential(&mut self, id: &str, at: i64) -> StoreResult<()> {
        self.exec(
            "UPDATE scim_credentials SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
            &values![id, at],
        )?;
        Ok(())
    }

    fn touch_scim_credential(&mut self, id: &str, at: i64) -> StoreResult<()> {
        self.exec(
            "UPDATE scim_credentials SET last_used_at = ?2 WHERE id = ?1",
            &values![id, at],
        )?;
        Ok(())
    }

    fn rename_user(&mut self, u: &crate::model::User) -> StoreResult<()> {
        let mut v = values![&u.id, &u.username].to_vec();
        let mut set = "username = ?2".to_string();
        if self.dialect().lowercase_copies() {
            set.push_str(", owner_lc = ?3");
            v.push(super::owner_lc(u).into());
        }
        self.exec(&format!("UPDATE users SET {set} WHERE id = ?1"), &v)?;
        Ok(())
    }

    fn get_scim_user(&mut self, user_id: &str) -> StoreResult<Option<ScimUser>> {
        let sql = format!(
            "SELECT {USER_COLS} FROM scim_users WHERE user_id = ?1{}",
            self.lock()
        );
        one(self, &sql, &values![user_id], scim_user)
    }

    fn put_scim_user(&mut self, u: &ScimUser) -> StoreResult<()> {
        let attrs = if u.attrs.is_object() {
            u.attrs.to_string()
        } else {
            "{}".into()
        };
        let sql = format!(
            "INSERT INTO scim_users ({USER_COLS}) VALUES ({}) ON CONFLICT (user_id) DO UPDATE SET \
             external_id = excluded.external_id, attrs = excluded.attrs, \
             version = excluded.version, updated_at = excluded.updated_at",
            placeholders(6)
        );
        let v = values![
            &u.user_id,
            &u.org_id,
            &u.external_id,
            &attrs,
            u.version,
            u.updated_at
        ];
        self.exec(&sql, &v)?;
        Ok(())
    }

    fn list_scim_users(&mut self, org_id: &str) -> StoreResult<Vec<ScimUser>> {
        let sql = format!("SELECT {USER_COLS} FROM scim_users WHERE org_id = ?1");
        all(self, &sql, &values![org_id], scim_user)
    }
}
