//! The kernel's Rust embedding API (`Kernel::make`), driven in-process with
//! real vat worker processes (this package's `capstan` binary): services
//! of the program's own, system subclusters, baggage across a restart of
//! the kernel, references that do or do not survive it, and revocation
//! seen from another vat.

#![allow(clippy::expect_used, clippy::unwrap_used, reason = "a test fails by panicking")]

use std::path::{Path, PathBuf};
use std::rc::Rc;

use capstan_node::kernel::{ClusterConfig, Kernel, KernelOptions, ServiceOptions, SystemSubclusterConfig};
use capstan_node::runtime::{Exo, Vat};
use capstan_node::workers::WorkerSpawner;
use capstan_protocol::Value;

const KEEPER: &str = r#"
export function buildRootObject(vatPowers, parameters, baggage) {
  return makeDefaultExo('keeper', {
    bootstrap(vats, services) {
      baggage.init('maker', vats.maker);
      baggage.init('clock', services.clock);
    },
    async keepThing() {
      const thing = await E(baggage.get('maker')).make();
      if (baggage.has('thing')) baggage.set('thing', thing); else baggage.init('thing', thing);
      return E(thing).hello();
    },
    useThing() { return E(baggage.get('thing')).hello(); },
    useMaker() { return E(baggage.get('maker')).count(); },
    tick() { return E(baggage.get('clock')).tick(); },
  });
}
"#;

const MAKER: &str = r#"
export function buildRootObject(vatPowers, parameters, baggage) {
  if (!baggage.has('made')) baggage.init('made', 0);
  return makeDefaultExo('maker', {
    make() {
      baggage.set('made', baggage.get('made') + 1);
      return makeDefaultExo('thing', { hello() { return 'hello from a thing'; } });
    },
    count() { return baggage.get('made'); },
  });
}
"#;

struct Fixture {
    dir: PathBuf,
}

