//! What only the PostgreSQL backend has to show: several stores (replicas) on one
//! database. Each test makes its own database on the cluster `TESSERA_TEST_POSTGRES`
//! names (an admin URL, e.g. postgres://postgres@127.0.0.1:PORT/postgres) and drops it at
//! the end. `cargo xtask test` starts a throwaway cluster and runs them; a plain
//! `cargo test` lists them as ignored.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod pgdb;

use pgdb::{connect, Db};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::time::Duration;
use tessera_control_plane::model::{AuthEvent, KeyAlg, Org};
use tessera_control_plane::store::migrations;
use tessera_control_plane::store::postgres::PostgresStore;
use tessera_control_plane::store::{run, AuthEventQuery, Store, StoreError, StoreResult};

fn org(id: &str) -> Org {
    Org {
        id: id.into(),
        name: id.into(),
        partner_org_id: None,
        is_partner: false,
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

fn event(token: &str, at: i64) -> AuthEvent {
    AuthEvent {
        id: 0,
        org_id: "o".into(),
        token_id: token.into(),
        user_id: "u".into(),
        at,
        ip: Some("127.0.0.1".into()),
        outcome: "allow".into(),
        reason: None,
        method: Some("GET".into()),
        path: Some("/".into()),
        source: "api".into(),
    }
}

/// Two stores (two replicas) allocate status-list indices on one org row from 8 threads:
/// the read-modify-write of `next_status_idx` (as token downloads do it) never hands out
/// an index twice and loses no increment.
#[test]
#[ignore = "needs PostgreSQL: run through cargo xtask test"]
fn concurrent_status_index_allocation_never_repeats_an_index() {
    let db = Db::new();
    let stores: Vec<Arc<PostgresStore>> = (0..2).map(|_| Arc::new(db.store())).collect();
    run::<_, StoreError>(stores[0].as_ref(), true, |tx| tx.insert_org(&org("o"))).unwrap();
    const THREADS: usize = 8;
    const EACH: usize = 25;
    let barrier = Arc::new(Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let store = stores[t % 2].clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                let mut got = Vec::new();
                for i in 0..EACH {
                    let idx = run::<_, StoreError>(store.as_ref(), true, |tx| {
                        let mut o = tx.get_org("o")?.expect("org");
                        let idx = o.next_status_idx;
                        o.next_status_idx += 1;
                        o.status_version += 1;
                        tx.update_org(&o)?;
                        tx.set_status("o", idx, 0, &format!("t{t}-{i}"), o.status_version)?;
                        Ok(idx)
                    })
                    .expect("allocation");
                    got.push(idx);
                }
                got
            })
        })
        .collect();
    let mut all: Vec<i64> = threads
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    all.sort_unstable();
    let want: Vec<i64> = (0..(THREADS * EACH) as i64).collect();
    assert_eq!(all, want, "every index handed out exactly once");
    let o = run::<_, StoreError>(stores[1].as_ref(), false, |tx| tx.get_org("o"))
        .unwrap()
        .unwrap();
    assert_eq!(o.next_status_idx, (THREADS * EACH) as i64, "no lost update");
    assert_eq!(
        o.status_version,
        (THREADS * EACH) as i64,
        "no lost version bump"
    );
    let entries: i64 = db
        .client()
        .query_one("SELECT count(*) FROM status_entries", &[])
        .unwrap()
        .get(0);
    assert_eq!(entries, (THREADS * EACH) as i64);
}

