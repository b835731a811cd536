//! Compartments: a fresh QuickJS context per evaluation, tamed and frozen
//! before any guest code runs, with only the standard ECMAScript globals,
//! the guest globals and the endowments.
//!
//! Taming (as SES does): `Function.prototype.constructor` and its async and
//! generator siblings throw, so no function leads to another realm's
//! global; `eval` and `Function` compile strict code only, so no sloppy
//! function can see its realm's global as `this`; every intrinsic
//! reachable from the global object (and the hidden ones) is hardened.

use rquickjs::context::EvalOptions;
use rquickjs::function::{Opt, Rest};
use rquickjs::{Array, Coerced, Ctx, Function, Value as JsValue};

use crate::engine::Engine;

/// Intrinsics that the global object does not reach by property walks.
/// The first four are the prototypes whose `constructor` is tamed.
const HIDDEN_INTRINSICS: &str = r#"
(() => {
  'use strict';
  const proto = Object.getPrototypeOf;
  const hidden = [
    Function.prototype,
    proto(async function () {}),
    proto(function* () {}),
    proto(async function* () {}),
    proto(Int8Array),
    proto([][Symbol.iterator]()),
    proto(new Map()[Symbol.iterator]()),
    proto(new Set()[Symbol.iterator]()),
    proto(''[Symbol.iterator]()),
    proto(/a/[Symbol.matchAll]('')),
    proto((function* () {})()),
    proto((async function* () {})()),
    Object.getOwnPropertyDescriptor(Function.prototype, 'caller')?.get,
  ];
  try { hidden.push(proto([].values().map(x => x))); } catch {}
  try { hidden.push(proto(Iterator.from({ next() { return { done: true }; } }))); } catch {}
  return hidden.filter(x => x !== undefined);
})()
"#;

fn strict_options() -> EvalOptions {
    let mut options = EvalOptions::default();
    options.global = true;
    options.strict = true;
    options
}

/// Compiles and runs `source` as strict global code in `ctx`'s realm.
pub(crate) fn eval_strict<'js>(ctx: &Ctx<'js>, source: &str) -> rquickjs::Result<JsValue<'js>> {
    ctx.eval_with_options(source, strict_options())
}

/// What a compartment's lockdown takes away beyond the usual taming: a
/// vat's clock and randomness, unless granted (see `globals.rs`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Taming {
    pub date: bool,
    pub random: bool,
}

/// Tames and freezes the realm of `ctx` and installs the guest globals.
pub(crate) fn lockdown<'js>(ctx: &Ctx<'js>, engine: &Engine, taming: Taming) -> rquickjs::Result<()> {
    let hidden: Array = ctx.eval(HIDDEN_INTRINSICS)?;
    let strict_eval = Function::new(ctx.clone(), |ctx: Ctx<'js>, source: Opt<JsValue<'js>>| match source.0 {
        Some(source) if source.is_string() => {
            let text: Coerced<String> = source.get()?;
            eval_strict(&ctx, &text.0)
        }
        Some(other) => Ok(other),
        None => Ok(JsValue::new_undefined(ctx)),
    })?
    .with_name("eval")?;
    let strict_function = Function::new(ctx.clone(), |ctx: Ctx<'js>, args: Rest<Coerced<String>>| {
        let mut parts: Vec<String> = args.0.into_iter().map(|part| part.0).collect();
        let body = parts.pop().unwrap_or_default();
        let source = format!("(function anonymous({}\n) {{\n{body}\n}})", parts.join(","));
        eval_strict(&ctx, &source)
    })?
    .with_name("Function")?
    .with_constructor(true);
    let library = engine.library(ctx)?;
    let lockdown_realm = library.function("lockdownRealm")?;
    lockdown_realm.call::<_, JsValue>((
        ctx.globals(),
        hidden,
        strict_eval,
        strict_function,
        taming.date,
        taming.random,
    ))?;
    Ok(())
}
