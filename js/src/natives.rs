//! The native functions the guest library calls: thin wrappers that
//! convert JavaScript values to [`Value`]s, run the Rust value layer
//! (patterns, guards, collections, pass styles), and convert back or throw
//! a JavaScript error carrying exactly the Rust [`Rejection`] message. Also
//! the calls out to the [`Host`](crate::Host).

use std::collections::BTreeMap;
use std::rc::Rc;

use capstan_protocol::collections::{check_key, make_copy_bag_from_entry_values, make_copy_map, make_copy_set};
use capstan_protocol::guards::{
    CallKind, InterfaceGuard, MethodGuard, exo_method_guards, kit_method_guards, method_label,
};
use capstan_protocol::patterns::{M, assert_pattern, matches, must_match};
use capstan_protocol::{Rejection, Value};
use num_bigint::BigInt;
use rquickjs::function::Rest;
use rquickjs::{Array, Ctx, Function, Object, Value as JsValue};

use crate::convert::{Converter, Mode, reason_to_value, throw_error};
use crate::engine::{Engine, ExoClass, ExoMethod, address_of};
use crate::host::{LogLevel, Settlement};

type Native<'js> = fn(&Engine, &Ctx<'js>, &[JsValue<'js>]) -> rquickjs::Result<JsValue<'js>>;

/// Builds the object of native functions handed to the guest library.
pub(crate) fn install<'js>(ctx: &Ctx<'js>, engine: &Rc<Engine>) -> rquickjs::Result<Object<'js>> {
    let natives = Object::new(ctx.clone())?;
    let table: [(&str, Native<'js>); 17] = [
        ("passStyleOf", pass_style_of),
        ("pattern", pattern),
        ("matches", matches_native),
        ("mustMatch", must_match_native),
        ("makeTagged", make_tagged),
        ("makeCopySet", make_copy_set_native),
        ("makeCopyBag", make_copy_bag_native),
        ("makeCopyMap", make_copy_map_native),
        ("defineExo", define_exo),
        ("defineExoKit", define_exo_kit),
        ("checkArgs", check_args),
        ("checkResult", check_result),
        ("hostPromiseId", host_promise_id),
        ("hostSend", host_send),
        ("hostGet", host_get),
        ("log", log),
        ("exportSettled", export_settled),
    ];
    for (name, native) in table {
        let engine = Rc::clone(engine);
        let function = Function::new(ctx.clone(), move |ctx: Ctx<'js>, args: Rest<JsValue<'js>>| {
            native(&engine, &ctx, &args.0)
        })?
        .with_name(name)?;
        natives.set(name, function)?;
    }
    Ok(natives)
}

fn arg<'js>(ctx: &Ctx<'js>, args: &[JsValue<'js>], index: usize) -> JsValue<'js> {
    args.get(index)
        .cloned()
        .unwrap_or_else(|| JsValue::new_undefined(ctx.clone()))
}

fn string_arg<'js>(ctx: &Ctx<'js>, args: &[JsValue<'js>], index: usize, what: &str) -> rquickjs::Result<String> {
    arg(ctx, args, index)
        .as_string()
        .and_then(|text| text.to_string().ok())
        .ok_or_else(|| throw_error(ctx, "TypeError", &format!("{what} must be a string")))
}

/// Throws a guard or pattern failure as Endo does: a `TypeError`... except
/// that Endo's `Fail` throws plain errors; both carry the same message.
fn throw_rejection<'js>(ctx: &Ctx<'js>, rejection: &Rejection) -> rquickjs::Error {
    throw_error(ctx, "Error", &rejection.message)
}

fn to_values<'js>(converter: &mut Converter<'_, 'js>, array: &JsValue<'js>) -> rquickjs::Result<Vec<Value>> {
    match converter.passable(array)? {
        Value::Array(items) => Ok(items.to_vec()),
        _ => Ok(Vec::new()),
    }
}

