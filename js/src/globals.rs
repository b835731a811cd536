//! Vat globals: the named globals a vat may be granted beyond the standard
//! confined set (ocap-kernel's `VatConfig.globals`), checked against
//! [`VAT_GLOBAL_NAMES`], and installed into the vat's compartment before
//! its program is evaluated.
//!
//! Without a grant a vat's compartment is tamed as SES tames one: `Date`
//! answers no clock (`Date.now()` is `NaN`, `new Date()` is an invalid
//! date) and `Math.random()` throws; `"Date"` and `"Math"` leave them as
//! they are. The other globals are written in JavaScript in the vat's own
//! realm (`globals.js`, so `instanceof` works in vat code), over a few
//! natives made in that realm: UTF-8 coding, URL parsing (the `url`
//! crate, WHATWG rules) and random bytes (the operating system's
//! `getrandom`).
//!
//! Timers and `fetch` reach out through powers the host hands in
//! ([`VatGlobals::powers`]): `timer`, an object whose `delay(ms)`
//! settles later, and `fetch`, an object whose `fetch(request)` makes the
//! request (the node checks the vat's network allow-list there). A timer
//! callback runs in its own turn, under the runtime's time budget, and
//! timers go when the runtime goes.

use std::collections::BTreeSet;
use std::rc::Rc;

use capstan_protocol::Value;
use rquickjs::function::Rest;
use rquickjs::{ArrayBuffer, Ctx, Function, Object, Value as JsValue};

use crate::convert::{Converter, Mode, throw_error};
use crate::engine::Engine;
use crate::error::GuestError;

pub use capstan_protocol::vat_globals::VAT_GLOBAL_NAMES;

/// The most bytes one `crypto.getRandomValues` call may ask for (the Web
/// Crypto limit).
const MAX_RANDOM_BYTES: usize = 65_536;

/// The longest URL the `URL` global parses.
const MAX_URL_BYTES: usize = 64 * 1024;

const GLOBALS_SOURCE: &str = include_str!("globals.js");

/// What a vat is granted beyond the standard confined globals.
#[derive(Clone, Debug, Default)]
pub struct VatGlobals {
    names: BTreeSet<String>,
    /// Host references the granted globals use: `timer` (for the timer
    /// functions) and `fetch` (for `fetch`). A grant whose power is
    /// missing fails when used, with an error saying so.
    pub powers: Vec<(String, Value)>,
}

impl VatGlobals {
    /// Checks `names` against [`VAT_GLOBAL_NAMES`] (repeats count once).
    pub fn new<I, S>(names: I) -> Result<VatGlobals, GuestError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut granted = BTreeSet::new();
        for name in names {
            let name = name.as_ref();
            if !VAT_GLOBAL_NAMES.contains(&name) {
                return Err(GuestError::UnknownGlobal(name.chars().take(64).collect()));
            }
            granted.insert(name.to_string());
        }
        Ok(VatGlobals {
            names: granted,
            powers: Vec::new(),
        })
    }

    /// Adds a power the granted globals use.
    pub fn with_power(mut self, name: &str, power: Value) -> VatGlobals {
        self.powers.push((name.to_string(), power));
        self
    }

    pub fn grants(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    /// Whether any timer function is granted (the host then needs to hand
    /// in a `timer` power).
    pub fn wants_timer(&self) -> bool {
        ["setTimeout", "setInterval"].iter().any(|name| self.grants(name))
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }
}

/// Installs the granted globals on the global object of `ctx` (a fresh
/// compartment, before guest code runs).
pub(crate) fn install<'js>(ctx: &Ctx<'js>, engine: &Rc<Engine>, globals: &VatGlobals) -> rquickjs::Result<()> {
    if globals.names.is_empty() {
        return Ok(());
    }
    let natives = Object::new(ctx.clone())?;
    natives.set("textEncode", Function::new(ctx.clone(), text_encode)?)?;
    natives.set("textDecode", Function::new(ctx.clone(), text_decode)?)?;
    natives.set("parseUrl", Function::new(ctx.clone(), parse_url)?)?;
    natives.set("randomBytes", Function::new(ctx.clone(), random_bytes)?)?;
    let names = rquickjs::Array::new(ctx.clone())?;
    for (index, name) in globals.names().enumerate() {
        names.set(index, name)?;
    }
    let mut converter = Converter::new(engine, ctx, Mode::Export)?;
    let powers = Object::new(ctx.clone())?;
    for (name, power) in &globals.powers {
        powers.set(name.as_str(), converter.js_value(power)?)?;
    }
    let factory: Function = crate::realm::eval_strict(ctx, GLOBALS_SOURCE)?.get()?;
    factory.call::<_, JsValue>((ctx.globals(), names, natives, powers))?;
    Ok(())
}

fn first<'js>(ctx: &Ctx<'js>, args: &Rest<JsValue<'js>>, index: usize) -> JsValue<'js> {
    args.0
        .get(index)
        .cloned()
        .unwrap_or_else(|| JsValue::new_undefined(ctx.clone()))
}

