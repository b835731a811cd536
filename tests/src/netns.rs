//! Network topologies for multi-node tests, built on this machine from
//! network namespaces: each host or router is a namespace, each cable a
//! veth pair, and a NAT is a router namespace that masquerades its LAN
//! behind its public address with the usual home-router firewall (accept
//! established and related traffic from the public side, drop the rest).
//!
//! Needs root, `ip` (iproute2) and `iptables`; `.ci/run` installs them.
//! Names carry this process's id and a counter, so two runs on one machine
//! cannot collide. Dropping a [`Topology`] kills what still runs in its
//! namespaces and deletes them, also when the test failed.

use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT_TOPOLOGY: AtomicU32 = AtomicU32::new(1);

/// A set of namespaces and the cables between them.
pub struct Topology {
    tag: String,
    namespaces: Vec<String>,
    cables: u32,
}

/// One end of a cable: the namespace it is in, its interface, its address.
#[derive(Clone, Debug)]
pub struct Port {
    pub namespace: String,
    pub interface: String,
    /// Without the prefix length.
    pub address: String,
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("cannot run {program}: {error}"))
}

fn must(program: &str, args: &[&str]) {
    let output = run(program, args);
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

impl Topology {
    /// An empty topology, or `None` (said loudly) when this machine cannot
    /// build one and `CI` is unset; in CI that is a failure.
    pub fn new() -> Option<Topology> {
        // SAFETY: geteuid only reads this process's effective user id.
        let root = unsafe { libc::geteuid() } == 0;
        let tools = ["ip", "iptables"]
            .iter()
            .all(|tool| Command::new(tool).arg("-V").output().is_ok_and(|o| o.status.success()));
        if !(root && tools) {
            let reason = format!("network namespaces need root ({root}) and ip and iptables ({tools})");
            assert!(std::env::var_os("CI").is_none(), "{reason}: .ci/run provides them");
            eprintln!("SKIPPED: {reason}; this suite runs in CI");
            return None;
        }
        let number = NEXT_TOPOLOGY.fetch_add(1, Ordering::Relaxed);
        Some(Topology {
            tag: format!("{:x}{number}", std::process::id()),
            namespaces: Vec::new(),
            cables: 0,
        })
    }

    /// A new namespace with loopback up; `role` makes its name readable.
    pub fn namespace(&mut self, role: &str) -> String {
        let name = format!("capstan-{}-{role}", self.tag);
        must("ip", &["netns", "add", &name]);
        self.namespaces.push(name.clone());
        must("ip", &["-n", &name, "link", "set", "lo", "up"]);
        name
    }

    /// A cable between `a` and `b`, with addresses in CIDR form
    /// (`10.1.0.2/24`), both ends up.
    pub fn cable(&mut self, a: &str, a_address: &str, b: &str, b_address: &str) -> (Port, Port) {
        self.cables += 1;
        // Interface names are at most 15 bytes.
        let a_interface = format!("v{}c{}a", self.tag, self.cables);
        let b_interface = format!("v{}c{}b", self.tag, self.cables);
        must(
            "ip",
            &[
                "link",
                "add",
                &a_interface,
                "netns",
                a,
                "type",
                "veth",
                "peer",
                "name",
                &b_interface,
                "netns",
                b,
            ],
        );
        for (namespace, interface, address) in [(a, &a_interface, a_address), (b, &b_interface, b_address)] {
            must("ip", &["-n", namespace, "addr", "add", address, "dev", interface]);
            must("ip", &["-n", namespace, "link", "set", interface, "up"]);
        }
        let port = |namespace: &str, interface: &str, address: &str| Port {
            namespace: namespace.to_string(),
            interface: interface.to_string(),
            address: address.split('/').next().unwrap_or(address).to_string(),
        };
        (port(a, &a_interface, a_address), port(b, &b_interface, b_address))
    }

    /// Sends `namespace`'s traffic for anywhere else through `gateway`.
    pub fn default_route(&self, namespace: &str, gateway: &str) {
        must("ip", &["-n", namespace, "route", "add", "default", "via", gateway]);
    }

    /// Makes `namespace` forward packets between its interfaces.
    pub fn router(&self, namespace: &str) {
        self.exec_ok(namespace, &["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]);
    }

    /// Makes `namespace` a home router: forwarding, its LAN masqueraded
    /// behind `public`, and from the public side only established and
    /// related traffic let in, to the router or through it.
    pub fn nat(&self, namespace: &str, public: &Port) {
        self.masquerade(namespace, public, &[]);
    }

    /// Like [`Topology::nat`], but each connection out gets a random
    /// public port (a "symmetric" NAT, as some carrier-grade NATs are):
    /// what a peer saw of one connection predicts nothing of the next, so
    /// hole punching cannot work through it.
    pub fn symmetric_nat(&self, namespace: &str, public: &Port) {
        self.masquerade(namespace, public, &["--random-fully"]);
    }

    fn masquerade(&self, namespace: &str, public: &Port, options: &[&str]) {
        self.router(namespace);
        let public = public.interface.as_str();
        let mut masquerade = vec!["-t", "nat", "-A", "POSTROUTING", "-o", public, "-j", "MASQUERADE"];
        masquerade.extend_from_slice(options);
        let mut rules: Vec<Vec<&str>> = vec![masquerade];
        for chain in ["FORWARD", "INPUT"] {
            rules.push(vec![
                "-A",
                chain,
                "-i",
                public,
                "-m",
                "conntrack",
                "--ctstate",
                "ESTABLISHED,RELATED",
                "-j",
                "ACCEPT",
            ]);
            rules.push(vec!["-A", chain, "-i", public, "-j", "DROP"]);
        }
        for rule in rules {
            let mut args = vec!["iptables"];
            args.extend_from_slice(&rule);
            self.exec_ok(namespace, &args);
        }
    }

    /// Runs `args` inside `namespace`.
    pub fn exec(&self, namespace: &str, args: &[&str]) -> Output {
        let mut full = vec!["netns", "exec", namespace];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    fn exec_ok(&self, namespace: &str, args: &[&str]) {
        let output = self.exec(namespace, args);
        assert!(
            output.status.success(),
            "{args:?} in {namespace} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for namespace in self.namespaces.iter().rev() {
            let pids = run("ip", &["netns", "pids", namespace]);
            for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    crate::kill(pid, libc::SIGKILL);
                }
            }
            let _ = run("ip", &["netns", "del", namespace]);
        }
    }
}

/// A public segment behind an ISP router with a relay on it, and two home
/// LANs, each behind its own NAT (`symmetric` ones defeat hole punching),
/// with the same private range, as real homes have. Namespaces: relay,
/// alice, bob; `None` as [`Topology::new`] says.
pub struct TwoHomes {
    pub topology: Topology,
    pub relay: String,
    pub nat_a: String,
    pub nat_b: String,
    pub alice: String,
    pub bob: String,
}

/// The relay's address on the public segment.
pub const RELAY_IP: &str = "198.51.100.2";

pub fn two_homes(symmetric: bool) -> Option<TwoHomes> {
    let mut topology = Topology::new()?;
    let isp = topology.namespace("isp");
    let relay = topology.namespace("relay");
    let nat_a = topology.namespace("nat-a");
    let nat_b = topology.namespace("nat-b");
    let alice = topology.namespace("alice");
    let bob = topology.namespace("bob");
    topology.cable(&isp, "198.51.100.1/24", &relay, "198.51.100.2/24");
    let (_, wan_a) = topology.cable(&isp, "100.64.1.1/24", &nat_a, "100.64.1.2/24");
    let (_, wan_b) = topology.cable(&isp, "100.64.2.1/24", &nat_b, "100.64.2.2/24");
    topology.cable(&nat_a, "192.168.1.1/24", &alice, "192.168.1.2/24");
    topology.cable(&nat_b, "192.168.1.1/24", &bob, "192.168.1.2/24");
    topology.router(&isp);
    topology.default_route(&relay, "198.51.100.1");
    topology.default_route(&nat_a, "100.64.1.1");
    topology.default_route(&nat_b, "100.64.2.1");
    if symmetric {
        topology.symmetric_nat(&nat_a, &wan_a);
        topology.symmetric_nat(&nat_b, &wan_b);
    } else {
        topology.nat(&nat_a, &wan_a);
        topology.nat(&nat_b, &wan_b);
    }
    topology.default_route(&alice, "192.168.1.1");
    topology.default_route(&bob, "192.168.1.1");
    Some(TwoHomes {
        topology,
        relay,
        nat_a,
        nat_b,
        alice,
        bob,
    })
}
