//! Every cursor, filter and sort of the store's listings, on whichever backend the suite
//! runs (`tests/common/backend.rs`: SQLite, or PostgreSQL with `TESSERA_TEST_POSTGRES`).
//! Each answer is checked against a reference computed here from the same records, so the
//! two backends are held to one behaviour (a malformed paging cursor was once answered on
//! SQLite and refused on PostgreSQL).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::backend::{postgres_admin, TestDb};
use tessera_control_plane::model::{
    AuditEntry, AuthEvent, KeyAlg, Org, Role, Token, TokenStatus, User,
};
use tessera_control_plane::store::{
    run, AuthEventQuery, Store, StoreError, TokenHits, TokenQuery, TokenScope, TokenSort,
};

const NOW: i64 = 1_000_000;

/// A fresh store of the suite's backend (the database is dropped with the second value).
fn store() -> (Box<dyn Store>, Option<TestDb>) {
    match postgres_admin() {
        None => (
            Box::new(tessera_control_plane::store::sqlite::SqliteStore::open_in_memory().unwrap()),
            None,
        ),
        Some(admin) => {
            let db = TestDb::postgres(&admin);
            (db.open(), Some(db))
        }
    }
}

fn org(id: &str, partner: Option<&str>, is_partner: bool) -> Org {
    Org {
        id: id.into(),
        name: id.into(),
        partner_org_id: partner.map(Into::into),
        is_partner,
        is_root: false,
        max_lifetime_days: 365,
        audience: "aud".into(),
        key_alg: KeyAlg::EdDSA,
        status_version: 0,
        next_status_idx: 0,
        created_at: 0,
        owners_manage_tokens: true,
    }
}

fn user(id: &str, org: &str, username: &str, display: &str, delegated: bool) -> User {
    User {
        id: id.into(),
        org_id: org.into(),
        username: username.into(),
        display_name: display.into(),
        role: Role::parse("user").unwrap(),
        delegated,
        created_at: 0,
    }
}

/// The records: org `o` (users ada and bob, bob delegating), partner org `p` (user pat)
/// managing org `c` (cid delegating, cod not). Tokens of every status, with equal sort
/// keys in pairs (the id breaks ties), text in names, descriptions and owners.
fn fixtures() -> (Vec<Org>, Vec<User>, Vec<Token>) {
    let orgs = vec![
        org("o", None, false),
        org("p", None, true),
        org("c", Some("p"), false),
    ];
    let users = vec![
        user("u-ada", "o", "ada", "Ada Lovelace", false),
        user("u-bob", "o", "bob", "Bob Été", true),
        user("u-pat", "p", "pat", "Pat Partner", false),
        user("u-cid", "c", "cid", "Cid Client", true),
        user("u-cod", "c", "cod", "Cod Client", false),
    ];
    let names = [
        "Alpha deploy",
        "beta Blue",
        "Gamma",
        "alpha ci",
        "DELTA blue",
        "epsilon",
        "zeta_x",
        "Eta 100%",
    ];
    let owners = ["u-ada", "u-bob", "u-pat", "u-cid", "u-cod"];
    let mut tokens = Vec::new();
    for i in 0..40usize {
        let owner = owners[i % owners.len()];
        let org = users.iter().find(|u| u.id == owner).unwrap().org_id.clone();
        let mut t = Token {
            id: format!("t{:02}", (i * 7) % 40),
            org_id: org,
            user_id: owner.into(),
            name: format!("{} {}", names[i % names.len()], i / 2),
            description: if i % 3 == 0 {
                "rotates nightly".into()
            } else {
                String::new()
            },
            created_by: owner.into(),
            created_at: 100 + (i / 2) as i64,
            lifetime_days: None,
            not_before: None,
            expires_at: NOW - 50 + ((i * 13) % 9) as i64 * 25,
            ip_allow: Vec::new(),
            scopes: vec!["read".into()],
            enabled: i % 4 != 1,
            revoked_at: None,
            deleted_at: None,
            minted_at: None,
            jwt_sha256: (i % 5 != 2).then(|| format!("h{i}")),
            status_idx: None,
            kid: None,
            last_used_at: (i % 3 != 0).then_some(500 + (i % 6) as i64),
            last_used_ip: None,
        };
        if i % 7 == 3 {
            t.revoked_at = Some(NOW - 10);
        }
        if i == 11 || i == 30 {
            t.deleted_at = Some(NOW - 5);
        }
        tokens.push(t);
    }
    (orgs, users, tokens)
}

