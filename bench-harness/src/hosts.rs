//! Several brokers in one run (the nodes of a cluster): the `--host` entries,
//! and which of them each client connects to.
//!
//! # Placement
//! With H hosts, in `--host` order:
//! - subscriber j connects to host j mod H;
//! - publisher i connects to a host where none of the subscribers it feeds is,
//!   where there is one, so that every message crosses from one node to another:
//!   - pairs: publisher i feeds subscriber i only: host (i + 1) mod H;
//!   - fan-in, fan-out: every publisher feeds every subscriber, and the S
//!     subscribers are on hosts 0..min(S, H). With S < H, publisher i connects
//!     to host S + (i mod (H - S)); otherwise every host has a subscriber and
//!     publisher i connects to host (i + 1) mod H;
//! - every other connection k (conn, idle, connections) connects to host k mod H.
//!
//! With one host, every client connects to it.

use anyhow::{anyhow, bail, Context as _};
use std::net::{SocketAddr, ToSocketAddrs};

/// One `--host` entry: `HOST`, `HOST:PORT`, `[V6]` or `[V6]:PORT` (a bare
/// IPv6 address has no port). Returns the host and the port, `default_port`
/// when the entry has none.
pub fn parse_entry(entry: &str, default_port: u16) -> anyhow::Result<(String, u16)> {
    let port = |p: &str| {
        p.parse::<u16>().map_err(|_| anyhow!("--host {entry:?}: {p:?} is not a port number"))
    };
    let (host, port) = if let Some(rest) = entry.strip_prefix('[') {
        let (host, after) =
            rest.split_once(']').ok_or_else(|| anyhow!("--host {entry:?}: no closing `]`"))?;
        match after {
            "" => (host, default_port),
            _ => match after.strip_prefix(':') {
                Some(p) => (host, port(p)?),
                None => bail!("--host {entry:?}: expected `:PORT` after `]`"),
            },
        }
    } else {
        match entry.split_once(':') {
            // More than one colon: a bare IPv6 address.
            Some((_, rest)) if rest.contains(':') => (entry, default_port),
            Some((host, p)) => (host, port(p)?),
            None => (entry, default_port),
        }
    };
    if host.is_empty() {
        bail!("--host {entry:?}: no host name or address");
    }
    Ok((host.to_string(), port))
}

/// One broker of the run.
#[derive(Debug, Clone)]
pub struct Host {
    /// The host as given (name or address), for the WebSocket `Host` header.
    pub name: String,
    pub addr: SocketAddr,
}

/// Parses and resolves every `--host` entry, in order.
pub fn resolve(entries: &[String], default_port: u16) -> anyhow::Result<Vec<Host>> {
    let mut hosts = Vec::new();
    for entry in entries {
        let (name, port) = parse_entry(entry, default_port)?;
        let addr = (name.as_str(), port)
            .to_socket_addrs()
            .with_context(|| format!("resolving {entry}"))?
            .next()
            .ok_or_else(|| anyhow!("{entry} resolves to no address"))?;
        hosts.push(Host { name, addr });
    }
    if hosts.is_empty() {
        bail!("--host: at least one broker is needed");
    }
    Ok(hosts)
}

/// A client of the run, by role and index: where it connects depends on both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    Subscriber(u32),
    Publisher(u32),
    /// conn, idle and connections clients.
    Other(u64),
}

/// Which subscribers a publisher's messages go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feeds {
    /// Publisher i feeds subscriber i only (pairs).
    OwnPair,
    /// Every publisher feeds every subscriber (fan-in, fan-out).
    Every,
}

/// The placement rule of the module documentation.
#[derive(Debug, Clone, Copy)]
pub struct Placement {
    pub hosts: usize,
    pub subscribers: u32,
    pub feeds: Feeds,
}

