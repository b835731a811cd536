//! Embedding the kernel in a Rust program, as `Kernel.make` does for the
//! ocap kernel: the program registers its own service (a weather
//! service), declares a system subcluster whose vat uses it, and calls the
//! vat's root through the kernel.
//!
//! Vats run in worker processes started from the `capstan` binary (its
//! hidden `__worker` entry point runs the JavaScript engine), so this
//! program embeds no engine and builds without the `js` feature. It uses
//! `CAPSTAN_BIN`, else the `capstan` built beside it.
//!
//! ```text
//! cargo build -p capstan
//! cargo run -p capstan-node --example kernel_embed [STATE-DIR]
//! ```
//! A second run with the same directory resuscitates the vat: its report
//! count, kept in baggage, goes on from where it was.

use std::path::PathBuf;

use capstan_node::kernel::{ClusterConfig, Kernel, KernelOptions, ServiceOptions, SystemSubclusterConfig};
use capstan_node::runtime::{Exo, Vat};
use capstan_node::workers::WorkerSpawner;
use capstan_protocol::Value;

const WEATHER_VAT: &str = r#"
export function buildRootObject(vatPowers, parameters, baggage) {
  if (!baggage.has('reports')) baggage.init('reports', 0);
  let weather = baggage.has('weather') ? baggage.get('weather') : undefined;
  return makeDefaultExo('root', {
    bootstrap(vats, services) {
      weather = services.weather;
      baggage.init('weather', weather);
    },
    async report(city) {
      const temperature = await E(weather).temperature(city ?? parameters.defaultCity);
      baggage.set('reports', baggage.get('reports') + 1);
      return `${city ?? parameters.defaultCity}: ${temperature}C (report ${baggage.get('reports')})`;
    },
  });
}
"#;

/// The worker program: `CAPSTAN_BIN`, else the `capstan` binary in the
/// target directory this example was built into.
fn capstan_binary() -> Result<PathBuf, Box<dyn std::error::Error>> {
    if let Some(path) = std::env::var_os("CAPSTAN_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    // `target/<profile>/examples/kernel_embed` beside `target/<profile>/capstan`.
    let beside = exe
        .parent()
        .and_then(|examples| examples.parent())
        .map(|profile| profile.join(format!("capstan{}", std::env::consts::EXE_SUFFIX)));
    match beside {
        Some(path) if path.exists() => Ok(path),
        _ => {
            Err("no capstan binary beside this example; build it (`cargo build -p capstan`) or set CAPSTAN_BIN".into())
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let program = capstan_binary()?;
    let state = match args.get(1) {
        Some(dir) => PathBuf::from(dir),
        None => std::env::temp_dir().join(format!("capstan-kernel-embed-{}", std::process::id())),
    };
    std::fs::create_dir_all(&state)?;
    let source = state.join("weather-vat.js");
    std::fs::write(&source, WEATHER_VAT)?;
    let config = serde_json::json!({
        "bootstrap": "weather",
        "services": ["weather"],
        "vats": {"weather": {"sourceSpec": source, "parameters": {"defaultCity": "London"}}}
    });
    let config = ClusterConfig::from_value(&capstan_protocol::json::from_json(&config), None)?;

    let vat = Vat::new();
    let outcome: Result<(), Box<dyn std::error::Error>> = vat.clone().run_until(async move {
        let store = capstan_store::Store::open(&state)?;
        // The program's own service: a Rust exo vats call with E().
        let weather = Exo::new("weather")
            .method("temperature", |_, args| {
                let city = args.first().and_then(Value::as_str).unwrap_or("nowhere");
                Ok(Value::from(city.len() as f64 + 10.0))
            })
            .make()
            .map_err(|error| error.message.to_string())?;
        let mut options = KernelOptions::new(WorkerSpawner::new(program, state.clone()));
        options
            .services
            .push(("weather".into(), weather, ServiceOptions::default()));
        options.system_subclusters.push(SystemSubclusterConfig {
            name: "weather-system".into(),
            config,
        });
        let kernel = Kernel::make(store, vat, options).await?;
        let root = kernel.get_system_subcluster_root("weather-system")?;
        let report = kernel
            .queue_message(&root, "report", vec![Value::from("Paris")])
            .await?;
        println!("{root}: {}", report.as_str().unwrap_or_default());
        kernel.stop();
        Ok(())
    });
    outcome
}
