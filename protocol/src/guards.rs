//! Interface and method guards, and the checker that validates a method
//! call's arguments and result before and after the method runs.
//!
//! Guards are passable tagged values (`guard:interfaceGuard`,
//! `guard:methodGuard`, `guard:awaitArgGuard`, `guard:rawGuard`) built with
//! [`M`] and parsed into [`InterfaceGuard`]/[`MethodGuard`], which precompute
//! what each call needs. Messages follow `@endo/exo`:
//! `In "incr" method of (UpCounter): arg 0?: string "foo" - Must be a number`.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::patterns::{
    M, check_items_depth, check_specimen_depth, must_match, must_match_bounded_pattern, pattern_within_bounds,
};
use crate::quote::{json_string, quote};
use crate::record;
use crate::rejection::Rejection;
use crate::value::Value;

/// Stands in for an argument a raw guard lets through unchecked, so that
/// matching never looks at it.
const REDACTED_RAW_ARG: &str = "<redacted raw arg>";

/// What an interface does with methods it has no guard for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DefaultGuards {
    /// Every method must be guarded.
    None,
    /// Unguarded methods accept and return any passable.
    Passable,
    /// Unguarded methods accept and return anything, unchecked.
    Raw,
}

/// Whether a method is called synchronously or awaits its arguments and
/// returns a promise (`M.callWhen`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallKind {
    Sync,
    Async,
}

impl CallKind {
    fn name(self) -> &'static str {
        match self {
            CallKind::Sync => "sync",
            CallKind::Async => "async",
        }
    }
}

impl M {
    /// `M.interface(name, methodGuards, {defaultGuards})`.
    pub fn interface<K: Into<Arc<str>>>(
        name: &str,
        method_guards: impl IntoIterator<Item = (K, Value)>,
        default_guards: DefaultGuards,
    ) -> Value {
        let default_guards = match default_guards {
            DefaultGuards::None => Value::Undefined,
            DefaultGuards::Passable => Value::from("passable"),
            DefaultGuards::Raw => Value::from("raw"),
        };
        Value::tagged(
            "guard:interfaceGuard",
            record! {
                "interfaceName" => name,
                "methodGuards" => Value::record(method_guards),
                "defaultGuards" => default_guards,
            },
        )
    }

    /// `M.call(...argGuards)`: a synchronous method guard maker.
    pub fn call(arg_guards: impl IntoIterator<Item = Value>) -> MethodGuardMaker {
        MethodGuardMaker::new(CallKind::Sync, arg_guards)
    }

    /// `M.callWhen(...argGuards)`: arguments marked with [`M::await_`] are
    /// awaited before checking, and the method returns a promise.
    pub fn call_when(arg_guards: impl IntoIterator<Item = Value>) -> MethodGuardMaker {
        MethodGuardMaker::new(CallKind::Async, arg_guards)
    }

    /// `M.await(pattern)`: only inside `callWhen` arguments.
    pub fn await_(pattern: Value) -> Value {
        Value::tagged("guard:awaitArgGuard", record! { "argGuard" => pattern })
    }

    /// `M.raw()`: the argument or result passes unchecked.
    pub fn raw() -> Value {
        Value::tagged("guard:rawGuard", Value::record(Vec::<(&str, Value)>::new()))
    }
}

/// Builds a method guard. Optional guards come before a rest guard, and
/// each at most once, which the three maker types enforce.
#[derive(Clone)]
pub struct MethodGuardMaker {
    call_kind: CallKind,
    arg_guards: Vec<Value>,
}

/// A method guard maker that has its optional arguments.
#[derive(Clone)]
pub struct MethodGuardMakerWithOptional {
    call_kind: CallKind,
    arg_guards: Vec<Value>,
    optional: Vec<Value>,
}

/// A method guard maker that has its rest guard.
#[derive(Clone)]
pub struct MethodGuardMakerWithRest {
    call_kind: CallKind,
    arg_guards: Vec<Value>,
    optional: Option<Vec<Value>>,
    rest: Value,
}

