//! `ScopesTx`, written once over [`Conn`] (tables from the scope-catalogue migration).

use super::{all, get, one, placeholders, placeholders_from, Conn, SqlRow, Value};
use crate::store::scopes::{GrantRecord, ScopeRecord, ScopesTx};
use crate::store::StoreResult;

const SCOPE_COLS: &str = "org_id, name, description, builtin, created_at";
const GRANT_COLS: &str = "org_id, scope, grantee, created_at";

fn scope(r: &dyn SqlRow) -> StoreResult<ScopeRecord> {
    Ok(ScopeRecord {
        org_id: get(r, 0)?,
        name: get(r, 1)?,
        description: get(r, 2)?,
        builtin: get(r, 3)?,
        created_at: get(r, 4)?,
    })
}

fn grant(r: &dyn SqlRow) -> StoreResult<GrantRecord> {
    Ok(GrantRecord {
        org_id: get(r, 0)?,
        scope: get(r, 1)?,
        grantee: get(r, 2)?,
        created_at: get(r, 3)?,
    })
}

impl<C: Conn> ScopesTx for C {
    fn list_scopes(&mut self, org_id: &str) -> StoreResult<Vec<ScopeRecord>> {
        let sql = format!("SELECT {SCOPE_COLS} FROM scopes WHERE org_id = ?1 ORDER BY name");
        all(self, &sql, &values![org_id], scope)
    }

    fn get_scope(&mut self, org_id: &str, name: &str) -> StoreResult<Option<ScopeRecord>> {
        let sql = format!(
            "SELECT {SCOPE_COLS} FROM scopes WHERE org_id = ?1 AND name = ?2{}",
            self.lock()
        );
        one(self, &sql, &values![org_id, name], scope)
    }

    fn insert_scope(&mut self, s: &ScopeRecord) -> StoreResult<()> {
        let sql = format!(
            "INSERT INTO scopes ({SCOPE_COLS}) VALUES ({})",
            placeholders(5)
        );
        let v = values![&s.org_id, &s.name, &s.description, s.builtin, s.created_at];
        self.exec(&sql, &v)?;
        Ok(())
    }

    fn update_scope(&mut self, s: &ScopeRecord) -> StoreResult<()> {
        self.exec(
            "UPDATE scopes SET description = ?3 WHERE org_id = ?1 AND name = ?2",
            &values![&s.org_id, &s.name, &s.description],
        )?;
        Ok(())
    }

    fn delete_scope(&mut self, org_id: &str, name: &str) -> StoreResult<()> {
        self.exec(
            "DELETE FROM scope_grants WHERE org_id = ?1 AND scope = ?2",
            &values![org_id, name],
        )?;
        self.exec(
            "DELETE FROM scopes WHERE org_id = ?1 AND name = ?2",
            &values![org_id, name],
        )?;
        Ok(())
    }

    fn list_grants(&mut self, org_id: &str) -> StoreResult<Vec<GrantRecord>> {
        let sql = format!(
            "SELECT {GRANT_COLS} FROM scope_grants WHERE org_id = ?1 ORDER BY scope, grantee"
        );
        all(self, &sql, &values![org_id], grant)
    }

    fn insert_grant(&mut self, g: &GrantRecord) -> StoreResult<bool> {
        let sql = format!(
            "INSERT INTO scope_grants ({GRANT_COLS}) VALUES ({}) \
             ON CONFLICT (org_id, scope, grantee) DO NOTHING",
            placeholders(4)
        );
        let v = values![&g.org_id, &g.scope, &g.grantee, g.created_at];
        Ok(self.exec(&sql, &v)? == 1)
    }

    fn delete_grant(&mut self, org_id: &str, scope: &str, grantee: &str) -> StoreResult<bool> {
        let n = self.exec(
            "DELETE FROM scope_grants WHERE org_id = ?1 AND scope = ?2 AND grantee = ?3",
            &values![org_id, scope, grantee],
        )?;
        Ok(n == 1)
    }

    fn granted_scopes(&mut self, org_id: &str, grantees: &[String]) -> StoreResult<Vec<String>> {
        if grantees.is_empty() {
            return Ok(Vec::new());
        }
        // Varies with the number of grantees (two in practice: the role and the user).
        let sql = format!(
            "SELECT DISTINCT scope FROM scope_grants WHERE org_id = ?1 AND grantee IN ({}) \
             ORDER BY scope",
            placeholders_from(2, grantees.len())
        );
        let mut args: Vec<Value> = vec![Value::from(org_id)];
        args.extend(grantees.iter().map(Value::from));
        all(self, &sql, &args, |r| get(r, 0))
    }
}
