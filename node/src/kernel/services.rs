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
use super::{ClusterConfig, Kernel};
use crate::runtime::args::decode;
use crate::runtime::{Context, Exo, ExoClass, MethodResult};

/// The longest `timer.delay`, milliseconds (one day).
const MAX_DELAY_MS: f64 = 86_400_000.0;

fn kernel_of(kernel: &Weak<Kernel>) -> Result<Rc<Kernel>, ErrorValue> {
    kernel
        .upgrade()
        .ok_or_else(|| ErrorValue::plain("the kernel has stopped"))
}

/// The kernel of a facet, once it has restored what it keeps.
async fn ready_kernel(cx: &Context<Weak<Kernel>>) -> Result<Rc<Kernel>, ErrorValue> {
    let kernel = kernel_of(&cx.state())?;
    kernel.ready().await;
    Ok(kernel)
}

/// The kernel facet: the kernel's operations as an object.
pub fn make_kernel_facet(kernel: &Rc<Kernel>) -> MethodResult {
    ExoClass::<Weak<Kernel>>::builder_without_init("KernelFacet")
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
                        .optional([M::array(), send_options()])
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
                ("restartVat", M::call_when([M::string()]).returns_undefined()),
                ("terminateVat", M::call_when([M::string()]).returns_undefined()),
                ("collectGarbage", M::call_when([]).returns(M::record())),
                (
                    "enqueueMessage",
                    M::call_when([M::string(), M::string()])
                        .optional([M::array(), send_options()])
                        .returns(M::string()),
                ),
                ("issueOcapURL", M::call_when([M::string()]).returns(M::string())),
                ("redeemOcapURL", M::call_when([url_pattern()]).returns(M::string())),
            ],
            DefaultGuards::None,
        ))
        .method("ping", |_, _| Ok(Value::from("pong")))
        .method("getStatus", |cx, _| Ok(kernel_of(&cx.state())?.get_status()))
        .method("getSubclusters", |cx, _| Ok(kernel_of(&cx.state())?.get_subclusters()))
        .method("getSubcluster", |cx, args| {
            let (id,): (String,) = decode(args)?;
            Ok(kernel_of(&cx.state())?.get_subcluster(&id)?)
        })
        .async_method("launchSubcluster", |cx, args| async move {
            let kernel = ready_kernel(&cx).await?;
            let (config,): (Value,) = decode(args)?;
            let config = ClusterConfig::from_value(&config, None)?;
            Ok(kernel.launch_subcluster(config).await?.to_value())
        })
        .async_method("terminateSubcluster", |cx, args| async move {
            let kernel = ready_kernel(&cx).await?;
            let (id,): (String,) = decode(args)?;
            kernel.terminate_subcluster(&id).await?;
            Ok(Value::Undefined)
        })
        .async_method("getSystemSubclusterRoot", |cx, args| async move {
            let kernel = ready_kernel(&cx).await?;
            let (name,): (String,) = decode(args)?;
            Ok(Value::from(kernel.get_system_subcluster_root(&name)?))
        })
        .async_method("queueMessage", |cx, args| async move {
            let kernel = ready_kernel(&cx).await?;
            let (kref, method, call_args, options): (String, String, Option<Vec<Value>>, Option<Value>) = decode(args)?;
            if !in_kref_form(options.as_ref()) {
                return Ok(kernel
                    .queue_message(&kref, &method, call_args.unwrap_or_default())
                    .await?);
            }
            let call_args = kernel.from_krefs(&Value::array(call_args.unwrap_or_default()))?;
            let call_args = call_args.as_array().map(<[Value]>::to_vec).unwrap_or_default();
            let result = kernel.queue_message(&kref, &method, call_args).await?;
            Ok(kernel.krefs_in(&result).await?)
        })
        .method("getPresence", |cx, args| {
            let (kref,): (String,) = decode(args)?;
            Ok(kernel_of(&cx.state())?.get_presence(&kref)?)
        })
        .async_method("pingVat", |cx, args| async move {
            let kernel = kernel_of(&cx.state())?;
            let (vat,): (String,) = decode(args)?;
            Ok(kernel.ping_vat(&vat).await?)
        })
        .async_method("reset", |cx, _| async move {
            ready_kernel(&cx).await?.reset().await?;
            Ok(Value::Undefined)
        })
        .async_method("revoke", |cx, args| async move {
            let kernel = kernel_of(&cx.state())?;
            let (kref,): (String,) = decode(args)?;
            Ok(Value::Boolean(kernel.revoke(&kref).await?))
        })
        .method("isRevoked", |cx, args| {
            let (kref,): (String,) = decode(args)?;
            Ok(Value::Boolean(kernel_of(&cx.state())?.is_revoked(&kref)?))
        })
        .async_method("restartVat", |cx, args| async move {
            let kernel = ready_kernel(&cx).await?;
            let (vat,): (String,) = decode(args)?;
            kernel.restart_vat(&vat).await?;
            Ok(Value::Undefined)
        })
        .async_method("terminateVat", |cx, args| async move {
            let kernel = ready_kernel(&cx).await?;
            let (vat,): (String,) = decode(args)?;
            kernel.terminate_vat(&vat).await?;
            Ok(Value::Undefined)
        })
        .async_method("collectGarbage", |cx, _| async move {
            Ok(ready_kernel(&cx).await?.collect_garbage().await?.to_value())
        })
        .async_method("enqueueMessage", |cx, args| async move {
            let kernel = ready_kernel(&cx).await?;
            let (kref, method, call_args, options): (String, String, Option<Vec<Value>>, Option<Value>) = decode(args)?;
            let mut call_args = call_args.unwrap_or_default();
            if in_kref_form(options.as_ref()) {
                let live = kernel.from_krefs(&Value::array(call_args))?;
                call_args = live.as_array().map(<[Value]>::to_vec).unwrap_or_default();
            }
            let promise = kernel.enqueue_message(&kref, &method, call_args).await?;
            Ok(Value::from(promise))
        })
        .async_method("issueOcapURL", |cx, args| async move {
            let kernel = ready_kernel(&cx).await?;
            let (kref,): (String,) = decode(args)?;
            Ok(Value::from(kernel.issue_ocap_url(&kref).await?))
        })
        .async_method("redeemOcapURL", |cx, args| async move {
            let kernel = ready_kernel(&cx).await?;
            let (url,): (String,) = decode(args)?;
            Ok(Value::from(kernel.redeem_ocap_url(&url).await?))
        })
        .build()?
        .make_with(Rc::downgrade(kernel))
}