fn method_guard(
    call_kind: CallKind,
    args: Vec<Value>,
    optional: Option<Vec<Value>>,
    rest: Option<Value>,
    returns: Value,
) -> Value {
    Value::tagged(
        "guard:methodGuard",
        record! {
            "callKind" => call_kind.name(),
            "argGuards" => args,
            "optionalArgGuards" => optional.map(Value::from),
            "restArgGuard" => rest,
            "returnGuard" => returns,
        },
    )
}

impl MethodGuardMaker {
    fn new(call_kind: CallKind, arg_guards: impl IntoIterator<Item = Value>) -> MethodGuardMaker {
        MethodGuardMaker {
            call_kind,
            arg_guards: arg_guards.into_iter().collect(),
        }
    }

    pub fn optional(self, guards: impl IntoIterator<Item = Value>) -> MethodGuardMakerWithOptional {
        MethodGuardMakerWithOptional {
            call_kind: self.call_kind,
            arg_guards: self.arg_guards,
            optional: guards.into_iter().collect(),
        }
    }

    pub fn rest(self, guard: Value) -> MethodGuardMakerWithRest {
        MethodGuardMakerWithRest {
            call_kind: self.call_kind,
            arg_guards: self.arg_guards,
            optional: None,
            rest: guard,
        }
    }

    pub fn returns(self, guard: Value) -> Value {
        method_guard(self.call_kind, self.arg_guards, None, None, guard)
    }

    /// Returns `undefined`, the default.
    pub fn returns_undefined(self) -> Value {
        self.returns(M::undefined())
    }
}

impl MethodGuardMakerWithOptional {
    pub fn rest(self, guard: Value) -> MethodGuardMakerWithRest {
        MethodGuardMakerWithRest {
            call_kind: self.call_kind,
            arg_guards: self.arg_guards,
            optional: Some(self.optional),
            rest: guard,
        }
    }

    pub fn returns(self, guard: Value) -> Value {
        method_guard(self.call_kind, self.arg_guards, Some(self.optional), None, guard)
    }

    pub fn returns_undefined(self) -> Value {
        self.returns(M::undefined())
    }
}

impl MethodGuardMakerWithRest {
    pub fn returns(self, guard: Value) -> Value {
        method_guard(self.call_kind, self.arg_guards, self.optional, Some(self.rest), guard)
    }

    pub fn returns_undefined(self) -> Value {
        self.returns(M::undefined())
    }
}

fn is_tagged(value: &Value, tag: &str) -> bool {
    value.as_tagged().is_some_and(|tagged| &*tagged.tag == tag)
}

fn is_raw_guard(value: &Value) -> bool {
    is_tagged(value, "guard:rawGuard")
}

fn await_payload(value: &Value) -> Option<&Value> {
    value
        .as_tagged()
        .filter(|tagged| &*tagged.tag == "guard:awaitArgGuard")
        .and_then(|tagged| tagged.payload.as_record())
        .and_then(|payload| payload.get("argGuard"))
}

/// A parsed method guard with what each call needs precomputed.
#[derive(Clone)]
pub struct MethodGuard {
    guard: Value,
    call_kind: CallKind,
    /// Argument positions whose values are awaited before checking.
    await_indexes: Vec<usize>,
    /// Number of required plus optional arguments.
    declared_len: usize,
    has_rest: bool,
    rest_is_raw: bool,
    redacted_indexes: Vec<usize>,
    params_pattern: Value,
    return_guard: Value,
    /// Both patterns are within the depth bound, so calls skip that check.
    patterns_within_bounds: bool,
    /// No declared arguments and a rest of `M.any()`: any arguments within
    /// the depth bound match, so they are not matched one by one.
    args_accept_any: bool,
    /// A result guard of `M.any()`: likewise.
    result_accepts_any: bool,
}

