//! Checks of the harness itself: the echo upstream, the client, and Envoy without the
//! filter. If these fail, the scenario failures say nothing about the filter.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, TcpStream};
use std::time::Duration;

use tessera_host_tests::{envoy_path, EchoUpstream, Envoy, EnvoyOptions, Request};

#[test]
fn echo_upstream_keeps_alive_and_reads_bodies() {
    let upstream = EchoUpstream::start().expect("echo upstream");
    let mut stream = TcpStream::connect(upstream.addr()).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    // Two requests on one connection: one with a Content-Length body, one chunked.
    stream
        .write_all(
            b"POST /one HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\nx-dup: 1\r\nx-dup: 2\r\n\r\nhello\
              POST /two HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n\
              3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\n",
        )
        .expect("write");
    let mut all = String::new();
    stream.read_to_string(&mut all).expect("read until close");
    assert_eq!(all.matches("HTTP/1.1 200 OK").count(), 2, "{all}");
    let seen = upstream.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0]["request_line"], "POST /one HTTP/1.1");
    assert_eq!(seen[0]["body_bytes"], 5);
    assert_eq!(
        seen[0]["headers"]
            .as_array()
            .expect("headers")
            .iter()
            .filter(|h| h[0] == "x-dup")
            .count(),
        2
    );
    assert_eq!(seen[1]["path"], "/two");
    assert_eq!(seen[1]["body_bytes"], 5);
}

#[test]
fn envoy_without_filter_proxies_to_echo_on_v4_and_v6() {
    let envoy = envoy_path();
    let upstream = EchoUpstream::start().expect("echo upstream");
    let options = EnvoyOptions::new(&envoy)
        .upstream(upstream.addr())
        .with_ipv6();
    let yaml = options.bootstrap_yaml();
    let proxy = Envoy::start(&options).unwrap_or_else(|e| panic!("{e}\n{yaml}"));

    let resp = Request::get("/a//b/../c?q=1")
        .header("x-dup", "one")
        .header("x-dup", "two")
        .send(proxy.addr())
        .expect("request via v4");
    assert_eq!(resp.status, 200, "{}", resp.summary());
    let seen = resp.upstream().expect("echo body");
    // merge_slashes + normalize_path are on.
    assert_eq!(seen["path"], "/a/c?q=1", "{seen}");
    assert_eq!(resp.upstream_header("x-dup"), vec!["one", "two"]);
    assert_eq!(resp.local_addr.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));

    // A second IPv4 loopback address as the source.
    let other = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let resp = Request::get("/x")
        .bind(other)
        .send(proxy.addr())
        .expect("request from 127.0.0.2");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.local_addr.ip(), other);

    let v6 = proxy.addr_v6().expect("v6 listener");
    let resp = Request::get("/v6")
        .bind(IpAddr::V6(Ipv6Addr::LOCALHOST))
        .send(v6)
        .expect("request via v6");
    assert_eq!(resp.status, 200, "{}", resp.summary());
    assert_eq!(resp.local_addr.ip(), IpAddr::V6(Ipv6Addr::LOCALHOST));

    // A large header passes through whole.
    let big = "x".repeat(20_000);
    let resp = Request::get("/big")
        .header("x-big", &big)
        .send(proxy.addr())
        .expect("big header");
    assert_eq!(resp.upstream_header("x-big"), vec![big]);

    assert_eq!(upstream.request_count(), 4);
    let stats = proxy.stats().expect("admin /stats");
    assert!(stats.contains("cluster.echo.upstream_rq_total"), "stats");
    assert!(proxy.log().contains("starting main dispatch loop"));
}