/// The options of `queueMessage` and `enqueueMessage`: `{krefs: true}`
/// passes the arguments, and answers the result, in kref form (objects
/// and promises as `{"@kref": kref}`), as the CLI does.
fn send_options() -> Value {
    M::split_record(
        Value::record(Vec::<(&str, Value)>::new()),
        Some(capstan_protocol::record! { "krefs" => M::boolean() }),
        None,
    )
}

fn in_kref_form(options: Option<&Value>) -> bool {
    matches!(
        options.and_then(|options| options.as_record()?.get("krefs")),
        Some(Value::Boolean(true))
    )
}

/// An OCAP URL argument: a string no longer than any URL read.
fn url_pattern() -> Value {
    M::string_limited(Some(capstan_protocol::record! {
        "stringLengthLimit" => super::ocap_url::MAX_URL_LEN as f64,
    }))
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
            let (ms,): (f64,) = decode(args)?;
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
    ExoClass::<BaggageStore>::builder_without_init("BaggageStore")
        .interface(M::interface(
            "BaggageStore",
            [
                ("init", M::call([M::string(), M::any()]).returns_undefined()),
                ("set", M::call([M::string(), M::any()]).returns_undefined()),
                ("delete", M::call([M::string()]).returns_undefined()),
            ],
            DefaultGuards::None,
        ))
        .method("init", |cx, args| {
            let (key, value): (String, Value) = decode(args)?;
            write(&cx.state(), Write::Init, key, value)
        })
        .method("set", |cx, args| {
            let (key, value): (String, Value) = decode(args)?;
            write(&cx.state(), Write::Set, key, value)
        })
        .method("delete", |cx, args| {
            let (key,): (String,) = decode(args)?;
            write(&cx.state(), Write::Delete, key, Value::Undefined)
        })
        .build()?
        .make_with(BaggageStore {
            kernel: Rc::downgrade(kernel),
            vat,
        })
}

/// A baggage store's state: whose baggage it writes.
struct BaggageStore {
    kernel: Weak<Kernel>,
    vat: VatId,
}

fn write(store: &BaggageStore, write: Write, key_text: String, value: Value) -> MethodResult {
    let kernel = kernel_of(&store.kernel)?;
    let vat = &store.vat;
    let key: BaggageKey = key_text
        .parse()
        .map_err(|error: StoreError| ErrorValue::type_error(error.to_string()))?;
    let (body, plans) = match write {
        Write::Delete => (String::new(), Vec::new()),
        Write::Init | Write::Set => refs::plan_baggage(&kernel, &value).map_err(|error| {
            tracing::warn!(vat = %vat, key = %key_text, %error, "a baggage write was refused");
            ErrorValue::type_error(format!("baggage key {key_text:?}: {error}"))
        })?,
    };
    let mut slots = Vec::with_capacity(plans.len());
    let mut new_values = Vec::new();
    for plan in plans {
        match plan {
            SlotPlan::Known(kref) => slots.push(Ok(kref)),
            SlotPlan::New(info, value) => {
                slots.push(Err(super::config::encode_record(&info)?));
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