impl Placement {
    /// The index of the host `client` connects to, below `self.hosts`.
    pub fn host(&self, client: Client) -> usize {
        assert!(self.hosts > 0, "a run has at least one host");
        let h = self.hosts as u64;
        let s = u64::from(self.subscribers);
        let index = match client {
            Client::Subscriber(j) => u64::from(j) % h,
            Client::Publisher(i) => {
                let i = u64::from(i);
                match self.feeds {
                    Feeds::Every if s < h => s + i % (h - s),
                    Feeds::Every | Feeds::OwnPair => (i + 1) % h,
                }
            }
            Client::Other(k) => k % h,
        };
        usize::try_from(index).expect("below self.hosts, a usize")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_entry(entry: &str, expect: Result<(&str, u16), &str>) {
        match (parse_entry(entry, 1883), expect) {
            (Ok((host, port)), Ok((h, p))) => assert_eq!((host.as_str(), port), (h, p), "{entry}"),
            (Err(e), Err(msg)) => assert!(e.to_string().contains(msg), "{entry}: {e}"),
            (got, want) => panic!("{entry}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn entries_take_the_default_port_unless_they_name_one() {
        check_entry("127.0.0.1", Ok(("127.0.0.1", 1883)));
        check_entry("127.0.0.1:2000", Ok(("127.0.0.1", 2000)));
        check_entry("broker.example", Ok(("broker.example", 1883)));
        check_entry("broker.example:8883", Ok(("broker.example", 8883)));
        check_entry("::1", Ok(("::1", 1883)));
        check_entry("[::1]", Ok(("::1", 1883)));
        check_entry("[::1]:2000", Ok(("::1", 2000)));
        check_entry("127.0.0.1:port", Err("not a port number"));
        check_entry("127.0.0.1:70000", Err("not a port number"));
        check_entry("[::1", Err("no closing"));
        check_entry("[::1]2000", Err("expected `:PORT`"));
        check_entry(":2000", Err("no host"));
        check_entry("", Err("no host"));
    }

    #[test]
    fn resolve_keeps_the_order() {
        let entries = ["127.0.0.1:2001", "127.0.0.1:2002", "127.0.0.1"].map(String::from);
        let ports: Vec<u16> =
            resolve(&entries, 1883).unwrap().iter().map(|h| h.addr.port()).collect();
        assert_eq!(ports, [2001, 2002, 1883]);
        assert!(resolve(&[], 1883).is_err());
    }

    /// The hosts of subscribers 0..s and publishers 0..p.
    fn place(hosts: usize, s: u32, p: u32, feeds: Feeds) -> (Vec<usize>, Vec<usize>) {
        let placement = Placement { hosts, subscribers: s, feeds };
        let subs = (0..s).map(|j| placement.host(Client::Subscriber(j))).collect();
        let pubs = (0..p).map(|i| placement.host(Client::Publisher(i))).collect();
        (subs, pubs)
    }

    #[test]
    fn one_host_takes_every_client() {
        for feeds in [Feeds::OwnPair, Feeds::Every] {
            let (subs, pubs) = place(1, 3, 5, feeds);
            assert!(subs.iter().chain(&pubs).all(|&h| h == 0));
        }
        let one = Placement { hosts: 1, subscribers: 0, feeds: Feeds::Every };
        assert_eq!(one.host(Client::Other(7)), 0);
    }

    #[test]
    fn pairs_cross_hosts() {
        let (subs, pubs) = place(3, 7, 7, Feeds::OwnPair);
        assert_eq!(subs, [0, 1, 2, 0, 1, 2, 0]);
        assert_eq!(pubs, [1, 2, 0, 1, 2, 0, 1]);
        let (subs, pubs) = place(2, 4, 4, Feeds::OwnPair);
        assert_eq!(subs, [0, 1, 0, 1]);
        assert_eq!(pubs, [1, 0, 1, 0]);
    }

    #[test]
    fn fan_in_publishers_avoid_the_subscribers_hosts() {
        // One subscriber on host 0: publishers spread over hosts 1 and 2.
        let (subs, pubs) = place(3, 1, 6, Feeds::Every);
        assert_eq!(subs, [0]);
        assert_eq!(pubs, [1, 2, 1, 2, 1, 2]);
        // Two subscribers: the one free host takes every publisher.
        let (subs, pubs) = place(3, 2, 3, Feeds::Every);
        assert_eq!(subs, [0, 1]);
        assert_eq!(pubs, [2, 2, 2]);
    }

    #[test]
    fn with_a_subscriber_on_every_host_publishers_still_spread() {
        // Fan-out: no host is free of subscribers; no host takes every publisher.
        let (subs, pubs) = place(3, 64, 3, Feeds::Every);
        assert_eq!(&subs[..4], [0, 1, 2, 0]);
        assert_eq!(pubs, [1, 2, 0]);
    }

    /// Whatever the shape, every index is a host, and a publisher shares a host
    /// with a subscriber it feeds only when every host has one.
    #[test]
    fn publishers_meet_their_subscribers_only_when_unavoidable() {
        for hosts in 1..=5 {
            for s in 1..=7 {
                for feeds in [Feeds::OwnPair, Feeds::Every] {
                    let p = if feeds == Feeds::OwnPair { s } else { 9 };
                    let (subs, pubs) = place(hosts, s, p, feeds);
                    assert!(subs.iter().chain(&pubs).all(|&h| h < hosts));
                    for (i, &ph) in pubs.iter().enumerate() {
                        let fed: Vec<usize> = match feeds {
                            Feeds::OwnPair => vec![subs[i]],
                            Feeds::Every => subs.clone(),
                        };
                        let every_host_has_one = (0..hosts).all(|h| fed.contains(&h));
                        assert!(
                            !fed.contains(&ph) || every_host_has_one,
                            "hosts {hosts}, s {s}, {feeds:?}: publisher {i} on {ph}, subs {subs:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn other_connections_go_round_robin() {
        let p = Placement { hosts: 3, subscribers: 0, feeds: Feeds::Every };
        let hosts: Vec<usize> = (0..6).map(|k| p.host(Client::Other(k))).collect();
        assert_eq!(hosts, [0, 1, 2, 0, 1, 2]);
    }
}
