//! The schema, as numbered migrations that both backends run: version N is
//! `MIGRATIONS[N - 1]`, with one text for SQLite and one for PostgreSQL that give the same
//! tables, columns and meaning. Never edit a released entry: append a new one.
//!
//! Differences by design: PostgreSQL uses BOOLEAN, BIGINT and BYTEA, sorts text bytewise
//! (`COLLATE "C"`, as SQLite's BINARY), partitions the authentication log by day, and
//! searches token text with `pg_trgm` over lower-cased copies (SQLite: an FTS5 trigram
//! table).

/// One schema version.
pub struct Migration {
    pub sqlite: &'static str,
    pub postgres: &'static str,
}

pub const MIGRATIONS: &[Migration] = &[
    // 1: the first schema.
    Migration {
        sqlite: r#"
CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE orgs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    partner_org_id TEXT REFERENCES orgs(id),
    is_partner INTEGER NOT NULL,
    is_root INTEGER NOT NULL,
    max_lifetime_days INTEGER NOT NULL,
    audience TEXT NOT NULL,
    key_alg TEXT NOT NULL,
    status_version INTEGER NOT NULL,
    next_status_idx INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE signing_keys (
    kid TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES orgs(id),
    alg TEXT NOT NULL,
    public_jwk TEXT NOT NULL,
    private_enc BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    retired_at INTEGER,
    last_exp INTEGER NOT NULL
);
CREATE INDEX signing_keys_org ON signing_keys(org_id);
CREATE TABLE users (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES orgs(id),
    username TEXT NOT NULL,
    display_name TEXT NOT NULL,
    role TEXT NOT NULL,
    delegated INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (org_id, username)
);
CREATE TABLE tokens (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES orgs(id),
    user_id TEXT NOT NULL REFERENCES users(id),
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    lifetime_days INTEGER,
    not_before INTEGER,
    expires_at INTEGER NOT NULL,
    ip_allow TEXT NOT NULL,
    scopes TEXT NOT NULL,
    enabled INTEGER NOT NULL,
    revoked_at INTEGER,
    deleted_at INTEGER,
    minted_at INTEGER,
    jwt_sha256 TEXT,
    status_idx INTEGER,
    kid TEXT,
    last_used_at INTEGER,
    last_used_ip TEXT
);
CREATE UNIQUE INDEX tokens_user_name ON tokens(user_id, name) WHERE deleted_at IS NULL;
CREATE INDEX tokens_org ON tokens(org_id, created_at);
CREATE TABLE status_entries (
    org_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    value INTEGER NOT NULL,
    token_id TEXT NOT NULL,
    PRIMARY KEY (org_id, idx)
) WITHOUT ROWID;
CREATE TABLE auth_events (
    id INTEGER PRIMARY KEY,
    org_id TEXT NOT NULL,
    token_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    at INTEGER NOT NULL,
    ip TEXT,
    outcome TEXT NOT NULL,
    reason TEXT,
    method TEXT,
    path TEXT,
    source TEXT NOT NULL
);
CREATE INDEX auth_events_token ON auth_events(token_id, at);
CREATE INDEX auth_events_org ON auth_events(org_id, at);
CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    org_id TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX audit_log_org ON audit_log(org_id, at);
CREATE TABLE edge_credentials (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES orgs(id),
    name TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);
"#,
        postgres: r#"
CREATE TABLE settings (key TEXT COLLATE "C" PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE orgs (
    id TEXT COLLATE "C" PRIMARY KEY,
    name TEXT COLLATE "C" NOT NULL,
    partner_org_id TEXT COLLATE "C" REFERENCES orgs(id),
    is_partner BOOLEAN NOT NULL,
    is_root BOOLEAN NOT NULL,
    max_lifetime_days BIGINT NOT NULL,
    audience TEXT COLLATE "C" NOT NULL,
    key_alg TEXT COLLATE "C" NOT NULL,
    status_version BIGINT NOT NULL,
    next_status_idx BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE signing_keys (
    kid TEXT COLLATE "C" PRIMARY KEY,
    org_id TEXT COLLATE "C" NOT NULL REFERENCES orgs(id),
    alg TEXT COLLATE "C" NOT NULL,
    public_jwk TEXT NOT NULL,
    private_enc BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    retired_at BIGINT,
    last_exp BIGINT NOT NULL,
    -- SQLite's rowid: the insertion order breaks ties of equal creation times.
    seq BIGSERIAL NOT NULL
);
CREATE INDEX signing_keys_org ON signing_keys(org_id);
CREATE TABLE users (
    id TEXT COLLATE "C" PRIMARY KEY,
    org_id TEXT COLLATE "C" NOT NULL REFERENCES orgs(id),
    username TEXT COLLATE "C" NOT NULL,
    display_name TEXT COLLATE "C" NOT NULL,
    role TEXT COLLATE "C" NOT NULL,
    delegated BOOLEAN NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (org_id, username)
);
CREATE TABLE tokens (
    id TEXT COLLATE "C" PRIMARY KEY,
    org_id TEXT COLLATE "C" NOT NULL REFERENCES orgs(id),
    user_id TEXT COLLATE "C" NOT NULL REFERENCES users(id),
    name TEXT COLLATE "C" NOT NULL,
    description TEXT COLLATE "C" NOT NULL,
    created_by TEXT COLLATE "C" NOT NULL,
    created_at BIGINT NOT NULL,
    lifetime_days BIGINT,
    not_before BIGINT,
    expires_at BIGINT NOT NULL,
    ip_allow TEXT NOT NULL,
    scopes TEXT NOT NULL,
    enabled BOOLEAN NOT NULL,
    revoked_at BIGINT,
    deleted_at BIGINT,
    minted_at BIGINT,
    jwt_sha256 TEXT COLLATE "C",
    status_idx BIGINT,
    kid TEXT COLLATE "C",
    last_used_at BIGINT,
    last_used_ip TEXT
);
CREATE UNIQUE INDEX tokens_user_name ON tokens(user_id, name) WHERE deleted_at IS NULL;
CREATE INDEX tokens_org ON tokens(org_id, created_at);
CREATE TABLE status_entries (
    org_id TEXT COLLATE "C" NOT NULL,
    idx BIGINT NOT NULL,
    value SMALLINT NOT NULL,
    token_id TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (org_id, idx)
);
-- The authentication log grows with every request through every edge: partitioned by
-- day on `at` (Unix seconds), so retention drops whole partitions. Days without a
-- partition (late or early events) land in the default partition.
CREATE SEQUENCE auth_events_id_seq AS BIGINT;
CREATE TABLE auth_events (
    id BIGINT NOT NULL DEFAULT nextval('auth_events_id_seq'),
    org_id TEXT COLLATE "C" NOT NULL,
    token_id TEXT COLLATE "C" NOT NULL,
    user_id TEXT COLLATE "C" NOT NULL,
    at BIGINT NOT NULL,
    ip TEXT,
    outcome TEXT COLLATE "C" NOT NULL,
    reason TEXT,
    method TEXT,
    path TEXT,
    source TEXT NOT NULL
) PARTITION BY RANGE (at);
CREATE TABLE auth_events_default PARTITION OF auth_events DEFAULT;
CREATE INDEX auth_events_token ON auth_events(token_id, at);
CREATE INDEX auth_events_org ON auth_events(org_id, at);
CREATE TABLE audit_log (
    id BIGSERIAL PRIMARY KEY,
    at BIGINT NOT NULL,
    org_id TEXT COLLATE "C" NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT COLLATE "C" NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX audit_log_org ON audit_log(org_id, at);
CREATE TABLE edge_credentials (
    id TEXT COLLATE "C" PRIMARY KEY,
    org_id TEXT COLLATE "C" NOT NULL REFERENCES orgs(id),
    name TEXT NOT NULL,
    secret_sha256 TEXT COLLATE "C" NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);
"#,
    },
    // 2: incremental status lists, partner lookups, indexed token search.
    Migration {
        sqlite: r#"
ALTER TABLE status_entries ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
CREATE INDEX status_entries_version ON status_entries(org_id, version);
CREATE INDEX orgs_partner ON orgs(partner_org_id);
CREATE INDEX users_username ON users(username);
CREATE INDEX tokens_user ON tokens(user_id, created_at);
-- Token search: a trigram index over each token's name, description and owner. A stable
-- integer per token keys it (a TEXT-keyed table's rowid may change on VACUUM).
CREATE TABLE token_search_ids (n INTEGER PRIMARY KEY, token_id TEXT NOT NULL UNIQUE);
CREATE VIRTUAL TABLE token_text USING fts5(name, description, owner, tokenize = 'trigram');
INSERT INTO token_search_ids (token_id) SELECT id FROM tokens;
INSERT INTO token_text (rowid, name, description, owner)
    SELECT m.n, t.name, t.description, u.username || ' ' || u.display_name
    FROM tokens t JOIN token_search_ids m ON m.token_id = t.id JOIN users u ON u.id = t.user_id;
CREATE TRIGGER tokens_text_insert AFTER INSERT ON tokens BEGIN
    INSERT INTO token_search_ids (token_id) VALUES (new.id);
    INSERT INTO token_text (rowid, name, description, owner)
        SELECT m.n, new.name, new.description, u.username || ' ' || u.display_name
        FROM users u, token_search_ids m WHERE u.id = new.user_id AND m.token_id = new.id;
END;
-- Only when the text changed: every update writes every column (last use, status), and an
-- FTS update costs far more than the row's.
CREATE TRIGGER tokens_text_update AFTER UPDATE OF name, description ON tokens
    WHEN old.name IS NOT new.name OR old.description IS NOT new.description BEGIN
    UPDATE token_text SET name = new.name, description = new.description
        WHERE rowid = (SELECT n FROM token_search_ids WHERE token_id = new.id);
END;
CREATE TRIGGER users_text_update AFTER UPDATE OF username, display_name ON users
    WHEN old.username IS NOT new.username OR old.display_name IS NOT new.display_name BEGIN
    UPDATE token_text SET owner = new.username || ' ' || new.display_name
        WHERE rowid IN (SELECT m.n FROM token_search_ids m JOIN tokens t ON t.id = m.token_id
                        WHERE t.user_id = new.id);
END;
"#,
        postgres: r#"
ALTER TABLE status_entries ADD COLUMN version BIGINT NOT NULL DEFAULT 0;
CREATE INDEX status_entries_version ON status_entries(org_id, version);
CREATE INDEX orgs_partner ON orgs(partner_org_id);
CREATE INDEX users_username ON users(username);
CREATE INDEX tokens_user ON tokens(user_id, created_at);
-- Token search: trigram indexes (pg_trgm, a trusted extension) over lower-cased copies of
-- the searched text. The store writes the copies with Rust's Unicode lower case, as
-- SQLite's search folds case, whatever the database's locale.
CREATE EXTENSION IF NOT EXISTS pg_trgm;
ALTER TABLE tokens ADD COLUMN name_lc TEXT NOT NULL DEFAULT '';
ALTER TABLE tokens ADD COLUMN description_lc TEXT NOT NULL DEFAULT '';
ALTER TABLE users ADD COLUMN owner_lc TEXT NOT NULL DEFAULT '';
UPDATE tokens SET name_lc = lower(name), description_lc = lower(description);
UPDATE users SET owner_lc = lower(username || ' ' || display_name);
CREATE INDEX tokens_name_trgm ON tokens USING gin (name_lc gin_trgm_ops);
CREATE INDEX tokens_description_trgm ON tokens USING gin (description_lc gin_trgm_ops);
CREATE INDEX users_owner_trgm ON users USING gin (owner_lc gin_trgm_ops);
"#,
    },
    // 3: the live tokens of an org or user in creation order, ids included: listings,
    // keyset pages and counts are read from the index alone (no temp B-tree for the id
    // tie-break, no table rows to count).
    Migration {
        sqlite: r#"
CREATE INDEX tokens_org_live ON tokens(org_id, deleted_at, created_at, id);
CREATE INDEX tokens_user_live ON tokens(user_id, deleted_at, created_at, id);
DROP INDEX tokens_org;
DROP INDEX tokens_user;
"#,
        postgres: r#"
CREATE INDEX tokens_org_live ON tokens(org_id, deleted_at, created_at, id);
CREATE INDEX tokens_user_live ON tokens(user_id, deleted_at, created_at, id);
DROP INDEX tokens_org;
DROP INDEX tokens_user;
"#,
    },
    // Accounts and sessions (people signing in), the acting credential in the audit log,
    // revocable edge credentials.
    Migration {
        sqlite: r#"
ALTER TABLE audit_log ADD COLUMN credential TEXT NOT NULL DEFAULT '';
ALTER TABLE edge_credentials ADD COLUMN revoked_at INTEGER;
CREATE INDEX edge_credentials_org ON edge_credentials(org_id);
CREATE TABLE accounts (
    user_id TEXT PRIMARY KEY REFERENCES users(id),
    password_hash TEXT,
    disabled_at INTEGER,
    deleted_at INTEGER,
    suspended_tokens TEXT NOT NULL DEFAULT '[]',
    prefs TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE sign_in_links (
    secret_sha256 TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id),
    kind TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at INTEGER
);
CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    secret_sha256 TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL REFERENCES users(id),
    csrf TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL,
    ended_at INTEGER
);
CREATE INDEX sessions_user ON sessions(user_id);
CREATE TABLE sign_in_throttle (
    key TEXT PRIMARY KEY,
    failures INTEGER NOT NULL,
    locked_until INTEGER NOT NULL,
    last_at INTEGER NOT NULL
);
"#,
        postgres: r#"
ALTER TABLE audit_log ADD COLUMN credential TEXT NOT NULL DEFAULT '';
ALTER TABLE edge_credentials ADD COLUMN revoked_at BIGINT;
CREATE INDEX edge_credentials_org ON edge_credentials(org_id);
CREATE TABLE accounts (
    user_id TEXT COLLATE "C" PRIMARY KEY REFERENCES users(id),
    password_hash TEXT,
    disabled_at BIGINT,
    deleted_at BIGINT,
    suspended_tokens TEXT NOT NULL DEFAULT '[]',
    prefs TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE sign_in_links (
    secret_sha256 TEXT COLLATE "C" PRIMARY KEY,
    user_id TEXT COLLATE "C" NOT NULL REFERENCES users(id),
    kind TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);
CREATE TABLE sessions (
    id TEXT COLLATE "C" PRIMARY KEY,
    secret_sha256 TEXT COLLATE "C" NOT NULL UNIQUE,
    user_id TEXT COLLATE "C" NOT NULL REFERENCES users(id),
    csrf TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    ended_at BIGINT
);
CREATE INDEX sessions_user ON sessions(user_id);
CREATE TABLE sign_in_throttle (
    key TEXT COLLATE "C" PRIMARY KEY,
    failures BIGINT NOT NULL,
    locked_until BIGINT NOT NULL,
    last_at BIGINT NOT NULL
);
"#,
    },
    // 5: the authentication log indexed per user, and by time alone (retention).
    Migration {
        sqlite: r#"
CREATE INDEX auth_events_user ON auth_events(user_id, at);
CREATE INDEX auth_events_at ON auth_events(at);
"#,
        postgres: r#"
CREATE INDEX auth_events_user ON auth_events(user_id, at);
"#,
    },
    // 6: a user's sign-in links, so that a newer link, a password change, disabling and
    // deleting void the older ones.
    Migration {
        sqlite: r#"
CREATE INDEX sign_in_links_user ON sign_in_links(user_id, kind);
"#,
        postgres: r#"
CREATE INDEX sign_in_links_user ON sign_in_links(user_id, kind);
"#,
    },
    // 7 (issue 23, SCIM): the SCIM credentials an org admin creates (only the secret's
    // SHA-256), and the SCIM attributes of provisioned users with their resource version.
    Migration {
        sqlite: r#"
CREATE TABLE scim_credentials (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES orgs(id),
    name TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL UNIQUE,
    created_by TEXT NOT NULL REFERENCES users(id),
    created_at INTEGER NOT NULL,
    revoked_at INTEGER,
    last_used_at INTEGER
);
CREATE INDEX scim_credentials_org ON scim_credentials(org_id);
CREATE TABLE scim_users (
    user_id TEXT PRIMARY KEY REFERENCES users(id),
    org_id TEXT NOT NULL REFERENCES orgs(id),
    external_id TEXT,
    attrs TEXT NOT NULL DEFAULT '{}',
    version INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX scim_users_org ON scim_users(org_id);
"#,
        postgres: r#"
CREATE TABLE scim_credentials (
    id TEXT COLLATE "C" PRIMARY KEY,
    org_id TEXT COLLATE "C" NOT NULL REFERENCES orgs(id),
    name TEXT NOT NULL,
    secret_sha256 TEXT COLLATE "C" NOT NULL UNIQUE,
    created_by TEXT COLLATE "C" NOT NULL REFERENCES users(id),
    created_at BIGINT NOT NULL,
    revoked_at BIGINT,
    last_used_at BIGINT
);
CREATE INDEX scim_credentials_org ON scim_credentials(org_id);
CREATE TABLE scim_users (
    user_id TEXT COLLATE "C" PRIMARY KEY REFERENCES users(id),
    org_id TEXT COLLATE "C" NOT NULL REFERENCES orgs(id),
    external_id TEXT,
    attrs TEXT NOT NULL DEFAULT '{}',
    version BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX scim_users_org ON scim_users(org_id);
"#,
    },
    // 8 (issue 22): the scope catalogue. Every org gets `tessera:manage`, granted to every
    // role (what any token could carry before); every scope an unrevoked token carries is
    // put in its org's catalogue and granted to that token's user, so no token minted
    // before the catalogue stops being editable or regenerable.
    Migration {
        sqlite: r#"
CREATE TABLE scopes (
    org_id TEXT NOT NULL REFERENCES orgs(id),
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    builtin INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (org_id, name)
);
CREATE TABLE scope_grants (
    org_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    grantee TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (org_id, scope, grantee),
    FOREIGN KEY (org_id, scope) REFERENCES scopes(org_id, name)
);
INSERT INTO scopes (org_id, name, description, builtin, created_at)
SELECT id, 'tessera:manage', 'Call the Tessera management API', 1, created_at FROM orgs;
INSERT INTO scope_grants (org_id, scope, grantee, created_at)
SELECT o.id, 'tessera:manage', 'role:' || r.role, o.created_at
FROM orgs o, (SELECT 'admin' AS role UNION ALL SELECT 'user' UNION ALL SELECT 'partner'
              UNION ALL SELECT 'readonly') r;
WITH RECURSIVE split(org_id, user_id, at, word, rest) AS (
    SELECT org_id, user_id, created_at, '', scopes || ' ' FROM tokens
    WHERE revoked_at IS NULL AND deleted_at IS NULL
    UNION ALL
    SELECT org_id, user_id, at, substr(rest, 1, instr(rest, ' ') - 1),
           substr(rest, instr(rest, ' ') + 1)
    FROM split WHERE rest <> ''
)
INSERT INTO scopes (org_id, name, description, builtin, created_at)
SELECT org_id, word, '', 0, MIN(at) FROM split WHERE word <> '' GROUP BY org_id, word
ON CONFLICT (org_id, name) DO NOTHING;
WITH RECURSIVE split(org_id, user_id, at, word, rest) AS (
    SELECT org_id, user_id, created_at, '', scopes || ' ' FROM tokens
    WHERE revoked_at IS NULL AND deleted_at IS NULL
    UNION ALL
    SELECT org_id, user_id, at, substr(rest, 1, instr(rest, ' ') - 1),
           substr(rest, instr(rest, ' ') + 1)
    FROM split WHERE rest <> ''
)
INSERT INTO scope_grants (org_id, scope, grantee, created_at)
SELECT org_id, word, 'user:' || user_id, MIN(at) FROM split WHERE word <> ''
GROUP BY org_id, word, user_id
ON CONFLICT (org_id, scope, grantee) DO NOTHING;
"#,
        postgres: r#"
CREATE TABLE scopes (
    org_id TEXT COLLATE "C" NOT NULL REFERENCES orgs(id),
    name TEXT COLLATE "C" NOT NULL,
    description TEXT NOT NULL,
    builtin BOOLEAN NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (org_id, name)
);
CREATE TABLE scope_grants (
    org_id TEXT COLLATE "C" NOT NULL,
    scope TEXT COLLATE "C" NOT NULL,
    grantee TEXT COLLATE "C" NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (org_id, scope, grantee),
    FOREIGN KEY (org_id, scope) REFERENCES scopes(org_id, name)
);
INSERT INTO scopes (org_id, name, description, builtin, created_at)
SELECT id, 'tessera:manage', 'Call the Tessera management API', TRUE, created_at FROM orgs;
INSERT INTO scope_grants (org_id, scope, grantee, created_at)
SELECT o.id, 'tessera:manage', 'role:' || r.role, o.created_at
FROM orgs o, (VALUES ('admin'), ('user'), ('partner'), ('readonly')) AS r(role);
INSERT INTO scopes (org_id, name, description, builtin, created_at)
SELECT org_id, word, '', FALSE, MIN(created_at)
FROM (SELECT org_id, created_at, regexp_split_to_table(scopes, ' ') AS word FROM tokens
      WHERE revoked_at IS NULL AND deleted_at IS NULL) s
WHERE word <> '' GROUP BY org_id, word
ON CONFLICT (org_id, name) DO NOTHING;
INSERT INTO scope_grants (org_id, scope, grantee, created_at)
SELECT org_id, word, 'user:' || user_id, MIN(created_at)
FROM (SELECT org_id, user_id, created_at, regexp_split_to_table(scopes, ' ') AS word FROM tokens
      WHERE revoked_at IS NULL AND deleted_at IS NULL) s
WHERE word <> '' GROUP BY org_id, word, user_id
ON CONFLICT (org_id, scope, grantee) DO NOTHING;
"#,
    },
    // 9 (issue 25): per-token rate limits and quotas, with each org's defaults and
    // ceiling: one row per subject (`token:<id>`, `org:default`, `org:ceiling`), a NULL
    // column meaning "not set here"; and the leases of budget granted to the edges (per
    // token, window kind, edge and range of windows). Self-contained: no other table
    // changes.
    Migration {
        sqlite: r#"
CREATE TABLE rate_limits (
    org_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    per_second INTEGER,
    per_minute INTEGER,
    per_hour INTEGER,
    per_day INTEGER,
    per_month INTEGER,
    total INTEGER,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (org_id, subject)
);
CREATE TABLE rate_leases (
    token_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    edge TEXT NOT NULL,
    first_index INTEGER NOT NULL,
    last_index INTEGER NOT NULL,
    per_window INTEGER NOT NULL,
    demand INTEGER NOT NULL,
    granted_at INTEGER NOT NULL,
    PRIMARY KEY (token_id, kind, edge, first_index)
);
"#,
        postgres: r#"
CREATE TABLE rate_limits (
    org_id TEXT COLLATE "C" NOT NULL,
    subject TEXT COLLATE "C" NOT NULL,
    per_second BIGINT,
    per_minute BIGINT,
    per_hour BIGINT,
    per_day BIGINT,
    per_month BIGINT,
    total BIGINT,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (org_id, subject)
);
CREATE TABLE rate_leases (
    token_id TEXT COLLATE "C" NOT NULL,
    kind TEXT COLLATE "C" NOT NULL,
    edge TEXT COLLATE "C" NOT NULL,
    first_index BIGINT NOT NULL,
    last_index BIGINT NOT NULL,
    per_window BIGINT NOT NULL,
    demand BIGINT NOT NULL,
    granted_at BIGINT NOT NULL,
    PRIMARY KEY (token_id, kind, edge, first_index)
);
"#,
    },
    // 10: token rotation with a grace period (issue 26, `service::rotation`): one row per
    // rotated token, self-contained (no column added to `tokens`).
    Migration {
        sqlite: r#"
CREATE TABLE token_rotations (
    token_id TEXT PRIMARY KEY,
    successor_id TEXT NOT NULL UNIQUE,
    org_id TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    grace_secs INTEGER NOT NULL,
    deadline INTEGER,
    successor_seen_at INTEGER,
    ends_at INTEGER,
    ended_at INTEGER,
    presented_at INTEGER
);
CREATE INDEX token_rotations_due ON token_rotations(ended_at, ends_at);
"#,
        postgres: r#"
CREATE TABLE token_rotations (
    token_id TEXT COLLATE "C" PRIMARY KEY,
    successor_id TEXT COLLATE "C" NOT NULL UNIQUE,
    org_id TEXT COLLATE "C" NOT NULL,
    created_by TEXT COLLATE "C" NOT NULL,
    created_at BIGINT NOT NULL,
    grace_secs BIGINT NOT NULL,
    deadline BIGINT,
    successor_seen_at BIGINT,
    ends_at BIGINT,
    ended_at BIGINT,
    presented_at BIGINT
);
CREATE INDEX token_rotations_due ON token_rotations(ended_at, ends_at);
"#,
    },
    // 11: webhooks (issue 26, `service::webhooks`): endpoints, the outbox and the delivery log,
    // self-contained.
    Migration {
        sqlite: r#"
CREATE TABLE webhooks (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL,
    url TEXT NOT NULL,
    events TEXT NOT NULL,
    secret_sealed BLOB NOT NULL,
    description TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    deleted_at INTEGER
);
CREATE INDEX webhooks_org ON webhooks(org_id, deleted_at);
CREATE TABLE webhook_outbox (
    id TEXT PRIMARY KEY,
    webhook_id TEXT NOT NULL,
    org_id TEXT NOT NULL,
    event TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    next_at INTEGER NOT NULL,
    claimed_until INTEGER,
    delivered_at INTEGER,
    failed_at INTEGER,
    last_status INTEGER,
    last_error TEXT
);
CREATE INDEX webhook_outbox_due ON webhook_outbox(delivered_at, failed_at, next_at);
CREATE INDEX webhook_outbox_hook ON webhook_outbox(webhook_id, created_at);
CREATE TABLE webhook_attempts (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL,
    webhook_id TEXT NOT NULL,
    org_id TEXT NOT NULL,
    at INTEGER NOT NULL,
    status INTEGER,
    error TEXT
);
CREATE INDEX webhook_attempts_message ON webhook_attempts(message_id, at);
"#,
        postgres: r#"
CREATE TABLE webhooks (
    id TEXT COLLATE "C" PRIMARY KEY,
    org_id TEXT COLLATE "C" NOT NULL,
    url TEXT NOT NULL,
    events TEXT NOT NULL,
    secret_sealed BYTEA NOT NULL,
    description TEXT NOT NULL,
    created_by TEXT COLLATE "C" NOT NULL,
    created_at BIGINT NOT NULL,
    deleted_at BIGINT
);
CREATE INDEX webhooks_org ON webhooks(org_id, deleted_at);
CREATE TABLE webhook_outbox (
    id TEXT COLLATE "C" PRIMARY KEY,
    webhook_id TEXT COLLATE "C" NOT NULL,
    org_id TEXT COLLATE "C" NOT NULL,
    event TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    attempts BIGINT NOT NULL,
    next_at BIGINT NOT NULL,
    claimed_until BIGINT,
    delivered_at BIGINT,
    failed_at BIGINT,
    last_status BIGINT,
    last_error TEXT
);
CREATE INDEX webhook_outbox_due ON webhook_outbox(delivered_at, failed_at, next_at);
CREATE INDEX webhook_outbox_hook ON webhook_outbox(webhook_id, created_at);
CREATE TABLE webhook_attempts (
    seq BIGSERIAL PRIMARY KEY,
    message_id TEXT COLLATE "C" NOT NULL,
    webhook_id TEXT COLLATE "C" NOT NULL,
    org_id TEXT COLLATE "C" NOT NULL,
    at BIGINT NOT NULL,
    status BIGINT,
    error TEXT
);
CREATE INDEX webhook_attempts_message ON webhook_attempts(message_id, at);
"#,
    },
    // 12 (issue 23, single sign-on): each org's OpenID Connect connection (the client
    // secret sealed with the master key), the email domains routing to it (a domain to one
    // org), the sign-ins under way (single use) and the identities linked to users.
    Migration {
        sqlite: r#"
CREATE TABLE sso_connections (
    org_id TEXT PRIMARY KEY REFERENCES orgs(id),
    issuer TEXT NOT NULL,
    client_id TEXT NOT NULL,
    secret_enc BLOB NOT NULL,
    domains TEXT NOT NULL,
    require_sso INTEGER NOT NULL,
    default_role TEXT NOT NULL,
    group_roles TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE TABLE sso_domains (
    domain TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES orgs(id)
);
CREATE INDEX sso_domains_org ON sso_domains(org_id);
CREATE TABLE sso_logins (
    state_sha256 TEXT PRIMARY KEY,
    org_id TEXT NOT NULL,
    nonce TEXT NOT NULL,
    verifier_enc BLOB NOT NULL,
    browser_sha256 TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX sso_logins_expires ON sso_logins(expires_at);
CREATE TABLE sso_identities (
    org_id TEXT NOT NULL REFERENCES orgs(id),
    issuer TEXT NOT NULL,
    subject TEXT NOT NULL,
    user_id TEXT NOT NULL REFERENCES users(id),
    email TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    last_sign_in_at INTEGER NOT NULL,
    PRIMARY KEY (org_id, issuer, subject)
);
CREATE INDEX sso_identities_user ON sso_identities(user_id);
"#,
        postgres: r#"
CREATE TABLE sso_connections (
    org_id TEXT COLLATE "C" PRIMARY KEY REFERENCES orgs(id),
    issuer TEXT NOT NULL,
    client_id TEXT NOT NULL,
    secret_enc BYTEA NOT NULL,
    domains TEXT NOT NULL,
    require_sso BOOLEAN NOT NULL,
    default_role TEXT NOT NULL,
    group_roles TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE sso_domains (
    domain TEXT COLLATE "C" PRIMARY KEY,
    org_id TEXT COLLATE "C" NOT NULL REFERENCES orgs(id)
);
CREATE INDEX sso_domains_org ON sso_domains(org_id);
CREATE TABLE sso_logins (
    state_sha256 TEXT COLLATE "C" PRIMARY KEY,
    org_id TEXT COLLATE "C" NOT NULL,
    nonce TEXT NOT NULL,
    verifier_enc BYTEA NOT NULL,
    browser_sha256 TEXT COLLATE "C" NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX sso_logins_expires ON sso_logins(expires_at);
CREATE TABLE sso_identities (
    org_id TEXT COLLATE "C" NOT NULL REFERENCES orgs(id),
    issuer TEXT COLLATE "C" NOT NULL,
    subject TEXT COLLATE "C" NOT NULL,
    user_id TEXT COLLATE "C" NOT NULL REFERENCES users(id),
    email TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_sign_in_at BIGINT NOT NULL,
    PRIMARY KEY (org_id, issuer, subject)
);
CREATE INDEX sso_identities_user ON sso_identities(user_id);
"#,
    },
    // 13 (issue 23, domain ownership): an org's claim of an email domain routes sign-ins
    // only once the operator (a root admin) approved it; several orgs may claim a domain,
    // one holds it approved. Claims made before approvals existed are kept approved, so no
    // organization that signs in today is locked out by the upgrade.
    Migration {
        sqlite: r#"
CREATE TABLE sso_domain_claims (
    domain TEXT NOT NULL,
    org_id TEXT NOT NULL REFERENCES orgs(id),
    claimed_at INTEGER NOT NULL,
    approved_at INTEGER,
    approved_by TEXT,
    PRIMARY KEY (domain, org_id)
);
CREATE UNIQUE INDEX sso_domain_claims_approved ON sso_domain_claims(domain)
    WHERE approved_at IS NOT NULL;
CREATE INDEX sso_domain_claims_org ON sso_domain_claims(org_id);
INSERT INTO sso_domain_claims (domain, org_id, claimed_at, approved_at, approved_by)
    SELECT d.domain, d.org_id, c.created_at, c.created_at, NULL
    FROM sso_domains d JOIN sso_connections c ON c.org_id = d.org_id;
DROP TABLE sso_domains;
"#,
        postgres: r#"
CREATE TABLE sso_domain_claims (
    domain TEXT COLLATE "C" NOT NULL,
    org_id TEXT COLLATE "C" NOT NULL REFERENCES orgs(id),
    claimed_at BIGINT NOT NULL,
    approved_at BIGINT,
    approved_by TEXT COLLATE "C",
    PRIMARY KEY (domain, org_id)
);
CREATE UNIQUE INDEX sso_domain_claims_approved ON sso_domain_claims(domain)
    WHERE approved_at IS NOT NULL;
CREATE INDEX sso_domain_claims_org ON sso_domain_claims(org_id);
INSERT INTO sso_domain_claims (domain, org_id, claimed_at, approved_at, approved_by)
    SELECT d.domain, d.org_id, c.created_at, c.created_at, NULL
    FROM sso_domains d JOIN sso_connections c ON c.org_id = d.org_id;
DROP TABLE sso_domains;
"#,
    },
    // 14 (issue 26, notifications): the notices sent per token (`token.expiring` at 30, 7
    // and 1 days: the row is the claim, so each is sent once across restarts and replicas)
    // with the index the expiry scan reads, and the networks each token was used from
    // (`token.used_from_new_network`, the last 32 per token); the mail outbox and each
    // user's mail settings (`service::mail`).
    Migration {
        sqlite: r#"
CREATE TABLE token_notices (
    token_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    days INTEGER NOT NULL,
    org_id TEXT NOT NULL,
    sent_at INTEGER NOT NULL,
    PRIMARY KEY (token_id, kind, days)
);
CREATE INDEX tokens_expiring ON tokens(expires_at) WHERE revoked_at IS NULL AND deleted_at IS NULL;
CREATE TABLE token_networks (
    token_id TEXT NOT NULL,
    network TEXT NOT NULL,
    org_id TEXT NOT NULL,
    first_seen_at INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL,
    alerted_at INTEGER,
    edge_id TEXT NOT NULL,
    PRIMARY KEY (token_id, network)
);
CREATE TABLE mail_outbox (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    to_addr TEXT NOT NULL,
    event TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    next_at INTEGER NOT NULL,
    claimed_until INTEGER,
    sent_at INTEGER,
    failed_at INTEGER,
    last_error TEXT
);
CREATE INDEX mail_outbox_due ON mail_outbox(sent_at, failed_at, next_at);
CREATE INDEX mail_outbox_user ON mail_outbox(user_id, created_at);
CREATE TABLE mail_settings (
    user_id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL,
    email TEXT,
    muted TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
"#,
        postgres: r#"
CREATE TABLE token_notices (
    token_id TEXT COLLATE "C" NOT NULL,
    kind TEXT COLLATE "C" NOT NULL,
    days BIGINT NOT NULL,
    org_id TEXT COLLATE "C" NOT NULL,
    sent_at BIGINT NOT NULL,
    PRIMARY KEY (token_id, kind, days)
);
CREATE INDEX tokens_expiring ON tokens(expires_at) WHERE revoked_at IS NULL AND deleted_at IS NULL;
CREATE TABLE token_networks (
    token_id TEXT COLLATE "C" NOT NULL,
    network TEXT COLLATE "C" NOT NULL,
    org_id TEXT COLLATE "C" NOT NULL,
    first_seen_at BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    alerted_at BIGINT,
    edge_id TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (token_id, network)
);
CREATE TABLE mail_outbox (
    id TEXT COLLATE "C" PRIMARY KEY,
    org_id TEXT COLLATE "C" NOT NULL,
    user_id TEXT COLLATE "C" NOT NULL,
    to_addr TEXT NOT NULL,
    event TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    attempts BIGINT NOT NULL,
    next_at BIGINT NOT NULL,
    claimed_until BIGINT,
    sent_at BIGINT,
    failed_at BIGINT,
    last_error TEXT
);
CREATE INDEX mail_outbox_due ON mail_outbox(sent_at, failed_at, next_at);
CREATE INDEX mail_outbox_user ON mail_outbox(user_id, created_at);
CREATE TABLE mail_settings (
    user_id TEXT COLLATE "C" PRIMARY KEY,
    org_id TEXT COLLATE "C" NOT NULL,
    email TEXT,
    muted TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
"#,
    },
    // 15 (issue 22, owners manage their own tokens): whether an org lets a token's owner
    // (a `user` or `partner`) edit, enable, disable and delete their own tokens; on for
    // every org, existing ones included.
    Migration {
        sqlite: r#"
ALTER TABLE orgs ADD COLUMN owners_manage_tokens INTEGER NOT NULL DEFAULT 1;
"#,
        postgres: r#"
ALTER TABLE orgs ADD COLUMN owners_manage_tokens BOOLEAN NOT NULL DEFAULT TRUE;
"#,
    },
    // 16 (issue 23, roles from groups): whether a connection's group mapping sets the
    // role at every sign-in, not only at the first.
    Migration {
        sqlite: r#"
ALTER TABLE sso_connections ADD COLUMN sync_roles INTEGER NOT NULL DEFAULT 0;
"#,
        postgres: r#"
ALTER TABLE sso_connections ADD COLUMN sync_roles BOOLEAN NOT NULL DEFAULT FALSE;
"#,
    },
    // 17 (issue 23, provider logout): the identity provider a session was signed in
    // through (its issuer; NULL for a password or link sign-in), so signing out can end
    // the provider's session too.
    Migration {
        sqlite: r#"
ALTER TABLE sessions ADD COLUMN sso_issuer TEXT;
"#,
        postgres: r#"
ALTER TABLE sessions ADD COLUMN sso_issuer TEXT;
"#,
    },
];

/// The schema version this binary migrates to.
pub fn latest() -> i64 {
    MIGRATIONS.len() as i64
}
