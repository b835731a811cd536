//! Exos for Rust: objects with a tag, an optional interface guard and
//! methods, made one at a time ([`Exo`]), as instances of a class with
//! per-instance state ([`ExoClass`]), or as kits of facets sharing state
//! ([`ExoClassKit`]).
//!
//! Every call is checked by the value layer's guard checker before the
//! method runs and its result after, with Endo's messages. Methods are
//! plain closures; `async` methods return futures that run on the vat and
//! may themselves await eventual sends (the `callWhen` case).
//!
//! ```
//! use capstan_node::runtime::{E, Exo, Vat, when};
//! use capstan_protocol::guards::DefaultGuards;
//! use capstan_protocol::patterns::M;
//! use capstan_protocol::{Value, list};
//! use std::cell::Cell;
//! use std::rc::Rc;
//!
//! let vat = Vat::new();
//! vat.run_until(async {
//!     let count = Rc::new(Cell::new(0.0));
//!     let counter = Exo::new("Counter")
//!         .interface(M::interface("Counter", [("incr", M::call([]).returns(M::number()))], DefaultGuards::None))
//!         .method("incr", move |_cx, _args| {
//!             count.set(count.get() + 1.0);
//!             Ok(Value::Number(count.get()))
//!         })
//!         .make()
//!         .unwrap();
//!     let first = E(&counter).call("incr", list![]);
//!     assert_eq!(when(&first).await.unwrap().as_number(), Some(1.0));
//! });
//! ```

use std::cell::{Ref, RefCell, RefMut};
use std::collections::BTreeMap;
use std::future::Future;
use std::rc::Rc;

use capstan_protocol::guards::{
    CallKind, GET_INTERFACE_GUARD, GET_METHOD_NAMES, MethodGuard, exo_method_guards, kit_method_guards, method_label,
    method_names_value, passable_method_guard,
};
use capstan_protocol::{ErrorValue, Value};

use super::args::{FromArgs, decode};
use super::vat::{Behavior, Invocation, LocalFuture, Vat, type_error};

/// What a method returns: a value, or an error that rejects the call.
pub type MethodResult = Result<Value, ErrorValue>;

type SyncMethod<S> = Rc<dyn Fn(&Context<S>, Vec<Value>) -> MethodResult>;
type AsyncMethod<S> = Rc<dyn Fn(Context<S>, Vec<Value>) -> LocalFuture<MethodResult>>;

enum Method<S> {
    Sync(SyncMethod<S>),
    Async(AsyncMethod<S>),
}

impl<S> Clone for Method<S> {
    fn clone(&self) -> Self {
        match self {
            Method::Sync(method) => Method::Sync(Rc::clone(method)),
            Method::Async(method) => Method::Async(Rc::clone(method)),
        }
    }
}

/// What a method sees: the object it was called on, the instance state,
/// and for kits the sibling facets.
pub struct Context<S> {
    this: Value,
    state: Rc<RefCell<S>>,
    facets: Option<Rc<BTreeMap<String, Value>>>,
}

impl<S> Clone for Context<S> {
    fn clone(&self) -> Self {
        Context {
            this: self.this.clone(),
            state: Rc::clone(&self.state),
            facets: self.facets.clone(),
        }
    }
}

impl<S> Context<S> {
    /// The reference the method was called on (`this.self` in Endo).
    pub fn this(&self) -> &Value {
        &self.this
    }

    pub fn state(&self) -> Ref<'_, S> {
        self.state.borrow()
    }

    pub fn state_mut(&self) -> RefMut<'_, S> {
        self.state.borrow_mut()
    }

    /// A facet of the same kit instance (`this.facets.name` in Endo).
    pub fn facet(&self, name: &str) -> Option<&Value> {
        self.facets.as_ref().and_then(|facets| facets.get(name))
    }
}

/// Methods and guards shared by every instance of a class (or facet).
struct Shape<S> {
    tag: String,
    interface: Option<Value>,
    /// Each guarded method with its guard and label, ordered by
    /// [`by_length_then_bytes`]: one search per call, which compares bytes
    /// only with names of the called name's length.
    calls: Vec<(String, GuardedMethod<S>)>,
    /// Every method's name, for `__getMethodNames__` and errors.
    names: Vec<String>,
    meta_guard: MethodGuard,
}

