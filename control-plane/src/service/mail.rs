//! Mail to people about their tokens (issue 26): when `tessera serve` has an SMTP server
//! (`--smtp-url`), the events people act on — a token about to expire, a token found
//! exposed, revoked, used from a new network, or presented after its rotation ended — are
//! mailed to the token's owner and the org's admins, in plain words: the token by name and
//! id, what happened, and what to do, with links to the web page. Never a token.
//!
//! **Links reach only their user** (issue 22): with mail, an invitation
//! (`users::create_user`, which then needs the new user's address) and a password reset
//! (`accounts::reset_link`, which needs the user's address) are mailed to the user
//! ([`mail_link`]) and never put in the answer; their outbox body is sealed with the master
//! key (the store keeps no usable link) and blanked once sent.
//!
//! **Outbox.** Like the webhooks': [`on_audit`] runs inside `service::audit`, so a message
//! row per recipient is written in the transaction that made the event (`mail_outbox`),
//! committed with it or not at all. The mail worker (`api::mail::run_worker`) claims due
//! rows ([`claim`]; `FOR UPDATE SKIP LOCKED` on PostgreSQL), sends them over SMTP and
//! records the outcome ([`record`]): a refusal the server calls permanent fails the
//! message at once, any other failure is retried on the webhooks' schedule (about 37 h).
//!
//! **Whom.** The owner and the org's enabled admins (`leaks::recipients`), less whoever
//! did it (an admin who revokes a token is not told that they did), less users who muted
//! the event, less users with no address. A user's address is the one they gave
//! (`PUT /v1/me/notifications`), else the primary (or first) email their identity
//! provider sent through SCIM, else the email of their latest single sign-on.

use super::{audit, load_org, load_user, Ctx, Error, Result};
use crate::crypto;
use crate::model::{AuditEntry, Token};
use crate::policy::Actor;
use crate::store::notifications::{MailRecord, MailSettings};
use crate::store::Tx;
use crate::timefmt;
use base64::{engine::general_purpose::STANDARD, Engine as _};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;

/// The events mail is sent for, the ones a user may mute.
pub const MAILED_EVENTS: [&str; 5] = [
    "token.expiring",
    "token.exposed",
    "token.revoked",
    "token.used_from_new_network",
    "token.revoked_but_presented",
];

/// How long a mail worker holds the messages it claimed.
pub const CLAIM_SECS: i64 = 60;

/// Messages one worker claims at once.
const CLAIM_BATCH: i64 = 20;

/// Tokens one revocation message lists by name (a whole org's revocation says how many
/// more).
const LISTED_TOKENS: usize = 50;

/// A user's notification settings, as the API shows them.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct NotificationSettings {
    /// Whether this server sends mail at all (`tessera serve --smtp-url`).
    pub mail_configured: bool,
    /// Where mail goes (none: no mail).
    pub email: Option<String>,
    /// Where that address comes from: `own` (given here), `scim` (the identity provider's
    /// provisioning), `sso` (the latest single sign-on), or none.
    pub email_source: Option<String>,
    /// The events mailed, each with whether this user receives it.
    pub events: Vec<EventSetting>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct EventSetting {
    pub event: String,
    pub mail: bool,
}

/// A change of the caller's notification settings; members left out stay.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetNotifications {
    /// The address to mail; an empty string removes it (then the identity provider's, if
    /// any, is used).
    #[serde(default)]
    pub email: Option<String>,
    /// The events to receive no mail for (replaces the list): any of `token.expiring`,
    /// `token.exposed`, `token.revoked`, `token.used_from_new_network`,
    /// `token.revoked_but_presented`.
    #[serde(default)]
    pub muted: Option<Vec<String>>,
}

/// A mail address as given for `field` (at most 254 characters, one address).
pub fn check_address(field: &str, email: &str) -> Result<String> {
    super::input::check_text(field, email, 254, false)?;
    email.parse::<lettre::Address>().map_err(|e| {
        Error::field(
            field,
            format!("not an email address ({e}); give one like name@example.com"),
        )
    })?;
    Ok(email.to_string())
}

/// Sets `user`'s own address (an admin creating the user gives it; the user changes it).
pub(crate) fn set_address(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    user: &crate::model::User,
    email: &str,
) -> Result<()> {
    let mut s = tx
        .get_mail_settings(&user.id)?
        .unwrap_or_else(|| MailSettings {
            user_id: user.id.clone(),
            org_id: user.org_id.clone(),
            ..MailSettings::default()
        });
    s.email = Some(email.to_string());
    s.updated_at = ctx.now;
    tx.put_mail_settings(&s)?;
    Ok(())
}