fn seeded() -> (Box<dyn Store>, Option<TestDb>, Vec<User>, Vec<Token>) {
    let (s, db) = store();
    let (orgs, users, tokens) = fixtures();
    run::<_, StoreError>(s.as_ref(), true, |tx| {
        for o in &orgs {
            tx.insert_org(o)?;
        }
        for u in &users {
            tx.insert_user(u)?;
        }
        for t in &tokens {
            tx.insert_token(t)?;
        }
        Ok(())
    })
    .unwrap();
    (s, db, users, tokens)
}

fn query(scope: TokenScope) -> TokenQuery {
    TokenQuery {
        scope,
        q: None,
        statuses: Vec::new(),
        user: None,
        org: None,
        expires_before: None,
        expires_after: None,
        sort: TokenSort::CreatedAt,
        descending: false,
        limit: 1000,
        offset: 0,
        after: None,
        count: true,
        now: NOW,
    }
}

fn search(s: &dyn Store, q: &TokenQuery) -> Result<TokenHits, StoreError> {
    run::<_, StoreError>(s, false, |tx| tx.search_tokens(q))
}

fn ids(h: &TokenHits) -> Vec<String> {
    h.hits.iter().map(|h| h.token.id.clone()).collect()
}

/// A sort key as the store orders it: text bytewise, numbers as numbers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Int(i64),
    Text(String),
}

fn key(sort: TokenSort, t: &Token, users: &[User]) -> Key {
    match sort {
        // SQL's lower() of ASCII text.
        TokenSort::Name => Key::Text(t.name.to_ascii_lowercase()),
        TokenSort::CreatedAt => Key::Int(t.created_at),
        TokenSort::ExpiresAt => Key::Int(t.expires_at),
        TokenSort::LastUsedAt => Key::Int(t.last_used_at.unwrap_or(-1)),
        TokenSort::User => Key::Text(owner(t, users).username.clone()),
        TokenSort::Status => Key::Text(t.status(NOW).as_str().to_string()),
    }
}

fn owner<'a>(t: &Token, users: &'a [User]) -> &'a User {
    users.iter().find(|u| u.id == t.user_id).unwrap()
}

/// The reference: what `q` must find among `tokens`, in its order.
fn expected(q: &TokenQuery, users: &[User], tokens: &[Token]) -> Vec<String> {
    let orgs = fixtures().0;
    let mut found: Vec<&Token> = tokens
        .iter()
        .filter(|t| t.deleted_at.is_none())
        .filter(|t| {
            let u = owner(t, users);
            match &q.scope {
                TokenScope::Org(o) => &t.org_id == o,
                TokenScope::User(id) => &t.user_id == id,
                TokenScope::Partner {
                    user_id,
                    partner_org_id,
                } => {
                    &t.user_id == user_id
                        || (u.delegated
                            && orgs.iter().any(|o| {
                                o.id == t.org_id
                                    && o.partner_org_id.as_deref() == Some(partner_org_id)
                            }))
                }
            }
        })
        .filter(|t| {
            let Some(text) = &q.q else { return true };
            let text = text.to_lowercase();
            let u = owner(t, users);
            let has = |s: &str| s.to_lowercase().contains(&text);
            if text.chars().count() >= 3 {
                has(&t.name)
                    || has(&t.description)
                    || has(&format!("{} {}", u.username, u.display_name))
            } else {
                has(&t.name) || has(&t.description) || has(&u.username) || has(&u.display_name)
            }
        })
        .filter(|t| q.statuses.is_empty() || q.statuses.contains(&t.status(NOW)))
        .filter(|t| {
            q.user.as_ref().is_none_or(|u| {
                let o = owner(t, users);
                &o.id == u || &o.username == u
            })
        })
        .filter(|t| q.expires_before.is_none_or(|b| t.expires_at < b))
        .filter(|t| q.expires_after.is_none_or(|a| t.expires_at >= a))
        .collect();
    found.sort_by(|a, b| {
        let ka = (key(q.sort, a, users), &a.id);
        let kb = (key(q.sort, b, users), &b.id);
        if q.descending {
            kb.cmp(&ka)
        } else {
            ka.cmp(&kb)
        }
    });
    found.into_iter().map(|t| t.id.clone()).collect()
}

