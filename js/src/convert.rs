//! Conversion between JavaScript values and passable [`Value`]s, enforcing
//! the pass-style rules (frozen objects, plain records, registered
//! symbols, declared remotables) with Endo's messages, and bounding depth
//! and size so a guest cannot exhaust the Rust stack or heap.
//!
//! The structural checks that must look at property descriptors run in
//! the guest library (`classify`); this file walks the value, keeps the
//! bounds, and maps references through the engine's tables.

use std::collections::HashMap;
use std::sync::Arc;

use capstan_protocol::value::{ErrorValue, Record};
use capstan_protocol::{Reference, Value};
use num_bigint::BigInt;
use rquickjs::{Array, ArrayBuffer, Ctx, Function, Object, Persistent, Type, Value as JsValue};

use crate::engine::{Engine, Export, GuestExport, Import, Library, PendingPromise, address_of};

/// Where references made by a conversion may go.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Only into a check that ends with this conversion: objects seen for
    /// the first time get references the tables do not keep.
    Check,
    /// To the host: objects seen for the first time are exported.
    Export,
}

const HINT_OBJECT: i32 = 0;
const HINT_ARRAY: i32 = 1;
const HINT_ERROR: i32 = 2;
const HINT_PROMISE: i32 = 3;
const HINT_BYTES: i32 = 4;
const HINT_FUNCTION: i32 = 5;

/// Target of references made for a check only.
struct CheckOnly;

/// One conversion session: its bounds and, in check mode, the references
/// it made, so that values converted back find the same objects.
pub(crate) struct Converter<'a, 'js> {
    engine: &'a Engine,
    ctx: Ctx<'js>,
    library: Library<'js>,
    mode: Mode,
    values: usize,
    bytes: usize,
    ancestors: Vec<usize>,
    checked: HashMap<usize, Reference>,
    checked_back: HashMap<Reference, JsValue<'js>>,
    classify: Option<Function<'js>>,
    freeze: Option<Function<'js>>,
}

fn throw<'js>(ctx: &Ctx<'js>, message: &str) -> rquickjs::Error {
    throw_error(ctx, "Error", message)
}

/// Throws a new error of the named kind. (rquickjs's own helpers assign
/// `message`, which a frozen `Error.prototype` refuses.)
pub(crate) fn throw_error<'js>(ctx: &Ctx<'js>, name: &str, message: &str) -> rquickjs::Error {
    let error = (|| -> rquickjs::Result<JsValue<'js>> {
        let global: Object = ctx.globals();
        let constructor: rquickjs::Constructor = global.get(name).or_else(|_| global.get("Error"))?;
        constructor.construct((message,))
    })();
    match error {
        Ok(error) => ctx.throw(error),
        Err(error) => error,
    }
}

impl<'a, 'js> Converter<'a, 'js> {
    pub fn new(engine: &'a Engine, ctx: &Ctx<'js>, mode: Mode) -> rquickjs::Result<Converter<'a, 'js>> {
        Ok(Converter {
            engine,
            ctx: ctx.clone(),
            library: engine.library(ctx)?,
            mode,
            values: 0,
            bytes: 0,
            ancestors: Vec::new(),
            checked: HashMap::new(),
            checked_back: HashMap::new(),
            classify: None,
            freeze: None,
        })
    }