/// A method as a call runs it. The guard and label are shared with each
/// call, which may outlive the turn (`callWhen`).
struct GuardedMethod<S> {
    method: Method<S>,
    guard: Rc<MethodGuard>,
    label: Rc<str>,
}

impl<S: 'static> Shape<S> {
    fn new(
        tag: String,
        interface: Option<Value>,
        methods: BTreeMap<String, Method<S>>,
        mut guards: BTreeMap<String, MethodGuard>,
    ) -> Result<Shape<S>, ErrorValue> {
        let names = methods.keys().cloned().collect();
        let mut calls: Vec<(String, GuardedMethod<S>)> = methods
            .into_iter()
            .filter_map(|(name, method)| {
                let guard = Rc::new(guards.remove(&name)?);
                let label = Rc::from(method_label(&name, &tag));
                Some((name, GuardedMethod { method, guard, label }))
            })
            .collect();
        calls.sort_by(|(left, _), (right, _)| by_length_then_bytes(left, right));
        let meta_guard = passable_method_guard().map_err(|rejection| rejection.to_error_value())?;
        Ok(Shape {
            tag,
            interface,
            calls,
            names,
            meta_guard,
        })
    }

    fn invoke(&self, context: Context<S>, method: &str, args: Vec<Value>) -> Invocation {
        if let Ok(index) = self
            .calls
            .binary_search_by(|(name, _)| by_length_then_bytes(name, method))
            && let Some((_, call)) = self.calls.get(index)
        {
            return run_guarded(call, context, args);
        }
        let names = || {
            self.names
                .iter()
                .map(String::as_str)
                .chain([GET_INTERFACE_GUARD, GET_METHOD_NAMES])
        };
        if method == GET_INTERFACE_GUARD || method == GET_METHOD_NAMES {
            let label = method_label(method, &self.tag);
            let result = if method == GET_INTERFACE_GUARD {
                self.interface.clone().unwrap_or(Value::Undefined)
            } else {
                method_names_value(names())
            };
            let checked = self
                .meta_guard
                .check_args(&label, &args)
                .and_then(|()| self.meta_guard.check_result(&label, &result));
            return Invocation::Ready(
                checked
                    .map(|()| result)
                    .map_err(|rejection| rejection_value(&rejection)),
            );
        }
        Invocation::Ready(Err(type_error(format!(
            "target has no method {}, has {}",
            capstan_protocol::quote::json_string(method),
            capstan_protocol::quote::quote(&method_names_value(names()))
        ))))
    }
}

/// The order of [`Shape::calls`]: shorter names first, then by bytes.
fn by_length_then_bytes(left: &str, right: &str) -> std::cmp::Ordering {
    left.len()
        .cmp(&right.len())
        .then_with(|| left.as_bytes().cmp(right.as_bytes()))
}

fn rejection_value(rejection: &capstan_protocol::Rejection) -> Value {
    Value::error(rejection.to_error_value())
}

/// Checks the arguments, runs the method, checks the result. A `callWhen`
/// guard awaits its `M.await` arguments first and checks the fulfilment.
fn run_guarded<S: 'static>(call: &GuardedMethod<S>, context: Context<S>, mut args: Vec<Value>) -> Invocation {
    let (guard, label) = (&call.guard, &call.label);
    if let Method::Sync(method) = &call.method
        && guard.call_kind() != CallKind::Async
    {
        if let Err(rejection) = guard.check_args(label, &args) {
            return Invocation::Ready(Err(rejection_value(&rejection)));
        }
        let outcome = method(&context, args).map_err(Value::error).and_then(|result| {
            guard
                .check_result(label, &result)
                .map(|()| result)
                .map_err(|rejection| rejection_value(&rejection))
        });
        return Invocation::Ready(outcome);
    }
    // The call outlives this turn: it takes its own handles.
    let (guard, label, method) = (Rc::clone(guard), Rc::clone(label), call.method.clone());
    Invocation::Later(Box::pin(async move {
        let vat = Vat::current().ok_or_else(|| type_error("no vat is running"))?;
        for index in guard.await_indexes() {
            if let Some(arg) = args.get_mut(*index) {
                *arg = vat.when(arg).await?;
            }
        }
        guard
            .check_args(&label, &args)
            .map_err(|rejection| rejection_value(&rejection))?;
        let result = match method {
            Method::Sync(method) => method(&context, args),
            Method::Async(method) => method(context, args).await,
        }
        .map_err(Value::error)?;
        let result = if guard.call_kind() == CallKind::Async {
            vat.when(&result).await?
        } else {
            result
        };
        guard
            .check_result(&label, &result)
            .map_err(|rejection| rejection_value(&rejection))?;
        Ok(result)
    }))
}