/// A change announced in a committed transaction of store A wakes store B's watcher; A's
/// own watcher is not woken by it (A's process already knows), and a rolled-back
/// transaction announces nothing.
#[test]
#[ignore = "needs PostgreSQL: run through cargo xtask test"]
fn a_notify_from_one_store_wakes_the_other() {
    let db = Db::new();
    let a = db.store();
    let b = db.store();
    let (a_tx, a_rx) = mpsc::channel::<()>();
    let (b_tx, b_rx) = mpsc::channel::<()>();
    let a_tx = std::sync::Mutex::new(a_tx);
    let b_tx = std::sync::Mutex::new(b_tx);
    a.watch_remote_changes(Box::new(move || {
        let _ = a_tx.lock().unwrap().send(());
    }));
    b.watch_remote_changes(Box::new(move || {
        let _ = b_tx.lock().unwrap().send(());
    }));
    // Rolled back: nothing is delivered.
    let r: StoreResult<()> = run(&a, true, |tx| {
        tx.announce_edges_changed()?;
        Err(StoreError::Conflict("no".into()))
    });
    assert!(r.is_err());
    assert!(
        b_rx.recv_timeout(Duration::from_millis(700)).is_err(),
        "a rolled-back change woke B"
    );
    for round in 0..3 {
        run::<_, StoreError>(&a, true, |tx| {
            tx.set_setting("k", &round.to_string())?;
            tx.announce_edges_changed()
        })
        .unwrap();
        b_rx.recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("round {round}: B was not woken"));
        while b_rx.try_recv().is_ok() {}
    }
    assert!(
        a_rx.recv_timeout(Duration::from_millis(500)).is_err(),
        "A was woken by its own change"
    );
    // And the other way round.
    run::<_, StoreError>(&b, true, |tx| tx.announce_edges_changed()).unwrap();
    a_rx.recv_timeout(Duration::from_secs(10))
        .expect("A was not woken by B's change");
}

/// Four stores opening a new database at once: every open succeeds, and each migration
/// was applied once (the advisory lock serialises them; without it the second CREATE
/// TABLE would fail).
#[test]
#[ignore = "needs PostgreSQL: run through cargo xtask test"]
fn replicas_starting_together_migrate_once() {
    let db = Db::new();
    let barrier = Arc::new(Barrier::new(4));
    let url = db.url.clone();
    let opened: Vec<_> = (0..4)
        .map(|_| {
            let barrier = barrier.clone();
            let url = url.clone();
            std::thread::spawn(move || {
                barrier.wait();
                PostgresStore::open(&url).map(|s| s.schema_version())
            })
        })
        .collect();
    for h in opened {
        let version = h.join().unwrap().expect("open").expect("schema version");
        assert_eq!(version, migrations::latest());
    }
    let rows = db
        .client()
        .query(
            "SELECT version FROM tessera_migrations ORDER BY version",
            &[],
        )
        .unwrap();
    let versions: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    let want: Vec<i64> = (1..=migrations::latest()).collect();
    assert_eq!(versions, want, "each migration recorded once");
}

