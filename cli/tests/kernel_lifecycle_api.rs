//! The kernel's Rust API for vat lifecycle, kernel promises and OCAP
//! URLs, driven in-process with real vat worker processes: restart and
//! terminate one vat, a pipelined send to a `kp` kref, garbage
//! collection, and OCAP URLs through a stand-in for the node's network
//! (a kernel without one has none).

#![allow(clippy::expect_used, clippy::unwrap_used, reason = "tests")]

use std::path::{Path, PathBuf};
use std::rc::Rc;

use capstan_node::kernel::ocap_url::{LocalFuture, NOT_VALID};
use capstan_node::kernel::{ClusterConfig, Kernel, KernelOptions, OcapUrl, OcapUrlComms};
use capstan_node::runtime::Vat;
use capstan_node::workers::WorkerSpawner;
use capstan_protocol::{ErrorValue, Value};
use capstan_store::NodeId;

const MAIN: &str = r#"
export function buildRootObject(vatPowers, parameters, baggage) {
  let calls = 0;
  return makeDefaultExo('Main', {
    bootstrap(vats) { baggage.init('counter', vats.counter); },
    incr() { calls += 1; return E(baggage.get('counter')).incr(); },
    calls() { return calls; },
    makeThing() { return makeDefaultExo('thing', { hello() { return 'hello from a thing'; } }); },
  });
}
"#;

const COUNTER: &str = r#"
export function buildRootObject(vatPowers, parameters, baggage) {
  if (!baggage.has('count')) baggage.init('count', 0);
  return makeDefaultExo('Counter', {
    incr() { const count = baggage.get('count') + 1; baggage.set('count', count); return count; },
  });
}
"#;

struct Fixture {
    dir: PathBuf,
}