/// One instance (or one facet of a kit instance).
struct Instance<S> {
    interface_name: String,
    shape: Rc<Shape<S>>,
    state: Rc<RefCell<S>>,
    facets: RefCell<Option<Rc<BTreeMap<String, Value>>>>,
}

impl<S: 'static> Behavior for Instance<S> {
    fn interface(&self) -> &str {
        &self.interface_name
    }

    fn invoke(&self, this: &Value, method: &str, args: Vec<Value>) -> Invocation {
        let context = Context {
            this: this.clone(),
            state: Rc::clone(&self.state),
            facets: self.facets.borrow().clone(),
        };
        self.shape.invoke(context, method, args)
    }
}

fn current_vat() -> Result<Vat, ErrorValue> {
    Vat::current().ok_or_else(|| ErrorValue::type_error("exos can only be made while a vat is running"))
}

/// Collects methods for a class or a facet.
pub struct Methods<S> {
    methods: BTreeMap<String, Method<S>>,
}

impl<S> Default for Methods<S> {
    fn default() -> Self {
        Methods {
            methods: BTreeMap::new(),
        }
    }
}

impl<S: 'static> Methods<S> {
    pub fn method(mut self, name: &str, method: impl Fn(&Context<S>, Vec<Value>) -> MethodResult + 'static) -> Self {
        self.methods.insert(name.to_string(), Method::Sync(Rc::new(method)));
        self
    }

    pub fn async_method<F>(mut self, name: &str, method: impl Fn(Context<S>, Vec<Value>) -> F + 'static) -> Self
    where
        F: Future<Output = MethodResult> + 'static,
    {
        let method: AsyncMethod<S> = Rc::new(move |context, args| Box::pin(method(context, args)));
        self.methods.insert(name.to_string(), Method::Async(method));
        self
    }

    fn names(&self) -> Vec<&str> {
        self.methods.keys().map(String::as_str).collect()
    }
}

/// A class of exos: each instance gets state from `init`.
pub struct ExoClass<S> {
    shape: Rc<Shape<S>>,
    init: Rc<dyn Fn(Vec<Value>) -> Result<S, ErrorValue>>,
}

impl<S> Clone for ExoClass<S> {
    fn clone(&self) -> Self {
        ExoClass {
            shape: Rc::clone(&self.shape),
            init: Rc::clone(&self.init),
        }
    }
}

/// A class kept in a `thread_local!`, defined on first use; see
/// [`ExoClass::make_local`].
pub type LocalClass<S> = std::thread::LocalKey<Result<ExoClass<S>, ErrorValue>>;

/// Builds an [`ExoClass`].
pub struct ExoClassBuilder<S> {
    tag: String,
    interface: Option<Value>,
    init: Rc<dyn Fn(Vec<Value>) -> Result<S, ErrorValue>>,
    methods: Methods<S>,
}