/// The prefix of a body stored sealed with the master key (a one-time link's mail: the
/// store keeps no usable link, so the text is sealed until sent and blanked after).
const SEALED: &str = "sealed:";

/// Mails `user` their one-time link (invitation or reset) at `to`. The body holds the
/// link, so it is stored sealed with the master key and blanked once sent.
pub(crate) fn mail_link(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    user: &crate::model::User,
    to: &str,
    link: &super::views::LinkView,
) -> Result<()> {
    let (event, subject, what) = if link.kind == "invite" {
        (
            "user.invite",
            format!("Tessera: your invitation to {}", user.org_id),
            format!(
                "You are invited to Tessera, where the organization {} keeps its API tokens, \
                 as {}. Open this link to choose your password (it works once, until {}):",
                user.org_id, user.username, link.expires_at
            ),
        )
    } else {
        (
            "user.reset_link",
            format!("Tessera: reset your password ({})", user.org_id),
            format!(
                "An administrator of {} reset the password of your account {}. Your sessions \
                 ended. Open this link to choose a new password (it works once, until {}):",
                user.org_id, user.username, link.expires_at
            ),
        )
    };
    let body = format!(
        "Hello {},\n\n{what}\n\n{}\n\nThe link is yours alone: it was mailed only to \
         you, nobody else was shown it, and whoever opens it first sets the password. If you \
         did not expect it, do not open it, and tell an administrator of {}.\n\n-- \nTessera, {}\n",
        user.username, link.url, user.org_id, ctx.base_url
    );
    let id = crypto::new_id("mail")?;
    let sealed = ctx.master.seal(&format!("mail:{id}"), body.as_bytes())?;
    tx.insert_mail(&MailRecord {
        id,
        org_id: user.org_id.clone(),
        user_id: user.id.clone(),
        to_addr: to.to_string(),
        event: event.to_string(),
        subject,
        body: format!("{SEALED}{}", STANDARD.encode(sealed)),
        created_at: ctx.now,
        attempts: 0,
        next_at: ctx.now,
        claimed_until: None,
        sent_at: None,
        failed_at: None,
        last_error: None,
    })?;
    Ok(())
}

/// The address mail to `user_id` goes to, and where it comes from.
pub fn address_of(tx: &mut dyn Tx, user_id: &str) -> Result<Option<(String, &'static str)>> {
    if let Some(email) = tx.get_mail_settings(user_id)?.and_then(|s| s.email) {
        return Ok(Some((email, "own")));
    }
    if let Some(u) = tx.get_scim_user(user_id)? {
        if let Some(emails) = u.attrs["emails"].as_array() {
            let pick = emails
                .iter()
                .find(|e| e["primary"] == true)
                .or_else(|| emails.first())
                .and_then(|e| e["value"].as_str())
                .filter(|v| v.parse::<lettre::Address>().is_ok());
            if let Some(v) = pick {
                return Ok(Some((v.to_string(), "scim")));
            }
        }
    }
    Ok(tx
        .sso_email_of(user_id)?
        .filter(|v| v.parse::<lettre::Address>().is_ok())
        .map(|v| (v, "sso")))
}

fn settings_view(tx: &mut dyn Tx, ctx: &Ctx, user_id: &str) -> Result<NotificationSettings> {
    let muted = tx
        .get_mail_settings(user_id)?
        .map(|s| s.muted)
        .unwrap_or_default();
    let address = address_of(tx, user_id)?;
    Ok(NotificationSettings {
        mail_configured: ctx.mail,
        email_source: address.as_ref().map(|(_, s)| (*s).to_string()),
        email: address.map(|(a, _)| a),
        events: MAILED_EVENTS
            .iter()
            .map(|e| EventSetting {
                event: (*e).to_string(),
                mail: !muted.iter().any(|m| m == e),
            })
            .collect(),
    })
}

/// `GET /v1/me/notifications`.
pub fn get_settings(tx: &mut dyn Tx, ctx: &Ctx, actor: &Actor) -> Result<NotificationSettings> {
    settings_view(tx, ctx, &actor.user.id)
}