impl MethodGuard {
    /// Parses and checks a `guard:methodGuard` value.
    pub fn from_value(guard: &Value) -> Result<MethodGuard, Rejection> {
        must_match(guard, &M::kind("guard:methodGuard"), Some("methodGuard"))?;
        let payload = guard
            .as_tagged()
            .and_then(|tagged| tagged.payload.as_record())
            .ok_or_else(|| Rejection::new("methodGuard: payload must be a record"))?;
        let field = |name: &str| payload.get(name).cloned().unwrap_or(Value::Undefined);
        let call_kind = if field("callKind").as_str() == Some("async") {
            CallKind::Async
        } else {
            CallKind::Sync
        };
        let required: Vec<Value> = field("argGuards").as_array().map(<[Value]>::to_vec).unwrap_or_default();
        let optional: Vec<Value> = field("optionalArgGuards")
            .as_array()
            .map(<[Value]>::to_vec)
            .unwrap_or_default();
        let rest = field("restArgGuard");
        if await_payload(&rest).is_some() {
            return Err(Rejection::new(format!(
                "Rest args may not be awaited: {}",
                quote(&rest)
            )));
        }

        // Awaited arguments are checked against their inner pattern.
        let mut all: Vec<Value> = required.iter().chain(optional.iter()).cloned().collect();
        let mut await_indexes = Vec::new();
        for (index, arg_guard) in all.iter_mut().enumerate() {
            if let Some(inner) = await_payload(arg_guard) {
                *arg_guard = inner.clone();
                await_indexes.push(index);
            }
        }
        // Raw arguments are replaced by a marker and matched against it.
        let mut redacted_indexes = Vec::new();
        for (index, arg_guard) in all.iter_mut().enumerate() {
            if is_raw_guard(arg_guard) {
                *arg_guard = Value::from(REDACTED_RAW_ARG);
                redacted_indexes.push(index);
            }
        }
        let rest_is_raw = is_raw_guard(&rest);
        let matchable_rest = if rest_is_raw {
            M::array_of(Value::from(REDACTED_RAW_ARG), None)
        } else {
            rest.clone()
        };
        let (required_part, optional_part) = all.split_at(required.len().min(all.len()));
        // Endo always passes the optional list, so a missing rest means any.
        let params_pattern = M::split_array(
            required_part.to_vec(),
            Some(optional_part.to_vec()),
            if matchable_rest.is_undefined() {
                None
            } else {
                Some(matchable_rest)
            },
        );
        let return_guard = field("returnGuard");
        let patterns_within_bounds = pattern_within_bounds(&params_pattern) && pattern_within_bounds(&return_guard);
        let any = M::any();
        let args_accept_any = all.is_empty() && !rest_is_raw && rest.same_as(&any);
        let result_accepts_any = return_guard.same_as(&any);
        Ok(MethodGuard {
            guard: guard.clone(),
            call_kind,
            await_indexes,
            declared_len: all.len(),
            has_rest: !rest.is_undefined(),
            rest_is_raw,
            redacted_indexes,
            params_pattern,
            return_guard,
            patterns_within_bounds,
            args_accept_any,
            result_accepts_any,
        })
    }

    /// The guard as a passable, for introspection.
    pub fn as_value(&self) -> &Value {
        &self.guard
    }

    pub fn call_kind(&self) -> CallKind {
        self.call_kind
    }

    /// The argument positions to await before [`MethodGuard::check_args`]
    /// (only for `callWhen` guards with `M.await` arguments).
    pub fn await_indexes(&self) -> &[usize] {
        &self.await_indexes
    }

    /// Whether the result is checked at all (`M.raw()` results are not).
    pub fn checks_result(&self) -> bool {
        !is_raw_guard(&self.return_guard)
    }

    /// Checks a call's arguments (already awaited where the guard says so).
    /// `label` is the method's label from [`method_label`].
    pub fn check_args(&self, label: &str, args: &[Value]) -> Result<(), Rejection> {
        if self.args_accept_any {
            return check_items_depth(args);
        }
        let needs_copy = (self.rest_is_raw && args.len() > self.declared_len)
            || self.redacted_indexes.first().is_some_and(|first| *first < args.len());
        if needs_copy {
            let mut matchable: Vec<Value> = args.to_vec();
            if self.rest_is_raw {
                for arg in matchable.iter_mut().skip(self.declared_len) {
                    *arg = Value::from(REDACTED_RAW_ARG);
                }
            }
            for index in &self.redacted_indexes {
                if let Some(arg) = matchable.get_mut(*index) {
                    *arg = Value::from(REDACTED_RAW_ARG);
                }
            }
            self.must_match(&Value::from(matchable), &self.params_pattern, || label.to_string())?;
        } else {
            self.must_match(&Value::array(args.iter().cloned()), &self.params_pattern, || {
                label.to_string()
            })?;
        }
        if !self.has_rest && args.len() > self.declared_len {
            return Err(Rejection::new(format!(
                "{} accepts at most {} arguments, not {}: {}",
                json_string(label),
                self.declared_len,
                args.len(),
                quote(&Value::array(args.iter().cloned()))
            )));
        }
        Ok(())
    }