/// Pages through `q` with keyset cursors `per` rows at a time.
fn by_cursor(s: &dyn Store, q: &TokenQuery, per: i64) -> Vec<String> {
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = search(
            s,
            &TokenQuery {
                limit: per,
                after: after.clone(),
                ..q.clone()
            },
        )
        .unwrap();
        seen.extend(ids(&page));
        match page.hits.last() {
            Some(h) if page.hits.len() as i64 == per => after = Some(h.cursor.clone()),
            _ => return seen,
        }
    }
}

/// Every sort, both directions: the order (ties broken by id), the offset pages and the
/// keyset pages (also starting from an offset's cursor) agree with the reference.
#[test]
fn every_sort_orders_and_pages_in_both_directions() {
    let (s, _db, users, tokens) = seeded();
    for sort in TokenSort::NAMES.map(|n| TokenSort::parse(n).unwrap()) {
        for descending in [false, true] {
            let q = TokenQuery {
                sort,
                descending,
                ..query(TokenScope::Org("o".into()))
            };
            let want = expected(&q, &users, &tokens);
            assert!(want.len() > 10, "{sort:?}: the fixtures cover it");
            let all = search(s.as_ref(), &q).unwrap();
            assert_eq!(ids(&all), want, "{sort:?} desc={descending}");
            assert_eq!(all.total, Some(want.len() as i64));
            assert_eq!(by_cursor(s.as_ref(), &q, 3), want, "{sort:?} by cursor");
            let mut paged = Vec::new();
            for page in 0.. {
                let p = search(
                    s.as_ref(),
                    &TokenQuery {
                        limit: 4,
                        offset: page * 4,
                        ..q.clone()
                    },
                )
                .unwrap();
                if p.hits.is_empty() {
                    break;
                }
                paged.extend(ids(&p));
            }
            assert_eq!(paged, want, "{sort:?} by offset");
            // A cursor given with an offset: the cursor wins.
            let third = &all.hits[2].cursor;
            let rest = search(
                s.as_ref(),
                &TokenQuery {
                    after: Some(third.clone()),
                    offset: 5,
                    ..q.clone()
                },
            )
            .unwrap();
            assert_eq!(ids(&rest), want[3..].to_vec(), "{sort:?} after the third");
        }
    }
}

/// A filter's name and what it sets.
type Filter = (String, Box<dyn Fn(&mut TokenQuery)>);

/// Every filter alone and some together, in every scope, against the reference.
#[test]
fn every_filter_finds_what_the_reference_finds() {
    let (s, _db, users, tokens) = seeded();
    let scopes = [
        TokenScope::Org("o".into()),
        TokenScope::Org("c".into()),
        TokenScope::User("u-bob".into()),
        TokenScope::Partner {
            user_id: "u-pat".into(),
            partner_org_id: "p".into(),
        },
    ];
    let mut filters: Vec<Filter> = Vec::new();
    filters.push(("none".into(), Box::new(|_| {})));
    // Short text (LIKE on each field), long text (the trigram indexes), owner text,
    // non-ASCII case folding, LIKE's wildcards taken literally, no match.
    for text in [
        "al", "ph", "blue", "BLUE", "nightly", "deploy 1", "bob", "été", "ÉTÉ", "client", "_x",
        "0%", "100%", "zzz", "e",
    ] {
        filters.push((
            format!("q={text}"),
            Box::new(move |q| q.q = Some(text.into())),
        ));
    }
    for st in TokenStatus::ALL {
        filters.push((
            format!("status={}", st.as_str()),
            Box::new(move |q| q.statuses = vec![st]),
        ));
    }
    filters.push((
        "status=revoked,expired".into(),
        Box::new(|q| q.statuses = vec![TokenStatus::Revoked, TokenStatus::Expired]),
    ));
    for u in ["u-ada", "bob", "cid", "nobody"] {
        filters.push((
            format!("user={u}"),
            Box::new(move |q| q.user = Some(u.into())),
        ));
    }
    for at in [NOW - 50, NOW, NOW + 75] {
        filters.push((
            format!("expires_before={at}"),
            Box::new(move |q| q.expires_before = Some(at)),
        ));
        filters.push((
            format!("expires_after={at}"),
            Box::new(move |q| q.expires_after = Some(at)),
        ));
    }
    filters.push((
        "together".into(),
        Box::new(|q| {
            q.q = Some("a".into());
            q.statuses = vec![TokenStatus::Enabled, TokenStatus::Pending];
            q.expires_after = Some(NOW);
            q.expires_before = Some(NOW + 200);
        }),
    ));
    let mut matched = 0;
    for scope in &scopes {
        for (name, f) in &filters {
            let mut q = query(scope.clone());
            f(&mut q);
            let want = expected(&q, &users, &tokens);
            matched += usize::from(!want.is_empty());
            let got = search(s.as_ref(), &q).unwrap();
            assert_eq!(ids(&got), want, "{scope:?} {name}");
            assert_eq!(
                got.total,
                Some(want.len() as i64),
                "{scope:?} {name}: total"
            );
            // And sorted by status, which the status filter also computes.
            q.sort = TokenSort::Status;
            q.descending = true;
            let got = search(s.as_ref(), &q).unwrap();
            assert_eq!(
                ids(&got),
                expected(&q, &users, &tokens),
                "{scope:?} {name} by status"
            );
        }
    }
    assert!(matched > 80, "the filters find something: {matched}");
}