/// `PUT /v1/me/notifications`: the caller's own address and muted events.
pub fn put_settings(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    actor: &Actor,
    req: SetNotifications,
) -> Result<NotificationSettings> {
    let mut s = tx
        .get_mail_settings(&actor.user.id)?
        .unwrap_or_else(|| MailSettings {
            user_id: actor.user.id.clone(),
            org_id: actor.user.org_id.clone(),
            ..MailSettings::default()
        });
    let before = (s.email.clone(), s.muted.clone());
    if let Some(email) = &req.email {
        let email = email.trim();
        s.email = if email.is_empty() {
            None
        } else {
            Some(check_address("email", email)?)
        };
    }
    if let Some(muted) = &req.muted {
        let mut list = Vec::new();
        for (i, m) in muted.iter().enumerate() {
            if !MAILED_EVENTS.contains(&m.as_str()) {
                return Err(Error::field(
                    &format!("muted[{i}]"),
                    format!(
                        "{m:?} is not an event mail is sent for: one of {}",
                        MAILED_EVENTS.join(", ")
                    ),
                ));
            }
            if !list.contains(m) {
                list.push(m.clone());
            }
        }
        s.muted = list;
    }
    s.updated_at = ctx.now;
    tx.put_mail_settings(&s)?;
    if before != (s.email.clone(), s.muted.clone()) {
        audit(
            tx,
            ctx,
            &actor.user.id,
            &actor.user.org_id,
            "user.notifications",
            &actor.user.id,
            json!({"email": s.email, "muted": s.muted}),
        )?;
    }
    settings_view(tx, ctx, &actor.user.id)
}

/// One message before its recipient is known: the words for the owner and for an admin.
struct Letter {
    event: &'static str,
    subject: String,
    /// What happened and what to do; the greeting and the footer are added per recipient.
    text: String,
}

/// A query-string value, percent-encoded.
fn query(v: &str) -> String {
    form_urlencoded::byte_serialize(v.as_bytes()).collect()
}

/// The token's name and id as every message writes them.
fn named(t: &Token) -> String {
    format!("\"{}\" (id {})", t.name, t.id)
}

fn when(at: &Value) -> String {
    match at {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.as_i64().map(timefmt::format).unwrap_or_default(),
        _ => String::new(),
    }
}

/// "in 6 days", "in 20 hours".
fn remaining(secs: i64) -> String {
    let hours = (secs.max(0) + 1_800) / 3_600;
    if hours >= 48 {
        format!("in {} days", (hours + 12) / 24)
    } else if hours >= 2 {
        format!("in {hours} hours")
    } else {
        "within the hour".to_string()
    }
}

/// The users one message is for, each with whether they own the token(s) it names.
type For = Vec<(String, bool)>;

