//! Guest agents: confined agents for programs and for LLM agents. A guest
//! names values and sends and receives mail, but never sees a formula id,
//! a locator, or a message field that carries one: its directory methods
//! leave out the ones that take or reveal identifiers, its messages carry
//! live handles and its own names for the sender, and `storeValue` fails
//! without saying whether a value is known.

use std::rc::Rc;

use capstan_protocol::patterns::M;
use capstan_protocol::{ErrorValue, Value};
use capstan_store::FormulaId;

use super::host::marshal_formula;
use super::mail::mail_method_guards;
use super::{Agent, agent_class};
use crate::daemon::Daemon;
use crate::daemon::directory::directory_method_guards;
use crate::daemon::names::{parse_path, parse_pet_name};
use crate::runtime::args::decode;
use crate::runtime::{ExoClass, MethodResult, when};

/// What a guest can do, for `help()`.
const HELP: &str = "A guest agent. Names: has, list, lookup, reverseLookup, storeValue, remove, move, copy, \
makeDirectory, followNameChanges. Values: equals. Mail: handle, listMessages, followMessages, send, request, \
resolve, reject, adopt, dismiss. Special names: AGENT, SELF, HOST.";

fn guest_guards() -> Vec<(&'static str, Value)> {
    let path = || M::or([M::string(), M::array_of(M::string(), None)]);
    let mut guards = directory_method_guards(true);
    guards.extend(mail_method_guards());
    guards.extend([
        ("help", M::call([]).rest(M::any()).returns(M::string())),
        (
            "storeValue",
            M::call_when([M::await_(M::any()), path()]).returns_undefined(),
        ),
        ("equals", M::call_when([M::any(), M::any()]).returns(M::boolean())),
    ]);
    guards
}

fn define_guest() -> Result<ExoClass<Agent>, ErrorValue> {
    agent_class("EndoGuest", guest_guards(), true)
        .method("help", |_, _| Ok(Value::from(HELP)))
        .async_state_method("storeValue", store_value)
        .async_method("equals", |cx, args| {
            let daemon = Rc::clone(cx.state().daemon());
            async move { equals(&daemon, decode(args)?).await }
        })
        .build()
}

thread_local! {
    static GUEST: Result<ExoClass<Agent>, ErrorValue> = define_guest();
}

/// Makes the guest agent of formula `id`.
pub fn make_guest(daemon: &Rc<Daemon>, id: FormulaId) -> Result<Value, ErrorValue> {
    ExoClass::make_local(&GUEST, Agent::new(daemon, id, "EndoGuest", true)?)
}

/// `storeValue(value, name)`: fails without saying whether a value that
/// holds references is known.
async fn store_value(guest: Agent, (value, name): (Value, Value)) -> MethodResult {
    let daemon = guest.daemon();
    let (parent, name) = guest.directory.hub.resolve_parent(daemon, &parse_path(&name)?)?;
    let name = parse_pet_name(&name)?;
    let id = match daemon.identify(&value) {
        Some(id) => id,
        None if !holds_references(&value) => {
            let formula = marshal_formula(daemon, &value)?;
            daemon.make_formula(&formula).await?
        }
        // Deliberately vague: do not say whether the value is known.
        None => return Err(ErrorValue::type_error("Cannot store this value")),
    };
    daemon.store.write_name(parent.pet_store, name, id).await?;
    Ok(Value::Undefined)
}

/// `equals(a, b)`: awaits both; false (never an error) unless both are
/// known and are the same formula's value.
async fn equals(daemon: &Daemon, (a, b): (Value, Value)) -> MethodResult {
    let (Ok(a), Ok(b)) = (when(&a).await, when(&b).await) else {
        return Ok(Value::Boolean(false));
    };
    let same = matches!((daemon.identify(&a), daemon.identify(&b)), (Some(x), Some(y)) if x == y);
    Ok(Value::Boolean(same))
}

/// Whether a value holds any reference (which would need a formula).
fn holds_references(value: &Value) -> bool {
    match value {
        Value::Remotable(_) | Value::Promise(_) => true,
        Value::Array(items) => items.iter().any(holds_references),
        Value::Record(record) => record.values().any(holds_references),
        Value::Tagged(tagged) => holds_references(&tagged.payload),
        _ => false,
    }
}