    pub fn library(&self) -> &Library<'js> {
        &self.library
    }

    /// Deep-freezes a value with the guest library's `harden`.
    pub fn harden(&self, value: &JsValue<'js>) -> rquickjs::Result<()> {
        if value.is_object() {
            let harden = self.library.function("harden")?;
            harden.call::<_, JsValue>((value.clone(),))?;
        }
        Ok(())
    }

    // ---- JavaScript to Rust ---------------------------------------------

    /// Converts a passable JavaScript value; throws (as a JavaScript
    /// exception) with Endo's message when it is not passable.
    pub fn passable(&mut self, value: &JsValue<'js>) -> rquickjs::Result<Value> {
        self.passable_at(value, 0)
    }

    /// Converts the elements of `array`, an array the guest library made
    /// and never let the guest see (the arguments of an eventual send),
    /// as the elements of a passed array: each is hardened, then
    /// converted. The array itself is neither frozen nor classified, which
    /// would cost a property walk per send for no guest-visible effect.
    pub fn passable_arguments(&mut self, array: &JsValue<'js>) -> rquickjs::Result<Vec<Value>> {
        let Some(array) = array.as_array() else {
            return Ok(Vec::new());
        };
        self.count(0)?;
        let items = (0..array.len())
            .map(|index| array.get::<JsValue>(index))
            .collect::<rquickjs::Result<Vec<_>>>()?;
        for item in &items {
            self.harden(item)?;
        }
        items.iter().map(|item| self.passable_at(item, 1)).collect()
    }

    fn count(&mut self, bytes: usize) -> rquickjs::Result<()> {
        self.values += 1;
        self.bytes = self.bytes.saturating_add(bytes);
        let limits = self.engine.conversion;
        if self.values > limits.max_values {
            return Err(throw(
                &self.ctx,
                &format!("Passable data has more than {} values", limits.max_values),
            ));
        }
        if self.bytes > limits.max_bytes {
            return Err(throw(
                &self.ctx,
                &format!("Passable data has more than {} bytes", limits.max_bytes),
            ));
        }
        Ok(())
    }

    fn passable_at(&mut self, value: &JsValue<'js>, depth: usize) -> rquickjs::Result<Value> {
        match value.type_of() {
            Type::Uninitialized | Type::Undefined => {
                self.count(0)?;
                Ok(Value::Undefined)
            }
            Type::Null => {
                self.count(0)?;
                Ok(Value::Null)
            }
            Type::Bool => {
                self.count(0)?;
                Ok(Value::Boolean(value.as_bool().unwrap_or(false)))
            }
            Type::Int | Type::Float => {
                self.count(0)?;
                Ok(Value::Number(value.as_number().unwrap_or(f64::NAN)))
            }
            Type::String => {
                let text = self.string_of(value)?;
                self.count(text.len())?;
                Ok(Value::String(text.into()))
            }
            Type::Symbol => self.symbol_to_value(value),
            Type::BigInt => {
                let text: rquickjs::Coerced<String> = value.get()?;
                self.count(text.0.len())?;
                let number = text
                    .0
                    .parse::<BigInt>()
                    .map_err(|_| throw(&self.ctx, &format!("Malformed bigint {:?}", text.0)))?;
                Ok(Value::bigint(number))
            }
            _ => self.object_to_value(value, depth),
        }
    }

    fn string_of(&self, value: &JsValue<'js>) -> rquickjs::Result<String> {
        let text = value.as_string().ok_or_else(|| throw(&self.ctx, "string expected"))?;
        text.to_string().map_err(|_| {
            throw(
                &self.ctx,
                "Expected well-formed unicode string: strings with lone surrogates are not passable here",
            )
        })
    }

    fn symbol_to_value(&mut self, value: &JsValue<'js>) -> rquickjs::Result<Value> {
        let symbol_name = self.library.function("symbolName")?;
        let name: String = symbol_name.call((value.clone(),))?;
        self.count(name.len())?;
        Ok(Value::Symbol(name.into()))
    }

    fn object_to_value(&mut self, value: &JsValue<'js>, depth: usize) -> rquickjs::Result<Value> {
        let max_depth = self.engine.conversion.max_depth;
        if depth >= max_depth {
            return Err(throw(
                &self.ctx,
                &format!("Passable data nests deeper than {max_depth} levels"),
            ));
        }
        if value.is_proxy() {
            return Err(throw(&self.ctx, "Proxies are not passable"));
        }
        let address = address_of(value);
        if self.ancestors.contains(&address) {
            return Err(throw(&self.ctx, "Pass-by-copy data cannot be cyclic [\"[Seen]\"]"));
        }
        if let Some(reference) = self.known_reference(address) {
            self.count(0)?;
            return Ok(if value.is_promise() {
                Value::Promise(reference)
            } else {
                Value::Remotable(reference)
            });
        }
        if value.is_promise()
            && let Some(reference) = self.host_promise_reference(address)
        {
            self.count(0)?;
            return Ok(Value::Promise(reference));
        }
        let object = value
            .as_object()
            .ok_or_else(|| throw(&self.ctx, "object expected"))?
            .clone();
        let hint = if value.is_promise() {
            HINT_PROMISE
        } else if value.is_array() {
            HINT_ARRAY
        } else if value.is_error() {
            HINT_ERROR
        } else if ArrayBuffer::from_object(object.clone()).is_some() {
            HINT_BYTES
        } else if value.is_function() {
            HINT_FUNCTION
        } else {
            HINT_OBJECT
        };
        let classify = match &self.classify {
            Some(classify) => classify.clone(),
            None => {
                let classify = self.library.function("classify")?;
                self.classify = Some(classify.clone());
                classify
            }
        };
        let parts: Array = classify.call((value.clone(), hint))?;
        let style: String = parts.get(0)?;
        self.ancestors.push(address);
        let result = self.parts_to_value(value, &object, &style, &parts, depth);
        self.ancestors.pop();
        result
    }

    fn parts_to_value(
        &mut self,
        value: &JsValue<'js>,
        object: &Object<'js>,
        style: &str,
        parts: &Array<'js>,
        depth: usize,
    ) -> rquickjs::Result<Value> {
        match style {
            "copyArray" => {
                let length: usize = parts.get(1)?;
                self.count(0)?;
                let array = object
                    .clone()
                    .into_array()
                    .ok_or_else(|| throw(&self.ctx, "array expected"))?;
                let mut items = Vec::with_capacity(length.min(1024));
                for index in 0..length {
                    let item: JsValue = array.get(index)?;
                    items.push(self.passable_at(&item, depth + 1)?);
                }
                Ok(Value::Array(items.into()))
            }
            "copyRecord" => {
                let keys: Vec<String> = parts.get(1)?;
                let key_bytes = keys.iter().map(String::len).sum();
                self.count(key_bytes)?;
                let mut entries = Vec::with_capacity(keys.len());
                for key in keys {
                    let member: JsValue = object.get(key.as_str())?;
                    let member = self.passable_at(&member, depth + 1)?;
                    entries.push((key, member));
                }
                let record = Record::from_entries(entries).map_err(|error| throw(&self.ctx, &error.to_string()))?;
                Ok(Value::Record(Arc::new(record)))
            }
            "tagged" => {
                let tag: String = parts.get(1)?;
                self.count(tag.len())?;
                let payload: JsValue = parts.get(2)?;
                let payload = self.passable_at(&payload, depth + 1)?;
                Ok(Value::tagged(tag, payload))
            }
            "error" => Ok(Value::error(self.error_parts(parts, depth)?)),
            "byteArray" => {
                let buffer =
                    ArrayBuffer::from_object(object.clone()).ok_or_else(|| throw(&self.ctx, "ArrayBuffer expected"))?;
                // SAFETY: the bytes are copied out at once; no JavaScript
                // runs (and so nothing can detach or resize) meanwhile.
                let bytes = unsafe { buffer.as_bytes() }.map(<[u8]>::to_vec).unwrap_or_default();
                self.count(bytes.len())?;
                Ok(Value::ByteArray(bytes.into()))
            }
            "remotable" => {
                self.count(0)?;
                let iface: String = parts.get(1)?;
                let import_id: Option<u64> = parts.get(2)?;
                let reference = self.reference_for(value, &iface, import_id, false)?;
                Ok(Value::Remotable(reference))
            }
            "promise" => {
                self.count(0)?;
                let reference = self.reference_for(value, "Promise", None, true)?;
                Ok(Value::Promise(reference))
            }
            other => Err(throw(&self.ctx, &format!("Unknown pass style {other:?}"))),
        }
    }

    fn error_parts(&mut self, parts: &Array<'js>, depth: usize) -> rquickjs::Result<ErrorValue> {
        let name: String = parts.get(1)?;
        let message: String = parts.get(2)?;
        self.count(name.len() + message.len())?;
        let mut error = ErrorValue::new(name, message);
        let has_cause: bool = parts.get(3)?;
        if has_cause {
            let cause: JsValue = parts.get(4)?;
            match self.passable_at(&cause, depth + 1)? {
                Value::Error(cause) => error.cause = Some(cause),
                other => {
                    return Err(throw(
                        &self.ctx,
                        &format!("Error expected: {}", capstan_protocol::quote::quote(&other)),
                    ));
                }
            }
        }
        let errors: JsValue = parts.get(5)?;
        if !errors.is_undefined() {
            match self.passable_at(&errors, depth + 1)? {
                Value::Array(items) => {
                    for item in items.iter() {
                        match item {
                            Value::Error(nested) => error.errors.push(nested.clone()),
                            other => {
                                return Err(throw(
                                    &self.ctx,
                                    &format!("Error expected: {}", capstan_protocol::quote::quote(other)),
                                ));
                            }
                        }
                    }
                }
                other => {
                    return Err(throw(
                        &self.ctx,
                        &format!("errors must be an array: {}", capstan_protocol::quote::quote(&other)),
                    ));
                }
            }
        }
        Ok(error)
    }

    /// The host reference of the pending host promise at `address`.
    fn host_promise_reference(&self, address: usize) -> Option<Reference> {
        let tables = self.engine.tables.borrow();
        let id = tables.host_promise_at(address)?;
        tables.import_by_id.get(&id).cloned()
    }

    /// A reference already given to this object, by an export or by this
    /// conversion.
    fn known_reference(&self, address: usize) -> Option<Reference> {
        if let Some(reference) = self.checked.get(&address) {
            return Some(reference.clone());
        }
        let tables = self.engine.tables.borrow();
        let id = tables.export_by_address.get(&address)?;
        tables.exports.get(id).map(|export| export.reference.clone())
    }

    fn reference_for(
        &mut self,
        value: &JsValue<'js>,
        iface: &str,
        import_id: Option<u64>,
        is_promise: bool,
    ) -> rquickjs::Result<Reference> {
        if let Some(id) = import_id {
            let tables = self.engine.tables.borrow();
            if let Some(reference) = tables.import_by_id.get(&id) {
                return Ok(reference.clone());
            }
            // A released import: the guest still holds the object but the
            // host forgot the reference, so it is refused.
            return Err(throw(&self.ctx, "This reference was released by the host"));
        }
        let address = address_of(value);
        match self.mode {
            Mode::Check => {
                let reference = Reference::new(iface, CheckOnly);
                self.checked.insert(address, reference.clone());
                self.checked_back.insert(reference.clone(), value.clone());
                Ok(reference)
            }
            Mode::Export => {
                let (id, reference) = {
                    let mut tables = self.engine.tables.borrow_mut();
                    let id = tables.next_id();
                    let reference = Reference::new(
                        iface,
                        GuestExport {
                            engine: self.engine.id,
                            id,
                        },
                    );
                    tables.exports.insert(
                        id,
                        Export {
                            object: Persistent::save(&self.ctx, value.clone()),
                            reference: reference.clone(),
                            is_promise,
                        },
                    );
                    tables.export_by_address.insert(address, id);
                    (id, reference)
                };
                if is_promise {
                    let watch = self.library.function("watchPromise")?;
                    watch.call::<_, JsValue>((value.clone(), id))?;
                }
                Ok(reference)
            }
        }
    }

    // ---- Rust to JavaScript ---------------------------------------------

    /// Builds the JavaScript value for a passable: fresh frozen copies of
    /// data, and the one object that stands for each reference.
    pub fn js_value(&mut self, value: &Value) -> rquickjs::Result<JsValue<'js>> {
        self.js_value_at(value, 0)
    }

    fn frozen(&mut self, object: JsValue<'js>) -> rquickjs::Result<JsValue<'js>> {
        let freeze = match &self.freeze {
            Some(freeze) => freeze.clone(),
            None => {
                let freeze = self.library.function("freeze")?;
                self.freeze = Some(freeze.clone());
                freeze
            }
        };
        freeze.call((object,))
    }

    fn js_value_at(&mut self, value: &Value, depth: usize) -> rquickjs::Result<JsValue<'js>> {
        let ctx = self.ctx.clone();
        if depth
            > self
                .engine
                .conversion
                .max_depth
                .max(capstan_protocol::patterns::DEFAULT_MAX_NESTING)
                * 4
        {
            return Err(throw(&ctx, "Passable data nests too deeply"));
        }
        Ok(match value {
            Value::Undefined => JsValue::new_undefined(ctx),
            Value::Null => JsValue::new_null(ctx),
            Value::Boolean(flag) => JsValue::new_bool(ctx, *flag),
            Value::Number(number) => {
                if *number == 0.0 && number.is_sign_negative() {
                    JsValue::new_float(ctx, *number)
                } else {
                    JsValue::new_number(ctx, *number)
                }
            }
            Value::BigInt(number) => match i64::try_from(number.as_ref()) {
                Ok(small) => JsValue::new_big_int(ctx, small)?,
                Err(_) => {
                    let from_text = self.library.function("bigintFrom")?;
                    from_text.call((number.to_string(),))?
                }
            },
            Value::String(text) => rquickjs::String::from_str(ctx, text)?.into_value(),
            Value::ByteArray(bytes) => {
                let buffer = ArrayBuffer::new_copy(ctx, bytes.as_ref())?;
                self.frozen(buffer.into_value())?
            }
            Value::Symbol(name) => {
                let symbol_for = self.library.function("symbolFor")?;
                match name.strip_prefix("@@") {
                    Some(rest) if rest.starts_with("@@") => symbol_for.call((rest.to_string(), false))?,
                    Some(rest) => symbol_for.call((rest.to_string(), true))?,
                    None => symbol_for.call((name.to_string(), false))?,
                }
            }
            Value::Array(items) => {
                let array = Array::new(ctx)?;
                for (index, item) in items.iter().enumerate() {
                    array.set(index, self.js_value_at(item, depth + 1)?)?;
                }
                self.frozen(array.into_value())?
            }
            Value::Record(record) => {
                let object = Object::new(ctx)?;
                for (name, member) in record.iter() {
                    object.set(name.as_ref(), self.js_value_at(member, depth + 1)?)?;
                }
                self.frozen(object.into_value())?
            }
            Value::Tagged(tagged) => {
                let payload = self.js_value_at(&tagged.payload, depth + 1)?;
                let make = self.library.function("makeTaggedRaw")?;
                make.call((tagged.tag.to_string(), payload))?
            }
            Value::Error(error) => self.error_from_value(error, depth)?,
            Value::Remotable(reference) => self.object_for_reference(reference, false)?,
            Value::Promise(reference) => self.object_for_reference(reference, true)?,
        })
    }

    fn error_from_value(&mut self, error: &ErrorValue, depth: usize) -> rquickjs::Result<JsValue<'js>> {
        if depth
            > self
                .engine
                .conversion
                .max_depth
                .max(capstan_protocol::patterns::DEFAULT_MAX_NESTING)
                * 4
        {
            return Err(throw(&self.ctx, "Passable data nests too deeply"));
        }
        let cause = match &error.cause {
            Some(cause) => Some(self.error_from_value(cause, depth + 1)?),
            None => None,
        };
        let errors = if error.errors.is_empty() {
            JsValue::new_undefined(self.ctx.clone())
        } else {
            let array = Array::new(self.ctx.clone())?;
            for (index, nested) in error.errors.iter().enumerate() {
                array.set(index, self.error_from_value(nested, depth + 1)?)?;
            }
            self.frozen(array.into_value())?
        };
        let make = self.library.function("makeError")?;
        let has_cause = cause.is_some();
        let cause = cause.unwrap_or_else(|| JsValue::new_undefined(self.ctx.clone()));
        make.call((
            error.name.to_string(),
            error.message.to_string(),
            cause,
            has_cause,
            errors,
        ))
    }

    /// The JavaScript object for a reference: the exported object itself,
    /// the object a check made it for, or the presence or promise standing
    /// for a host reference (made the first time it is seen).
    pub fn object_for_reference(&mut self, reference: &Reference, is_promise: bool) -> rquickjs::Result<JsValue<'js>> {
        if let Some(id) = self.engine.export_id(reference) {
            let tables = self.engine.tables.borrow();
            let export = tables
                .exports
                .get(&id)
                .ok_or_else(|| throw(&self.ctx, "This reference was released by the guest runtime"))?;
            return export.object.clone().restore(&self.ctx);
        }
        if let Some(object) = self.checked_back.get(reference) {
            return Ok(object.clone());
        }
        let known = self.engine.tables.borrow().imports.get(reference).map(|import| {
            let resolvers = import.pending.as_ref().map(|pending| pending.resolvers.clone());
            (import.id, resolvers)
        });
        match known {
            Some((_, Some(resolvers))) => return resolvers.restore(&self.ctx)?.get("promise"),
            Some((id, None)) => {
                let lookup = self.library.function("lookupImport")?;
                let object: JsValue = lookup.call((id,))?;
                if !object.is_undefined() {
                    return Ok(object);
                }
                // Collected, and its finalizer has not run yet: a new object.
                self.engine.tables.borrow_mut().forget_import(id);
            }
            None => {}
        }
        let id = self.engine.tables.borrow_mut().next_id();
        let (object, pending) = if is_promise {
            let make = self.library.function("makeHostPromise")?;
            let resolvers: Object = make.call(())?;
            let promise: JsValue = resolvers.get("promise")?;
            let pending = PendingPromise {
                address: address_of(&promise),
                resolvers: Persistent::save(&self.ctx, resolvers),
            };
            (promise, Some(pending))
        } else {
            let make = self.library.function("makePresence")?;
            let presence: JsValue = make.call((id, reference.interface().to_string()))?;
            (presence, None)
        };
        {
            let mut tables = self.engine.tables.borrow_mut();
            if let Some(pending) = &pending {
                tables.host_promise_by_address.insert(pending.address, id);
            }
            tables.imports.insert(
                reference.clone(),
                Import {
                    id,
                    is_promise,
                    pending,
                },
            );
            tables.import_by_id.insert(id, reference.clone());
        }
        if is_promise {
            self.engine.host.promise_imported(reference);
        }
        Ok(object)
    }
}