/// Retention drops whole daily partitions older than the kept days and deletes old events
/// of the default partition; recent events stay. Batches go in as multi-row inserts.
#[test]
#[ignore = "needs PostgreSQL: run through cargo xtask test"]
fn pruning_drops_old_partitions_and_keeps_recent_events() {
    const DAY: i64 = 86_400;
    let db = Db::new();
    let s = db.store();
    let now: i64 = 1_800_000_000;
    let old = now - 100 * DAY;
    // Partitions around `old`, as a server running then made them. (Events of now go
    // to the default partition until now's partitions exist.)
    assert_eq!(s.prune_auth_log(old, 90).unwrap(), 0);
    let old_part = format!("auth_events_d{}", old.div_euclid(DAY));
    let partitions = |c: &mut postgres::Client| -> Vec<String> {
        c.query(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = 'auth_events'::regclass ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
    };
    let mut c = db.client();
    assert!(
        partitions(&mut c).contains(&old_part),
        "{:?}",
        partitions(&mut c)
    );
    let mut batch: Vec<AuthEvent> = (0..1500).map(|i| event("old", old + i)).collect();
    batch.push(event("older", old - 20 * DAY)); // no partition: the default one
    batch.extend((0..3).map(|i| event("new", now - i)));
    run::<_, StoreError>(&s, true, |tx| tx.insert_auth_events(&batch)).unwrap();
    let in_old: i64 = c
        .query_one(&format!("SELECT count(*) FROM {old_part}"), &[])
        .unwrap()
        .get(0);
    assert_eq!(in_old, 1500, "the old day's events are in its partition");
    let removed = s.prune_auth_log(now, 90).unwrap();
    assert_eq!(removed, 1501);
    let after = partitions(&mut c);
    assert!(
        !after.contains(&old_part),
        "old partition dropped: {after:?}"
    );
    let today = format!("auth_events_d{}", now.div_euclid(DAY));
    assert!(after.contains(&today), "today's partition made: {after:?}");
    let in_today: i64 = c
        .query_one(&format!("SELECT count(*) FROM {today}"), &[])
        .unwrap()
        .get(0);
    assert_eq!(
        in_today, 3,
        "today's events moved from the default partition"
    );
    let left = run::<_, StoreError>(&s, false, |tx| {
        tx.list_auth_events(&AuthEventQuery {
            limit: 100,
            ..Default::default()
        })
    })
    .unwrap();
    let tokens: Vec<&str> = left.iter().map(|e| e.token_id.as_str()).collect();
    assert_eq!(tokens, ["new", "new", "new"]);
    assert!(left.windows(2).all(|w| w[0].at >= w[1].at), "newest first");
}

/// A server that cannot be reached answers `Unavailable` (the API's 503) with the reason,
/// and once it accepts connections again the same store works without a restart; its
/// watcher is woken when its connection is lost (changes may have been missed).
#[test]
#[ignore = "needs PostgreSQL: run through cargo xtask test"]
fn unreachable_database_is_unavailable_and_the_store_recovers() {
    // Nothing listens on port 1.
    match PostgresStore::open("postgres://postgres@127.0.0.1:1/none") {
        Err(StoreError::Unavailable(m)) => assert!(m.contains("postgres"), "{m}"),
        Err(e) => panic!("want Unavailable, got {e}"),
        Ok(_) => panic!("opened a store on a closed port"),
    }
    let db = Db::new();
    let s = db.store();
    let (tx, rx) = mpsc::channel::<()>();
    let tx = std::sync::Mutex::new(tx);
    s.watch_remote_changes(Box::new(move || {
        let _ = tx.lock().unwrap().send(());
    }));
    run::<_, StoreError>(&s, true, |tx| tx.set_setting("k", "1")).unwrap();
    // The database refuses new connections and its open ones are ended.
    let mut admin = db.admin();
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {0} ALLOW_CONNECTIONS false; \
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{0}'",
            db.name
        ))
        .unwrap();
    rx.recv_timeout(Duration::from_secs(60))
        .expect("the watcher was not woken by the lost connection");
    // Every answer meanwhile is Unavailable; once the store's probe has found the database
    // unreachable, the answer comes without taking a connection (it says so). The lost
    // LISTEN connection started the probe; a request that found its connection gone would
    // too. (The loop's bound is a safety net, not a measure.)
    let mut answers = 0;
    let fast = loop {
        match run::<_, StoreError>(&s, false, |tx| tx.get_setting("k")) {
            Err(StoreError::Unavailable(m)) if m.contains("reconnecting in the background") => {
                break m
            }
            Err(StoreError::Unavailable(m)) => assert!(m.contains("postgres"), "{m}"),
            other => panic!("want Unavailable, got {other:?}"),
        }
        answers += 1;
        assert!(answers < 100, "the store never knew the database was down");
    };
    assert!(
        fast.contains("not currently accepting connections"),
        "{fast}"
    );
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {} ALLOW_CONNECTIONS true",
            db.name
        ))
        .unwrap();
    // The probe finds the database back, and the store serves again (the pool replaces
    // its broken connections).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let got = loop {
        match run::<_, StoreError>(&s, false, |tx| tx.get_setting("k")) {
            Ok(v) => break v,
            Err(StoreError::Unavailable(_)) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(e) => panic!("the store did not recover: {e}"),
        }
    };
    assert_eq!(got.as_deref(), Some("1"));
    // The watcher listens again and says so with a wake (it wakes once when the
    // connection is lost and once when it listens anew).
    rx.recv_timeout(Duration::from_secs(60))
        .expect("the watcher did not reconnect");
    drop(s);
}