/// The messages an audit entry calls for, with the users each is for.
fn letters_of(tx: &mut dyn Tx, ctx: &Ctx, e: &AuditEntry) -> Result<Vec<(Letter, For)>> {
    let d = &e.detail;
    let page = |path: &str| format!("{}/#/{path}", ctx.base_url);
    let load = |tx: &mut dyn Tx, id: &str| -> Result<Option<(Token, String)>> {
        let Some(t) = tx.get_token(id)? else {
            return Ok(None);
        };
        let owner = load_user(tx, &t.user_id)?;
        Ok(Some((t, owner.username)))
    };
    let listed = |d: &Value| -> For {
        let owner = d["owner"].as_str().unwrap_or("");
        d["recipients"]
            .as_array()
            .map(|r| {
                r.iter()
                    .filter_map(|v| v.as_str().map(|u| (u.to_string(), u == owner)))
                    .collect()
            })
            .unwrap_or_default()
    };
    let event = match e.action.as_str() {
        "notification.needed" => d["event"].as_str().unwrap_or(""),
        "token.revoke" | "token.revoke_all" => "token.revoked",
        _ => return Ok(Vec::new()),
    };
    let mut out = Vec::new();
    match event {
        "token.expiring" => {
            let Some((t, owner)) = load(tx, &e.target)? else {
                return Ok(out);
            };
            let left = remaining(t.expires_at - ctx.now);
            out.push((
                Letter {
                    event: "token.expiring",
                    subject: format!("Tessera: the token \"{}\" expires {left}", t.name),
                    text: format!(
                        "The API token {} of {owner} in {} expires on {}, {left}. After that, \
                         every request made with it is refused.\n\n\
                         What to do:\n\
                         - If a program still uses it, rotate it now. The successor gets the \
                         same settings, and the old token keeps working until the successor is \
                         first used, plus a grace you choose:\n    \
                         tessera tokens rotate {} --grace 1h\n  \
                         or choose Rotate on the token in the web page: {}\n\
                         - If nothing uses it any more, let it expire. Nothing else is needed.",
                        named(&t),
                        t.org_id,
                        timefmt::format(t.expires_at),
                        t.id,
                        page(&format!("tokens?q={}", query(&t.name))),
                    ),
                },
                listed(d),
            ));
        }
        "token.exposed" => {
            let Some((t, owner)) = load(tx, &e.target)? else {
                return Ok(out);
            };
            let by = match d["reporter"].as_str() {
                Some("github") => "GitHub's secret scanning".to_string(),
                Some("report") | None => "a report sent to Tessera".to_string(),
                Some(other) => other.to_string(),
            };
            let place = match (d["url"].as_str(), d["source"].as_str()) {
                (Some(u), Some(s)) => format!(" It was found at {u} ({s})."),
                (Some(u), None) => format!(" It was found at {u}."),
                (None, Some(s)) => format!(" It was found in {s}."),
                (None, None) => String::new(),
            };
            let (state, todo) = if d["action"] == "revoked" {
                (
                    "The organization's policy revoked it at once: every edge refuses it now.",
                    format!(
                        "- Create a new token and put it where the old one was used (the \
                         web page's New token, or `tessera tokens create`).\n\
                         - Remove the exposed copy from where it was found.\n\
                         - Look for uses of the old token you do not recognise: {}",
                        page(&format!("auth-log?token={}", t.id))
                    ),
                )
            } else {
                (
                    "The organization's policy is to notify only: the token STILL WORKS.",
                    format!(
                        "- Revoke it now unless you are sure the exposure is harmless:\n    \
                         tessera tokens revoke {}\n  \
                         or choose Revoke on the token in the web page: {}\n\
                         - Then create a new token for the programs that used it, and remove \
                         the exposed copy from where it was found.\n\
                         - Look for uses you do not recognise: {}",
                        t.id,
                        page(&format!("tokens?q={}", query(&t.name))),
                        page(&format!("auth-log?token={}", t.id))
                    ),
                )
            };
            out.push((
                Letter {
                    event: "token.exposed",
                    subject: format!("Tessera: the token \"{}\" was found exposed", t.name),
                    text: format!(
                        "The API token {} of {owner} in {} was reported as exposed by {by}.\
                         {place} Anyone who saw it can use it.\n\n{state}\n\nWhat to do:\n{todo}",
                        named(&t),
                        t.org_id,
                    ),
                },
                listed(d),
            ));
        }
        "token.used_from_new_network" => {
            let Some((t, owner)) = load(tx, &e.target)? else {
                return Ok(out);
            };
            let edge = match (d["edge_name"].as_str(), d["edge"].as_str()) {
                (Some(n), Some(id)) => format!(" through the edge \"{n}\" ({id})"),
                _ => String::new(),
            };
            out.push((
                Letter {
                    event: "token.used_from_new_network",
                    subject: format!(
                        "Tessera: the token \"{}\" was used from a new network",
                        t.name
                    ),
                    text: format!(
                        "The API token {} of {owner} in {} was used on {} from {} (network {}){edge}. \
                         It had not been used from that network in the last 30 days.\n\n\
                         What to do:\n\
                         - If this was you or your programs (a new build runner, a new \
                         office, a new cloud region), nothing.\n\
                         - If not, the token may have leaked: revoke it now\n    \
                         tessera tokens revoke {}\n  \
                         (or Revoke in the web page: {}), create a new one, and look at its \
                         uses: {}",
                        named(&t),
                        t.org_id,
                        when(&d["at"]),
                        d["ip"].as_str().unwrap_or("?"),
                        d["network"].as_str().unwrap_or("?"),
                        t.id,
                        page(&format!("tokens?q={}", query(&t.name))),
                        page(&format!("auth-log?token={}", t.id)),
                    ),
                },
                listed(d),
            ));
        }
        "token.revoked_but_presented" => {
            let Some((t, owner)) = load(tx, &e.target)? else {
                return Ok(out);
            };
            let from = d["ip"]
                .as_str()
                .map(|ip| format!(" from {ip}"))
                .unwrap_or_default();
            out.push((
                Letter {
                    event: "token.revoked_but_presented",
                    subject: format!(
                        "Tessera: the replaced token \"{}\" was presented again",
                        t.name
                    ),
                    text: format!(
                        "The API token {} of {owner} in {} was presented on {}{from}, after \
                         its rotation ended (its successor is {}). It was refused; but \
                         someone still holds the old token.\n\n\
                         What to do:\n\
                         - Find the program still sending it and give it the successor.\n\
                         - If you do not recognise the address, treat the token as leaked: \
                         look at its uses ({}) and consider revoking the successor too.",
                        named(&t),
                        t.org_id,
                        when(&d["at"]),
                        d["successor"].as_str().unwrap_or("?"),
                        page(&format!("auth-log?token={}", t.id)),
                    ),
                },
                listed(d),
            ));
        }
        "token.revoked" => {
            let ids: Vec<String> = if e.action == "token.revoke" {
                vec![e.target.clone()]
            } else {
                d["revoked"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let by = match tx.get_user(&e.actor)? {
                Some(u) => u.username,
                None => e.actor.clone(),
            };
            // One message per owner naming their tokens, one to the admins naming all.
            let mut owners: Vec<(String, String, Vec<Token>)> = Vec::new();
            let mut all = Vec::new();
            for id in &ids {
                let Some((t, owner)) = load(tx, id)? else {
                    continue;
                };
                match owners.iter_mut().find(|(u, _, _)| *u == t.user_id) {
                    Some((_, _, v)) => v.push(t.clone()),
                    None => owners.push((t.user_id.clone(), owner.clone(), vec![t.clone()])),
                }
                all.push((t, owner));
            }
            let Some((first, _)) = all.first() else {
                return Ok(out);
            };
            let org = first.org_id.clone();
            let lines = |tokens: &[(Token, String)]| -> String {
                let mut s: String = tokens
                    .iter()
                    .take(LISTED_TOKENS)
                    .map(|(t, owner)| format!("- {} of {owner}\n", named(t)))
                    .collect();
                if tokens.len() > LISTED_TOKENS {
                    s.push_str(&format!("- and {} more\n", tokens.len() - LISTED_TOKENS));
                }
                s
            };
            let todo = format!(
                "A revoked token never works again: every edge refuses it now.\n\n\
                 What to do:\n\
                 - If a program still needs access, create a new token for it (the web \
                 page's New token: {}, or `tessera tokens create`).\n\
                 - If you did not expect this, ask {by} or an administrator of {org} why.",
                page("tokens")
            );
            let admins = super::leaks::recipients(tx, first)?
                .into_iter()
                .filter(|u| !owners.iter().any(|(o, _, _)| o == u))
                .collect::<Vec<_>>();
            for (user, username, tokens) in &owners {
                let pairs: Vec<(Token, String)> = tokens
                    .iter()
                    .map(|t| (t.clone(), username.clone()))
                    .collect();
                let subject = match tokens.as_slice() {
                    [one] => format!("Tessera: the token \"{}\" was revoked", one.name),
                    more => format!("Tessera: {} of your tokens were revoked", more.len()),
                };
                out.push((
                    Letter {
                        event: "token.revoked",
                        subject,
                        text: format!(
                            "{by} revoked {} in {org} on {}:\n{}\n{todo}",
                            if pairs.len() == 1 {
                                "this token"
                            } else {
                                "these tokens"
                            },
                            timefmt::format(e.at),
                            lines(&pairs)
                        ),
                    },
                    vec![(user.clone(), true)],
                ));
            }
            if !admins.is_empty() {
                let subject = match all.as_slice() {
                    [(one, owner)] => {
                        format!("Tessera: {owner}'s token \"{}\" was revoked", one.name)
                    }
                    more => format!("Tessera: {} tokens were revoked in {org}", more.len()),
                };
                out.push((
                    Letter {
                        event: "token.revoked",
                        subject,
                        text: format!(
                            "{by} revoked {} in {org} on {}:\n{}\n{todo}",
                            if all.len() == 1 {
                                "this token"
                            } else {
                                "these tokens"
                            },
                            timefmt::format(e.at),
                            lines(&all)
                        ),
                    },
                    admins.into_iter().map(|u| (u, false)).collect(),
                ));
            }
        }
        _ => {}
    }
    Ok(out)
}

/// Writes the mail an audit entry calls for, in the entry's transaction (see the module's
/// text). Nothing when the server sends no mail, or the entry is no mailed event.
pub(crate) fn on_audit(tx: &mut dyn Tx, ctx: &Ctx, e: &AuditEntry) -> Result<()> {
    if !ctx.mail {
        return Ok(());
    }
    let letters = letters_of(tx, ctx, e)?;
    if letters.is_empty() {
        return Ok(());
    }
    let org = load_org(tx, &e.org_id)?;
    for (letter, users) in letters {
        for (user_id, owns) in users {
            if user_id == e.actor {
                continue;
            }
            let Some(user) = tx.get_user(&user_id)? else {
                continue;
            };
            let usable = tx
                .get_account(&user.id)?
                .is_none_or(|a| a.deleted_at.is_none() && a.disabled_at.is_none());
            let muted = tx
                .get_mail_settings(&user.id)?
                .is_some_and(|s| s.muted.iter().any(|m| m == letter.event));
            if !usable || muted {
                continue;
            }
            let Some((to, _)) = address_of(tx, &user.id)? else {
                continue;
            };
            let why = if owns {
                "you own the token".to_string()
            } else {
                format!("you are an administrator of {}", org.id)
            };
            let body = format!(
                "Hello {},\n\n{}\n\n-- \nTessera, {}\nYou receive this because {why}. Choose \
                 which mail you receive in the web page ({}/#/notifications) or with \
                 `tessera notifications set --mute {}`. Tessera's mail never contains a token \
                 or a sign-in link.\n",
                user.username, letter.text, ctx.base_url, ctx.base_url, letter.event,
            );
            tx.insert_mail(&MailRecord {
                id: crypto::new_id("mail")?,
                org_id: e.org_id.clone(),
                user_id: user.id.clone(),
                to_addr: to,
                event: letter.event.to_string(),
                subject: letter.subject.clone(),
                body,
                created_at: ctx.now,
                attempts: 0,
                next_at: ctx.now,
                claimed_until: None,
                sent_at: None,
                failed_at: None,
                last_error: None,
            })?;
        }
    }
    Ok(())
}

/// Whether any message is due (the cheap read before [`claim`]'s write).
pub fn any_due(tx: &mut dyn Tx, ctx: &Ctx) -> Result<bool> {
    Ok(tx.any_due_mail(ctx.now)?)
}

/// Claims the due messages for one worker (sealed bodies opened).
pub fn claim(tx: &mut dyn Tx, ctx: &Ctx) -> Result<Vec<MailRecord>> {
    let mut claimed = tx.claim_mail(ctx.now, ctx.now + CLAIM_SECS, CLAIM_BATCH)?;
    for m in &mut claimed {
        if let Some(text) = m.body.strip_prefix(SEALED) {
            let sealed = STANDARD.decode(text).map_err(|_| {
                Error::internal(format!("mail {}: a sealed body that is not base64", m.id))
            })?;
            let opened = ctx.master.open(&format!("mail:{}", m.id), &sealed)?;
            m.body = String::from_utf8(opened)
                .map_err(|_| Error::internal(format!("mail {}: a body that is not UTF-8", m.id)))?;
        }
    }
    Ok(claimed)
}

/// Records an attempt: sent, failed for good (`permanent`), or retried after the webhooks'
/// schedule and failed after its last retry.
pub fn record(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    id: &str,
    error: Option<String>,
    permanent: bool,
) -> Result<()> {
    let Some(mut m) = tx.get_mail(id)? else {
        return Ok(());
    };
    if m.sent_at.is_some() {
        return Ok(());
    }
    m.attempts += 1;
    m.claimed_until = None;
    match error {
        None => {
            m.sent_at = Some(ctx.now);
            m.last_error = None;
            // A one-time link is kept nowhere once it is on its way.
            if m.body.starts_with(SEALED) {
                m.body = "(a one-time link, not kept once sent)".into();
            }
        }
        Some(err) => {
            m.last_error = Some(err);
            let wait = usize::try_from(m.attempts - 1)
                .ok()
                .and_then(|i| super::webhooks::RETRY_SCHEDULE.get(i));
            match wait {
                Some(w) if !permanent => m.next_at = ctx.now + w,
                _ => m.failed_at = Some(ctx.now),
            }
        }
    }
    tx.update_mail(&m)?;
    Ok(())
}