/// A cursor that no listing of this sort produced is refused (`BadCursor`, answered 400
/// naming `after`) on every sort, on both backends: garbage, another sort's key type, a
/// fraction, an extra element.
#[test]
fn malformed_cursors_are_refused_on_every_sort() {
    let (s, _db, _users, _tokens) = seeded();
    let q = query(TokenScope::Org("o".into()));
    let text_cursor = search(
        s.as_ref(),
        &TokenQuery {
            sort: TokenSort::Name,
            ..q.clone()
        },
    )
    .unwrap()
    .hits[0]
        .cursor
        .clone();
    let int_cursor = search(s.as_ref(), &q).unwrap().hits[0].cursor.clone();
    for sort in TokenSort::NAMES.map(|n| TokenSort::parse(n).unwrap()) {
        let text_key = matches!(sort, TokenSort::Name | TokenSort::User | TokenSort::Status);
        let foreign = if text_key { &int_cursor } else { &text_cursor };
        let own = if text_key { &text_cursor } else { &int_cursor };
        for bad in [
            "not-a-cursor",
            "",
            "W10",          // []
            "WzEsIngiLDJd", // [1,"x",2]
            "WzEuNSwieCJd", // [1.5,"x"]
            "WyJhIiwxXQ",   // ["a",1]
            "eyJrIjoxfQ",   // {"k":1}
            foreign.as_str(),
        ] {
            let r = search(
                s.as_ref(),
                &TokenQuery {
                    sort,
                    after: Some(bad.into()),
                    ..q.clone()
                },
            );
            assert_eq!(r.err(), Some(StoreError::BadCursor), "{sort:?} {bad:?}");
        }
        // Its own kind of key is taken.
        let ok = search(
            s.as_ref(),
            &TokenQuery {
                sort,
                after: Some(own.clone()),
                ..q.clone()
            },
        );
        assert!(ok.is_ok(), "{sort:?}: {ok:?}");
    }
}

fn event(i: i64) -> AuthEvent {
    AuthEvent {
        id: 0,
        org_id: ["o", "c"][(i % 2) as usize].into(),
        token_id: format!("t{}", i % 3),
        user_id: format!("u{}", i % 4),
        at: 1000 + i / 2,
        ip: (i % 2 == 0).then(|| "127.0.0.1".into()),
        outcome: ["allow", "deny", "deny"][(i % 3) as usize].into(),
        reason: (i % 3 != 0).then(|| "revoked".into()),
        method: Some("GET".into()),
        path: Some("/x".into()),
        source: "api".into(),
    }
}