impl<S: 'static> ExoClass<S> {
    /// `defineExoClass(tag, interfaceGuard, init, methods)`.
    pub fn builder(tag: &str, init: impl Fn(Vec<Value>) -> Result<S, ErrorValue> + 'static) -> ExoClassBuilder<S> {
        ExoClassBuilder {
            tag: tag.to_string(),
            interface: None,
            init: Rc::new(init),
            methods: Methods::default(),
        }
    }

    /// A class whose instances are made only with [`ExoClass::make_with`]
    /// (its `make` fails).
    pub fn builder_without_init(tag: &str) -> ExoClassBuilder<S> {
        let tag_text = tag.to_string();
        ExoClass::builder(tag, move |_| {
            Err(ErrorValue::type_error(format!(
                "{tag_text} instances are made by Rust code with their state"
            )))
        })
    }

    /// Makes an instance, with `state`, of the class a `thread_local!`
    /// holds: the class is defined once per thread, on first use, so
    /// making an instance costs no guard checking.
    ///
    /// ```
    /// use capstan_node::runtime::args::decode;
    /// use capstan_node::runtime::{E, ExoClass, Vat, when};
    /// use capstan_protocol::{ErrorValue, Value, list};
    ///
    /// struct Greeter {
    ///     greeting: String,
    /// }
    ///
    /// thread_local! {
    ///     static GREETER: Result<ExoClass<Greeter>, ErrorValue> = ExoClass::<Greeter>::builder_without_init("Greeter")
    ///         .method("greet", |cx, args| {
    ///             let (name,): (String,) = decode(args)?;
    ///             Ok(Value::from(format!("{} {name}", cx.state().greeting)))
    ///         })
    ///         .build();
    /// }
    ///
    /// Vat::new().run_until(async {
    ///     let greeter = ExoClass::make_local(&GREETER, Greeter { greeting: "hello".into() }).unwrap();
    ///     let answer = when(&E(&greeter).call("greet", list!["ada"])).await.unwrap();
    ///     assert_eq!(answer.as_str(), Some("hello ada"));
    /// });
    /// ```
    pub fn make_local(class: &'static LocalClass<S>, state: S) -> Result<Value, ErrorValue> {
        class.with(|class| class.as_ref().map_err(Clone::clone)?.make_with(state))
    }

    /// Makes an instance in the current vat.
    pub fn make(&self, args: Vec<Value>) -> Result<Value, ErrorValue> {
        let state = (self.init)(args)?;
        self.make_with(state)
    }

    /// Makes an instance with `state` given as it is, without `init`: for
    /// Rust code whose instance state is not passable (shared handles,
    /// tables). Define the class once and make instances with this; it
    /// costs one allocation, where building an [`Exo`] checks its guards
    /// every time.
    pub fn make_with(&self, state: S) -> Result<Value, ErrorValue> {
        let vat = current_vat()?;
        let instance = Instance {
            interface_name: format!("Alleged: {}", self.shape.tag),
            shape: Rc::clone(&self.shape),
            state: Rc::new(RefCell::new(state)),
            facets: RefCell::new(None),
        };
        Ok(vat.make_object(Rc::new(instance)))
    }
}

