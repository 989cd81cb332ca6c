//! cargo-fuzz target `cp_bodies`: the control plane's request bodies. The first byte picks
//! the type (`tessera_fuzz::CP_BODY_TYPES`), the rest is the JSON body; a body that
//! deserialises then goes through the same field checks the services run.
#![no_main]

use serde_json::from_slice;
use tessera_control_plane::service::input::{self, *};

fn check_strings(field: &str, items: &[String]) {
    for s in items {
        let _ = input::check_text(field, s, 200, false);
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    match which as usize % tessera_fuzz::CP_BODY_TYPES.len() {
        0 => {
            if let Ok(v) = from_slice::<CreateOrg>(body) {
                let _ = input::check_org_id("id", &v.id);
                if let Some(m) = &v.managed_by {
                    let _ = input::check_org_id("managed_by", m);
                }
            }
        }
        1 => {
            let _ = from_slice::<RotateKey>(body);
        }
        2 => {
            if let Ok(v) = from_slice::<CreateEdge>(body) {
                let _ = input::check_text("name", &v.name, 200, false);
            }
        }
        3 => {
            if let Ok(v) = from_slice::<CreateUser>(body) {
                let _ = input::check_username("username", &v.username);
            }
        }
        4 => {
            let _ = from_slice::<UpdateUser>(body);
        }
        5 => {
            if let Ok(v) = from_slice::<CreateToken>(body) {
                let _ = input::check_ip_allow(&v.ip_allow);
                let _ = input::check_scopes(&v.scopes);
                check_strings("name", std::slice::from_ref(&v.name));
            }
        }
        6 => {
            let _ = from_slice::<RevokeAll>(body);
        }
        7 => {
            if let Ok(v) = from_slice::<EditToken>(body) {
                if let Some(list) = &v.ip_allow {
                    let _ = input::check_ip_allow(list);
                }
                if let Some(list) = &v.scopes {
                    let _ = input::check_scopes(list);
                }
            }
        }
        _ => {
            if let Ok(v) = from_slice::<UsageBatch>(body) {
                for e in &v.events {
                    let _ = input::check_text("method", &e.method, 20, true);
                    let _ = input::check_text("path", &e.path, 2048, true);
                    if let Some(reason) = &e.reason {
                        let _ = input::check_text("reason", reason, 100, true);
                    }
                    if let Some(ip) = &e.ip {
                        let _ = input::check_cidr("ip", ip);
                    }
                }
            }
        }
    }
});