/// The authentication log's filters, each alone and together, with its order (newest
/// first, then the latest written) and paging; the audit log's target filter and paging.
#[test]
fn log_filters_and_pages_match_the_reference() {
    let (s, _db) = store();
    let events: Vec<AuthEvent> = (0..60).map(event).collect();
    run::<_, StoreError>(s.as_ref(), true, |tx| {
        tx.insert_auth_events(&events[..50])?;
        for e in &events[50..] {
            tx.insert_auth_event(e)?;
        }
        for i in 0..30 {
            tx.insert_audit(&AuditEntry {
                id: 0,
                at: 2000 + i,
                org_id: ["o", "c"][(i % 2) as usize].into(),
                actor: "ada".into(),
                action: "token.create".into(),
                target: format!("t{}", i % 3),
                detail: serde_json::json!({ "i": i }),
                credential: "session".into(),
            })?;
        }
        Ok(())
    })
    .unwrap();
    let all = run::<_, StoreError>(s.as_ref(), false, |tx| {
        tx.list_auth_events(&AuthEventQuery {
            limit: 1000,
            ..Default::default()
        })
    })
    .unwrap();
    assert_eq!(all.len(), 60);
    // Written order is id order; the listing is newest first, then the highest id.
    let mut by_order = all.clone();
    by_order.sort_by_key(|e| std::cmp::Reverse((e.at, e.id)));
    assert_eq!(
        all.iter().map(|e| e.id).collect::<Vec<_>>(),
        by_order.iter().map(|e| e.id).collect::<Vec<_>>()
    );
    let queries: Vec<AuthEventQuery> = vec![
        AuthEventQuery::default(),
        AuthEventQuery {
            org_id: Some("o".into()),
            ..Default::default()
        },
        AuthEventQuery {
            token_id: Some("t1".into()),
            ..Default::default()
        },
        AuthEventQuery {
            user_id: Some("u2".into()),
            ..Default::default()
        },
        AuthEventQuery {
            outcome: Some("deny".into()),
            ..Default::default()
        },
        AuthEventQuery {
            since: Some(1010),
            ..Default::default()
        },
        AuthEventQuery {
            until: Some(1010),
            ..Default::default()
        },
        AuthEventQuery {
            org_id: Some("c".into()),
            token_id: Some("t0".into()),
            user_id: Some("u3".into()),
            outcome: Some("allow".into()),
            since: Some(1001),
            until: Some(1025),
            ..Default::default()
        },
        AuthEventQuery {
            org_id: Some("nowhere".into()),
            ..Default::default()
        },
    ];
    for q in queries {
        let want: Vec<&AuthEvent> = all
            .iter()
            .filter(|e| q.org_id.as_ref().is_none_or(|v| &e.org_id == v))
            .filter(|e| q.token_id.as_ref().is_none_or(|v| &e.token_id == v))
            .filter(|e| q.user_id.as_ref().is_none_or(|v| &e.user_id == v))
            .filter(|e| q.outcome.as_ref().is_none_or(|v| &e.outcome == v))
            .filter(|e| q.since.is_none_or(|v| e.at >= v))
            .filter(|e| q.until.is_none_or(|v| e.at < v))
            .collect();
        let (count, page) = run::<_, StoreError>(s.as_ref(), false, |tx| {
            let count = tx.count_auth_events(&q)?;
            let page = tx.list_auth_events(&AuthEventQuery {
                limit: 4,
                offset: 2,
                ..q.clone()
            })?;
            Ok((count, page))
        })
        .unwrap();
        assert_eq!(count, want.len() as i64, "{q:?}");
        let want_page: Vec<i64> = want.iter().skip(2).take(4).map(|e| e.id).collect();
        assert_eq!(
            page.iter().map(|e| e.id).collect::<Vec<_>>(),
            want_page,
            "{q:?}"
        );
        for e in &page {
            let orig = &events[(e.id - all.iter().map(|e| e.id).min().unwrap()) as usize];
            assert_eq!(
                (&e.org_id, &e.ip, &e.reason),
                (&orig.org_id, &orig.ip, &orig.reason)
            );
        }
    }
    for target in [None, Some("t1"), Some("t9")] {
        let (count, page) = run::<_, StoreError>(s.as_ref(), false, |tx| {
            Ok((
                tx.count_audit("o", target)?,
                tx.list_audit("o", target, 3, 1)?,
            ))
        })
        .unwrap();
        let want: Vec<i64> = (0..30)
            .rev()
            .filter(|i| i % 2 == 0 && target.is_none_or(|t| t == format!("t{}", i % 3)))
            .collect();
        assert_eq!(count, want.len() as i64, "{target:?}");
        assert_eq!(
            page.iter()
                .map(|a| a.detail["i"].as_i64().unwrap())
                .collect::<Vec<_>>(),
            want.iter().skip(1).take(3).copied().collect::<Vec<_>>(),
            "{target:?}"
        );
    }
}