impl Fixture {
    fn new(name: &str) -> Fixture {
        let dir = std::env::temp_dir().join(format!("capstan-kernel-api-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("keeper.js"), KEEPER).unwrap();
        std::fs::write(dir.join("maker.js"), MAKER).unwrap();
        Fixture { dir }
    }

    fn config(&self) -> ClusterConfig {
        let json = serde_json::json!({
            "bootstrap": "keeper",
            "services": ["clock"],
            "vats": {"keeper": {"sourceSpec": "keeper.js"}, "maker": {"sourceSpec": "maker.js"}}
        });
        std::fs::write(self.dir.join("cluster.json"), json.to_string()).unwrap();
        ClusterConfig::from_json_file(&self.dir.join("cluster.json")).unwrap()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn clock_service(ticks: Rc<std::cell::Cell<u32>>) -> Value {
    Exo::new("clock")
        .method("tick", move |_, _| {
            ticks.set(ticks.get() + 1);
            Ok(Value::from(f64::from(ticks.get())))
        })
        .make()
        .unwrap()
}

async fn make_kernel(dir: &Path, vat: &Vat, config: ClusterConfig, ticks: Rc<std::cell::Cell<u32>>) -> Rc<Kernel> {
    let store = capstan_store::Store::open(dir.join("state")).unwrap();
    let mut options = KernelOptions::new(WorkerSpawner {
        program: PathBuf::from(env!("CARGO_BIN_EXE_capstan")),
        memory_bytes: 256 << 20,
        time_budget_ms: 10_000,
        logs: dir.to_path_buf(),
    });
    options
        .services
        .push(("clock".into(), clock_service(ticks), ServiceOptions::default()));
    options.system_subclusters.push(SystemSubclusterConfig {
        name: "keepers".into(),
        config,
    });
    Kernel::make(store, vat.clone(), options).await.unwrap()
}

fn text(value: &Value) -> String {
    value
        .as_str()
        .map_or_else(|| capstan_protocol::quote::quote(value), str::to_string)
}

#[test]
fn roots_and_services_in_baggage_survive_a_restart_and_ordinary_objects_do_not() {
    let fixture = Fixture::new("restart");
    let config = fixture.config();
    let ticks = Rc::new(std::cell::Cell::new(0));
    {
        let vat = Vat::new();
        let (dir, ticks) = (fixture.dir.clone(), ticks.clone());
        vat.clone().run_until(async move {
            let kernel = make_kernel(&dir, &vat, config, ticks).await;
            let root = kernel.get_system_subcluster_root("keepers").unwrap();
            let hello = kernel.queue_message(&root, "keepThing", vec![]).await.unwrap();
            assert_eq!(text(&hello), "hello from a thing");
            let tick = kernel.queue_message(&root, "tick", vec![]).await.unwrap();
            assert_eq!(tick.as_number(), Some(1.0));
            kernel.stop();
        });
    }
    // A new kernel on the same store: the same subcluster, resuscitated.
    let config = fixture.config();
    let vat = Vat::new();
    let dir = fixture.dir.clone();
    vat.clone().run_until(async move {
        let kernel = make_kernel(&dir, &vat, config, ticks.clone()).await;
        let root = kernel.get_system_subcluster_root("keepers").unwrap();
        assert_eq!(
            kernel
                .queue_message(&root, "useMaker", vec![])
                .await
                .unwrap()
                .as_number(),
            Some(1.0),
            "the maker's root, kept in baggage, reaches the resuscitated maker"
        );
        assert_eq!(
            kernel.queue_message(&root, "tick", vec![]).await.unwrap().as_number(),
            Some(2.0)
        );
        let error = kernel
            .queue_message(&root, "useThing", vec![])
            .await
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("ordinary (non-durable) object of vat") && error.contains("did not survive the restart"),
            "{error}"
        );
        // Only one subcluster: the system one was restored, not launched again.
        assert_eq!(kernel.get_subclusters().as_array().unwrap().len(), 1);
        kernel.stop();
    });
}

#[test]
fn a_revoked_root_refuses_sends_from_other_vats_and_stays_revoked() {
    let fixture = Fixture::new("revoke");
    let config = fixture.config();
    let ticks = Rc::new(std::cell::Cell::new(0));
    let vat = Vat::new();
    let dir = fixture.dir.clone();
    vat.clone().run_until(async move {
        let kernel = make_kernel(&dir, &vat, config.clone(), ticks.clone()).await;
        let root = kernel.get_system_subcluster_root("keepers").unwrap();
        let status = kernel.get_status();
        let vats = status
            .as_record()
            .unwrap()
            .get("vats")
            .unwrap()
            .as_array()
            .unwrap()
            .to_vec();
        let maker = vats
            .iter()
            .find(|vat| vat.as_record().unwrap().get("name").and_then(Value::as_str) == Some("maker"))
            .unwrap();
        let maker_root = maker
            .as_record()
            .unwrap()
            .get("rootKref")
            .and_then(Value::as_str)
            .unwrap()
            .to_string();
        assert!(kernel.revoke(&maker_root).await.unwrap());
        assert!(
            !kernel.revoke(&maker_root).await.unwrap(),
            "a second revoke changes nothing"
        );
        let error = kernel
            .queue_message(&root, "useMaker", vec![])
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains(&maker_root) && error.contains("revoked"), "{error}");
        assert!(kernel.is_revoked(&maker_root).unwrap());
        // The keeper itself still answers.
        assert_eq!(
            kernel.queue_message(&root, "tick", vec![]).await.unwrap().as_number(),
            Some(1.0)
        );
        kernel.stop();
    });
}

#[test]
fn launches_are_checked_before_anything_starts() {
    let fixture = Fixture::new("checks");
    let config = fixture.config();
    std::fs::write(
        fixture.dir.join("broken.js"),
        "export function buildRootObject() { throw Error('no root today'); }",
    )
    .unwrap();
    let vat = Vat::new();
    let dir = fixture.dir.clone();
    vat.clone().run_until(async move {
        let kernel = make_kernel(&dir, &vat, config, Rc::new(std::cell::Cell::new(0))).await;
        let before = capstan_protocol::quote::quote(&kernel.get_status());
        let launch = |json: serde_json::Value| {
            ClusterConfig::from_value(&capstan_protocol::json::from_json(&json), Some(&dir)).unwrap()
        };
        let system_only = launch(serde_json::json!({
            "bootstrap": "a", "services": ["kernelFacet"], "vats": {"a": {"sourceSpec": "maker.js"}}
        }));
        let error = kernel.launch_subcluster(system_only).await.unwrap_err().to_string();
        assert!(error.contains("\"kernelFacet\" is system-only"), "{error}");
        let unknown = launch(serde_json::json!({
            "bootstrap": "a", "services": ["nope"], "vats": {"a": {"sourceSpec": "maker.js"}}
        }));
        let error = kernel.launch_subcluster(unknown).await.unwrap_err().to_string();
        assert!(error.contains("no kernel service named \"nope\""), "{error}");
        let crashing = launch(serde_json::json!({
            "bootstrap": "a", "vats": {"a": {"sourceSpec": "maker.js"}, "b": {"sourceSpec": "broken.js"}}
        }));
        let error = kernel.launch_subcluster(crashing).await.unwrap_err().to_string();
        assert!(error.contains("buildRootObject failed: no root today"), "{error}");
        // Nothing was left behind: the same vats and subclusters as before.
        let after = capstan_protocol::quote::quote(&kernel.get_status());
        let strip_pids = |text: &str| {
            text.split("pid: ")
                .map(|part| part.trim_start_matches(char::is_numeric))
                .collect::<String>()
        };
        assert_eq!(strip_pids(&before), strip_pids(&after));
        kernel.stop();
    });
}