/// Two control planes (replicas) on one database: a commit through A that changes a key
/// set wakes B's long polls (B's change counter moves), and A counts its own change once
/// (its own notification is not taken for a remote one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: run through cargo xtask test"]
async fn a_change_through_one_replica_wakes_the_others_long_polls() {
    use tessera_control_plane::crypto::MasterKey;
    use tessera_control_plane::{service, AppState, Config};
    let db = tokio::task::spawn_blocking(Db::new).await.unwrap();
    let master = MasterKey::generate().unwrap();
    let state = |store: PostgresStore, master: &MasterKey| {
        AppState::new(
            Box::new(store),
            Config {
                base_url: "http://cp.test".into(),
                master: MasterKey::parse(&master.to_hex()).unwrap(),
                access_ttl: 1800,
            },
        )
    };
    let a = state(db.store(), &master);
    let b = state(db.store(), &master);
    let (a0, b0) = (a.edge_changes(), b.edge_changes());
    a.write(|tx, ctx| service::orgs::bootstrap(tx, ctx, "root", "Root", "admin", KeyAlg::EdDSA))
        .await
        .unwrap();
    assert_eq!(a.edge_changes(), a0 + 1, "A woke its own long polls");
    let mut waited = 0;
    while b.edge_changes() == b0 {
        assert!(waited < 10_000, "B's long polls were never woken");
        tokio::time::sleep(Duration::from_millis(10)).await;
        waited += 10;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(a.edge_changes(), a0 + 1, "A counted its own notification");
    drop((a, b));
    tokio::task::spawn_blocking(move || drop(db)).await.unwrap();
}

/// `/readyz` follows the database: 200 while it answers; once the store knows it is
/// unreachable, 503 `database_unavailable` (and so is a request that needs the database,
/// answered without waiting for a connection); 200 again once it is back. `/healthz`
/// (liveness) stays 200 throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: run through cargo xtask test"]
async fn readiness_follows_the_database() {
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tessera_control_plane::crypto::MasterKey;
    use tessera_control_plane::{app, AppState, Config};
    use tower::ServiceExt;
    let db = tokio::task::spawn_blocking(Db::new).await.unwrap();
    let store = {
        let url = db.url.clone();
        tokio::task::spawn_blocking(move || PostgresStore::open(&url).unwrap())
            .await
            .unwrap()
    };
    let state = AppState::new(
        Box::new(store),
        Config {
            base_url: "http://cp.test".into(),
            master: MasterKey::generate().unwrap(),
            access_ttl: 1800,
        },
    );
    let router = app(state);
    let get = |path: &'static str| {
        let router = router.clone();
        async move {
            let r = router
                .oneshot(Request::get(path).body(Body::empty()).unwrap())
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body = r.into_body().collect().await.unwrap().to_bytes();
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
            (status, json)
        }
    };
    assert_eq!(
        get("/readyz").await,
        (200, serde_json::json!({"status": "ready"}))
    );

    let name = db.name.clone();
    let admin_url = db.admin.clone();
    let refuse = move |allow: bool| {
        let (name, admin_url) = (name.clone(), admin_url.clone());
        tokio::task::spawn_blocking(move || {
            let mut admin = connect(&admin_url).unwrap();
            let sql = if allow {
                format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true")
            } else {
                format!(
                    "ALTER DATABASE {name} ALLOW_CONNECTIONS false; \
                     SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
                )
            };
            admin.batch_execute(&sql).unwrap();
        })
    };
    refuse(false).await.unwrap();
    // Until the store has noticed (a readiness check finds its connection gone, and the
    // probe cannot connect), /readyz may still pass; the loop's bound is a safety net.
    let mut tries = 0;
    let down = loop {
        let (status, body) = get("/readyz").await;
        if status == 503 {
            break body;
        }
        assert_eq!(status, 200, "{body}");
        tries += 1;
        assert!(tries < 600, "/readyz never answered 503");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(down["error"], "unavailable", "{down}");
    assert_eq!(down["reason"], "database_unavailable", "{down}");
    assert_eq!(get("/healthz").await.0, 200);
    // A request that reads the database: 503 too. Once the probe has found the database
    // unreachable, it is answered without taking a connection (the store says so in its
    // log detail; the body keeps the stable reason).
    let (status, body) = get("/v1/orgs/acme/jwks.json").await;
    assert_eq!(
        (status, &body["reason"]),
        (503, &serde_json::json!("database_unavailable")),
        "{body}"
    );

    refuse(true).await.unwrap();
    let mut tries = 0;
    loop {
        let (status, body) = get("/readyz").await;
        if status == 200 {
            assert_eq!(body, serde_json::json!({"status": "ready"}));
            break;
        }
        assert_eq!(body["reason"], "database_unavailable", "{body}");
        tries += 1;
        assert!(tries < 600, "/readyz never answered 200 again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(router);
    tokio::task::spawn_blocking(move || drop(db)).await.unwrap();
}

/// Two writers take the same two rows in opposite orders, each holding its first when it
/// asks for the second: a real deadlock. PostgreSQL aborts one (40P01); the store runs
/// that transaction again and both writes succeed, instead of one answering 503. The
/// rows end as the later writer left them, both from one writer.
#[test]
#[ignore = "needs PostgreSQL: run through cargo xtask test"]
fn a_transaction_that_lost_a_deadlock_runs_again_and_succeeds() {
    let db = Db::new();
    let s = db.store();
    run::<_, StoreError>(&s, true, |tx| {
        tx.set_setting("first", "-")?;
        tx.set_setting("second", "-")
    })
    .unwrap();
    let both_hold_one = Barrier::new(2);
    let attempts = AtomicU64::new(0);
    let write = |me: &str, order: [&str; 2]| {
        let mut mine = 0;
        let r = run::<_, StoreError>(&s, true, |tx| {
            mine += 1;
            attempts.fetch_add(1, Ordering::SeqCst);
            tx.set_setting(order[0], me)?;
            if mine == 1 {
                // Only the first attempt waits: a rerun goes straight through.
                both_hold_one.wait();
            }
            tx.set_setting(order[1], me)
        });
        (r, mine)
    };
    let (a, b) = std::thread::scope(|sc| {
        let a = sc.spawn(|| write("A", ["first", "second"]));
        let b = sc.spawn(|| write("B", ["second", "first"]));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert!(a.0.is_ok(), "A: {:?}", a.0);
    assert!(b.0.is_ok(), "B: {:?}", b.0);
    // Exactly one of them was aborted by the deadlock detector and ran twice.
    let mut runs = [a.1, b.1];
    runs.sort();
    assert_eq!(runs, [1, 2], "attempts: A {}, B {}", a.1, b.1);
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
    let (first, second) = run::<_, StoreError>(&s, false, |tx| {
        Ok((tx.get_setting("first")?, tx.get_setting("second")?))
    })
    .unwrap();
    let rerun = if a.1 == 2 { "A" } else { "B" };
    assert_eq!(first.as_deref(), Some(rerun));
    assert_eq!(second.as_deref(), Some(rerun));
}

/// Webhook deliveries across replicas: two stores claim the outbox from 6 threads at once
/// (`FOR UPDATE SKIP LOCKED`); every message is claimed exactly once while claims hold, and
/// a lapsed claim makes a message claimable again (a replica that died).
#[test]
#[ignore = "needs PostgreSQL: run through cargo xtask test"]
fn replicas_claim_disjoint_webhook_messages() {
    use tessera_control_plane::store::webhooks::OutboxRecord;
    let db = Db::new();
    let stores: Vec<Arc<PostgresStore>> = (0..2).map(|_| Arc::new(db.store())).collect();
    const MESSAGES: usize = 120;
    run::<_, StoreError>(stores[0].as_ref(), true, |tx| {
        for i in 0..MESSAGES {
            tx.insert_outbox(&OutboxRecord {
                id: format!("msg_{i:04}"),
                webhook_id: "whk_1".into(),
                org_id: "o".into(),
                event: "token.revoked".into(),
                payload: "{}".into(),
                created_at: 0,
                attempts: 0,
                next_at: 0,
                claimed_until: None,
                delivered_at: None,
                failed_at: None,
                last_status: None,
                last_error: None,
            })?;
        }
        Ok(())
    })
    .unwrap();
    const THREADS: usize = 6;
    let barrier = Arc::new(Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let store = stores[t % 2].clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                let mut got = Vec::new();
                loop {
                    let batch = run::<_, StoreError>(store.as_ref(), true, |tx| {
                        tx.claim_outbox(100, 130, 7)
                    })
                    .expect("claim");
                    if batch.is_empty() {
                        break got;
                    }
                    got.extend(batch.into_iter().map(|m| m.id));
                }
            })
        })
        .collect();
    let mut all: Vec<String> = threads
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    all.sort();
    let want: Vec<String> = (0..MESSAGES).map(|i| format!("msg_{i:04}")).collect();
    assert_eq!(all, want, "every message claimed exactly once");
    // While the claims hold, nothing more; once they lapse, all again.
    let again = run::<_, StoreError>(stores[1].as_ref(), true, |tx| {
        tx.claim_outbox(129, 160, 1000)
    })
    .unwrap();
    assert!(again.is_empty(), "{again:?}");
    let lapsed = run::<_, StoreError>(stores[0].as_ref(), true, |tx| {
        tx.claim_outbox(130, 160, 1000)
    })
    .unwrap();
    assert_eq!(lapsed.len(), MESSAGES);
}

/// Mail across replicas: two stores claim the mail outbox from 6 threads at once (`FOR
/// UPDATE SKIP LOCKED`), each message once; and an expiry notice claimed by two stores at
/// once is claimed by one (the other waits for its commit and inserts nothing).
#[test]
#[ignore = "needs PostgreSQL: run through cargo xtask test"]
fn replicas_claim_disjoint_mail_and_notices() {
    use tessera_control_plane::store::notifications::MailRecord;
    let db = Db::new();
    let stores: Vec<Arc<PostgresStore>> = (0..2).map(|_| Arc::new(db.store())).collect();
    const MESSAGES: usize = 90;
    run::<_, StoreError>(stores[0].as_ref(), true, |tx| {
        for i in 0..MESSAGES {
            tx.insert_mail(&MailRecord {
                id: format!("mail_{i:04}"),
                org_id: "o".into(),
                user_id: "u".into(),
                to_addr: "u@example.test".into(),
                event: "token.expiring".into(),
                subject: "s".into(),
                body: "b".into(),
                created_at: 0,
                attempts: 0,
                next_at: 0,
                claimed_until: None,
                sent_at: None,
                failed_at: None,
                last_error: None,
            })?;
        }
        Ok(())
    })
    .unwrap();
    const THREADS: usize = 6;
    let barrier = Arc::new(Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let store = stores[t % 2].clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                let mut got = Vec::new();
                loop {
                    let batch =
                        run::<_, StoreError>(store.as_ref(), true, |tx| tx.claim_mail(100, 160, 7))
                            .expect("claim");
                    if batch.is_empty() {
                        break got;
                    }
                    got.extend(batch.into_iter().map(|m| m.id));
                }
            })
        })
        .collect();
    let mut all: Vec<String> = threads
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    all.sort();
    let want: Vec<String> = (0..MESSAGES).map(|i| format!("mail_{i:04}")).collect();
    assert_eq!(all, want, "every message claimed exactly once");

    // One notice, claimed by both stores at the same moment: once.
    let barrier = Arc::new(Barrier::new(2));
    let claims: Vec<_> = (0..2)
        .map(|t| {
            let store = stores[t].clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                run::<_, StoreError>(store.as_ref(), true, |tx| {
                    let won = tx.claim_notice("tok_1", "o", "expiring", 7, 100)?;
                    // Hold the transaction a moment, as the write that raises the event does.
                    std::thread::sleep(Duration::from_millis(50));
                    Ok(won)
                })
                .expect("claim notice")
            })
        })
        .collect();
    let won: Vec<bool> = claims.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(won.iter().filter(|w| **w).count(), 1, "{won:?}");
}