impl<S: 'static> ExoClassBuilder<S> {
    pub fn interface(mut self, guard: Value) -> Self {
        self.interface = Some(guard);
        self
    }

    pub fn method(mut self, name: &str, method: impl Fn(&Context<S>, Vec<Value>) -> MethodResult + 'static) -> Self {
        self.methods = self.methods.method(name, method);
        self
    }

    pub fn async_method<F>(mut self, name: &str, method: impl Fn(Context<S>, Vec<Value>) -> F + 'static) -> Self
    where
        F: Future<Output = MethodResult> + 'static,
    {
        self.methods = self.methods.async_method(name, method);
        self
    }

    /// An async method given its own copy of the instance's state (a
    /// handle, cheap to clone) and its arguments decoded as `A` (see
    /// [`args`](super::args)): the shape of a method whose work goes on
    /// after the call has returned its promise.
    pub fn async_state_method<A, F>(self, name: &str, method: impl Fn(S, A) -> F + 'static) -> Self
    where
        S: Clone,
        A: FromArgs,
        F: Future<Output = MethodResult> + 'static,
    {
        self.async_method(name, move |cx, args| {
            // Calling `method` only makes its future; nothing runs before
            // the promise is returned.
            let work = decode::<A>(args).map(|args| method(cx.state().clone(), args));
            async move { work?.await }
        })
    }

    /// Checks the methods against the interface, as Endo does when a
    /// class is defined.
    pub fn build(self) -> Result<ExoClass<S>, ErrorValue> {
        let guards = exo_method_guards(&self.tag, self.interface.as_ref(), &self.methods.names())
            .map_err(|rejection| rejection.to_error_value())?;
        let shape = Shape::new(self.tag, self.interface, self.methods.methods, guards)?;
        Ok(ExoClass {
            shape: Rc::new(shape),
            init: self.init,
        })
    }
}

/// `makeExo(tag, interfaceGuard, methods)`: a single object with no
/// per-instance state beyond what its closures capture.
pub struct Exo {
    builder: ExoClassBuilder<()>,
}

impl Exo {
    pub fn new(tag: &str) -> Exo {
        Exo {
            builder: ExoClass::builder(tag, |_| Ok(())),
        }
    }

    pub fn interface(mut self, guard: Value) -> Exo {
        self.builder = self.builder.interface(guard);
        self
    }

    pub fn method(mut self, name: &str, method: impl Fn(&Context<()>, Vec<Value>) -> MethodResult + 'static) -> Exo {
        self.builder = self.builder.method(name, method);
        self
    }

    pub fn async_method<F>(mut self, name: &str, method: impl Fn(Context<()>, Vec<Value>) -> F + 'static) -> Exo
    where
        F: Future<Output = MethodResult> + 'static,
    {
        self.builder = self.builder.async_method(name, method);
        self
    }

    /// Defines and makes the object in the current vat.
    pub fn make(self) -> Result<Value, ErrorValue> {
        self.builder.build()?.make(Vec::new())
    }
}

/// A class whose instances are kits: several facets sharing one state.
/// Facet `f` of kit `tag` is named `"{tag} {f}"`.
pub struct ExoClassKit<S> {
    facets: Rc<Vec<(String, Rc<Shape<S>>)>>,
    init: Rc<dyn Fn(Vec<Value>) -> Result<S, ErrorValue>>,
}

/// Builds an [`ExoClassKit`].
pub struct ExoClassKitBuilder<S> {
    tag: String,
    interfaces: Option<Value>,
    init: Rc<dyn Fn(Vec<Value>) -> Result<S, ErrorValue>>,
    facets: Vec<(String, Methods<S>)>,
}

impl<S: 'static> ExoClassKit<S> {
    pub fn builder(tag: &str, init: impl Fn(Vec<Value>) -> Result<S, ErrorValue> + 'static) -> ExoClassKitBuilder<S> {
        ExoClassKitBuilder {
            tag: tag.to_string(),
            interfaces: None,
            init: Rc::new(init),
            facets: Vec::new(),
        }
    }

    /// Makes a kit instance: facet name → reference.
    pub fn make(&self, args: Vec<Value>) -> Result<BTreeMap<String, Value>, ErrorValue> {
        let vat = current_vat()?;
        let state = Rc::new(RefCell::new((self.init)(args)?));
        let mut instances = Vec::new();
        let mut facets = BTreeMap::new();
        for (name, shape) in self.facets.iter() {
            let instance = Rc::new(Instance {
                interface_name: format!("Alleged: {}", shape.tag),
                shape: Rc::clone(shape),
                state: Rc::clone(&state),
                facets: RefCell::new(None),
            });
            facets.insert(name.clone(), vat.make_object(instance.clone()));
            instances.push(instance);
        }
        let shared = Rc::new(facets.clone());
        for instance in instances {
            *instance.facets.borrow_mut() = Some(Rc::clone(&shared));
        }
        Ok(facets)
    }
}

impl<S: 'static> ExoClassKitBuilder<S> {
    /// A record of interface guards, one per facet.
    pub fn interfaces(mut self, guard_kit: Value) -> Self {
        self.interfaces = Some(guard_kit);
        self
    }

    pub fn facet(mut self, name: &str, methods: Methods<S>) -> Self {
        self.facets.push((name.to_string(), methods));
        self
    }

    pub fn build(self) -> Result<ExoClassKit<S>, ErrorValue> {
        let names: Vec<(&str, Vec<&str>)> = self
            .facets
            .iter()
            .map(|(name, methods)| (name.as_str(), methods.names()))
            .collect();
        let mut guards = kit_method_guards(&self.tag, self.interfaces.as_ref(), &names)
            .map_err(|rejection| rejection.to_error_value())?;
        let mut facets = Vec::new();
        for (name, methods) in self.facets {
            let interface = self
                .interfaces
                .as_ref()
                .and_then(Value::as_record)
                .and_then(|record| record.get(&name))
                .cloned();
            let facet_guards = guards.remove(&name).unwrap_or_default();
            let shape = Shape::new(format!("{} {name}", self.tag), interface, methods.methods, facet_guards)?;
            facets.push((name, Rc::new(shape)));
        }
        Ok(ExoClassKit {
            facets: Rc::new(facets),
            init: self.init,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{E, when};
    use capstan_protocol::guards::DefaultGuards;
    use capstan_protocol::patterns::M;

    struct Greeter {
        greeting: Rc<str>,
    }

    fn greeter_class() -> ExoClass<Greeter> {
        ExoClass::<Greeter>::builder_without_init("Greeter")
            .interface(M::interface(
                "Greeter",
                [("greet", M::call([M::string()]).returns(M::string()))],
                DefaultGuards::None,
            ))
            .method("greet", |cx, args| {
                let (name,): (String,) = crate::runtime::args::decode(args)?;
                Ok(Value::from(format!("{} {name}", cx.state().greeting)))
            })
            .build()
            .unwrap()
    }

    #[test]
    fn instances_made_with_state_share_the_class_and_keep_their_own_state() {
        let vat = Vat::new();
        vat.run_until(async {
            let class = greeter_class();
            let hello = class
                .make_with(Greeter {
                    greeting: "hello".into(),
                })
                .unwrap();
            let bye = class.make_with(Greeter { greeting: "bye".into() }).unwrap();
            let first = when(&E(&hello).call("greet", capstan_protocol::list!["ada"]))
                .await
                .unwrap();
            let second = when(&E(&bye).call("greet", capstan_protocol::list!["ada"]))
                .await
                .unwrap();
            assert_eq!(first.as_str(), Some("hello ada"));
            assert_eq!(second.as_str(), Some("bye ada"));
            thread_local! {
                static GREETER: Result<ExoClass<Greeter>, ErrorValue> = Ok(greeter_class());
            }
            let local = ExoClass::make_local(&GREETER, Greeter { greeting: "hi".into() }).unwrap();
            let third = when(&E(&local).call("greet", capstan_protocol::list!["ada"]))
                .await
                .unwrap();
            assert_eq!(third.as_str(), Some("hi ada"));
            let refused = class.make(Vec::new()).unwrap_err();
            assert_eq!(&*refused.name, "TypeError");
        });
    }

    #[test]
    fn an_async_state_method_gets_the_state_and_typed_arguments_or_rejects_bad_ones() {
        let vat = Vat::new();
        vat.run_until(async {
            let class = ExoClass::<Rc<str>>::builder_without_init("Echo")
                .async_state_method("twice", |prefix: Rc<str>, (word, times): (String, u64)| async move {
                    Ok(Value::from(format!("{prefix} {}", word.repeat(times as usize))))
                })
                .build()
                .unwrap();
            let echo = class.make_with(Rc::from("echo:")).unwrap();
            let answer = when(&E(&echo).call("twice", capstan_protocol::list!["ab", 2.0]))
                .await
                .unwrap();
            assert_eq!(answer.as_str(), Some("echo: abab"));
            let Err(Value::Error(refused)) = when(&E(&echo).call("twice", capstan_protocol::list!["ab", "two"])).await
            else {
                panic!("a bad argument must reject the call");
            };
            assert_eq!(&*refused.name, "TypeError");
            assert_eq!(&*refused.message, "argument 2 must be a non-negative safe integer");
        });
    }

    #[test]
    fn each_method_is_found_among_names_of_the_same_length_and_a_missing_one_is_refused() {
        let vat = Vat::new();
        vat.run_until(async {
            let names = ["ba", "b", "ab", "abc", "aa", "c"];
            let mut exo = Exo::new("Names");
            for name in names {
                exo = exo.method(name, move |_, _| Ok(Value::from(name)));
            }
            let object = exo.make().unwrap();
            for name in names {
                let answer = when(&E(&object).call(name, capstan_protocol::list![])).await.unwrap();
                assert_eq!(answer.as_str(), Some(name));
            }
            let Err(Value::Error(refused)) = when(&E(&object).call("ac", capstan_protocol::list![])).await else {
                panic!("a method the exo lacks must reject the call");
            };
            assert_eq!(
                &*refused.message,
                "target has no method \"ac\", has [\"__getInterfaceGuard__\",\"__getMethodNames__\",\"aa\",\"ab\",\"abc\",\"b\",\"ba\",\"c\"]"
            );
        });
    }
}