fn pass_style_of<'js>(engine: &Engine, ctx: &Ctx<'js>, args: &[JsValue<'js>]) -> rquickjs::Result<JsValue<'js>> {
    let mut converter = Converter::new(engine, ctx, Mode::Check)?;
    let value = converter.passable(&arg(ctx, args, 0))?;
    Ok(rquickjs::String::from_str(ctx.clone(), value.pass_style().name())?.into_value())
}

fn pattern<'js>(engine: &Engine, ctx: &Ctx<'js>, args: &[JsValue<'js>]) -> rquickjs::Result<JsValue<'js>> {
    let name = string_arg(ctx, args, 0, "pattern name")?;
    let mut converter = Converter::new(engine, ctx, Mode::Check)?;
    let list = arg(ctx, args, 1);
    converter.harden(&list)?;
    let values = to_values(&mut converter, &list)?;
    let built = build_pattern(&name, &values).map_err(|rejection| throw_rejection(ctx, &rejection))?;
    converter.js_value(&built)
}

/// `M.<name>(...args)` built by the Rust `M`, then checked as Endo checks
/// what its builders make.
fn build_pattern(name: &str, args: &[Value]) -> Result<Value, Rejection> {
    let at = |index: usize| args.get(index).cloned().unwrap_or(Value::Undefined);
    let given = |index: usize| args.get(index).filter(|value| !value.is_undefined()).cloned();
    let or_any = |index: usize| given(index).unwrap_or_else(M::any);
    let label = |index: usize, kind: &str| -> Result<Value, Rejection> {
        match at(index) {
            Value::Undefined => Ok(M::kind(kind)),
            label => Ok(Value::tagged(
                format!("match:{kind}"),
                capstan_protocol::record! { "label" => label },
            )),
        }
    };
    let built = match name {
        "any" => M::any(),
        "and" => M::and(args.to_vec()),
        "or" => M::or(args.to_vec()),
        "not" => M::not(at(0)),
        "scalar" => M::scalar(),
        "key" => M::key(),
        "pattern" => M::pattern(),
        "kind" => Value::tagged("match:kind", at(0)),
        "tagged" => M::tagged(given(0).unwrap_or_else(M::string), or_any(1)),
        "boolean" => M::boolean(),
        "number" => M::number(),
        "error" => M::error(),
        "undefined" => M::undefined(),
        "null" => M::null(),
        "bigint" => M::bigint_limited(given(0)),
        "nat" => M::nat_limited(given(0)),
        "string" => M::string_limited(given(0)),
        "symbol" => M::symbol_limited(given(0)),
        "byteArray" => M::byte_array_limited(given(0)),
        "record" => M::record_of(M::any(), M::any(), given(0)),
        "array" => M::array_of(M::any(), given(0)),
        "set" => M::set_of(M::any(), given(0)),
        "bag" => M::bag_of(M::any(), M::any(), given(0)),
        "map" => M::map_of(M::any(), M::any(), given(0)),
        "remotable" => label(0, "remotable")?,
        "promise" => label(0, "promise")?,
        "lt" => M::lt(at(0)),
        "lte" => M::lte(at(0)),
        "gte" => M::gte(at(0)),
        "gt" => M::gt(at(0)),
        "eq" => {
            check_key(&at(0))?;
            M::eq(at(0))
        }
        "neq" => {
            check_key(&at(0))?;
            M::neq(at(0))
        }
        "arrayOf" => M::array_of(or_any(0), given(1)),
        "recordOf" => M::record_of(or_any(0), or_any(1), given(2)),
        "setOf" => M::set_of(or_any(0), given(1)),
        "bagOf" => M::bag_of(or_any(0), or_any(1), given(2)),
        "mapOf" => M::map_of(or_any(0), or_any(1), given(2)),
        "containerHas" => {
            let bound = match given(1) {
                None => BigInt::from(1),
                Some(Value::BigInt(bound)) => bound.as_ref().clone(),
                Some(other) => {
                    return Err(Rejection::new(format!(
                        "containerHas bound must be a bigint: {}",
                        capstan_protocol::quote::quote(&other)
                    )));
                }
            };
            M::container_has(or_any(0), bound, given(2))
        }
        "splitArray" | "splitRecord" => {
            let mut payload = args.to_vec();
            while payload.last().is_some_and(Value::is_undefined) {
                payload.pop();
            }
            Value::tagged(format!("match:{name}"), Value::array(payload))
        }
        "opt" => M::opt(at(0)),
        "eref" => M::eref(at(0)),
        "interface" => return build_interface(args),
        "methodGuard" => return build_method_guard(args),
        "await" => {
            let guard = M::await_(at(0));
            must_match(&guard, &M::kind("guard:awaitArgGuard"), Some("awaitArgGuard"))?;
            return Ok(guard);
        }
        "raw" => return Ok(M::raw()),
        other => return Err(Rejection::new(format!("M.{other} is not supported"))),
    };
    assert_pattern(&built)?;
    Ok(built)
}

fn build_interface(args: &[Value]) -> Result<Value, Rejection> {
    let options = args.get(2).and_then(Value::as_record);
    let option = |name: &str| options.and_then(|options| options.get(name)).cloned();
    let mut payload = vec![
        ("interfaceName", args.first().cloned().unwrap_or(Value::Undefined)),
        ("methodGuards", args.get(1).cloned().unwrap_or(Value::Undefined)),
        ("defaultGuards", option("defaultGuards").unwrap_or(Value::Undefined)),
    ];
    if let Some(sloppy) = option("sloppy") {
        payload.push(("sloppy", sloppy));
    }
    let guard = Value::tagged("guard:interfaceGuard", Value::record(payload));
    InterfaceGuard::from_value(&guard)?;
    Ok(guard)
}

fn build_method_guard(args: &[Value]) -> Result<Value, Rejection> {
    let call_kind = args.first().and_then(Value::as_str).unwrap_or("sync");
    let list = |value: Option<&Value>| value.and_then(Value::as_array).map(<[Value]>::to_vec);
    let required = list(args.get(1)).unwrap_or_default();
    let optional = list(args.get(2));
    let rest = args.get(3).filter(|value| !value.is_undefined()).cloned();
    let returns = args.get(4).cloned().unwrap_or_else(M::undefined);
    let maker = if call_kind == "async" {
        M::call_when(required)
    } else {
        M::call(required)
    };
    let guard = match (optional, rest) {
        (Some(optional), Some(rest)) => maker.optional(optional).rest(rest).returns(returns),
        (Some(optional), None) => maker.optional(optional).returns(returns),
        (None, Some(rest)) => maker.rest(rest).returns(returns),
        (None, None) => maker.returns(returns),
    };
    MethodGuard::from_value(&guard)?;
    Ok(guard)
}

fn matches_native<'js>(engine: &Engine, ctx: &Ctx<'js>, args: &[JsValue<'js>]) -> rquickjs::Result<JsValue<'js>> {
    let mut converter = Converter::new(engine, ctx, Mode::Check)?;
    let specimen = converter.passable(&arg(ctx, args, 0))?;
    let pattern = converter.passable(&arg(ctx, args, 1))?;
    let outcome = matches(&specimen, &pattern).map_err(|rejection| throw_rejection(ctx, &rejection))?;
    Ok(JsValue::new_bool(ctx.clone(), outcome))
}

fn must_match_native<'js>(engine: &Engine, ctx: &Ctx<'js>, args: &[JsValue<'js>]) -> rquickjs::Result<JsValue<'js>> {
    let mut converter = Converter::new(engine, ctx, Mode::Check)?;
    let specimen = converter.passable(&arg(ctx, args, 0))?;
    let pattern = converter.passable(&arg(ctx, args, 1))?;
    let label_value = arg(ctx, args, 2);
    let label = if let Some(number) = label_value.as_number() {
        Some(format!("[{number}]"))
    } else if let Some(text) = label_value.as_string() {
        Some(text.to_string()?)
    } else {
        None
    };
    must_match(&specimen, &pattern, label.as_deref()).map_err(|rejection| throw_rejection(ctx, &rejection))?;
    Ok(JsValue::new_undefined(ctx.clone()))
}

fn make_tagged<'js>(engine: &Engine, ctx: &Ctx<'js>, args: &[JsValue<'js>]) -> rquickjs::Result<JsValue<'js>> {
    let tag = arg(ctx, args, 0);
    if !tag.is_string() {
        let quoted = engine.library(ctx)?.function("q")?.call::<_, String>((tag,))?;
        return Err(throw_error(
            ctx,
            "Error",
            &format!("The tag must be a string: {quoted}"),
        ));
    }
    let payload = arg(ctx, args, 1);
    // The payload must be passable; the tagged object keeps it as given.
    let mut converter = Converter::new(engine, ctx, Mode::Check)?;
    converter.passable(&payload)?;
    let make = converter.library().function("makeTaggedRaw")?;
    make.call((tag, payload))
}

fn make_copy_set_native<'js>(engine: &Engine, ctx: &Ctx<'js>, args: &[JsValue<'js>]) -> rquickjs::Result<JsValue<'js>> {
    let mut converter = Converter::new(engine, ctx, Mode::Check)?;
    let elements = to_values(&mut converter, &arg(ctx, args, 0))?;
    let set = make_copy_set(elements).map_err(|rejection| throw_rejection(ctx, &rejection))?;
    converter.js_value(&set)
}

fn make_copy_bag_native<'js>(engine: &Engine, ctx: &Ctx<'js>, args: &[JsValue<'js>]) -> rquickjs::Result<JsValue<'js>> {
    let mut converter = Converter::new(engine, ctx, Mode::Check)?;
    let entries = to_values(&mut converter, &arg(ctx, args, 0))?;
    let bag = make_copy_bag_from_entry_values(entries).map_err(|rejection| throw_rejection(ctx, &rejection))?;
    converter.js_value(&bag)
}

fn make_copy_map_native<'js>(engine: &Engine, ctx: &Ctx<'js>, args: &[JsValue<'js>]) -> rquickjs::Result<JsValue<'js>> {
    let mut converter = Converter::new(engine, ctx, Mode::Check)?;
    let entries = to_values(&mut converter, &arg(ctx, args, 0))?;
    let mut pairs = Vec::with_capacity(entries.len());
    for entry in entries {
        match entry.as_array() {
            Some([key, value]) => pairs.push((key.clone(), value.clone())),
            _ => {
                return Err(throw_error(
                    ctx,
                    "TypeError",
                    &format!(
                        "Each entry of a copyMap must be a [key, value] pair: {}",
                        capstan_protocol::quote::quote(&entry)
                    ),
                ));
            }
        }
    }
    let map = make_copy_map(pairs).map_err(|rejection| throw_rejection(ctx, &rejection))?;
    converter.js_value(&map)
}

/// Registers one exo class (or kit facet) and returns `[classId,
/// asyncMethods]`, where `asyncMethods` maps each `callWhen` method to the
/// argument positions it awaits.
fn register_class<'js>(
    engine: &Engine,
    ctx: &Ctx<'js>,
    tag: &str,
    guards: BTreeMap<String, MethodGuard>,
) -> rquickjs::Result<JsValue<'js>> {
    let async_methods = Object::new(ctx.clone())?;
    let mut methods = BTreeMap::new();
    for (name, guard) in guards {
        if guard.call_kind() == CallKind::Async {
            let indexes = Array::new(ctx.clone())?;
            for (position, index) in guard.await_indexes().iter().enumerate() {
                indexes.set(position, *index)?;
            }
            async_methods.set(name.as_str(), indexes)?;
        }
        let (raw_args, raw_rest, declared) = raw_positions(guard.as_value());
        methods.insert(
            name.clone(),
            ExoMethod {
                label: method_label(&name, tag),
                guard,
                raw_args,
                raw_rest,
                declared,
            },
        );
    }
    let class_id = {
        let mut classes = engine.classes.borrow_mut();
        classes.push(Rc::new(ExoClass { guards: methods }));
        classes.len() - 1
    };
    let info = Array::new(ctx.clone())?;
    info.set(0, class_id)?;
    info.set(1, async_methods)?;
    Ok(info.into_value())
}

/// Which arguments a method guard leaves raw (unconverted, unchecked).
fn raw_positions(guard: &Value) -> (Vec<usize>, bool, usize) {
    let is_raw = |value: &Value| value.as_tagged().is_some_and(|tagged| &*tagged.tag == "guard:rawGuard");
    let payload = guard.as_tagged().and_then(|tagged| tagged.payload.as_record());
    let list = |name: &str| {
        payload
            .and_then(|payload| payload.get(name))
            .and_then(Value::as_array)
            .map(<[Value]>::to_vec)
            .unwrap_or_default()
    };
    let declared: Vec<Value> = list("argGuards").into_iter().chain(list("optionalArgGuards")).collect();
    let raw_args = declared
        .iter()
        .enumerate()
        .filter(|(_, guard)| is_raw(guard))
        .map(|(index, _)| index)
        .collect();
    let raw_rest = payload
        .and_then(|payload| payload.get("restArgGuard"))
        .is_some_and(is_raw);
    (raw_args, raw_rest, declared.len())
}

fn method_names<'js>(value: &JsValue<'js>) -> rquickjs::Result<Vec<String>> {
    match value.as_array() {
        Some(array) => array.iter::<String>().collect(),
        None => Ok(Vec::new()),
    }
}

fn define_exo<'js>(engine: &Engine, ctx: &Ctx<'js>, args: &[JsValue<'js>]) -> rquickjs::Result<JsValue<'js>> {
    let tag = string_arg(ctx, args, 0, "exo tag")?;
    let interface = arg(ctx, args, 1);
    let names = method_names(&arg(ctx, args, 2))?;
    // Export mode: references in a guard must keep their identity for as
    // long as the class lives.
    let mut converter = Converter::new(engine, ctx, Mode::Export)?;
    let interface = if interface.is_undefined() {
        None
    } else {
        converter.harden(&interface)?;
        Some(converter.passable(&interface)?)
    };
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let guards = exo_method_guards(&tag, interface.as_ref(), &name_refs)
        .map_err(|rejection| throw_rejection(ctx, &rejection))?;
    register_class(engine, ctx, &tag, guards)
}

fn define_exo_kit<'js>(engine: &Engine, ctx: &Ctx<'js>, args: &[JsValue<'js>]) -> rquickjs::Result<JsValue<'js>> {
    let tag = string_arg(ctx, args, 0, "exo tag")?;
    let interface_kit = arg(ctx, args, 1);
    let specs = arg(ctx, args, 2);
    let mut facets: Vec<(String, Vec<String>)> = Vec::new();
    if let Some(specs) = specs.as_array() {
        for spec in specs.iter::<Array>() {
            let spec = spec?;
            let facet: String = spec.get(0)?;
            let names = method_names(&spec.get(1)?)?;
            facets.push((facet, names));
        }
    }
    let mut converter = Converter::new(engine, ctx, Mode::Export)?;
    let interface_kit = if interface_kit.is_undefined() {
        None
    } else {
        converter.harden(&interface_kit)?;
        Some(converter.passable(&interface_kit)?)
    };
    let facet_refs: Vec<(&str, Vec<&str>)> = facets
        .iter()
        .map(|(facet, names)| (facet.as_str(), names.iter().map(String::as_str).collect()))
        .collect();
    let kit = kit_method_guards(&tag, interface_kit.as_ref(), &facet_refs)
        .map_err(|rejection| throw_rejection(ctx, &rejection))?;
    let result = Object::new(ctx.clone())?;
    for (facet, guards) in kit {
        let info = register_class(engine, ctx, &format!("{tag} {facet}"), guards)?;
        result.set(facet.as_str(), info)?;
    }
    Ok(result.into_value())
}

fn exo_method<'js>(engine: &Engine, ctx: &Ctx<'js>, args: &[JsValue<'js>]) -> rquickjs::Result<(Rc<ExoClass>, String)> {
    let class_id = arg(ctx, args, 0)
        .as_number()
        .ok_or_else(|| throw_error(ctx, "TypeError", "exo class id expected"))?;
    let class = engine
        .class(class_id as usize)
        .ok_or_else(|| throw_error(ctx, "TypeError", "unknown exo class"))?;
    let name = string_arg(ctx, args, 1, "method name")?;
    Ok((class, name))
}

/// Converts the arguments a guard checks (raw ones stay out) and checks
/// them; used for calls made from JavaScript.
fn check_args<'js>(engine: &Engine, ctx: &Ctx<'js>, args: &[JsValue<'js>]) -> rquickjs::Result<JsValue<'js>> {
    let (class, name) = exo_method(engine, ctx, args)?;
    let method = class
        .guards
        .get(&name)
        .ok_or_else(|| throw_error(ctx, "TypeError", &format!("no guard for method {name:?}")))?;
    let call_args = arg(ctx, args, 2)
        .into_array()
        .ok_or_else(|| throw_error(ctx, "TypeError", "arguments array expected"))?;
    let mut converter = Converter::new(engine, ctx, Mode::Check)?;
    let mut values = Vec::with_capacity(call_args.len());
    for index in 0..call_args.len() {
        let raw = method.raw_args.contains(&index) || (method.raw_rest && index >= method.declared);
        if raw {
            // Unchecked; converted only so an arity message can show it.
            let value: JsValue = call_args.get(index)?;
            let shown = match converter.passable(&value) {
                Ok(shown) => shown,
                Err(rquickjs::Error::Exception) => {
                    ctx.catch();
                    Value::Undefined
                }
                Err(other) => return Err(other),
            };
            values.push(shown);
        } else {
            let value: JsValue = call_args.get(index)?;
            converter.harden(&value)?;
            values.push(converter.passable(&value)?);
        }
    }
    method
        .guard
        .check_args(&method.label, &values)
        .map_err(|rejection| throw_rejection(ctx, &rejection))?;
    Ok(JsValue::new_undefined(ctx.clone()))
}

fn check_result<'js>(engine: &Engine, ctx: &Ctx<'js>, args: &[JsValue<'js>]) -> rquickjs::Result<JsValue<'js>> {
    let (class, name) = exo_method(engine, ctx, args)?;
    let method = class
        .guards
        .get(&name)
        .ok_or_else(|| throw_error(ctx, "TypeError", &format!("no guard for method {name:?}")))?;
    if method.guard.checks_result() {
        let result = arg(ctx, args, 2);
        let mut converter = Converter::new(engine, ctx, Mode::Check)?;
        converter.harden(&result)?;
        let value = converter.passable(&result)?;
        method
            .guard
            .check_result(&method.label, &value)
            .map_err(|rejection| throw_rejection(ctx, &rejection))?;
    }
    Ok(JsValue::new_undefined(ctx.clone()))
}

/// A promise already rejected with `reason`.
fn rejected<'js>(ctx: &Ctx<'js>, reason: JsValue<'js>) -> rquickjs::Result<JsValue<'js>> {
    let (promise, _resolve, reject) = ctx.promise()?;
    reject.call::<_, JsValue>((reason,))?;
    Ok(promise.into_value())
}

/// Runs `body`; a JavaScript exception it throws becomes a rejected promise.
fn or_rejected<'js>(
    ctx: &Ctx<'js>,
    body: impl FnOnce() -> rquickjs::Result<JsValue<'js>>,
) -> rquickjs::Result<JsValue<'js>> {
    match body() {
        Err(rquickjs::Error::Exception) => {
            let thrown = ctx.catch();
            rejected(ctx, thrown)
        }
        other => other,
    }
}

/// Refuses a send or get of a turn that ran out of time or memory: once a
/// limit tripped, nothing the guest does leaves the engine.
fn refuse_if_stopped<'js>(engine: &Engine, ctx: &Ctx<'js>) -> rquickjs::Result<()> {
    match (engine.stopped)() {
        Some(stopped) => Err(throw_error(ctx, "Error", &stopped.to_string())),
        None => Ok(()),
    }
}

fn host_send<'js>(engine: &Engine, ctx: &Ctx<'js>, args: &[JsValue<'js>]) -> rquickjs::Result<JsValue<'js>> {
    refuse_if_stopped(engine, ctx)?;
    let wants_result = arg(ctx, args, 3).as_bool().unwrap_or(true);
    or_rejected(ctx, || {
        let target = host_target(engine, ctx, &arg(ctx, args, 0))?;
        let mut converter = Converter::new(engine, ctx, Mode::Export)?;
        let method_value = arg(ctx, args, 1);
        let method = if method_value.is_undefined() {
            None
        } else {
            Some(string_arg(ctx, args, 1, "method name")?)
        };
        let values = converter.passable_arguments(&arg(ctx, args, 2))?;
        match engine.host.send(&target, method.as_deref(), &values, wants_result) {
            Ok(Some(result)) if wants_result => converter.object_for_reference(&result, true),
            Ok(_) => Ok(JsValue::new_undefined(ctx.clone())),
            Err(reason) => {
                let reason = converter.js_value(&reason)?;
                rejected(ctx, reason)
            }
        }
    })
}

/// The import id of a pending host promise; undefined for anything else.
fn host_promise_id<'js>(engine: &Engine, ctx: &Ctx<'js>, args: &[JsValue<'js>]) -> rquickjs::Result<JsValue<'js>> {
    let value = arg(ctx, args, 0);
    let id = value
        .is_promise()
        .then(|| engine.tables.borrow().host_promise_at(address_of(&value)))
        .flatten();
    Ok(match id {
        Some(id) => JsValue::new_number(ctx.clone(), id as f64),
        None => JsValue::new_undefined(ctx.clone()),
    })
}

/// The host reference imported as `import_id` (what the library passes
/// for the target of a send), as a presence or a promise.
fn host_target<'js>(engine: &Engine, ctx: &Ctx<'js>, import_id: &JsValue<'js>) -> rquickjs::Result<Value> {
    let tables = engine.tables.borrow();
    let found = import_id
        .as_number()
        .filter(|id| *id >= 0.0)
        .and_then(|id| tables.import_by_id.get(&(id as u64)))
        .and_then(|reference| {
            tables
                .imports
                .get(reference)
                .map(|import| (reference, import.is_promise))
        });
    match found {
        Some((reference, true)) => Ok(Value::Promise(reference.clone())),
        Some((reference, false)) => Ok(Value::Remotable(reference.clone())),
        // A released import: the guest still holds the object but the
        // host forgot the reference, so it is refused (as in conversion).
        None => Err(throw_error(ctx, "Error", "This reference was released by the host")),
    }
}

fn host_get<'js>(engine: &Engine, ctx: &Ctx<'js>, args: &[JsValue<'js>]) -> rquickjs::Result<JsValue<'js>> {
    refuse_if_stopped(engine, ctx)?;
    or_rejected(ctx, || {
        let mut converter = Converter::new(engine, ctx, Mode::Export)?;
        let target = converter.passable(&arg(ctx, args, 0))?;
        let property = string_arg(ctx, args, 1, "property name")?;
        match engine.host.get(&target, &property) {
            Ok(result) => converter.object_for_reference(&result, true),
            Err(reason) => {
                let reason = converter.js_value(&reason)?;
                rejected(ctx, reason)
            }
        }
    })
}

fn log<'js>(engine: &Engine, ctx: &Ctx<'js>, args: &[JsValue<'js>]) -> rquickjs::Result<JsValue<'js>> {
    let level = string_arg(ctx, args, 0, "log level")?;
    let text = string_arg(ctx, args, 1, "log text")?;
    engine.host.log(LogLevel::from_name(&level), &text);
    Ok(JsValue::new_undefined(ctx.clone()))
}

/// An exported promise settled: tell the host.
fn export_settled<'js>(engine: &Engine, ctx: &Ctx<'js>, args: &[JsValue<'js>]) -> rquickjs::Result<JsValue<'js>> {
    let id = arg(ctx, args, 0).as_number().unwrap_or(-1.0);
    let fulfilled = arg(ctx, args, 1).as_bool().unwrap_or(false);
    let reference = {
        let tables = engine.tables.borrow();
        tables.exports.get(&(id as u64)).map(|export| export.reference.clone())
    };
    let Some(reference) = reference else {
        return Ok(JsValue::new_undefined(ctx.clone()));
    };
    // Settled by a turn that ran out of time or memory: whatever the guest
    // settled it with, the host learns that (and at once, so that a failed
    // conversion cannot leave it waiting).
    if let Some(stopped) = (engine.stopped)() {
        engine.host.promise_settled(&reference, &Err(stopped.passable()));
        return Ok(JsValue::new_undefined(ctx.clone()));
    }
    let value = arg(ctx, args, 2);
    let settlement: Settlement = if fulfilled {
        let mut converter = Converter::new(engine, ctx, Mode::Export)?;
        let converted = converter.harden(&value).and_then(|()| converter.passable(&value));
        match converted {
            Ok(value) => Ok(value),
            Err(rquickjs::Error::Exception) => {
                let thrown = ctx.catch();
                Err(reason_to_value(engine, ctx, &thrown))
            }
            Err(other) => return Err(other),
        }
    } else {
        Err(reason_to_value(engine, ctx, &value))
    };
    engine.host.promise_settled(&reference, &settlement);
    Ok(JsValue::new_undefined(ctx.clone()))
}