    /// Checks a method's result (the fulfilment, for `callWhen`).
    pub fn check_result(&self, label: &str, result: &Value) -> Result<(), Rejection> {
        if !self.checks_result() {
            return Ok(());
        }
        if self.result_accepts_any {
            return check_specimen_depth(result);
        }
        self.must_match(result, &self.return_guard, || format!("{label}: result"))
    }

    /// Matches one of this guard's patterns, skipping the pattern's depth
    /// check when it was found within bounds at construction.
    fn must_match(&self, specimen: &Value, pattern: &Value, label: impl FnOnce() -> String) -> Result<(), Rejection> {
        if self.patterns_within_bounds {
            must_match_bounded_pattern(specimen, pattern, label)
        } else {
            must_match(specimen, pattern, Some(&label()))
        }
    }
}

/// The label Endo gives a method in messages: `In "incr" method of (UpCounter)`.
pub fn method_label(method: &str, tag: &str) -> String {
    format!("In {} method of ({tag})", json_string(method))
}

/// The method every exo answers with its interface guard.
pub const GET_INTERFACE_GUARD: &str = "__getInterfaceGuard__";
/// The method every exo answers with its method names.
pub const GET_METHOD_NAMES: &str = "__getMethodNames__";

/// A parsed interface guard.
#[derive(Clone)]
pub struct InterfaceGuard {
    guard: Value,
    name: String,
    methods: BTreeMap<String, MethodGuard>,
    default_guards: DefaultGuards,
}