/// A JavaScript value the guest threw, as a passable reason. When the
/// thrown value is not passable, an error describing it stands in.
pub(crate) fn reason_to_value<'js>(engine: &Engine, ctx: &Ctx<'js>, thrown: &JsValue<'js>) -> Value {
    let attempt = (|| -> rquickjs::Result<Value> {
        let mut converter = Converter::new(engine, ctx, Mode::Export)?;
        converter.harden(thrown)?;
        converter.passable(thrown)
    })();
    match attempt {
        Ok(value) => value,
        Err(_) => {
            let _ = ctx.catch();
            let text = describe_thrown(ctx, thrown);
            Value::error(ErrorValue::plain(text))
        }
    }
}

/// A best-effort text for a thrown value (used when it cannot be passed).
pub(crate) fn describe_thrown<'js>(ctx: &Ctx<'js>, thrown: &JsValue<'js>) -> String {
    if let Some(object) = thrown.as_object() {
        let name: Option<String> = object.get("name").ok();
        let message: Option<String> = object.get("message").ok();
        if let (Some(name), Some(message)) = (name, message) {
            let _ = ctx.catch();
            return format!("{name}: {message}");
        }
    }
    let text = thrown
        .get::<rquickjs::Coerced<String>>()
        .map(|text| text.0)
        .unwrap_or_else(|_| "(unprintable value)".to_string());
    let _ = ctx.catch();
    text
}

/// The error name and message of a thrown JavaScript error, if it is one.
pub(crate) fn error_name_and_message<'js>(thrown: &JsValue<'js>) -> Option<(String, String)> {
    let object = thrown.as_object()?;
    if !thrown.is_error() {
        return None;
    }
    let name: String = object.get("name").ok()?;
    let message: String = object.get("message").ok()?;
    Some((name, message))
}
