//! The kernel's own objects: the kernel facet (system-only service, and
//! `KERNEL` for hosts), the `timer` and `logger` services, and each vat's
//! baggage store (where the vat's baggage writes land, durably, in order).

use std::rc::{Rc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use capstan_protocol::guards::DefaultGuards;
use capstan_protocol::patterns::M;
use capstan_protocol::{ErrorValue, Value};
use capstan_store::{BaggageKey, Kref, KrefKind, StoreError, VatId};

use super::refs::{self, SlotPlan};
use super::{ClusterConfig, Kernel, KernelError};
use crate::runtime::{Exo, MethodResult};

/// The longest `timer.delay`, milliseconds (one day).
const MAX_DELAY_MS: f64 = 86_400_000.0;

fn arg_text(args: &[Value], index: usize) -> String {
    args.get(index).and_then(Value::as_str).unwrap_or_default().to_string()
}

fn kernel_of(kernel: &Weak<Kernel>) -> Result<Rc<Kernel>, ErrorValue> {
    kernel
        .upgrade()
        .ok_or_else(|| ErrorValue::plain("the kernel has stopped"))
}

fn to_error(error: KernelError) -> ErrorValue {
    error.to_error_value()
}

/// The kernel facet: the kernel's operations as an object.
pub fn make_kernel_facet(kernel: &Rc<Kernel>) -> MethodResult {
    let weak = Rc::downgrade(kernel);
    let k = move || weak.clone();
    let (status, list, one, launch, terminate, system_root, queue, presence, ping_vat, reset, revoke, revoked) =
        (k(), k(), k(), k(), k(), k(), k(), k(), k(), k(), k(), k());
    Exo::new("KernelFacet")
        .interface(M::interface(
            "KernelFacet",
            [
                ("ping", M::call([]).returns(M::string())),
                ("getStatus", M::call([]).returns(M::record())),
                ("getSubclusters", M::call([]).returns(M::array())),
                ("getSubcluster", M::call([M::string()]).returns(M::record())),
                ("launchSubcluster", M::call_when([M::record()]).returns(M::record())),
                ("terminateSubcluster", M::call_when([M::string()]).returns_undefined()),
                (
                    "getSystemSubclusterRoot",
                    M::call_when([M::string()]).returns(M::string()),
                ),
                (
                    "queueMessage",
                    M::call_when([M::string(), M::string()])
                        .optional([M::array()])
                        .returns(M::any()),
                ),
                (
                    "getPresence",
                    M::call([M::string()]).optional([M::string()]).returns(M::remotable()),
                ),
                ("pingVat", M::call_when([M::string()]).returns(M::string())),
                ("reset", M::call_when([]).returns_undefined()),
                ("revoke", M::call_when([M::string()]).returns(M::boolean())),
                ("isRevoked", M::call([M::string()]).returns(M::boolean())),
            ],
            DefaultGuards::None,
        ))
        .method("ping", |_, _| Ok(Value::from("pong")))
        .method("getStatus", move |_, _| Ok(kernel_of(&status)?.get_status()))
        .method("getSubclusters", move |_, _| Ok(kernel_of(&list)?.get_subclusters()))
        .method("getSubcluster", move |_, args| {
            kernel_of(&one)?.get_subcluster(&arg_text(&args, 0)).map_err(to_error)
        })
        .async_method("launchSubcluster", move |_, args| {
            let kernel = kernel_of(&launch);
            async move {
                let kernel = kernel?;
                kernel.ready().await;
                let config = args.first().cloned().unwrap_or(Value::Undefined);
                let config = ClusterConfig::from_value(&config, None).map_err(to_error)?;
                let result = kernel.launch_subcluster(config).await.map_err(to_error)?;
                Ok(result.to_value())
            }
        })
        .async_method("terminateSubcluster", move |_, args| {
            let kernel = kernel_of(&terminate);
            async move {
                let kernel = kernel?;
                kernel.ready().await;
                kernel
                    .terminate_subcluster(&arg_text(&args, 0))
                    .await
                    .map_err(to_error)?;
                Ok(Value::Undefined)
            }
        })
        .async_method("getSystemSubclusterRoot", move |_, args| {
            let kernel = kernel_of(&system_root);
            async move {
                let kernel = kernel?;
                kernel.ready().await;
                let root = kernel
                    .get_system_subcluster_root(&arg_text(&args, 0))
                    .map_err(to_error)?;
                Ok(Value::from(root))
            }
        })
        .async_method("queueMessage", move |_, args| {
            let kernel = kernel_of(&queue);
            async move {
                let kernel = kernel?;
                kernel.ready().await;
                let call_args = args.get(2).and_then(Value::as_array).unwrap_or_default().to_vec();
                kernel
                    .queue_message(&arg_text(&args, 0), &arg_text(&args, 1), call_args)
                    .await
                    .map_err(to_error)
            }
        })
        .method("getPresence", move |_, args| {
            kernel_of(&presence)?
                .get_presence(&arg_text(&args, 0))
                .map_err(to_error)
        })
        .async_method("pingVat", move |_, args| {
            let kernel = kernel_of(&ping_vat);
            async move { kernel?.ping_vat(&arg_text(&args, 0)).await.map_err(to_error) }
        })
        .async_method("reset", move |_, _| {
            let kernel = kernel_of(&reset);
            async move {
                let kernel = kernel?;
                kernel.ready().await;
                kernel.reset().await.map_err(to_error)?;
                Ok(Value::Undefined)
            }
        })
        .async_method("revoke", move |_, args| {
            let kernel = kernel_of(&revoke);
            async move {
                let newly = kernel?.revoke(&arg_text(&args, 0)).await.map_err(to_error)?;
                Ok(Value::Boolean(newly))
            }
        })
        .method("isRevoked", move |_, args| {
            let revoked = kernel_of(&revoked)?.is_revoked(&arg_text(&args, 0)).map_err(to_error)?;
            Ok(Value::Boolean(revoked))
        })
        .make()
}

/// The `timer` service: the time, and promises that settle later.
pub fn make_timer() -> MethodResult {
    Exo::new("Timer")
        .interface(M::interface(
            "Timer",
            [
                ("now", M::call([]).returns(M::number())),
                ("delay", M::call_when([M::number()]).returns_undefined()),
            ],
            DefaultGuards::None,
        ))
        .method("now", |_, _| {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |elapsed| elapsed.as_millis() as f64);
            Ok(Value::Number(now))
        })
        .async_method("delay", |_, args| async move {
            let ms = args.first().and_then(Value::as_number).unwrap_or(0.0);
            if !(0.0..=MAX_DELAY_MS).contains(&ms) {
                return Err(ErrorValue::range_error(format!(
                    "a delay must be between 0 and {MAX_DELAY_MS} ms, not {ms}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(ms as u64)).await;
            Ok(Value::Undefined)
        })
        .make()
}

/// A logger writing to the node's log, each line marked with `who`.
pub fn make_logger(who: &str) -> MethodResult {
    let who = who.to_string();
    Exo::new("Logger")
        .interface(M::interface(
            "Logger",
            [("log", M::call([]).rest(M::any()).returns_undefined())],
            DefaultGuards::None,
        ))
        .method("log", move |_, args| {
            let line: Vec<String> = args
                .iter()
                .map(|arg| match arg {
                    Value::String(text) => text.to_string(),
                    other => capstan_protocol::quote::quote(other),
                })
                .collect();
            tracing::info!(target: "capstan::vat", who = %who, "{}", line.join(" "));
            Ok(Value::Undefined)
        })
        .make()
}

enum Write {
    Init,
    Set,
    Delete,
}

/// Where vat `vat`'s baggage writes land. Each commits before the next
/// message of the vat's session is handled, so a write is durable before
/// the vat's answer to whoever it was serving arrives.
pub fn make_baggage_store(kernel: &Rc<Kernel>, vat: VatId) -> MethodResult {
    let (init, set, delete) = (
        (Rc::downgrade(kernel), vat.clone()),
        (Rc::downgrade(kernel), vat.clone()),
        (Rc::downgrade(kernel), vat),
    );
    Exo::new("BaggageStore")
        .interface(M::interface(
            "BaggageStore",
            [
                ("init", M::call([M::string(), M::any()]).returns_undefined()),
                ("set", M::call([M::string(), M::any()]).returns_undefined()),
                ("delete", M::call([M::string()]).returns_undefined()),
            ],
            DefaultGuards::None,
        ))
        .method("init", move |_, args| write(&init.0, &init.1, Write::Init, &args))
        .method("set", move |_, args| write(&set.0, &set.1, Write::Set, &args))
        .method("delete", move |_, args| {
            write(&delete.0, &delete.1, Write::Delete, &args)
        })
        .make()
}

fn write(kernel: &Weak<Kernel>, vat: &VatId, write: Write, args: &[Value]) -> MethodResult {
    let kernel = kernel_of(kernel)?;
    let key_text = arg_text(args, 0);
    let key: BaggageKey = key_text
        .parse()
        .map_err(|error: StoreError| ErrorValue::type_error(error.to_string()))?;
    let (body, plans) = match write {
        Write::Delete => (String::new(), Vec::new()),
        Write::Init | Write::Set => {
            let value = args.get(1).cloned().unwrap_or(Value::Undefined);
            refs::plan_baggage(&kernel, &value).map_err(|error| {
                tracing::warn!(vat = %vat, key = %key_text, %error, "a baggage write was refused");
                ErrorValue::type_error(format!("baggage key {key_text:?}: {error}"))
            })?
        }
    };
    let mut slots = Vec::with_capacity(plans.len());
    let mut new_values = Vec::new();
    for plan in plans {
        match plan {
            SlotPlan::Known(kref) => slots.push(Ok(kref)),
            SlotPlan::New(info, value) => {
                slots.push(Err(super::config::encode_record(&info).map_err(to_error)?));
                new_values.push(value);
            }
        }
    }
    let vat_id = vat.clone();
    let commit = kernel.store().transact(move |tx| {
        let mut krefs: Vec<Kref> = Vec::with_capacity(slots.len());
        let mut made = Vec::new();
        for slot in slots {
            match slot {
                Ok(kref) => krefs.push(kref),
                Err(info) => {
                    let kref = tx.allocate_kref(KrefKind::Object)?;
                    tx.put_kref(kref, &info)?;
                    krefs.push(kref);
                    made.push(kref);
                }
            }
        }
        match write {
            Write::Init => tx.init_baggage(&vat_id, &key, &refs::stored_bytes(body, &krefs))?,
            Write::Set => tx.set_baggage(&vat_id, &key, &refs::stored_bytes(body, &krefs))?,
            Write::Delete => {
                if !tx.delete_baggage(&vat_id, &key)? {
                    return Err(StoreError::BaggageKeyMissing {
                        vat: vat_id.to_string(),
                        key: key.to_string(),
                    });
                }
            }
        }
        Ok(made)
    });
    // Blocking on purpose: the next message from this vat must not be
    // handled before the write is durable. (`Commit::wait` refuses to
    // block inside the runtime; the writer thread never needs this one.)
    let made = futures::executor::block_on(commit).map_err(|error| {
        tracing::warn!(vat = %vat, key = %key_text, %error, "a baggage write failed");
        ErrorValue::plain(error.to_string())
    })?;
    kernel.bind_new(made.into_iter().zip(new_values).collect());
    Ok(Value::Undefined)
}