/// Both plans of a text search (driven from the trigram index when at most 1,000 tokens
/// match, filtered along the sort order otherwise; SQLite's FTS5 and PostgreSQL's pg_trgm) find the same rows in the same order, keyset
/// cursors page through either without loss or overlap, and a cursor of another listing
/// is refused.
#[test]
fn text_search_plans_agree_and_cursors_page_through_both() {
    let (s, _db) = store();
    let broad = 1100usize;
    run::<_, StoreError>(s.as_ref(), true, |tx| {
        tx.insert_org(&org("o", None, false))?;
        tx.insert_user(&User {
            id: "u".into(),
            org_id: "o".into(),
            username: "ula".into(),
            display_name: "Ula Ünal".into(),
            role: Role::parse("user").unwrap(),
            delegated: false,
            created_at: 0,
        })?;
        let tokens: Vec<Token> = (0..broad + 50)
            .map(|i| Token {
                id: format!("t{i:05}"),
                org_id: "o".into(),
                user_id: "u".into(),
                name: if i < broad {
                    format!("Wide-{i:05}")
                } else {
                    format!("NARROW-{i:05}")
                },
                description: String::new(),
                created_by: "u".into(),
                // Equal creation times in pairs, so the id breaks ties.
                created_at: (i / 2) as i64,
                lifetime_days: None,
                not_before: None,
                expires_at: 9_999_999_999,
                ip_allow: Vec::new(),
                scopes: vec!["read".into()],
                enabled: true,
                revoked_at: None,
                deleted_at: None,
                minted_at: None,
                jwt_sha256: None,
                status_idx: None,
                kid: None,
                last_used_at: None,
                last_used_ip: None,
            })
            .collect();
        for t in &tokens {
            tx.insert_token(t)?;
        }
        Ok(())
    })
    .unwrap();
    let query = |q: &str, after: Option<String>| TokenQuery {
        scope: TokenScope::Org("o".into()),
        q: Some(q.into()),
        statuses: Vec::new(),
        user: None,
        org: None,
        expires_before: None,
        expires_after: None,
        sort: TokenSort::CreatedAt,
        descending: true,
        limit: 70,
        offset: 0,
        after,
        count: true,
        now: 0,
    };
    // "ünal" matches the owner's display name, folded beyond ASCII: every token.
    for (q, expected) in [
        ("wide", broad),
        ("narrow", 50),
        ("row-0", 50),
        ("ÜNAL", broad + 50),
    ] {
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = run::<_, StoreError>(s.as_ref(), false, |tx| {
                tx.search_tokens(&query(q, after.clone()))
            })
            .unwrap();
            assert_eq!(page.total, Some(expected as i64), "{q}");
            seen.extend(page.hits.iter().map(|h| h.token.id.clone()));
            match page.hits.last() {
                Some(h) if page.hits.len() == 70 => after = Some(h.cursor.clone()),
                _ => break,
            }
        }
        let mut want = seen.clone();
        want.sort_by(|a, b| b.cmp(a));
        assert_eq!(seen.len(), expected, "{q}: every match once");
        assert_eq!(seen, want, "{q}: newest first, then id");
    }
    let bad = run::<_, StoreError>(s.as_ref(), false, |tx| {
        tx.search_tokens(&query("wide", Some("not-a-cursor".into())))
    });
    assert_eq!(bad.unwrap_err(), StoreError::BadCursor);
    // A cursor of a name-sorted listing (a text key) given to a time-sorted one.
    let by_name = run::<_, StoreError>(s.as_ref(), false, |tx| {
        tx.search_tokens(&TokenQuery {
            sort: TokenSort::Name,
            ..query("narrow", None)
        })
    })
    .unwrap();
    let foreign = by_name.hits[0].cursor.clone();
    let bad = run::<_, StoreError>(s.as_ref(), false, |tx| {
        tx.search_tokens(&query("narrow", Some(foreign.clone())))
    });
    assert_eq!(bad.unwrap_err(), StoreError::BadCursor);
}