impl Fixture {
    fn new(name: &str) -> Fixture {
        let dir = std::env::temp_dir().join(format!("capstan-kernel-life-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("main.js"), MAIN).unwrap();
        std::fs::write(dir.join("counter.js"), COUNTER).unwrap();
        let json = serde_json::json!({
            "bootstrap": "main",
            "vats": {"main": {"sourceSpec": "main.js"}, "counter": {"sourceSpec": "counter.js"}}
        });
        std::fs::write(dir.join("cluster.json"), json.to_string()).unwrap();
        Fixture { dir }
    }

    fn config(&self) -> ClusterConfig {
        ClusterConfig::from_json_file(&self.dir.join("cluster.json")).unwrap()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn make_kernel(dir: &Path, vat: &Vat) -> Rc<Kernel> {
    let store = capstan_store::Store::open(dir.join("state")).unwrap();
    let options = KernelOptions::new(WorkerSpawner {
        program: PathBuf::from(env!("CARGO_BIN_EXE_capstan")),
        memory_bytes: 256 << 20,
        time_budget_ms: 10_000,
        logs: dir.to_path_buf(),
    });
    Kernel::make(store, vat.clone(), options).await.unwrap()
}

fn text(value: &Value) -> String {
    value
        .as_str()
        .map_or_else(|| capstan_protocol::quote::quote(value), str::to_string)
}

fn field(value: &Value, name: &str) -> Value {
    value
        .as_record()
        .and_then(|record| record.get(name))
        .cloned()
        .unwrap_or(Value::Undefined)
}

/// A network of one node: URLs name it, and it can reach no other.
struct OneNode;

impl OcapUrlComms for OneNode {
    fn node_id(&self) -> NodeId {
        NodeId::from_bytes([3; 32])
    }
    fn addresses(&self) -> Vec<String> {
        vec!["/ip4/127.0.0.1/tcp/9".into()]
    }
    fn redeem_remote(&self, _url: &OcapUrl) -> LocalFuture<Result<Value, ErrorValue>> {
        Box::pin(async { Err(ErrorValue::plain("no other node here")) })
    }
}

#[test]
fn restart_terminate_promises_and_garbage_from_rust() {
    let fixture = Fixture::new("api");
    let config = fixture.config();
    let vat = Vat::new();
    let dir = fixture.dir.clone();
    vat.clone().run_until(async move {
        let kernel = make_kernel(&dir, &vat).await;
        let launched = kernel.launch_subcluster(config).await.unwrap();
        let main = launched.root_kref.clone();
        assert_eq!(
            kernel.queue_message(&main, "incr", vec![]).await.unwrap().as_number(),
            Some(1.0)
        );

        kernel.restart_vat("v2").await.unwrap();
        assert_eq!(
            kernel.queue_message(&main, "calls", vec![]).await.unwrap().as_number(),
            Some(0.0)
        );
        assert_eq!(
            kernel.queue_message(&main, "incr", vec![]).await.unwrap().as_number(),
            Some(2.0)
        );

        // A kernel promise, and a send pipelined on it before it settles.
        let promise = kernel.enqueue_message(&main, "makeThing", vec![]).await.unwrap();
        assert_eq!(promise, "kp1");
        let hello = kernel.queue_message(&promise, "hello", vec![]).await.unwrap();
        assert_eq!(text(&hello), "hello from a thing");
        let counts = field(&kernel.get_status(), "kernelPromises");
        assert_eq!(field(&counts, "count").as_number(), Some(1.0));
        assert_eq!(field(&counts, "fulfilled").as_number(), Some(1.0));

        let collected = kernel.collect_garbage().await.unwrap();
        assert_eq!(
            collected.retired.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["kp1"]
        );
        assert_eq!(collected.vats, 2);

        kernel.terminate_vat("v1").await.unwrap();
        let error = kernel
            .queue_message(&main, "incr", vec![])
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("vat v1 was terminated"), "{error}");
        let error = kernel
            .queue_message("ko1", "incr", vec![])
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("ko1 no longer exists: vat v1 was terminated"), "{error}");
        let error = kernel.restart_vat("v1").await.unwrap_err().to_string();
        assert!(error.contains("vat v1 was terminated"), "{error}");
        kernel.stop();
    });
}

#[test]
fn ocap_urls_need_a_network_and_refuse_forged_tokens() {
    let fixture = Fixture::new("urls");
    let config = fixture.config();
    let vat = Vat::new();
    let dir = fixture.dir.clone();
    vat.clone().run_until(async move {
        let kernel = make_kernel(&dir, &vat).await;
        let main = kernel.launch_subcluster(config).await.unwrap().root_kref;
        let error = kernel.issue_ocap_url(&main).await.unwrap_err().to_string();
        assert!(error.contains("no networking"), "{error}");

        kernel.set_ocap_url_comms(Rc::new(OneNode));
        let url = kernel.issue_ocap_url(&main).await.unwrap();
        let parsed: OcapUrl = url.parse().unwrap();
        assert_eq!(parsed.node, NodeId::from_bytes([3; 32]));
        assert_eq!(parsed.addresses, ["/ip4/127.0.0.1/tcp/9"]);
        assert_eq!(kernel.redeem_ocap_url(&url).await.unwrap(), main);

        let mut forged = parsed.clone();
        forged.token[0] ^= 1;
        let error = kernel
            .redeem_ocap_url(&forged.to_string())
            .await
            .unwrap_err()
            .to_string();
        assert_eq!(error, NOT_VALID);
        let elsewhere = OcapUrl {
            node: NodeId::from_bytes([4; 32]),
            ..parsed
        };
        let error = kernel
            .redeem_ocap_url(&elsewhere.to_string())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("cannot redeem the OCAP URL: no other node here"),
            "{error}"
        );

        let promise = kernel.enqueue_message(&main, "calls", vec![]).await.unwrap();
        let error = kernel.issue_ocap_url(&promise).await.unwrap_err().to_string();
        assert!(error.contains("OCAP URLs are for objects"), "{error}");
        let error = kernel.issue_ocap_url("ko99").await.unwrap_err().to_string();
        assert!(error.contains("there is no kernel object ko99"), "{error}");

        kernel.revoke(&main).await.unwrap();
        let error = kernel.redeem_ocap_url(&url).await.unwrap_err().to_string();
        assert!(error.contains("this OCAP URL was revoked"), "{error}");
        let error = kernel.issue_ocap_url(&main).await.unwrap_err().to_string();
        assert!(error.contains("was revoked"), "{error}");
        kernel.stop();
    });
}