/// `textEncode(string)`: its UTF-8 bytes (lone surrogates become U+FFFD,
/// as `TextEncoder` does).
fn text_encode<'js>(ctx: Ctx<'js>, args: Rest<JsValue<'js>>) -> rquickjs::Result<ArrayBuffer<'js>> {
    let value = first(&ctx, &args, 0);
    let text = match value.as_string() {
        Some(text) => text.to_string()?,
        None => return Err(throw_error(&ctx, "TypeError", "textEncode needs a string")),
    };
    ArrayBuffer::new_copy(ctx, text.as_bytes())
}

/// `textDecode(buffer, fatal)`: the text of UTF-8 bytes; bad sequences
/// become U+FFFD, or throw when `fatal`.
fn text_decode<'js>(ctx: Ctx<'js>, args: Rest<JsValue<'js>>) -> rquickjs::Result<String> {
    let buffer = first(&ctx, &args, 0)
        .as_object()
        .and_then(|object| ArrayBuffer::from_object(object.clone()))
        .ok_or_else(|| throw_error(&ctx, "TypeError", "textDecode needs an ArrayBuffer"))?;
    let fatal = first(&ctx, &args, 1).as_bool().unwrap_or(false);
    // SAFETY: the bytes are read at once; no JavaScript runs (and so
    // nothing can detach or resize the buffer) meanwhile.
    let bytes = unsafe { buffer.as_bytes() }.ok_or_else(|| throw_error(&ctx, "TypeError", "the buffer is detached"))?;
    if fatal {
        std::str::from_utf8(bytes)
            .map(str::to_string)
            .map_err(|_| throw_error(&ctx, "TypeError", "The encoded data was not valid utf-8"))
    } else {
        Ok(String::from_utf8_lossy(bytes).into_owned())
    }
}

/// `parseUrl(input, base?)`: `[href, protocol, username, password,
/// hostname, port, pathname, search, hash, origin]`, or a `TypeError`.
fn parse_url<'js>(ctx: Ctx<'js>, args: Rest<JsValue<'js>>) -> rquickjs::Result<Vec<String>> {
    let text = |index: usize| -> rquickjs::Result<Option<String>> {
        let value = first(&ctx, &args, index);
        if value.is_undefined() {
            return Ok(None);
        }
        match value.as_string() {
            Some(text) => Ok(Some(text.to_string()?)),
            None => Err(throw_error(&ctx, "TypeError", "parseUrl needs strings")),
        }
    };
    let input = text(0)?.unwrap_or_default();
    let base = text(1)?;
    if input.len() > MAX_URL_BYTES || base.as_ref().is_some_and(|base| base.len() > MAX_URL_BYTES) {
        return Err(throw_error(
            &ctx,
            "TypeError",
            &format!("Invalid URL: longer than {MAX_URL_BYTES} bytes"),
        ));
    }
    let parsed = match &base {
        Some(base) => url::Url::parse(base).and_then(|base| base.join(&input)),
        None => url::Url::parse(&input),
    };
    let url = parsed.map_err(|error| {
        let shown: String = input.chars().take(200).collect();
        throw_error(&ctx, "TypeError", &format!("Invalid URL {shown:?}: {error}"))
    })?;
    Ok(vec![
        url.as_str().to_string(),
        format!("{}:", url.scheme()),
        url.username().to_string(),
        url.password().unwrap_or_default().to_string(),
        url.host_str().unwrap_or_default().to_string(),
        url.port().map(|port| port.to_string()).unwrap_or_default(),
        url.path().to_string(),
        url.query().map(|query| format!("?{query}")).unwrap_or_default(),
        url.fragment()
            .map(|fragment| format!("#{fragment}"))
            .unwrap_or_default(),
        url.origin().ascii_serialization(),
    ])
}

/// `randomBytes(n)`: `n` bytes from the kernel's random source.
fn random_bytes<'js>(ctx: Ctx<'js>, args: Rest<JsValue<'js>>) -> rquickjs::Result<ArrayBuffer<'js>> {
    let wanted = first(&ctx, &args, 0).as_number().unwrap_or(-1.0);
    if !(0.0..=MAX_RANDOM_BYTES as f64).contains(&wanted) || wanted.fract() != 0.0 {
        return Err(throw_error(
            &ctx,
            "RangeError",
            &format!("getRandomValues: at most {MAX_RANDOM_BYTES} bytes at a time"),
        ));
    }
    let mut bytes = vec![0u8; wanted as usize];
    let mut filled = 0;
    while filled < bytes.len() {
        let rest = &mut bytes[filled..];
        // SAFETY: getrandom writes at most `rest.len()` bytes into the
        // buffer we own.
        let got = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if got < 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(throw_error(&ctx, "Error", &format!("no random bytes: {error}")));
        }
        filled += got as usize;
    }
    ArrayBuffer::new_copy(ctx, bytes)
}
