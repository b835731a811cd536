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

use super::Daemon;
use super::directory::directory_method_guards;
use super::mail::{agent_exo, mail_method_guards};
use super::names::{parse_path, parse_pet_name, store_error};
use crate::runtime::when;

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

/// Makes the guest agent of formula `id`.
pub fn make_guest(daemon: &Rc<Daemon>, id: FormulaId) -> Result<Value, ErrorValue> {
    let (exo, hub, _) = agent_exo(daemon, id, "EndoGuest", guest_guards(), true)?;
    let exo = exo.method("help", |_, _| Ok(Value::from(HELP)));

    let (d, h) = (Rc::clone(daemon), hub.clone());
    let exo = exo.async_method("storeValue", move |_, args| {
        let (daemon, hub) = (Rc::clone(&d), h.clone());
        async move {
            let (parent, name) = hub.resolve_parent(&daemon, &parse_path(&args[1])?)?;
            let name = parse_pet_name(&name)?;
            let id = match daemon.identify(&args[0]) {
                Some(id) => id,
                None if !holds_references(&args[0]) => {
                    let formula = super::host::marshal_formula(&daemon, &args[0])?;
                    daemon
                        .make_formula(&formula)
                        .await
                        .map_err(|error| ErrorValue::plain(error.to_string()))?
                }
                // Deliberately vague: do not say whether the value is known.
                None => return Err(ErrorValue::type_error("Cannot store this value")),
            };
            daemon
                .store
                .write_name(parent.pet_store, name, id)
                .await
                .map_err(store_error)?;
            Ok(Value::Undefined)
        }
    });

    let d = Rc::clone(daemon);
    let exo = exo.async_method("equals", move |_, args| {
        let daemon = Rc::clone(&d);
        async move {
            // Awaits both; false (never an error) unless both are known
            // and are the same formula's value.
            let (Ok(a), Ok(b)) = (when(&args[0]).await, when(&args[1]).await) else {
                return Ok(Value::Boolean(false));
            };
            let same = matches!((daemon.identify(&a), daemon.identify(&b)), (Some(x), Some(y)) if x == y);
            Ok(Value::Boolean(same))
        }
    });
    exo.make()
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