impl InterfaceGuard {
    /// Parses and checks a `guard:interfaceGuard` value.
    pub fn from_value(guard: &Value) -> Result<InterfaceGuard, Rejection> {
        must_match(guard, &M::kind("guard:interfaceGuard"), Some("interfaceGuard"))?;
        let payload = guard
            .as_tagged()
            .and_then(|tagged| tagged.payload.as_record())
            .ok_or_else(|| Rejection::new("interfaceGuard: payload must be a record"))?;
        let name = payload
            .get("interfaceName")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let sloppy = matches!(payload.get("sloppy"), Some(Value::Boolean(true)));
        let default_guards = match payload.get("defaultGuards").and_then(Value::as_str) {
            Some("passable") => DefaultGuards::Passable,
            Some("raw") => DefaultGuards::Raw,
            _ if sloppy => DefaultGuards::Passable,
            _ => DefaultGuards::None,
        };
        let mut methods = BTreeMap::new();
        if let Some(method_guards) = payload.get("methodGuards").and_then(Value::as_record) {
            for (method, method_guard) in method_guards.iter() {
                methods.insert(method.to_string(), MethodGuard::from_value(method_guard)?);
            }
        }
        Ok(InterfaceGuard {
            guard: guard.clone(),
            name,
            methods,
            default_guards,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn as_value(&self) -> &Value {
        &self.guard
    }

    pub fn default_guards(&self) -> DefaultGuards {
        self.default_guards
    }

    pub fn method(&self, name: &str) -> Option<&MethodGuard> {
        self.methods.get(name)
    }

    /// Checks an implementation's method names against the interface, as
    /// an exo definition does, and returns the guard for every method.
    pub fn guards_for(&self, tag: &str, method_names: &[&str]) -> Result<BTreeMap<String, MethodGuard>, Rejection> {
        let unimplemented: Vec<Value> = self
            .methods
            .keys()
            .filter(|name| !method_names.contains(&name.as_str()))
            .map(|name| Value::from(name.as_str()))
            .collect();
        if !unimplemented.is_empty() {
            return Err(Rejection::new(format!(
                "methods {} not implemented by {}",
                quote(&Value::from(unimplemented)),
                json_string(tag)
            )));
        }
        if self.default_guards == DefaultGuards::None {
            let mut sorted_names = method_names.to_vec();
            sorted_names.sort_by(|a, b| crate::strings::compare_utf16(a, b));
            let unguarded: Vec<Value> = sorted_names
                .iter()
                .filter(|name| !self.methods.contains_key(**name))
                .map(|name| Value::from(*name))
                .collect();
            if !unguarded.is_empty() {
                return Err(Rejection::new(format!(
                    "methods {} not guarded by {}",
                    quote(&Value::from(unguarded)),
                    json_string(&self.name)
                )));
            }
        }
        let mut guards = BTreeMap::new();
        for name in method_names {
            let guard = match self.methods.get(*name) {
                Some(guard) => guard.clone(),
                None => default_method_guard(self.default_guards)?,
            };
            guards.insert((*name).to_string(), guard);
        }
        Ok(guards)
    }
}

/// The guards for an exo's methods, checked as Endo checks an exo class
/// definition. Without an interface, every method takes and returns any
/// passable.
pub fn exo_method_guards(
    tag: &str,
    interface: Option<&Value>,
    method_names: &[&str],
) -> Result<BTreeMap<String, MethodGuard>, Rejection> {
    match interface {
        Some(interface) => InterfaceGuard::from_value(interface)?.guards_for(tag, method_names),
        None => {
            let guard = passable_method_guard()?;
            Ok(method_names
                .iter()
                .map(|name| ((*name).to_string(), guard.clone()))
                .collect())
        }
    }
}

/// The guards for every facet of an exo kit, checked as Endo checks a kit
/// definition. Facet `f` of kit `tag` is named `"{tag} {f}"` in messages.
pub fn kit_method_guards(
    tag: &str,
    interface_kit: Option<&Value>,
    facets: &[(&str, Vec<&str>)],
) -> Result<BTreeMap<String, BTreeMap<String, MethodGuard>>, Rejection> {
    let mut facet_names: Vec<&str> = facets.iter().map(|(name, _)| *name).collect();
    facet_names.sort_by(|a, b| crate::strings::compare_utf16(a, b));
    if facet_names.len() <= 1 {
        return Err(Rejection::new("A multi-facet object must have multiple facets"));
    }
    let interfaces = match interface_kit {
        Some(kit) => Some(
            kit.as_record()
                .ok_or_else(|| Rejection::new(format!("An interface guard kit must be a record: {}", quote(kit))))?,
        ),
        None => None,
    };
    if let Some(interfaces) = interfaces {
        let names = |list: Vec<&str>| Value::array(list.into_iter().map(Value::from));
        let unguarded: Vec<&str> = facet_names
            .iter()
            .copied()
            .filter(|f| !interfaces.contains(f))
            .collect();
        if !unguarded.is_empty() {
            return Err(Rejection::new(format!(
                "Interfaces {} not implemented by {}",
                quote(&names(unguarded)),
                json_string(tag)
            )));
        }
        let extra: Vec<&str> = interfaces
            .names()
            .map(|n| &**n)
            .filter(|n| !facet_names.contains(n))
            .collect();
        if !extra.is_empty() {
            return Err(Rejection::new(format!(
                "Facets {} of {} not guarded by interfaces",
                quote(&names(extra)),
                json_string(tag)
            )));
        }
    }
    let mut kit = BTreeMap::new();
    for (facet, methods) in facets {
        let interface = interfaces.and_then(|interfaces| interfaces.get(facet));
        kit.insert(
            (*facet).to_string(),
            exo_method_guards(&format!("{tag} {facet}"), interface, methods)?,
        );
    }
    Ok(kit)
}

/// The guard an unguarded method gets: any passable in and out, or raw.
pub fn default_method_guard(default_guards: DefaultGuards) -> Result<MethodGuard, Rejection> {
    let guard = match default_guards {
        DefaultGuards::Raw => M::call([]).rest(M::raw()).returns(M::raw()),
        _ => M::call([]).rest(M::any()).returns(M::any()),
    };
    MethodGuard::from_value(&guard)
}

/// The interface every exo's `__getInterfaceGuard__` is checked with.
pub fn passable_method_guard() -> Result<MethodGuard, Rejection> {
    default_method_guard(DefaultGuards::Passable)
}

/// Sorted method names as `__getMethodNames__` returns them.
pub fn method_names_value<'a>(names: impl IntoIterator<Item = &'a str>) -> Value {
    let mut names: Vec<&str> = names.into_iter().collect();
    names.sort_by(|a, b| crate::strings::compare_utf16(a, b));
    names.dedup();
    Value::array(names.into_iter().map(Value::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An array nested `depth` deep around a number.
    fn nested(depth: usize) -> Value {
        (0..depth).fold(Value::from(1), |inner, _| Value::array([inner]))
    }

    #[test]
    fn a_guard_of_any_arguments_and_result_checks_only_depth_and_says_what_matching_says() {
        let any = MethodGuard::from_value(&M::call([]).rest(M::any()).returns(M::any())).expect("valid");
        assert!(any.args_accept_any && any.result_accepts_any);
        let label = method_label("f", "T");
        let slow =
            |specimen: &Value, pattern: &Value| must_match(specimen, pattern, Some(&label)).map_err(|r| r.message);
        for depth in [0, 1, 62, 63, 64, 65, 100] {
            let args = [Value::from("x"), nested(depth)];
            assert_eq!(
                any.check_args(&label, &args).map_err(|r| r.message),
                slow(&Value::array(args.iter().cloned()), &any.params_pattern),
                "args at depth {depth}"
            );
            assert_eq!(
                any.check_result(&label, &nested(depth)).map_err(|r| r.message),
                slow(&nested(depth), &any.return_guard),
                "result at depth {depth}"
            );
        }
        assert!(any.check_args(&label, &[nested(64)]).is_err());
        assert!(any.check_args(&label, &[nested(63)]).is_ok());
        let typed = MethodGuard::from_value(&M::call([M::number()]).returns(M::string())).expect("valid");
        assert!(!typed.args_accept_any && !typed.result_accepts_any);
    }

    #[test]
    fn spec_messages() {
        let counter = InterfaceGuard::from_value(&M::interface(
            "UpCounter",
            [("incr", M::call([]).optional([M::number()]).returns(M::number()))],
            DefaultGuards::None,
        ))
        .expect("valid guard");
        let incr = counter.method("incr").expect("incr guarded");
        let label = method_label("incr", "UpCounter");
        assert_eq!(
            incr.check_args(&label, &[Value::from("foo")]).map_err(|r| r.message),
            Err("In \"incr\" method of (UpCounter): arg 0?: string \"foo\" - Must be a number".to_string())
        );
        assert!(incr.check_args(&label, &[]).is_ok());
        assert!(incr.check_args(&label, &[Value::Undefined]).is_ok());

        let point = MethodGuard::from_value(&M::call([]).returns(M::gte(Value::from(0)))).expect("valid");
        assert_eq!(
            point
                .check_result(&method_label("getX", "ExoPoint"), &Value::from(-3))
                .map_err(|r| r.message),
            Err("In \"getX\" method of (ExoPoint): result: -3 - Must be >= 0".to_string())
        );

        let no_extra = MethodGuard::from_value(&M::call([]).returns_undefined()).expect("valid");
        assert_eq!(
            no_extra
                .check_args(&method_label("foo", "NoExtraArgs"), &[Value::from("an extra arg")])
                .map_err(|r| r.message),
            Err(
                "\"In \\\"foo\\\" method of (NoExtraArgs)\" accepts at most 0 arguments, not 1: [\"an extra arg\"]"
                    .to_string()
            )
        );

        let greeter = InterfaceGuard::from_value(&M::interface(
            "greeter",
            Vec::<(&str, Value)>::new(),
            DefaultGuards::None,
        ))
        .expect("valid");
        assert_eq!(
            greeter.guards_for("greeter", &["sayHello"]).err().map(|r| r.message),
            Some("methods [\"sayHello\"] not guarded by \"greeter\"".to_string())
        );
    }
}
